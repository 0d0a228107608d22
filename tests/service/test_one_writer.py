"""A running ``lineage serve`` is its ledger's one writer: a second server and CLI writers are refused at once,
naming it, and the server goes on answering as before (the refused writer wrote nothing, so nothing jams)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.service.auth import ApiKeyStore
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_events
from tests.service import test_server
from tests.service.serving import Server, free_port

server = test_server.server  # the fixture: a ledger with the test producer's key, served by `lineage serve`

LINEAGE = str(Path(sys.executable).parent / "lineage")


def _refused(result: subprocess.CompletedProcess[str], server: Server) -> None:
    assert result.returncode == 3, result.stdout + result.stderr
    text = " ".join(result.stderr.split())  # rich may wrap long lines
    assert "LockedError" in text, text
    assert f"process {server.process.pid} (lineage serve)" in text, text
    assert "lineage emit --url" in text, text


def _lineage(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "300"}
    return subprocess.run([LINEAGE, *argv], capture_output=True, text=True, timeout=120, check=False, env=env)


def _post_batch(server: Server, first: int) -> httpx.Response:
    producer_key = ApiKeyStore.load(f"{server.ledger}.apikeys.json").create("producer", PRODUCER)[1]
    events = token_events(6, label=f"w{first}", start_ns=time.time_ns())
    envelope = seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    headers = {"Authorization": f"Bearer {producer_key}", "Content-Type": "application/json"}
    return httpx.post(f"{server.url}/v1/batches", content=envelope, headers=headers, timeout=20.0)


def test_a_second_server_on_the_same_ledger_does_not_start(server: Server, tmp_path: Path) -> None:
    second = _lineage("serve", "--ledger", str(server.ledger), "--port", str(free_port()))
    _refused(second, server)
    assert _post_batch(server, 1).status_code == 200


def test_cli_writers_are_refused_while_the_server_runs_and_it_keeps_working(server: Server, tmp_path: Path) -> None:
    auditor = {"Authorization": f"Bearer {ApiKeyStore.load(f'{server.ledger}.apikeys.json').create('auditor')[1]}"}
    before = httpx.get(f"{server.url}/readyz", headers=auditor, timeout=10.0)
    assert before.status_code == 200, before.text
    events = tmp_path / "more.jsonl"
    events.write_bytes(b"\n".join(token_events(4, label="cli")) + b"\n")
    _refused(_lineage("ingest", str(events), "--ledger", str(server.ledger)), server)
    key = tmp_path / "other.key"
    register = ("keys", "register", "--ledger", str(server.ledger), "--producer", "svc-other", "--key-id", "k1")
    _refused(_lineage(*register, "--generate", str(key)), server)

    answer = _post_batch(server, 2)
    assert answer.status_code == 200, answer.text
    ready = httpx.get(f"{server.url}/readyz", headers=auditor, timeout=10.0)
    assert ready.status_code == 200, ready.text
    assert server.stop() == 0
    # the server let go of the lock when it stopped: the CLI may write now
    after = _lineage("ingest", str(events), "--ledger", str(server.ledger), "--json")
    assert after.returncode == 0, after.stderr
