"""``lineage serve`` as a real process on a loopback port, driven over real HTTP with httpx."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.service.auth import ApiKeyStore, load_token_secret
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_event, token_events
from tests.service.serving import Server, make_ledger, serving
from tests.service.test_secrets import jwt_like, needles


@pytest.fixture
def server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Server]:
    """A ledger made with the CLI, the test producer's key registered, and ``lineage serve`` running on it."""
    ledger = tmp_path / "served.db"
    make_ledger(ledger, capsys)
    with serving(ledger, tmp_path / "server.log", ["--block-seconds", "0.5"]) as served:
        yield served


def test_lineage_serve_over_real_http(server: Server) -> None:
    producer_key = ApiKeyStore.load(f"{server.ledger}.apikeys.json").create("producer", PRODUCER)[1]
    producer = {"Authorization": f"Bearer {producer_key}"}
    signer = make_producer_signer()
    raw = jwt_like("served")
    secret = load_token_secret(f"{server.ledger}.secret")  # created by serve, 0600
    tid = token_fingerprint(secret, raw)
    events = [*token_events(8), token_event("ISSUED", tid, time.time_ns(), user_id="dora")]
    envelope = seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer)

    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert client.get("/v1/entries/0", headers=producer).status_code == 403
        response = client.post(
            "/v1/batches", content=envelope, headers={**producer, "Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text
        receipts = response.json()["receipts"]
        assert [r["event_id"] for r in receipts] == [json.loads(e)["event_id"] for e in events]
        last = receipts[-1]["index"]

        # a key created while the service runs is accepted without a restart
        auditor_key = ApiKeyStore.load(f"{server.ledger}.apikeys.json").create("auditor")[1]
        auditor = {"Authorization": f"Bearer {auditor_key}"}
        deadline = time.monotonic() + 15
        while True:  # the block seals by age (0.5 s), checked by the service's tick every second
            latest = client.get("/v1/checkpoints/latest", headers=auditor)
            assert latest.status_code == 200, latest.text
            if latest.json()["size"] > last:
                break
            assert time.monotonic() < deadline, "the block was never sealed"
            time.sleep(0.1)
        assert client.get(f"/v1/entries/{last}", headers=auditor).json()["status"] == "sealed"

        assert client.post("/v1/introspect", data={"token": raw}, headers=producer).json()["active"] is True
        assert client.post("/v1/revoke", data={"token": raw}, headers=producer).status_code == 200
        assert client.post("/v1/introspect", data={"token": raw}, headers=producer).json() == {"active": False}
        assert client.post(f"/v1/revoke?token={raw}", headers=producer).status_code == 400

    assert server.stop() == 0
    log = server.output.read_bytes()
    assert b"POST /v1/batches 200" in log
    assert b"GET /v1/checkpoints/latest 200" in log
    for path in [server.output, *server.ledger.parent.glob("served.db*")]:
        data = path.read_bytes()
        for needle in needles(raw):
            assert needle not in data, path
    report = verify_ledger(str(server.ledger), workers=1)
    assert report.ok, report.problems


def test_docs_openapi_and_readiness_answer_without_a_key_and_load_nothing_from_elsewhere(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert client.get("/readyz").json() == {"ready": True}
        document = client.get("/openapi.json")
        assert document.status_code == 200
        assert "/v1/batches" in document.json()["paths"]

        page = client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "SwaggerUIBundle" in html
        # Every script, stylesheet and icon the page loads comes from this server, and so does the document.
        assert "http://" not in html
        assert "https://" not in html
        assert "url: '/openapi.json'" in html
        assert '"validatorUrl": null' in html
        loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert {Path(u).name for u in loaded} == {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}
        kinds = {"swagger-ui-bundle.js": "javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
        for url in loaded:
            assert url.startswith("/"), url
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert kinds[Path(url).name] in asset.headers["content-type"], (url, asset.headers["content-type"])
            assert len(asset.content) > 1000, url
