"""The Emitter in one process: order, exactly-once delivery, retries, dead letters, overflow and shutdown."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import pytest

from lineage_ledger.core.crypto import token_fingerprint
from lineage_ledger.core.hlc import parse_reading
from lineage_ledger.emitter import Backoff, Emitter, LocalTransport
from lineage_ledger.errors import (
    EnvelopeError,
    InputError,
    KeyringError,
    PushbackError,
    StoreError,
    TransportError,
)
from lineage_ledger.ledger.writer import Ledger, Receipt
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer
from tests.emitter.helpers import (
    SECRET,
    WAIT_S,
    GatedTransport,
    create_ledger,
    open_ledger,
    recorded_events,
    sequence,
    sequenced_event,
    wait_for,
)

FAST = Backoff(initial=0.002, maximum=0.02)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    create_ledger(tmp_path / "ledger.db")
    with open_ledger(tmp_path / "ledger.db") as opened:
        yield opened


def _emitter(transport: object, **kwargs: object) -> Emitter:
    kwargs.setdefault("backoff", FAST)
    return Emitter(PRODUCER, PRODUCER_KEY_ID, make_producer_signer(), transport, **kwargs)  # type: ignore[arg-type]


class Scripted:
    """A LocalTransport whose first calls do something else: raise, or append and then lose the answer."""

    def __init__(self, ledger: Ledger, script: Sequence[Exception | str]) -> None:
        self.inner = LocalTransport(ledger)
        self.script = list(script)
        self.calls: list[float] = []

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        self.calls.append(time.monotonic())
        step = self.script.pop(0) if self.script else None
        if step == "lose-answer":
            self.inner.send(envelope)
            raise TransportError("connection reset after the ledger committed (test)")
        if isinstance(step, Exception):
            raise step
        return self.inner.send(envelope)

    def close(self) -> None:
        pass


def test_events_arrive_in_emit_order_exactly_once(tmp_path: Path, ledger: Ledger) -> None:
    emitter = _emitter(LocalTransport(ledger), spool_dir=tmp_path / "spool", batch_size=64)
    for n in range(2000):
        emitter.emit(sequenced_event("order", n, holder=f"t{n % 7}"))
    assert emitter.flush(WAIT_S)
    assert emitter.close()
    assert sequence(recorded_events(ledger)) == [("order", n) for n in range(2000)]


def test_each_threads_events_keep_their_order(tmp_path: Path, ledger: Ledger) -> None:
    emitter = _emitter(LocalTransport(ledger), spool_dir=tmp_path / "spool", batch_size=50)

    def run(label: str) -> None:
        for n in range(300):
            emitter.emit(sequenced_event(label, n))

    threads = [threading.Thread(target=run, args=(f"th{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert emitter.close(WAIT_S)
    got = sequence(recorded_events(ledger))
    assert len(got) == 1200
    for i in range(4):
        assert [n for label, n in got if label == f"th{i}"] == list(range(300))


def test_sync_means_spooled_and_flush_means_acknowledged(tmp_path: Path, ledger: Ledger) -> None:
    transport = GatedTransport(LocalTransport(ledger), gated=True)
    emitter = _emitter(transport, spool_dir=tmp_path / "spool")
    for n in range(10):
        emitter.emit(sequenced_event("gate", n))
    assert emitter.sync(WAIT_S)
    assert emitter.metrics()["spooled"] == 10
    assert not emitter.flush(timeout=0.05)  # the ledger has not answered yet
    transport.gate.set()
    assert emitter.flush(WAIT_S)
    assert emitter.metrics()["sent"] == 10
    assert emitter.close()


def test_a_lost_acknowledgement_is_resent_and_answered_as_a_duplicate(tmp_path: Path, ledger: Ledger) -> None:
    transport = Scripted(ledger, ["lose-answer"])
    emitter = _emitter(transport, spool_dir=tmp_path / "spool", batch_size=1000, linger_ms=50)
    for n in range(20):
        emitter.emit(sequenced_event("lost", n))
    assert emitter.flush(WAIT_S)
    metrics = emitter.metrics()
    emitter.close()
    assert metrics["retried"] == 1
    assert metrics["sent"] == 20
    assert metrics["duplicates"] >= 1
    assert sequence(recorded_events(ledger)) == [("lost", n) for n in range(20)]


def test_retryable_errors_are_retried_and_retry_after_is_honoured(tmp_path: Path, ledger: Ledger) -> None:
    transport = Scripted(
        ledger,
        [TransportError("down"), KeyringError("key not registered yet"), PushbackError("busy", retry_after=0.2)],
    )
    emitter = _emitter(transport, spool_dir=tmp_path / "spool")
    emitter.emit(sequenced_event("retry", 0))
    assert emitter.flush(WAIT_S)
    metrics = emitter.metrics()
    emitter.close()
    assert (metrics["retried"], metrics["sent"], metrics["dead_lettered"]) == (3, 1, 0)
    assert transport.calls[3] - transport.calls[2] >= 0.2


def test_an_unexpected_transport_failure_is_retried(tmp_path: Path, ledger: Ledger) -> None:
    transport = Scripted(ledger, [RuntimeError("a bug in a transport")])
    emitter = _emitter(transport)
    emitter.emit(sequenced_event("bug", 0))
    assert emitter.flush(WAIT_S)
    assert emitter.metrics()["retried"] == 1
    emitter.close()


def test_the_one_refused_event_is_dead_lettered_and_the_rest_delivered(tmp_path: Path, ledger: Ledger) -> None:
    transport = Scripted(ledger, [InputError("events[2].payload.ip", "not an address")])
    emitter = _emitter(transport, spool_dir=tmp_path / "spool", linger_ms=50)
    events = [sequenced_event("one", n) for n in range(5)]
    for event in events:
        emitter.emit(event)
    assert emitter.flush(WAIT_S)
    metrics = emitter.metrics()
    emitter.close()
    assert (metrics["sent"], metrics["dead_lettered"], metrics["retried"]) == (4, 1, 0)
    assert sequence(recorded_events(ledger)) == [("one", n) for n in (0, 1, 3, 4)]
    (letter,) = [json.loads(line) for line in (tmp_path / "spool" / "dead-letters.jsonl").read_text().splitlines()]
    assert letter["field"] == "events[2].payload.ip"
    assert letter["reason"] == "not an address"
    assert letter["event"]["event_id"] == events[2].event_id


def test_a_refusal_that_names_no_event_dead_letters_only_the_event_at_fault(tmp_path: Path, ledger: Ledger) -> None:
    class RefusesOne(LocalTransport):
        """Refuses any envelope holding ``/whole/2`` as a whole, without naming the event (as a 413 would)."""

        def send(self, envelope: bytes) -> Sequence[Receipt]:
            if b'"/whole/2"' in envelope:  # the events are in the envelope verbatim
                raise EnvelopeError("payload", "malformed")
            return super().send(envelope)

    emitter = _emitter(RefusesOne(ledger), spool_dir=tmp_path / "spool", batch_size=8, linger_ms=50)
    for n in range(8):
        emitter.emit(sequenced_event("whole", n))
    assert emitter.flush(WAIT_S)
    metrics = emitter.metrics()
    emitter.close()
    assert (metrics["sent"], metrics["dead_lettered"]) == (7, 1)
    assert sequence(recorded_events(ledger)) == [("whole", n) for n in range(8) if n != 2]
    letter = json.loads((tmp_path / "spool" / "dead-letters.jsonl").read_text())
    assert letter["error"] == "EnvelopeError"
    assert letter["event"]["payload"]["resource"] == "/whole/2"


def test_an_event_id_reused_with_other_bytes_is_refused_by_the_ledger(tmp_path: Path, ledger: Ledger) -> None:
    emitter = _emitter(LocalTransport(ledger), spool_dir=tmp_path / "spool")
    first = sequenced_event("conflict", 0)
    emitter.emit(first)
    assert emitter.flush(WAIT_S)
    emitter.emit(msgspec.structs.replace(sequenced_event("conflict", 1), event_id=first.event_id))
    emitter.emit(sequenced_event("conflict", 2))
    assert emitter.flush(WAIT_S)
    metrics = emitter.metrics()
    emitter.close()
    assert (metrics["sent"], metrics["dead_lettered"]) == (2, 1)
    assert sequence(recorded_events(ledger)) == [("conflict", 0), ("conflict", 2)]
    letter = json.loads((tmp_path / "spool" / "dead-letters.jsonl").read_text())
    assert letter["error"] == "ConflictError"
    assert letter["event"]["payload"]["resource"] == "/conflict/1"


def test_events_that_fail_validation_are_dead_lettered_without_their_bytes(tmp_path: Path, ledger: Ledger) -> None:
    emitter = _emitter(LocalTransport(ledger), spool_dir=tmp_path / "spool")
    good = sequenced_event("valid", 0)
    emitter.emit({"kind": "token", "event_type": "USED"})
    emitter.emit(b'{"kind": "token"}')
    emitter.emit(msgspec.structs.replace(good, token_id="not-a-fingerprint"))
    emitter.emit({"event_id": good.event_id, "payload": {"x": 1.5}})
    emitter.emit(good)
    assert emitter.flush(WAIT_S)
    metrics = emitter.metrics()
    emitter.close()
    assert (metrics["sent"], metrics["dead_lettered"]) == (1, 4)
    letters = [json.loads(line) for line in (tmp_path / "spool" / "dead-letters.jsonl").read_text().splitlines()]
    assert [letter["error"] for letter in letters] == ["InputError", "InputError", "InputError", "InputError"]
    assert all("event" not in letter for letter in letters)
    assert "not-a-fingerprint" not in json.dumps(letters)  # the refused value is not repeated
    assert letters[3]["event_id"] == good.event_id


def test_emit_refuses_what_is_not_an_event_and_anything_after_close(ledger: Ledger) -> None:
    emitter = _emitter(LocalTransport(ledger))
    with pytest.raises(InputError, match="expected an event"):
        emitter.emit(["not", "an", "event"])  # type: ignore[arg-type]
    emitter.close()
    with pytest.raises(InputError, match="closed"):
        emitter.emit(sequenced_event("late", 0))
    assert emitter.close() is True  # idempotent
    assert emitter.flush(0)
    assert emitter.sync(0)


def test_overflow_drop_counts_what_it_drops(ledger: Ledger) -> None:
    transport = GatedTransport(LocalTransport(ledger), gated=True)
    emitter = _emitter(transport, max_queue=4, overflow="drop", linger_ms=0)
    emitter.emit(sequenced_event("drop", 0))
    assert transport.entered.wait(WAIT_S)  # the sender holds event 0; the memory spool and queue fill next
    for n in range(1, 50):
        emitter.emit(sequenced_event("drop", n))
    metrics = emitter.metrics()
    assert metrics["dropped"] >= 50 - 1 - 4 - 4
    assert metrics["dropped"] == metrics["overflowed"]
    transport.gate.set()
    assert emitter.flush(WAIT_S)
    metrics = emitter.metrics()
    emitter.close()
    assert metrics["sent"] + metrics["dropped"] == metrics["emitted"] + metrics["dropped"] == 50
    assert [n for _, n in sequence(recorded_events(ledger))] == sorted(n for _, n in sequence(recorded_events(ledger)))


def test_overflow_block_waits_for_room(ledger: Ledger) -> None:
    transport = GatedTransport(LocalTransport(ledger), gated=True)
    emitter = _emitter(transport, max_queue=2, overflow="block", linger_ms=0)
    emitter.emit(sequenced_event("block", 0))
    assert transport.entered.wait(WAIT_S)
    finished = threading.Event()

    def emit_more() -> None:
        for n in range(1, 12):
            emitter.emit(sequenced_event("block", n))
        finished.set()

    worker = threading.Thread(target=emit_more)
    worker.start()
    wait_for(lambda: emitter.metrics()["queued"] == 2, "a full queue")
    assert not finished.wait(0.2)  # blocked, not dropping
    assert emitter.metrics()["dropped"] == 0
    transport.gate.set()
    assert finished.wait(WAIT_S)
    worker.join(WAIT_S)
    assert emitter.flush(WAIT_S)
    emitter.close()
    assert sequence(recorded_events(ledger)) == [("block", n) for n in range(12)]


def test_overflow_block_gives_up_after_its_timeout(ledger: Ledger) -> None:
    transport = GatedTransport(LocalTransport(ledger), gated=True)
    emitter = _emitter(transport, max_queue=1, overflow="block", block_timeout=0.05, linger_ms=0)
    emitter.emit(sequenced_event("bt", 0))
    assert transport.entered.wait(WAIT_S)
    for n in range(1, 6):
        emitter.emit(sequenced_event("bt", n))
    assert emitter.metrics()["dropped"] >= 1
    transport.gate.set()
    emitter.close(WAIT_S)


def test_overflow_spool_writes_to_disk_on_the_callers_thread_in_order(tmp_path: Path, ledger: Ledger) -> None:
    transport = GatedTransport(LocalTransport(ledger), gated=True)
    # The spooler lingers for ten seconds, so the queue of one stays full and every further emit overflows.
    emitter = _emitter(transport, spool_dir=tmp_path / "spool", max_queue=1, linger_ms=10_000)
    events = [sequenced_event("ovf", n) for n in range(6)]
    for event in events:
        emitter.emit(event)
    metrics = emitter.metrics()
    # Each overflowing emit takes the queued event with it: events 1, 3 and 5 overflowed, carrying 0, 2 and 4.
    assert metrics["overflowed"] == 3
    assert metrics["spooled"] == 6
    assert metrics["dropped"] == 0
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "spool").glob("*.seg"))
    positions = [on_disk.index(e.event_id.encode()) for e in events]
    assert positions == sorted(positions)  # on disk before emit returned, in emit order
    transport.gate.set()
    assert emitter.flush(WAIT_S)
    emitter.close()
    assert sequence(recorded_events(ledger)) == [("ovf", n) for n in range(6)]


def test_close_keeps_undelivered_events_for_the_next_emitter(tmp_path: Path, ledger: Ledger) -> None:
    down = GatedTransport(LocalTransport(ledger), down=True)
    emitter = _emitter(down, spool_dir=tmp_path / "spool")
    for n in range(30):
        emitter.emit(sequenced_event("later", n))
    started = time.monotonic()
    assert emitter.close(timeout=0.2) is False
    assert time.monotonic() - started < WAIT_S
    assert emitter.metrics()["dropped"] == 0
    assert emitter.metrics()["pending"] == 30
    next_one = _emitter(LocalTransport(ledger), spool_dir=tmp_path / "spool")
    assert next_one.flush(WAIT_S)
    next_one.close()
    assert sequence(recorded_events(ledger)) == [("later", n) for n in range(30)]


def test_two_emitters_cannot_share_a_spool(tmp_path: Path, ledger: Ledger) -> None:
    first = _emitter(LocalTransport(ledger), spool_dir=tmp_path / "spool")
    with pytest.raises(StoreError, match="in use"):
        _emitter(LocalTransport(ledger), spool_dir=tmp_path / "spool")
    first.close()


def test_close_without_a_spool_counts_what_it_abandons(ledger: Ledger) -> None:
    emitter = _emitter(GatedTransport(LocalTransport(ledger), down=True))
    for n in range(7):
        emitter.emit(sequenced_event("gone", n))
    assert emitter.close(timeout=0.1) is False
    metrics = emitter.metrics()
    assert (metrics["dropped"], metrics["pending"], metrics["queued"], metrics["emitted"]) == (7, 0, 0, 7)


def test_now_is_strictly_increasing_across_threads(ledger: Ledger) -> None:
    emitter = _emitter(LocalTransport(ledger), clock=lambda: 1_763_891_234_000_000_000)
    readings: list[list[str]] = [[] for _ in range(4)]

    def take(out: list[str]) -> None:
        out.extend(emitter.now() for _ in range(500))

    threads = [threading.Thread(target=take, args=(r,)) for r in readings]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    emitter.close()
    every = [r for chunk in readings for r in chunk]
    assert len(set(every)) == 2000
    assert all(chunk == sorted(chunk) for chunk in readings)
    assert parse_reading(max(every)).physical_ns >= 1_763_891_234_000_000_000


def test_metrics_account_for_every_event_and_hold_no_content(tmp_path: Path, ledger: Ledger) -> None:
    emitter = _emitter(LocalTransport(ledger), spool_dir=tmp_path / "spool")
    for n in range(100):
        emitter.emit(sequenced_event("count", n))
    emitter.emit({"kind": "token"})
    assert emitter.flush(WAIT_S)
    m = emitter.metrics()
    emitter.close()
    assert m["emitted"] == m["sent"] + m["dead_lettered"] + m["dropped"] + m["queued"] + m["pending"] == 101
    assert all(isinstance(v, int) for v in m.values())
    assert token_fingerprint(SECRET, "raw-count-tok") not in json.dumps(m)


def test_configuration_is_checked_up_front(ledger: Ledger) -> None:
    transport = LocalTransport(ledger)
    for bad in (
        {"overflow": "spool"},  # needs a spool_dir
        {"overflow": "lose"},
        {"batch_size": 0},
        {"batch_size": 10_001},
        {"max_queue": 0},
    ):
        with pytest.raises(InputError):
            _emitter(transport, **bad)
    with pytest.raises(InputError, match="producer"):
        Emitter("Not A Producer", PRODUCER_KEY_ID, make_producer_signer(), transport)


def test_backoff_grows_with_jitter_and_respects_retry_after() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, rng=random.Random(7))
    for attempt in range(12):
        delay = backoff.delay(attempt)
        assert 0.1 <= delay <= min(2.0, 0.1 * 2**attempt) + 1e-9
    assert len({backoff.delay(5) for _ in range(20)}) > 1  # jittered
    assert backoff.delay(0, retry_after=3.0) == 3.0
