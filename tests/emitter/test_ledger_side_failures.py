"""The emitter never dead-letters an event for a failure on the ledger's side.

A real server process (tests/emitter/ledger_server.py) answers the first batches exactly as ``lineage serve``
answers each fault, from the service's own problem table: a 409 for an index already taken (what a second
writer or a stale server produces), a 500, a 503 while not ready, a 421. The emitter must retry, keep the
events spooled, and deliver every one of them once the ledger answers normally.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.model import encode_event
from lineage_ledger.emitter import Backoff, Emitter, HttpTransport
from lineage_ledger.emitter.transport import LocalTransport, refuses_events
from lineage_ledger.errors import ConflictError, InputError, PushbackError, StoreError, TransportError
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer
from tests.emitter.helpers import WAIT_S, create_ledger, open_ledger, recorded_events, sequence, sequenced_event
from tests.service.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "llk_fault_test_key"
EVENTS = 200


class FaultyLedgerServer:
    """tests/emitter/ledger_server.py in its own process, answering its first batches with ``fault``."""

    def __init__(self, db: Path, fault: str, log: Path) -> None:
        self.db, self.log = db, log
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        with log.open("a") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.emitter.ledger_server", str(db), port, API_KEY, fault],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "ready\n", log.read_text()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=WAIT_S)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def ledger_db(tmp_path: Path) -> Path:
    create_ledger(tmp_path / "ledger.db")
    return tmp_path / "ledger.db"


@pytest.fixture
def started() -> Iterator[list[FaultyLedgerServer]]:
    servers: list[FaultyLedgerServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.parametrize("fault", ["index-conflict", "store-failure", "not-ready", "misdirected"])
def test_a_ledger_side_failure_keeps_every_event_spooled_until_it_is_recorded(
    fault: str, ledger_db: Path, tmp_path: Path, started: list[FaultyLedgerServer]
) -> None:
    server = FaultyLedgerServer(ledger_db, f"{fault}:3", tmp_path / "server.err")
    started.append(server)
    spool = tmp_path / "spool"
    emitter = Emitter(
        PRODUCER,
        PRODUCER_KEY_ID,
        make_producer_signer(),
        HttpTransport(server.url, API_KEY),
        spool_dir=spool,
        batch_size=50,
        backoff=Backoff(0.01, 0.05),
    )
    for n in range(EVENTS):
        emitter.emit(sequenced_event(fault, n))
    assert emitter.flush(timeout=WAIT_S)
    metrics = emitter.metrics()
    assert emitter.close()
    assert (metrics["dead_lettered"], metrics["sent"], metrics["dropped"]) == (0, EVENTS, 0), metrics
    assert metrics["retried"] >= 1
    assert not (spool / "dead-letters.jsonl").exists()
    server.stop()
    started.clear()
    assert [item for item in sequence(recorded_events(ledger_db)) if item[0] == fault] == [
        (fault, n) for n in range(EVENTS)
    ]


def test_local_transport_retries_an_index_conflict_but_refuses_an_event_id_with_other_bytes(
    ledger_db: Path,
) -> None:
    class IndexTaken:
        def append(self, envelope: bytes) -> None:
            raise ConflictError("write refused, nothing was written: UNIQUE constraint failed: entries.idx")

    with pytest.raises(TransportError) as retried:
        LocalTransport(IndexTaken()).send(b"{}")  # type: ignore[arg-type]
    assert not refuses_events(retried.value)
    ledger = open_ledger(ledger_db)
    try:
        signer = make_producer_signer()
        event = sequenced_event("local", 0)
        same_id = msgspec.structs.replace(sequenced_event("local", 1), event_id=event.event_id)
        for sent in (event, same_id):
            envelope = seal_batch([encode_event(sent)], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer)
            if sent is event:
                LocalTransport(ledger).send(envelope)
                continue
            with pytest.raises(ConflictError) as refused:
                LocalTransport(ledger).send(envelope)
            assert refuses_events(refused.value)
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (InputError("events[2].payload.ip", "not an IP address"), True),
        (InputError("envelope", "413: body too large"), True),
        (ConflictError("events[0].event_id: e1 is already recorded at index 4 with different bytes"), True),
        (ConflictError("write refused, nothing was written: UNIQUE constraint failed: entries.idx"), False),
        (StoreError("write failed"), False),
        (TransportError("POST answered 500"), False),
        (PushbackError("not ready", 1.0), False),
        (RuntimeError("a broken transport"), False),
    ],
)
def test_only_a_judgement_of_the_events_refuses_them(error: Exception, refused: bool) -> None:
    assert refuses_events(error) is refused
