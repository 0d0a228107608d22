"""What the log key signed beside the log: each acknowledgement's promise, and the chain of checkpoints.

The attacker rewrites the SQLite file (triggers dropped, as in test_verify_tamper). Without the promises,
deleting acknowledged entries that no checkpoint covered yet ("pending") went unnoticed even with the log
key; so did deleting a row of the checkpoints table.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.merkle import leaf_hash, root_of
from lineage_ledger.core.receipt import Receipt, SignedPromise
from lineage_ledger.ledger.commitments import checkpoint_chain_problems
from lineage_ledger.ledger.verify import VerifyReport, verify_ledger
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store
from lineage_ledger.store.base import CheckpointRow
from tests.conftest import (
    SETTINGS,
    BuiltLedger,
    append_in_batches,
    make_log_signer,
    make_producer_signer,
    token_events,
)

PENDING = 50


@pytest.fixture
def pending_ledger(built_ledger: BuiltLedger) -> tuple[BuiltLedger, list[Receipt], int]:
    """The sealed test ledger plus ``PENDING`` acknowledged events that no checkpoint covers yet."""
    unsealing = dataclasses.replace(SETTINGS, block_size=10_000)
    with Ledger.open(built_ledger.url, make_log_signer(), settings=unsealing) as ledger:
        sealed = ledger.size
        receipts = append_in_batches(
            ledger, token_events(PENDING, label="pending"), make_producer_signer(), batch_size=10
        )
        assert ledger.sealed_size == sealed  # nothing of it is covered by a checkpoint
    return built_ledger, receipts, sealed


@contextmanager
def tampering(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path)) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        yield db
        db.commit()


def verify(ledger: BuiltLedger) -> VerifyReport:
    return verify_ledger(ledger.url, verifier=ledger.verifier, workers=1)


def kinds(report: VerifyReport) -> set[str]:
    return {p.kind for p in report.problems}


def test_every_receipt_carries_a_signed_promise_of_its_entry(
    pending_ledger: tuple[BuiltLedger, list[Receipt], int],
) -> None:
    built, receipts, _ = pending_ledger
    with closing(sqlite3.connect(built.path)) as db:
        stored = dict(db.execute("SELECT idx, leaf FROM entries").fetchall())
    store = open_store(built.url, readonly=True)  # the entries' canonical bytes, however the store keeps them
    try:
        bodies = {row.index: row.body for row in store.entries(0, store.size())}
    finally:
        store.close()
    for receipt in receipts:
        assert receipt.promised is not None
        promise = receipt.promised.signed.verify(built.verifier)
        assert promise.covers(receipt.index)
        assert receipt.leaf == leaf_hash(bodies[receipt.index]) == stored[receipt.index]
        leaves = [stored[i] for i in range(promise.first, promise.size)]
        assert promise.leaves_root == root_of(leaves)
    assert verify(built).ok


def test_a_retried_batch_gets_the_stored_promise_back(built_ledger: BuiltLedger) -> None:
    from lineage_ledger.core.envelope import seal_batch
    from tests.conftest import PRODUCER, PRODUCER_KEY_ID

    envelope = seal_batch(
        token_events(3, label="retry"), producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer()
    )
    with Ledger.open(built_ledger.url, make_log_signer(), settings=SETTINGS) as ledger:
        first = ledger.append(envelope).receipts
        again = ledger.append(envelope).receipts
    assert all(r.duplicate for r in again)
    for a, b in zip(first, again, strict=True):
        assert b.promised is not None
        assert a.promised is not None
        assert b.promised.signed == a.promised.signed
        assert b.leaf == a.leaf
        assert b.promised.path(b.index) == a.promised.path(a.index)


def test_deleting_the_acknowledged_pending_tail_is_caught(
    pending_ledger: tuple[BuiltLedger, list[Receipt], int],
) -> None:
    built, receipts, sealed = pending_ledger
    assert verify(built).ok
    with tampering(built.path) as db:
        db.execute("DELETE FROM entries WHERE idx >= ?", (sealed,))
        db.execute("DELETE FROM subject_index WHERE idx >= ?", (sealed,))
        db.execute("DELETE FROM revocations WHERE idx >= ?", (sealed,))
        db.execute("DELETE FROM nodes WHERE (idx + 1) << level > ?", (sealed,))
        db.execute("DELETE FROM envelopes WHERE first_idx >= ?", (sealed,))  # leaves no envelope naming them
    report = verify(built)
    assert not report.ok
    assert kinds(report) == {"promise_missing"}
    assert report.first_bad_index == sealed == receipts[0].index
    assert f"entries {sealed}.." in report.problems[0].message


def test_deleting_a_checkpoint_row_is_caught(built_ledger: BuiltLedger) -> None:
    middle = built_ledger.checkpoint_sizes[len(built_ledger.checkpoint_sizes) // 2]
    with tampering(built_ledger.path) as db:
        db.execute("DELETE FROM checkpoints WHERE size = ?", (middle,))
    report = verify(built_ledger)
    assert kinds(report) == {"checkpoint_missing"}
    assert report.first_bad_index == middle - 1  # the seal that signed it


def test_deleting_the_latest_checkpoint_row_is_caught(built_ledger: BuiltLedger) -> None:
    latest = built_ledger.checkpoint_sizes[-1]
    with tampering(built_ledger.path) as db:
        db.execute("DELETE FROM checkpoints WHERE size = ?", (latest,))
    report = verify(built_ledger)
    assert kinds(report) == {"checkpoint_missing"}
    assert report.first_bad_index == latest - 1


def test_deleting_a_promise_row_between_others_is_caught(
    pending_ledger: tuple[BuiltLedger, list[Receipt], int],
) -> None:
    built, receipts, _ = pending_ledger
    target = receipts[20]
    assert target.promised is not None
    first = target.promised.signed.promise().first
    with tampering(built.path) as db:
        db.execute("DELETE FROM promises WHERE first = ?", (first,))
    report = verify(built)
    assert kinds(report) == {"unpromised"}
    assert report.first_bad_index == first


def test_a_forged_promise_row_is_caught(pending_ledger: tuple[BuiltLedger, list[Receipt], int]) -> None:
    built, receipts, _ = pending_ledger
    assert receipts[0].promised is not None
    first = receipts[0].promised.signed.promise().first
    with tampering(built.path) as db:
        (wire,) = db.execute("SELECT promise FROM promises WHERE first = ?", (first,)).fetchone()
        signed = SignedPromise.from_json(wire)
        bad = SignedPromise(signed.payload, signed.key_name, signed.key_id, bytes(64)).to_bytes()
        db.execute("UPDATE promises SET promise = ? WHERE first = ?", (bad, first))
    report = verify(built)
    assert kinds(report) == {"promise"}


def test_the_checkpoint_chain_check_on_its_own() -> None:
    rows = [CheckpointRow(10, "a"), CheckpointRow(21, "b")]
    assert checkpoint_chain_problems([9, 20], rows) == []
    missing = checkpoint_chain_problems([9, 20, 31], rows)
    assert [(p.kind, p.entry) for p in missing] == [("checkpoint_missing", 31)]
    unsealed = checkpoint_chain_problems([9], rows)
    assert [(p.kind, p.entry) for p in unsealed] == [("checkpoint_unsealed", 20)]


def test_verify_on_the_command_line_names_the_deleted_tail(
    pending_ledger: tuple[BuiltLedger, list[Receipt], int], capsys: pytest.CaptureFixture[str]
) -> None:
    built, _, sealed = pending_ledger
    with tampering(built.path) as db:
        db.execute("DELETE FROM entries WHERE idx >= ?", (sealed,))
        db.execute("DELETE FROM subject_index WHERE idx >= ?", (sealed,))
        db.execute("DELETE FROM revocations WHERE idx >= ?", (sealed,))
        db.execute("DELETE FROM nodes WHERE (idx + 1) << level > ?", (sealed,))
        db.execute("DELETE FROM envelopes WHERE first_idx >= ?", (sealed,))
    code = main(["verify", "--ledger", built.url, "--key", str(built.verifier)])
    said = capsys.readouterr()
    assert code == 1
    assert "acknowledged entries were removed" in said.out + said.err
