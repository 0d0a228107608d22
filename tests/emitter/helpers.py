"""What the emitter tests share: events with a sequence number in them, test doubles, and ledger read-back.

Every test event records its place in the emitting order as ``payload.resource = "/<label>/<n>"``, so a
test can read the ledger back and check order, gaps and doubles in one comparison.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import uuid_utils

from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.core.entry import EventEntry, decode_entry
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.model import TokenEvent, TokenPayload, decode_event
from lineage_ledger.errors import TransportError
from lineage_ledger.ledger.writer import Ledger, Receipt
from lineage_ledger.store import open_store
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    SETTINGS,
    make_log_signer,
    make_producer_signer,
)

SECRET = b"emitter-tests-fingerprint-secret"
WAIT_S = 20.0
"""Upper bound on any wait for a condition; a healthy run meets every condition in well under a second."""


def sequenced_event(label: str, n: int, *, holder: str = "tok") -> TokenEvent:
    """A USED event whose resource says it is number ``n`` of the run ``label``."""
    return TokenEvent(
        event_id=str(uuid_utils.uuid7()),
        event_type="USED",
        token_id=token_fingerprint(SECRET, f"raw-{label}-{holder}"),
        occurred_at=format_reading(time.time_ns(), 0),
        schema_version=1,
        payload=TokenPayload(resource=f"/{label}/{n}", outcome="ALLOW"),
    )


def create_ledger(path: Path) -> None:
    """A ledger file at ``path`` with the test producer's key registered."""
    with Ledger.create(str(path), make_log_signer(), settings=SETTINGS) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)


def open_ledger(path: Path) -> Ledger:
    """The ledger at ``path`` opened for writing."""
    return Ledger.open(str(path), make_log_signer(), settings=SETTINGS)


def recorded_events(ledger: Ledger | Path) -> list[TokenEvent]:
    """Every token event in the log (an open ledger, or a file read while another process writes it)."""
    if isinstance(ledger, Path):
        store = open_store(str(ledger), readonly=True)
        try:
            rows = list(store.entries(0, store.size()))
        finally:
            store.close()
    else:
        rows = list(ledger.store.entries(0, ledger.size))
    out: list[TokenEvent] = []
    for row in rows:
        entry = decode_entry(row.body)
        if isinstance(entry, EventEntry):
            event = decode_event(bytes(entry.event))
            if isinstance(event, TokenEvent):
                out.append(event)
    return out


def sequence(events: Sequence[TokenEvent]) -> list[tuple[str, int]]:
    """(label, n) of each event's resource ``/<label>/<n>``, in the given order."""
    out: list[tuple[str, int]] = []
    for event in events:
        resource = event.payload.resource or ""
        _, label, n = resource.split("/")
        out.append((label, int(n)))
    return out


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


class RecordingSink:
    """An EventSink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[TokenEvent] = []
        self._n = 0

    def emit(self, event: TokenEvent) -> None:
        self.events.append(event)

    def now(self) -> str:
        self._n += 1
        return format_reading(1_763_891_234_000_000_000, self._n)


class GatedTransport:
    """Wraps another transport; ``send`` waits while the gate is closed, or fails while ``down``."""

    def __init__(self, inner: object, *, down: bool = False, gated: bool = False) -> None:
        self.inner = inner
        self.down = down
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.entered = threading.Event()
        self.calls = 0

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        self.calls += 1
        self.entered.set()
        if not self.gate.wait(WAIT_S):
            raise TransportError("gate never opened")
        if self.down:
            raise TransportError("ledger down (test)")
        return self.inner.send(envelope)  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        self.gate.set()


class LineReader:
    """Complete lines a child process writes, read on a thread so the test can wait with a timeout."""

    def __init__(self, stream: object) -> None:
        import queue

        self._lines: queue.Queue[str | None] = queue.Queue()
        self._empty = queue.Empty
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._lines.put(line)
        self._lines.put(None)

    def next(self, timeout: float = WAIT_S) -> str | None:
        """The next line (it may lack its newline if the writer died mid-line), or None at end of output."""
        try:
            return self._lines.get(timeout=timeout)
        except self._empty:
            raise AssertionError(f"the child printed nothing for {timeout} s") from None

    def rest(self) -> list[str]:
        """Every line still to come, up to the end of output (call once the child has exited)."""
        out: list[str] = []
        while (line := self.next()) is not None:
            out.append(line)
        self._thread.join(WAIT_S)
        return out
