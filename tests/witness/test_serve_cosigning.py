"""``lineage serve --witness``: a witness that is down never blocks ingest, the lag shows in the metrics,
and once the witness is up the served checkpoint carries its cosignature. Real processes, real HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import TOKEN_SECRET_ENV_VAR, main
from lineage_ledger.core.cosignature import verify_cosignatures
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR
from lineage_ledger.service.auth import ApiKeyStore
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_events
from tests.service.serving import free_port, wait_healthy
from tests.witness.test_witness_server import ORIGIN, make_witness

DEADLINE_SECONDS = 60.0


def _lag(metrics_url: str) -> float | None:
    text = httpx.get(metrics_url, timeout=5.0).text
    m = re.search(r'^lineage_witness_lag_entries\{[^}]*witness="witness\.test/w1"[^}]*\} (\S+)$', text, re.M)
    return None if m is None else float(m.group(1))


def test_a_down_witness_delays_cosigning_but_never_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "served.db"
    assert main(["init", "--ledger", str(ledger), "--origin", ORIGIN]) == 0
    public = make_producer_signer().public_key.hex()
    register = ["keys", "register", "--ledger", str(ledger), "--producer", PRODUCER, "--key-id", PRODUCER_KEY_ID]
    assert main([*register, "--public-key", public]) == 0
    witness = make_witness(tmp_path, capsys, ledger, "witness.test/w1")  # not started yet
    producer_key = ApiKeyStore.load(f"{ledger}.apikeys.json").create("producer", PRODUCER)[1]
    auditor_key = ApiKeyStore.load(f"{ledger}.apikeys.json").create("auditor")[1]
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in (DEFAULT_KEY_ENV_VAR, TOKEN_SECRET_ENV_VAR)}
    output = tmp_path / "server.log"
    script = Path(sys.executable).parent / "lineage"
    command = [str(script), "serve", "--ledger", str(ledger), "--port", str(port), "--block-seconds", "0.3"]
    command += ["--witness", witness.spec, "--cosign-seconds", "0.2", "--metrics-port", str(metrics_port)]
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_healthy(url, process, output)
        envelope = seal_batch(token_events(6), producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
        with httpx.Client(base_url=url, timeout=10.0) as client:
            auditor = {"Authorization": f"Bearer {auditor_key}"}
            response = client.post(
                "/v1/batches",
                content=envelope,
                headers={"Authorization": f"Bearer {producer_key}", "Content-Type": "application/json"},
            )
            assert response.status_code == 200, response.text
            last = response.json()["receipts"][-1]["index"]

            deadline = time.monotonic() + DEADLINE_SECONDS
            while True:  # sealed by age, and the cosigner has counted the witness's lag
                latest = client.get("/v1/checkpoints/latest", headers=auditor).json()
                lag = _lag(metrics_url)
                if latest["size"] > last and lag is not None and lag >= latest["size"]:
                    break
                assert time.monotonic() < deadline, f"no seal or no lag metric: {latest}, {lag}"
                time.sleep(0.1)  # polling a condition with a deadline
            assert verify_cosignatures(latest["note"], [witness.key]) == []

            witness.start()
            try:
                while True:  # the cosigner retries (with its backoff) until the witness answers
                    note = client.get("/v1/checkpoints/latest", headers=auditor).json()["note"]
                    if verify_cosignatures(note, [witness.key]):
                        break
                    assert time.monotonic() < deadline + DEADLINE_SECONDS, output.read_text()
                    time.sleep(0.2)  # polling a condition with a deadline
                while _lag(metrics_url) != 0:
                    assert time.monotonic() < deadline + DEADLINE_SECONDS, "the lag never went back to 0"
                    time.sleep(0.1)  # polling a condition with a deadline
            finally:
                witness.kill()
        process.send_signal(signal.SIGINT)  # a graceful stop ends the cosigning thread too
        assert process.wait(timeout=30) == 0, output.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
