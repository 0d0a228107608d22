"""The ledger server is SIGKILLed and restarted while five producer processes emit through the SDK.

After recovery every event is present exactly once, each producer's events are in emit order, and the
ledger's chains, blocks and checkpoints verify.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lineage_ledger.cli.main import TOKEN_SECRET_ENV_VAR, main
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.note import parse_verifier_key, verifier_key
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, load_signer, write_signer_key
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.service.auth import ApiKeyStore
from lineage_ledger.store import open_store
from tests.service.serving import free_port, wait_healthy

PRODUCERS = 5
EVENTS_EACH = 400
DEADLINE_S = 120.0

_PRODUCER_SCRIPT = textwrap.dedent(
    """
    import sys, time, uuid_utils
    from lineage_ledger.core.crypto import token_fingerprint
    from lineage_ledger.core.hlc import format_reading
    from lineage_ledger.emitter import Emitter, HttpTransport
    from lineage_ledger.keys import load_signer

    name, keyfile, url, api_key, spool, count = sys.argv[1:7]
    emitter = Emitter(name, name + "-k", load_signer(keyfile), HttpTransport(url, api_key=api_key),
                      spool_dir=spool, batch_size=25, linger_ms=5)
    for n in range(int(count)):
        token = token_fingerprint(b"crash-test-fingerprint-secret", f"{name}-{n // 4}")
        kind = "ISSUED" if n % 4 == 0 else "USED"
        emitter.emit({"event_id": str(uuid_utils.uuid7()), "event_type": kind, "kind": "token",
                      "occurred_at": format_reading(time.time_ns(), 0), "payload": {"resource": f"/r/{n}"},
                      "schema_version": 1, "token_id": token})
        if n % 50 == 49:
            print("emitted", n + 1, flush=True)
    delivered = emitter.close(timeout=float(sys.argv[7]))
    print("closed", delivered, emitter.metrics(), flush=True)
    """
)


def _serve(ledger: Path, port: int, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "lineage"),
                "serve",
                "--ledger",
                str(ledger),
                "--port",
                str(port),
                "--block-seconds",
                "0.5",
                "--block-size",
                "200",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log)
    except AssertionError:
        process.kill()
        raise
    return process


def _size(ledger: Path) -> int:
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM entries WHERE event_id IS NOT NULL").fetchone()[0])
    finally:
        db.close()


@pytest.mark.crash
def test_server_killed_while_five_producers_emit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "served.db"
    env = {k: v for k, v in os.environ.items() if k not in (DEFAULT_KEY_ENV_VAR, TOKEN_SECRET_ENV_VAR)}
    assert main(["init", "--ledger", str(ledger)]) == 0
    keys = ApiKeyStore(ledger.with_name(ledger.name + ".apikeys.json"))
    producers = []
    for i in range(PRODUCERS):
        name = f"svc-{i}"
        signer = Ed25519Signer.generate(name)
        keyfile = tmp_path / f"{name}.key"
        write_signer_key(keyfile, signer)
        register = ["keys", "register", "--ledger", str(ledger), "--producer", name, "--key-id", f"{name}-k"]
        assert main([*register, "--public-key", signer.public_key.hex()]) == 0
        _, api_key = keys.create("producer", name)
        producers.append((name, keyfile, api_key))
    capsys.readouterr()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "server.log"
    server = _serve(ledger, port, server_log, env)
    script = tmp_path / "producer.py"
    script.write_text(_PRODUCER_SCRIPT)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                name,
                str(keyfile),
                url,
                api_key,
                str(tmp_path / f"spool-{name}"),
                str(EVENTS_EACH),
                str(DEADLINE_S),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for name, keyfile, api_key in producers
    ]
    try:
        # kill the server once some, but not all, events are committed
        deadline = time.monotonic() + DEADLINE_S
        while _size(ledger) < PRODUCERS * EVENTS_EACH // 5:
            assert time.monotonic() < deadline, "producers made no progress"
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        killed_at = _size(ledger)
        assert killed_at < PRODUCERS * EVENTS_EACH
        server = _serve(ledger, port, server_log, env)
        outputs = []
        for child in children:
            out, _ = child.communicate(timeout=DEADLINE_S + 30)
            outputs.append(out)
            assert child.returncode == 0, out
            assert "closed True" in out, out
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)

    store = open_store(str(ledger), readonly=True)  # the entries' canonical bytes, however they are kept
    try:
        entries = [e for e in store.entries(0, store.size()) if e.event_id is not None]
    finally:
        store.close()
    rows = [(e.index, e.event_id, *_producer_and_resource(e.body)) for e in entries]
    event_ids = [r[1] for r in rows]
    assert len(event_ids) == len(set(event_ids)) == PRODUCERS * EVENTS_EACH  # every event, exactly once
    for name, _, _ in producers:
        resources = [r[3] for r in rows if r[2] == name]
        assert resources == [f"/r/{n}" for n in range(EVENTS_EACH)]  # in emit order
    log = load_signer(ledger.with_name(ledger.name + ".key"))  # the key from outside the database
    report = verify_ledger(str(ledger), verifier=parse_verifier_key(verifier_key(log.name, log.public_key)), workers=1)
    assert report.ok, report.problems[:5]


def _producer_and_resource(body: bytes) -> tuple[str, str]:
    entry = json.loads(body)
    return entry["producer"], entry["event"]["payload"].get("resource")
