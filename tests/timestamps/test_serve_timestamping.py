"""``lineage serve --tsa-url``: a TSA that is down never blocks ingest, and once it is up the latest
checkpoint gets a timestamp that verifies under the TSA's root. Real processes, a real TSA, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import TOKEN_SECRET_ENV_VAR, main
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR
from lineage_ledger.service.auth import ApiKeyStore
from lineage_ledger.store import open_store
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_events
from tests.service.serving import free_port, wait_healthy
from tests.timestamps.tsa import make_authority, serve_authority

DEADLINE_SECONDS = 60.0


def _timestamped(ledger: Path) -> list[int]:
    store = open_store(str(ledger), readonly=True)
    try:
        return store.timestamped_sizes()
    finally:
        store.close()


def test_a_down_tsa_delays_timestamps_but_never_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "served.db"
    assert main(["init", "--ledger", str(ledger)]) == 0
    public = make_producer_signer().public_key.hex()
    register = ["keys", "register", "--ledger", str(ledger), "--producer", PRODUCER, "--key-id", PRODUCER_KEY_ID]
    assert main([*register, "--public-key", public]) == 0
    producer_key = ApiKeyStore.load(f"{ledger}.apikeys.json").create("producer", PRODUCER)[1]
    tsa_dir, tsa_port = tmp_path / "tsa", free_port()
    make_authority(tsa_dir)  # its certificates exist; it is not listening yet
    ca = str(tsa_dir / "ca.pem")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (DEFAULT_KEY_ENV_VAR, TOKEN_SECRET_ENV_VAR)}
    output = tmp_path / "server.log"
    script = Path(sys.executable).parent / "lineage"
    command = [str(script), "serve", "--ledger", str(ledger), "--port", str(port), "--block-seconds", "0.3"]
    command += ["--tsa-url", f"http://127.0.0.1:{tsa_port}/tsr", "--tsa-cert", ca, "--timestamp-seconds", "0.2"]
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, output)
        envelope = seal_batch(token_events(6), producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
        with httpx.Client(base_url=url, timeout=10.0) as client:
            response = client.post(
                "/v1/batches",
                content=envelope,
                headers={"Authorization": f"Bearer {producer_key}", "Content-Type": "application/json"},
            )
        assert response.status_code == 200, response.text  # the TSA is down: ingest goes on
        last = response.json()["receipts"][-1]["index"]
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:  # sealed by age; the timestamper has failed to reach the TSA at least once
            store = open_store(str(ledger), readonly=True)
            try:
                latest = store.latest_checkpoint()
            finally:
                store.close()
            if latest is not None and latest.size > last and b"timestamp of checkpoint" in output.read_bytes():
                break
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.1)  # polling a condition with a deadline
        assert _timestamped(ledger) == []

        authority = serve_authority(tsa_dir, port=tsa_port)
        next(authority)
        try:
            while latest.size not in _timestamped(ledger):  # retried, with its backoff, until the TSA answers
                assert time.monotonic() < deadline + DEADLINE_SECONDS, output.read_text()
                time.sleep(0.2)  # polling a condition with a deadline
        finally:
            authority.close()
        process.send_signal(signal.SIGINT)  # a graceful stop ends the timestamping thread too
        assert process.wait(timeout=30) == 0, output.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    capsys.readouterr()
    code = main(["timestamp", "verify", "--ledger", str(ledger), "--tsa-cert", ca, "--size", str(latest.size)])
    assert code == 0, capsys.readouterr().out
