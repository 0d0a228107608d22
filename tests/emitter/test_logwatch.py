"""The emitter's watch over the log: a real ``lineage serve`` restarted on an earlier copy of its database.

Before the rollback, every checkpoint the ledger shows extends the one before (checked with the ledger's
consistency proofs). After it, the ledger shows an older checkpoint and cannot prove the newer one it
showed before: the transport says so loudly (callback, metric, ERROR log, ``check()`` raises).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.note import parse_verifier_key
from lineage_ledger.core.receipt import Receipt
from lineage_ledger.emitter.logwatch import LogWatch
from lineage_ledger.emitter.transport import HttpTransport
from lineage_ledger.errors import InconsistencyError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, write_signer_key
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.service.auth import ApiKeyStore
from lineage_ledger.store import open_store
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    SETTINGS,
    append_in_batches,
    make_log_signer,
    make_producer_signer,
    token_events,
)
from tests.service.serving import Server, free_port, wait_healthy

WAIT_S = 30.0


def _serve(ledger: Path, port: int, log: Path) -> Server:
    env = {k: v for k, v in os.environ.items() if k != DEFAULT_KEY_ENV_VAR}
    script = Path(sys.executable).parent / "lineage"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(script), "serve", "--ledger", str(ledger), "--port", str(port), "--block-seconds", "0.2"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    served = Server(f"http://127.0.0.1:{port}", process, ledger, log)
    wait_healthy(served.url, process, log)
    return served


def _send_until_sealed(transport: HttpTransport, label: str, above: int) -> list[Receipt]:
    """Send small batches until an answer carries a checkpoint larger than ``above`` (the server seals every
    0.2 s); returns every receipt."""
    receipts: list[Receipt] = []
    deadline = time.monotonic() + WAIT_S
    n = 0
    while transport.log_watch.latest is None or transport.log_watch.latest.size <= above:
        assert time.monotonic() < deadline, "the server showed no new checkpoint"
        events = token_events(2, label=f"{label}-{n}")
        envelope = seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
        receipts.extend(transport.send(envelope))
        n += 1
    return receipts


def test_a_rolled_back_ledger_is_reported_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = tmp_path / "served.db"
    assert main(["init", "--ledger", str(ledger)]) == 0
    register = ["keys", "register", "--ledger", str(ledger), "--producer", PRODUCER, "--key-id", PRODUCER_KEY_ID]
    assert main([*register, "--public-key", make_producer_signer().public_key.hex()]) == 0
    api_key = ApiKeyStore.load(f"{ledger}.apikeys.json").create("producer", PRODUCER)[1]
    store = open_store(str(ledger), readonly=True)
    log_key = parse_verifier_key(store.meta()["verifier_key"])
    store.close()
    seen: list[InconsistencyError] = []
    port, log = free_port(), tmp_path / "server.log"
    transport = HttpTransport(f"http://127.0.0.1:{port}", api_key, log_key=log_key, on_inconsistency=seen.append)
    try:
        server = _serve(ledger, port, log)
        first = _send_until_sealed(transport, "before", 0)
        assert all(r.promised is not None for r in first)
        assert server.stop() == 0
        backup = tmp_path / "backup.db"
        with closing(sqlite3.connect(ledger)) as src, closing(sqlite3.connect(backup)) as dst:
            src.backup(dst)  # the operator's copy from earlier
        early = transport.log_watch.latest
        assert early is not None

        server = _serve(ledger, port, log)
        _send_until_sealed(transport, "after", early.size)  # every new checkpoint extends the last: quiet
        assert seen == []
        assert transport.log_watch.inconsistencies == 0
        assert server.stop() == 0

        for suffix in ("", "-wal", "-shm"):
            Path(f"{ledger}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(backup, ledger)  # the rollback
        server = _serve(ledger, port, log)
        with caplog.at_level(logging.ERROR, logger="lineage_ledger.emitter"):
            envelope = seal_batch(
                token_events(2, label="rolled"),
                producer=PRODUCER,
                key_id=PRODUCER_KEY_ID,
                signer=make_producer_signer(),
            )
            transport.send(envelope)
        assert len(seen) == 1
        # an older checkpoint it cannot prove the newer one from, or one of the same size with another root
        assert re.search("rollback|a fork", str(seen[0])), seen[0]
        assert transport.log_watch.inconsistencies == 1
        assert any("NOT CONSISTENT" in record.getMessage() for record in caplog.records)
        with pytest.raises(InconsistencyError):
            transport.log_watch.check()
        assert server.stop() == 0
    finally:
        transport.close()


def _lineage(*args: str, api_key: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != DEFAULT_KEY_ENV_VAR} | {"LINEAGE_API_KEY": api_key}
    with (stdin or Path(os.devnull)).open("rb") as source:
        return subprocess.run(
            [str(Path(sys.executable).parent / "lineage"), *args],
            stdin=source,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )


def test_lineage_emit_saves_receipts_that_receipt_verify_checks_over_http(tmp_path: Path) -> None:
    ledger = tmp_path / "served.db"
    assert main(["init", "--ledger", str(ledger)]) == 0
    register = ["keys", "register", "--ledger", str(ledger), "--producer", PRODUCER, "--key-id", PRODUCER_KEY_ID]
    assert main([*register, "--public-key", make_producer_signer().public_key.hex()]) == 0
    keys = ApiKeyStore.load(f"{ledger}.apikeys.json")
    producer_key, auditor_key = keys.create("producer", PRODUCER)[1], keys.create("auditor")[1]
    store = open_store(str(ledger), readonly=True)
    log_key = store.meta()["verifier_key"]
    store.close()
    backup = tmp_path / "backup.db"
    shutil.copyfile(ledger, backup)  # before any event: what a rollback restores
    key_file = tmp_path / "producer.key"
    write_signer_key(key_file, make_producer_signer())
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(e + b"\n" for e in token_events(12, label="cli")))
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    receipts = tmp_path / "receipts.jsonl"

    server = _serve(ledger, port, log)
    emit = ["emit", "--url", url, "--producer", PRODUCER, "--key", str(key_file), "--key-id", PRODUCER_KEY_ID]
    sent = _lineage(
        *emit, "--receipts", str(receipts), "--log-verifier-key", log_key, api_key=producer_key, stdin=events
    )
    assert sent.returncode == 0, sent.stderr
    saved = [json.loads(line) for line in receipts.read_text("utf-8").splitlines()]
    assert len(saved) == 12
    assert all("promise" in r and "path" in r for r in saved)
    check = ["receipt", "verify", str(receipts), "--key", log_key, "--url", url, "--json"]
    held = _lineage(*check, api_key=auditor_key)
    assert held.returncode == 0, held.stdout + held.stderr
    assert {r["status"] for r in json.loads(held.stdout)["receipts"]} <= {"sealed", "pending"}
    assert server.stop() == 0

    for suffix in ("", "-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, ledger)  # the rollback
    server = _serve(ledger, port, log)
    dropped = _lineage(*check, api_key=auditor_key)
    assert dropped.returncode == 1, dropped.stdout + dropped.stderr
    # every receipt proves the loss: its entry is gone, or (once the restarted server has appended its own
    # entries at those indices, which it may do before the check) the index holds another entry
    statuses = [r["status"] for r in json.loads(dropped.stdout)["receipts"]]
    assert len(statuses) == 12
    assert set(statuses) <= {"dropped", "rewritten"}
    assert server.stop() == 0


def _ledger_with_checkpoints(path: Path, label: str, counts: list[int]) -> tuple[Ledger, list[str]]:
    """A ledger sealed after each of ``counts`` events; its checkpoint notes, oldest first."""
    ledger = Ledger.create(str(path), make_log_signer(), settings=SETTINGS)
    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    notes = []
    for n, count in enumerate(counts):
        append_in_batches(ledger, token_events(count, label=f"{label}-{n}"), make_producer_signer())
        checkpoint = ledger.seal()
        assert checkpoint is not None
        notes.append(checkpoint.note)
    return ledger, notes


def test_a_stale_answer_is_quiet_and_a_fork_of_the_same_key_is_not(tmp_path: Path) -> None:
    ledger, notes = _ledger_with_checkpoints(tmp_path / "a.db", "a", [3, 4, 5])
    fork, fork_notes = _ledger_with_checkpoints(tmp_path / "b.db", "b", [3, 4, 6])  # same key, other entries
    serving = [ledger]  # which ledger answers the watch's proof requests
    seen: list[InconsistencyError] = []

    def proof(old: int, new: int) -> list[bytes]:
        return serving[0].consistency_proof(old, new)

    watch = LogWatch(proof, log_key=ledger.log_verifier(), on_inconsistency=seen.append)
    try:
        watch.observe(notes[0])
        watch.observe(notes[2])
        watch.observe(notes[1])  # an answer that read its checkpoint before the previous answer did
        assert seen == []
        assert watch.latest_note == notes[2]

        serving[0] = fork  # the operator now serves the fork, which proves its own tree honestly
        watch.observe(fork_notes[2])  # larger than the last checkpoint seen, but not an extension of it
        assert len(seen) == 1
        assert "not one append-only log" in str(seen[0])
        assert watch.inconsistencies == 1
        assert watch.latest_note == notes[2]  # the watch keeps the last good checkpoint
        with pytest.raises(InconsistencyError):
            watch.check()
    finally:
        ledger.close()
        fork.close()
