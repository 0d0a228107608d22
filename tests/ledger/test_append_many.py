"""Ledger.check + Ledger.append_many: several batches in one transaction, the same log as one by one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.errors import ConflictError, KeyringError
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store.base import OffsetRow
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    event_log,
    make_log_signer,
    make_producer_signer,
    signed_envelopes,
    token_events,
)

SETTINGS = LedgerSettings(block_size=30, block_seconds=1e9)


def _ledger(path: Path) -> Ledger:
    ledger = Ledger.create(str(path), make_log_signer(), settings=SETTINGS)
    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    return ledger


def test_many_batches_in_one_commit_make_the_same_log(tmp_path: Path) -> None:
    events = token_events(100, tokens=9)
    envelopes = signed_envelopes(events, 7)
    one_by_one = _ledger(tmp_path / "a.db")
    for envelope in envelopes:
        one_by_one.append(envelope)
    together = _ledger(tmp_path / "b.db")
    results = together.append_many(
        [together.check(e) for e in envelopes[:10]], offsets=[OffsetRow("t", 0, 10), OffsetRow("t", 1, 4)]
    )
    results += together.append_many([together.check(e) for e in envelopes[10:]])
    # the same events, subjects, verdicts and chains, in the same order
    assert event_log(together) == event_log(one_by_one)
    assert [r.event_id for res in results for r in res.receipts] == [
        r.event_id for r in together.store.entries(0, together.size) if r.event_id
    ]
    assert together.store.offsets("t") == {0: 10, 1: 4}
    # the block of 30 filled inside the first transaction: it was sealed at its end
    assert [c.size for c in together.store.checkpoints()] == [1 + 70 + 1, 1 + 70 + 1 + 30 + 1]
    together.seal()
    one_by_one.seal()
    together.close()
    one_by_one.close()
    assert verify_ledger(str(tmp_path / "b.db")).ok


def test_a_recorded_event_in_any_batch_writes_nothing(tmp_path: Path) -> None:
    events = token_events(30, tokens=3)
    envelopes = signed_envelopes(events, 10)
    ledger = _ledger(tmp_path / "l.db")
    ledger.append(envelopes[1])
    size = ledger.size
    with pytest.raises(ConflictError):
        ledger.append_many([ledger.check(e) for e in envelopes], offsets=[OffsetRow("t", 0, 3)])
    assert ledger.size == size
    assert ledger.store.offsets("t") == {}
    # one by one, the recorded batch comes back as duplicates and the others are written
    results = [ledger.append_checked(ledger.check(e)) for e in envelopes]
    assert [all(r.duplicate for r in res.receipts) for res in results] == [False, True, False]
    assert len(event_log(ledger)) == 30
    ledger.close()


def test_one_event_in_two_batches_of_one_commit_is_refused_whole(tmp_path: Path) -> None:
    events = token_events(10, tokens=2)
    signer = make_producer_signer()
    first = seal_batch(events[:6], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer)
    again = seal_batch(events[5:], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer)  # events[5] twice
    ledger = _ledger(tmp_path / "l.db")
    size = ledger.size
    with pytest.raises(ConflictError):
        ledger.append_many([ledger.check(first), ledger.check(again)])
    assert ledger.size == size


def test_check_refuses_what_append_refuses_and_writes_nothing(tmp_path: Path) -> None:
    from lineage_ledger.core.crypto import Ed25519Signer

    ledger = _ledger(tmp_path / "l.db")
    stranger = Ed25519Signer("stranger", bytes(range(5, 37)))
    envelope = seal_batch(token_events(3), producer="stranger", key_id="stranger-1", signer=stranger)
    with pytest.raises(KeyringError):
        ledger.check(envelope)
    assert ledger.size == 1


def test_append_together_answers_each_batch(tmp_path: Path) -> None:
    from lineage_ledger.core.model import read_subject
    from lineage_ledger.errors import ConflictError as Conflict

    ledger = _ledger(tmp_path / "l.db")
    first, second = signed_envelopes(token_events(20, tokens=2), 10)
    # together, in one transaction, with each batch's own position
    results = ledger.append_together([ledger.check(first), ledger.check(second)], [[OffsetRow("t", 0, 1)], []])
    assert [type(r).__name__ for r in results] == ["AppendResult", "AppendResult"]
    assert ledger.store.offsets("t") == {0: 1}
    # a retry of one, a new batch and one reusing an event id with other bytes: answered one by one
    events = token_events(10, tokens=1, label="fresh")
    fresh = signed_envelopes(events, 10)[0]
    reused = json.loads(events[0])
    reused["payload"] = {"reason": "other bytes"}
    reused["event_type"] = "REVOKED"
    clash = signed_envelopes([json.dumps(reused, separators=(",", ":"), sort_keys=True).encode()], 1)[0]
    results = ledger.append_together(
        [ledger.check(first), ledger.check(fresh), ledger.check(clash)],
        [[OffsetRow("t", 0, 2)], [OffsetRow("t", 0, 3)], [OffsetRow("t", 0, 4)]],
    )
    assert not isinstance(results[0], Exception)
    assert all(r.duplicate for r in results[0].receipts)
    assert not isinstance(results[1], Exception)
    assert not any(r.duplicate for r in results[1].receipts)
    assert isinstance(results[2], Conflict)
    assert ledger.store.offsets("t") == {0: 3}  # the conflicting batch moved no position
    assert len(event_log(ledger)) == 30
    assert read_subject(events[0])[1] in {r.event_id for r in ledger.store.entries(0, ledger.size)}
    ledger.close()
