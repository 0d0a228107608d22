"""Pipeline: the next group is sequenced while the last one commits; answers only once durable, in order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lineage_ledger.errors import ConflictError, LedgerError, StoreError
from lineage_ledger.ledger.pipeline import Done, Pipeline, PipelineError
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import AppendResult, Ledger, LedgerSettings
from lineage_ledger.store.base import BatchWrite, EntryRow, OffsetRow
from lineage_ledger.store.sqlite import SQLiteStore
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    event_log,
    make_log_signer,
    make_producer_signer,
    signed_envelopes,
    token_events,
)

SETTINGS = LedgerSettings(block_size=25, block_seconds=1e9)


class _FailingStore(SQLiteStore):
    """A real SQLite store whose writes number ``fail_at`` (counting from 0) and on raise before writing."""

    def __init__(self, url: str, fail_at: set[int]) -> None:
        super().__init__(url)
        self.fail_at = fail_at
        self.writes = 0

    def write(self, batch: BatchWrite) -> None:
        n = self.writes
        self.writes += 1
        if n in self.fail_at:
            raise StoreError(f"injected failure of write {n}")
        super().write(batch)


def _ledger(path: Path, fail_at: set[int] | None = None) -> Ledger:
    Ledger.create(str(path), make_log_signer(), settings=SETTINGS).close()
    ledger = Ledger(_FailingStore(str(path), fail_at or set()), make_log_signer(), settings=SETTINGS)
    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    return ledger


def _results(done: Sequence[Done[Any]]) -> list[AppendResult]:
    out = []
    for d in done:
        for outcome in d.outcomes:
            assert isinstance(outcome, AppendResult), outcome
            out.append(outcome)
    return out


def test_pipelined_appends_make_the_same_log_and_answer_in_order(tmp_path: Path) -> None:
    envelopes = signed_envelopes(token_events(120, tokens=7), 6)
    plain = _ledger(tmp_path / "plain.db")
    for envelope in envelopes:
        plain.append(envelope)
    ledger = _ledger(tmp_path / "piped.db")
    landed: list[Done[int]] = []
    with Pipeline[int](ledger) as pipe:
        for n, envelope in enumerate(envelopes):
            landed += pipe.submit([ledger.check(envelope)], [[OffsetRow("t", 0, n + 1)]], tag=n)
            assert pipe.in_flight <= 1
        landed += pipe.drain()
    assert [d.tag for d in landed] == list(range(len(envelopes)))
    assert event_log(ledger) == event_log(plain)
    receipts = [r for res in _results(landed) for r in res.receipts]
    assert [r.event_id for r in receipts] == [r.event_id for r in ledger.store.entries(0, ledger.size) if r.event_id]
    assert ledger.store.offsets("t") == {0: len(envelopes)}
    # the blocks of 25 were sealed at group boundaries, as one by one
    assert [c.size for c in ledger.store.checkpoints()] == [c.size for c in plain.store.checkpoints()]
    ledger.seal()
    ledger.close()
    plain.close()
    assert verify_ledger(str(tmp_path / "piped.db")).ok


def test_a_group_is_answered_only_once_it_is_durable(tmp_path: Path) -> None:
    envelopes = signed_envelopes(token_events(60, tokens=5), 5)
    ledger = _ledger(tmp_path / "l.db")
    reader = SQLiteStore(str(tmp_path / "l.db"), readonly=True)  # another connection: sees only commits
    answered = 0
    with Pipeline[int](ledger) as pipe:
        for n, envelope in enumerate(envelopes):
            for done in pipe.submit([ledger.check(envelope)], tag=n):
                (result,) = _results([done])
                last = result.receipts[-1].index
                assert reader.entry(last).event_id == result.receipts[-1].event_id
                assert reader.size() >= done.size
                answered += 1
        for done in pipe.drain():
            (result,) = _results([done])
            assert reader.entry(result.receipts[-1].index).event_id == result.receipts[-1].event_id
            answered += 1
    assert answered == len(envelopes)
    reader.close()
    ledger.close()


def test_a_retried_batch_in_flight_comes_back_as_duplicates(tmp_path: Path) -> None:
    first, second = signed_envelopes(token_events(20, tokens=2), 10)
    ledger = _ledger(tmp_path / "l.db")
    with Pipeline[str](ledger) as pipe:
        landed = pipe.submit([ledger.check(first)], tag="first")
        landed += pipe.submit([ledger.check(first)], tag="again")  # sequenced while "first" commits
        landed += pipe.submit([ledger.check(second)], tag="second")
        landed += pipe.drain()
    assert [d.tag for d in landed] == ["first", "again", "second"]
    again = landed[1].outcomes[0]
    assert isinstance(again, AppendResult)
    assert all(r.duplicate for r in again.receipts)
    assert [r.index for r in again.receipts] == [
        r.index for r in _results(landed[:1])[0].receipts
    ]  # the original receipts
    assert len(event_log(ledger)) == 20
    ledger.close()
    assert verify_ledger(str(tmp_path / "l.db")).ok


def test_an_event_id_with_other_bytes_refuses_its_batch_only(tmp_path: Path) -> None:
    events = token_events(10, tokens=1)
    reused = json.loads(events[3])
    reused["payload"] = {"reason": "other bytes"}
    reused["event_type"] = "REVOKED"
    (batch,) = signed_envelopes(events, 10)
    (clash,) = signed_envelopes([json.dumps(reused, separators=(",", ":"), sort_keys=True).encode()], 1)
    (later,) = signed_envelopes(token_events(5, tokens=1, label="later"), 5)
    ledger = _ledger(tmp_path / "l.db")
    with Pipeline[int](ledger) as pipe:
        landed = pipe.submit([ledger.check(batch)], [[OffsetRow("t", 0, 1)]], tag=0)
        landed += pipe.submit([ledger.check(clash), ledger.check(later)], [[OffsetRow("t", 0, 2)], []], tag=1)
        landed += pipe.drain()
    assert [d.tag for d in landed] == [0, 1]
    refused, written = landed[1].outcomes
    assert isinstance(refused, ConflictError)
    assert isinstance(written, AppendResult)
    assert not any(r.duplicate for r in written.receipts)
    assert ledger.store.offsets("t") == {0: 1}  # the refused batch moved no position
    assert len(event_log(ledger)) == 15
    ledger.close()
    assert verify_ledger(str(tmp_path / "l.db")).ok


def test_a_failed_write_is_appended_again_with_what_was_sequenced_on_top(tmp_path: Path) -> None:
    envelopes = signed_envelopes(token_events(80, tokens=6), 8)
    plain = _ledger(tmp_path / "plain.db")
    for envelope in envelopes:
        plain.append(envelope)
    # write 0 is the key registration; the pipeline's 4th group fails once
    ledger = _ledger(tmp_path / "l.db", fail_at={4})
    seen: list[EntryRow] = []
    ledger.add_listener(seen.extend)
    with Pipeline[int](ledger) as pipe:
        landed = [d for n, e in enumerate(envelopes) for d in pipe.submit([ledger.check(e)], tag=n)]
        landed += pipe.drain()
    assert [d.tag for d in landed] == list(range(len(envelopes)))
    assert all(isinstance(o, AppendResult) for d in landed for o in d.outcomes)
    assert event_log(ledger) == event_log(plain)
    # the listeners heard of every entry once, in log order
    assert [r.index for r in seen] == list(range(1, ledger.size))
    ledger.close()
    plain.close()
    assert verify_ledger(str(tmp_path / "l.db")).ok


def test_a_store_that_keeps_failing_names_the_groups_not_known_to_be_stored(tmp_path: Path) -> None:
    envelopes = signed_envelopes(token_events(40, tokens=4), 10)
    # group 2 (write 3) fails, and so does appending it again (write 4)
    ledger = _ledger(tmp_path / "l.db", fail_at={3, 4})
    pipe = Pipeline[int](ledger)
    landed = pipe.submit([ledger.check(envelopes[0])], tag=0)
    landed += pipe.submit([ledger.check(envelopes[1])], tag=1)
    landed += pipe.submit([ledger.check(envelopes[2])], tag=2)  # its write fails on the commit thread
    third = ledger.check(envelopes[3])
    with pytest.raises(PipelineError) as caught:
        pipe.submit([third], tag=3)  # finds group 2 failed and appending it again failing
    assert caught.value.pending == [2, 3]  # group 3 was sequenced on top of group 2: neither is written
    landed += pipe.drain()
    assert [d.tag for d in landed] == [0, 1]
    # the store works again: the ledger reloaded what the store holds and goes on from there
    for tag in caught.value.pending:
        assert isinstance(tag, int)
        landed += pipe.submit([ledger.check(envelopes[tag])], tag=tag)
    landed += pipe.drain()
    assert sorted(d.tag for d in landed) == [0, 1, 2, 3]
    pipe.close()
    assert len(event_log(ledger)) == 40
    ledger.close()
    assert verify_ledger(str(tmp_path / "l.db")).ok


def test_writes_outside_the_pipeline_wait_for_it(tmp_path: Path) -> None:
    envelopes = signed_envelopes(token_events(30, tokens=3), 10)
    ledger = _ledger(tmp_path / "l.db")
    with Pipeline[int](ledger) as pipe:
        landed = pipe.submit([ledger.check(envelopes[0])], tag=0)
        assert pipe.in_flight == 1
        sealed = ledger.seal()  # lands group 0 first, then seals after it
        assert pipe.in_flight == 0
        assert sealed is not None
        assert sealed.size == ledger.size
        landed += pipe.submit([ledger.check(envelopes[1])], tag=1)
        index = ledger.register_key("other", "other-1", make_producer_signer().public_key)
        landed += pipe.submit([ledger.check(envelopes[2])], tag=2)
        landed += pipe.drain()
    assert [d.tag for d in landed] == [0, 1, 2]
    results = _results(landed)
    assert results[1].receipts[-1].index < index < results[2].receipts[0].index
    ledger.close()
    assert verify_ledger(str(tmp_path / "l.db")).ok


def test_closing_the_ledger_lands_what_is_in_flight(tmp_path: Path) -> None:
    (envelope,) = signed_envelopes(token_events(10, tokens=2), 10)
    ledger = _ledger(tmp_path / "l.db")
    pipe = Pipeline[int](ledger)
    pipe.submit([ledger.check(envelope)], tag=0)
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        pipe.submit([], tag=1)
    store = SQLiteStore(str(tmp_path / "l.db"), readonly=True)
    assert store.size() == 1 + 10
    store.close()


def test_one_pipeline_per_ledger(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "l.db")
    with Pipeline[int](ledger), pytest.raises(LedgerError, match="already has an open pipeline"):
        Pipeline[int](ledger)
    with Pipeline[int](ledger) as pipe:  # closed, another may open
        assert pipe.in_flight == 0
    ledger.close()


def test_a_group_too_big_for_the_subject_cache_is_appended_at_once(tmp_path: Path) -> None:
    small = LedgerSettings(block_size=25, block_seconds=1e9, subject_cache=40)
    Ledger.create(str(tmp_path / "l.db"), make_log_signer(), settings=small).close()
    ledger = Ledger(SQLiteStore(str(tmp_path / "l.db")), make_log_signer(), settings=small)
    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    little, big = signed_envelopes(token_events(5, tokens=5, label="s"), 5) + signed_envelopes(
        token_events(20, tokens=20, label="b"), 20
    )
    with Pipeline[str](ledger) as pipe:
        landed = pipe.submit([ledger.check(little)], tag="little")
        assert pipe.in_flight == 1  # 5 events x (depth 1 + 1) x 2 = 20 subjects: fits in 40
        landed += pipe.submit([ledger.check(big)], tag="big")  # 80 > 40: lands what is in flight, then itself
        assert pipe.in_flight == 0
        assert [d.tag for d in landed] == ["little", "big"]
    assert len(event_log(ledger)) == 25
    ledger.close()
    assert verify_ledger(str(tmp_path / "l.db")).ok
