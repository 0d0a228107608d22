"""Crash safety with real processes: a writer SIGKILLed at random moments never loses an acknowledged batch.

A child process appends signed batches in a loop and prints each batch's receipts only after ``append``
returned (the batch is committed). The parent waits for a seeded-random number of those acknowledgements,
lets the child run a seeded-random moment longer, kills it with SIGKILL, and checks that the ledger opens,
verifies, and holds every acknowledged event at its acknowledged index. Blocks are tiny, so kills land
around seals too.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from lineage_ledger.core.entry import EventEntry, decode_entry
from lineage_ledger.core.envelope import BatchStatement
from lineage_ledger.core.model import decode_event
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from tests.conftest import (
    LOG_NAME,
    LOG_SEED,
    PRODUCER,
    PRODUCER_KEY_ID,
    PRODUCER_SEED,
    make_log_signer,
    make_producer_signer,
)

pytestmark = pytest.mark.crash

KILLS = 5
BATCH = 4
CRASH_SETTINGS = LedgerSettings(block_size=10, block_seconds=1e9)
"""A seal every three batches of four events, so many kills fall near one."""
TIMEOUT_S = 60.0

WRITER = """
import json
import sys
import time

import uuid_utils

from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.model import TokenEvent, encode_event
from lineage_ledger.ledger.writer import Ledger, LedgerSettings

url, log_name, log_seed, producer, key_id, producer_seed, label, batch, block_size = sys.argv[1:]
log = Ed25519Signer(log_name, bytes.fromhex(log_seed))
signer = Ed25519Signer(producer, bytes.fromhex(producer_seed))
ledger = Ledger.open(url, log, settings=LedgerSettings(block_size=int(block_size), block_seconds=1e9))
steps = ["ISSUED"] + ["USED"] * (int(batch) - 2) + ["REVOKED"]
n = 0
while True:
    token = token_fingerprint(b"crash-test-fingerprint-secret", f"{label}-{n}")
    at = time.time_ns()
    events = [
        encode_event(
            TokenEvent(
                event_id=str(uuid_utils.uuid7()),
                event_type=step,
                token_id=token,
                occurred_at=format_reading(at + k, 0),
                schema_version=1,
            )
        )
        for k, step in enumerate(steps)
    ]
    result = ledger.append(seal_batch(events, producer=producer, key_id=key_id, signer=signer))
    receipts = [[r.index, r.event_id] for r in result.receipts]
    print(json.dumps({"last": receipts[-1][0], "receipts": receipts}), flush=True)
    n += 1
"""


class Acknowledgements:
    """Complete lines a child wrote to stdout, read on a thread so the parent can wait with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def next(self) -> str | None:
        """The next line, or None at end of output; fails the test after TIMEOUT_S without one."""
        try:
            return self._lines.get(timeout=TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"the writer printed nothing for {TIMEOUT_S} s")

    def rest(self) -> list[str]:
        """Every line still to come, up to the end of output (call once the child is dead)."""
        out: list[str] = []
        while (line := self.next()) is not None:
            out.append(line)
        self._thread.join(TIMEOUT_S)
        return out


def _record(line: str, acknowledged: dict[int, str]) -> int:
    """Fold one acknowledgement in; returns the batch's last index. A line cut short by the kill is no ack."""
    if not line.endswith("\n"):
        return -1
    ack = json.loads(line)
    receipts = [(int(index), str(event_id)) for index, event_id in ack["receipts"]]
    assert ack["last"] == receipts[-1][0]
    assert [i for i, _ in receipts] == list(range(receipts[0][0], receipts[0][0] + BATCH))
    for index, event_id in receipts:
        assert acknowledged.setdefault(index, event_id) == event_id
    return int(ack["last"])


def _check_after_crash(url: str, acknowledged: dict[int, str]) -> int:
    """The ledger opens, verifies, holds every acknowledged event and only whole batches; returns its size."""
    with Ledger.open(url, make_log_signer(), settings=CRASH_SETTINGS) as ledger:
        size = ledger.size
        verifier = ledger.log_verifier()
        assert max(acknowledged) < size
        for index, event_id in acknowledged.items():
            row = ledger.store.entry(index)
            assert row.event_id == event_id
            entry = decode_entry(row.body)
            assert isinstance(entry, EventEntry)
            assert decode_event(bytes(entry.event)).event_id == event_id
        events_per_envelope: dict[str, int] = {}
        for row in ledger.store.entries(0, size):
            entry = decode_entry(row.body)
            if isinstance(entry, EventEntry):
                events_per_envelope[entry.envelope] = events_per_envelope.get(entry.envelope, 0) + 1
        stored = list(ledger.store.envelope_first_indexes())
        for digest, _ in stored:
            statement = json.loads(ledger.store.envelope(digest).payload)
            assert BatchStatement(**statement).count == events_per_envelope[digest.hex()]
        assert len(events_per_envelope) == len(stored)
    report = verify_ledger(url, verifier=verifier, workers=1)
    assert report.ok, report.problems
    assert report.size == size
    return size


def test_sigkilled_writer_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    url = str(tmp_path / "crash.db")
    producer = make_producer_signer()
    with Ledger.create(url, make_log_signer(), settings=CRASH_SETTINGS) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, producer.public_key)
    script = tmp_path / "writer.py"
    script.write_text(WRITER, "utf-8")
    rng = random.Random(20261123)
    acknowledged: dict[int, str] = {}
    sizes: list[int] = []
    for kill in range(KILLS):
        args = [url, LOG_NAME, LOG_SEED.hex(), PRODUCER, PRODUCER_KEY_ID, PRODUCER_SEED.hex()]
        args += [f"kill{kill}", str(BATCH), str(CRASH_SETTINGS.block_size)]
        with (tmp_path / f"writer-{kill}.err").open("w") as errors:
            child = subprocess.Popen(
                [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=errors, text=True
            )
            try:
                assert child.stdout is not None
                acks = Acknowledgements(child.stdout)
                last = -1
                for _ in range(rng.randint(3, 12)):
                    line = acks.next()
                    assert line is not None, (tmp_path / f"writer-{kill}.err").read_text()
                    last = _record(line, acknowledged)
                # A seeded-random moment more, during which the child must still be writing.
                with pytest.raises(subprocess.TimeoutExpired):
                    child.wait(timeout=rng.uniform(0.0, 0.03))
                os.kill(child.pid, signal.SIGKILL)
                assert child.wait(timeout=TIMEOUT_S) == -signal.SIGKILL
                for line in acks.rest():
                    last = max(last, _record(line, acknowledged))
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait(timeout=TIMEOUT_S)
                if child.stdout is not None:
                    child.stdout.close()
        size = _check_after_crash(url, acknowledged)
        assert size > last
        sizes.append(size)
    assert sizes == sorted(sizes)
    with Ledger.open(url, make_log_signer(), settings=CRASH_SETTINGS) as ledger:
        assert len(ledger.store.checkpoints()) >= KILLS  # seals happened while the writers ran
        ledger.seal()
        final = ledger.size
        assert ledger.sealed_size == final
    assert _check_after_crash(url, acknowledged) == final
