"""Deeply nested JSON, in a request body or a line of ``lineage ingest``, is bad input like any other: a 400
(or 422) problem naming what is wrong, one log line, the connection kept; exit 2 naming the line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.encoding import MAX_JSON_DEPTH
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.service.problems import PROBLEM_JSON
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_event, token_id
from tests.service.serving import Server, api_keys, make_ledger, serving

OBJECTS = b'{"a":' * 100_000
ARRAYS = b"[" * 200_000


def nested_event(depth: int) -> bytes:
    """A canonical token event whose payload holds a list nested ``depth`` levels deep."""
    event = json.loads(token_event("USED", token_id("deep"), time.time_ns(), resource="/r", outcome="ALLOW"))
    event["payload"]["z"] = "[" * depth + "]" * depth  # placeholder, replaced below so no parser recurses
    text = json.dumps(event, sort_keys=True, separators=(",", ":"))
    return text.replace('"' + "[" * depth + "]" * depth + '"', "[" * depth + "]" * depth).encode()


def signed(events: list[bytes]) -> bytes:
    return seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())


@pytest.fixture
def server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Server, dict[str, str]]]:
    ledger = tmp_path / "nested.db"
    make_ledger(ledger, capsys)
    keys = api_keys(ledger)
    with serving(ledger, tmp_path / "server.log") as served:
        yield served, keys


NESTED = "nested deeper than"

# (name, role, path, body, status, what the detail must say, the field the problem must name or None for any)
CASES: list[tuple[str, str, str, bytes, int, str, str | None]] = [
    ("batch of nested objects", "producer", "/v1/batches", OBJECTS, 400, NESTED, "envelope"),
    ("batch of nested arrays", "producer", "/v1/batches", ARRAYS, 400, "Expected `object`, got `array`", "envelope"),
    ("event past a parser", "producer", "/v1/batches", signed([nested_event(5_000)]), 400, NESTED, None),
    ("event past the limit", "producer", "/v1/batches", signed([nested_event(200)]), 422, NESTED, None),
    ("key registration", "admin", "/v1/keys", OBJECTS, 400, NESTED, None),
    ("key revocation", "admin", "/v1/keys/some-key/revoke", ARRAYS, 400, NESTED, None),
    ("verification", "auditor", "/v1/verify", OBJECTS, 400, NESTED, None),
]


def test_nested_bodies_are_refused_as_bad_input_with_one_log_line(server: tuple[Server, dict[str, str]]) -> None:
    served, keys = server
    assert MAX_JSON_DEPTH < 200
    with httpx.Client(base_url=served.url, timeout=30.0) as client:
        before = served.output.read_text().splitlines()
        for name, role, path, body, status, detail, field in CASES:
            headers = {"Authorization": keys[role], "Content-Type": "application/json"}
            response = client.post(path, content=body, headers=headers)
            assert response.status_code == status, (name, response.text)
            assert response.headers["content-type"] == PROBLEM_JSON, name
            problem = response.json()
            assert detail in problem["detail"], (name, problem)
            if field is not None:
                assert problem["field"] == field, (name, problem)
            if status == 422:
                assert problem["field"].startswith("events[0].payload.z"), problem
        # the connection was kept throughout, and still serves
        assert client.get("/readyz", headers={"Authorization": keys["auditor"]}).status_code == 200
    assert served.stop() == 0
    added = served.output.read_text().splitlines()[len(before) :]
    requests = [line for line in added if " POST " in line]
    assert len(requests) == len(CASES), added
    assert not [line for line in added if "Traceback" in line or "ERROR" in line], added


def test_ingest_names_the_nested_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "ingest.db"
    assert main(["init", "--ledger", str(ledger)]) == 0
    fine = token_event("ISSUED", token_id("fine"), time.time_ns(), user_id="u")
    for depth in (200, 100_000):
        lines = tmp_path / f"nested-{depth}.jsonl"
        lines.write_bytes(fine + b"\n" + nested_event(depth) + b"\n")
        capsys.readouterr()
        assert main(["ingest", str(lines), "--ledger", str(ledger)]) == 2
        err = capsys.readouterr().err
        assert "line 2" in err, err
        assert "nested" in err, err
