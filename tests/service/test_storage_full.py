"""The server's disk fills up: batches get 503 with Retry-After (nothing acknowledged, nothing lost), readiness
says not ready until space returns, and the same batches are recorded once it has, without a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.service.problems import PROBLEM_JSON
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_events
from tests.service.serving import api_keys, make_ledger, serving
from tests.tmpfs import fill, needs_root, tmpfs

BATCHES = 40
"""More than the disk can take once full: the WAL's free frames are used up long before the last."""


@needs_root
def test_full_disk_is_pushback_and_readiness_until_space_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = make_producer_signer()
    envelopes = [
        seal_batch(token_events(400, label=f"full-{i}"), producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer)
        for i in range(BATCHES)
    ]
    with tmpfs(tmp_path / "disk", "48m") as disk:
        ledger = disk / "ledger.db"
        make_ledger(ledger, capsys)
        keys = api_keys(ledger)
        producer = {"Authorization": keys["producer"], "Content-Type": "application/json"}
        auditor = {"Authorization": keys["auditor"]}
        with serving(ledger, tmp_path / "server.log", ["--block-seconds", "0.2"]) as served:
            with httpx.Client(base_url=served.url, timeout=30.0) as client:
                assert client.post("/v1/batches", content=envelopes[0], headers=producer).status_code == 200
                filler = disk / "filler"
                fill(filler)

                refused = []
                for i, envelope in enumerate(envelopes[1:], start=1):
                    response = client.post("/v1/batches", content=envelope, headers=producer)
                    assert response.status_code in (200, 503), response.text
                    if response.status_code == 503:
                        assert response.headers["content-type"] == PROBLEM_JSON
                        assert int(response.headers["retry-after"]) >= 1
                        assert response.json()["type"].endswith(":storage-full"), response.text
                        refused.append(i)
                assert refused, "the full disk never refused a batch"

                assert client.get("/healthz").status_code == 200  # alive: a restart would not free space
                ready = client.get("/readyz", headers=auditor)
                assert ready.status_code == 503, ready.text
                assert ready.headers["content-type"] == PROBLEM_JSON
                assert int(ready.headers["retry-after"]) >= 1

                filler.unlink()
                ready = client.get("/readyz", headers=auditor)
                assert ready.status_code == 200, ready.text
                for i in refused:
                    response = client.post("/v1/batches", content=envelopes[i], headers=producer)
                    assert response.status_code == 200, response.text
                    assert not any(r["duplicate"] for r in response.json()["receipts"])
            assert served.stop() == 0
        log = served.output.read_text()
        assert "Traceback" not in log, log
        assert sum("storage" in line and "full" in line for line in log.splitlines()) <= 2 * len(refused), log
        report = verify_ledger(str(ledger), workers=1)
        assert report.ok, report.problems
        assert report.size >= 2 + BATCHES * 400  # two key entries, every event, seals
