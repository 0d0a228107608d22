"""The write path: receipts, chains, verdicts, idempotency, conflicts, seals and proofs."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
import uuid_utils

from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.entry import ZERO_HASH, EventEntry, decode_entry
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.merkle import leaf_hash, root_of, verify_consistency, verify_inclusion
from lineage_ledger.core.model import TokenEvent, TokenPayload, encode_event
from lineage_ledger.core.note import Checkpoint, open_note
from lineage_ledger.errors import ConflictError, InputError, KeyringError, SignatureError, StoreError
from lineage_ledger.ledger.query import trace_token
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store.base import BatchWrite
from lineage_ledger.store.sqlite import SQLiteStore

SECRET = b"test-fingerprint-secret"
T0 = 1_763_891_234_000_000_000


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


def _event(kind: str, token: str, at: int, **payload: object) -> bytes:
    return encode_event(
        TokenEvent(
            event_id=str(uuid_utils.uuid7()),
            event_type=kind,  # type: ignore[arg-type]
            token_id=token_fingerprint(SECRET, token),
            occurred_at=format_reading(at, 0),
            schema_version=1,
            payload=TokenPayload(**payload),  # type: ignore[arg-type]
        )
    )


@pytest.fixture
def producer() -> Ed25519Signer:
    return Ed25519Signer.generate("svc-a")


@pytest.fixture
def log_signer() -> Ed25519Signer:
    return Ed25519Signer.generate("test.example/log")


@pytest.fixture
def ledger(tmp_path: Path, producer: Ed25519Signer, log_signer: Ed25519Signer) -> Ledger:
    log = log_signer
    led = Ledger.create(
        str(tmp_path / "l.db"), log, settings=LedgerSettings(block_size=8, block_seconds=1e9), clock=_Clock()
    )
    led.register_key("svc-a", "svc-a-1", producer.public_key)
    return led


def _append(ledger: Ledger, producer: Ed25519Signer, events: list[bytes]) -> list[int]:
    result = ledger.append(seal_batch(events, producer="svc-a", key_id="svc-a-1", signer=producer))
    return [r.index for r in result.receipts]


def test_chain_links_and_verdicts(ledger: Ledger, producer: Ed25519Signer) -> None:
    events = [
        _event("ISSUED", "a", T0),
        _event("USED", "a", T0 + 1, resource="/x", outcome="ALLOW"),
        _event("REVOKED", "a", T0 + 2),
        _event("USED", "a", T0 + 3, resource="/y", outcome="ALLOW"),
        _event("USED", "never-issued", T0 + 4),
    ]
    indices = _append(ledger, producer, events)
    assert indices == [1, 2, 3, 4, 5]  # index 0 is the key registration
    rows = [ledger.store.entry(i) for i in indices]
    assert rows[0].prev == ZERO_HASH
    assert [r.prev for r in rows[1:4]] == [leaf_hash(r.body) for r in rows[:3]]
    assert rows[4].prev == ZERO_HASH  # another token: its own chain
    assert [r.verdict for r in rows] == ["ok", "ok", "ok", "token.use_after_revoke", "token.use_without_issue"]
    for row, raw in zip(rows, events, strict=True):
        entry = decode_entry(row.body)
        assert isinstance(entry, EventEntry)
        assert bytes(entry.event) == raw  # the producer's bytes, unchanged
    trace = trace_token(ledger.store, token_fingerprint(SECRET, "a"))
    assert [s.event_type for s in trace.steps] == ["ISSUED", "USED", "REVOKED", "USED"]
    assert trace.resources == ["/x", "/y"]
    assert trace.chain_ok


def test_rotation_moves_parent_and_survives_reopen(
    tmp_path: Path, ledger: Ledger, producer: Ed25519Signer, log_signer: Ed25519Signer
) -> None:
    parent = token_fingerprint(SECRET, "p")
    _append(ledger, producer, [_event("ISSUED", "p", T0), _event("ROTATED", "c", T0 + 1, parent_token_id=parent)])
    # the cache is gone after reopening; the parent's ROTATED state must be rebuilt from the log
    signer = log_signer
    ledger.close()
    again = Ledger.open(str(tmp_path / "l.db"), signer, settings=LedgerSettings(block_size=8, block_seconds=1e9))
    result = again.append(
        seal_batch(
            [_event("REFRESHED", "c2", T0 + 2, parent_token_id=parent), _event("USED", "p", T0 + 3)],
            producer="svc-a",
            key_id="svc-a-1",
            signer=producer,
        )
    )
    assert [r.verdict for r in result.receipts] == ["token.refresh_after_rotation", "token.use_after_rotation"]
    assert [c[0] for c in trace_token(again.store, parent).children] == [
        token_fingerprint(SECRET, "c"),
        token_fingerprint(SECRET, "c2"),
    ]


def test_retry_is_idempotent_and_reuse_with_other_bytes_conflicts(ledger: Ledger, producer: Ed25519Signer) -> None:
    events = [_event("ISSUED", "a", T0), _event("USED", "a", T0 + 1)]
    first = ledger.append(seal_batch(events, producer="svc-a", key_id="svc-a-1", signer=producer))
    size = ledger.size
    again = ledger.append(seal_batch(events, producer="svc-a", key_id="svc-a-1", signer=producer))
    assert [r.index for r in again.receipts] == [r.index for r in first.receipts]
    assert all(r.duplicate for r in again.receipts)
    assert ledger.size == size
    # same event id, different bytes
    tampered = events[1].replace(b'"USED"', b'"REVOKED"')
    with pytest.raises(ConflictError, match="different bytes"):
        ledger.append(seal_batch([tampered], producer="svc-a", key_id="svc-a-1", signer=producer))
    assert ledger.size == size
    # a mix: the known event is skipped, the new one recorded
    fresh = _event("USED", "a", T0 + 2)
    mixed = ledger.append(seal_batch([events[0], fresh], producer="svc-a", key_id="svc-a-1", signer=producer))
    assert [r.duplicate for r in mixed.receipts] == [True, False]
    assert mixed.receipts[1].index == size


def test_bad_batches_write_nothing(ledger: Ledger, producer: Ed25519Signer) -> None:
    size = ledger.size
    good = _event("ISSUED", "a", T0)
    with pytest.raises(InputError) as bad:
        ledger.append(
            seal_batch(
                [good, good.replace(b'"schema_version":1', b'"schema_version":1.5')],
                producer="svc-a",
                key_id="svc-a-1",
                signer=producer,
            )
        )
    assert bad.value.field.startswith("events[1]")
    with pytest.raises(SignatureError):
        ledger.append(seal_batch([good], producer="svc-a", key_id="svc-a-1", signer=Ed25519Signer.generate("x")))
    with pytest.raises(KeyringError):
        ledger.append(seal_batch([good], producer="svc-b", key_id="svc-a-1", signer=producer))
    with pytest.raises(KeyringError):
        ledger.append(seal_batch([good], producer="svc-a", key_id="nope", signer=producer))
    with pytest.raises(InputError, match="twice"):
        ledger.append(seal_batch([good, good], producer="svc-a", key_id="svc-a-1", signer=producer))
    assert ledger.size == size


def test_revoked_key_rejects_new_batches_but_history_verifies(ledger: Ledger, producer: Ed25519Signer) -> None:
    _append(ledger, producer, [_event("ISSUED", "a", T0)])
    ledger.revoke_key("svc-a-1")
    with pytest.raises(KeyringError, match="revoked"):
        _append(ledger, producer, [_event("USED", "a", T0 + 1)])
    ledger.seal()
    assert verify_ledger(ledger.store.url, verifier=ledger.verifier, workers=1).ok


def test_seals_checkpoints_and_proofs(ledger: Ledger, producer: Ed25519Signer) -> None:
    for n in range(5):
        _append(ledger, producer, [_event("ISSUED", f"t{n}-{i}", T0 + i) for i in range(5)])
    ledger.seal()
    checkpoints = ledger.store.checkpoints()
    assert len(checkpoints) >= 3
    leaves = ledger.store.leaf_hashes(0, ledger.size)
    views = []
    for row in checkpoints:
        text, _ = open_note(row.note, [ledger.verifier])
        cp = Checkpoint.from_text(text)
        assert cp.root_hash == root_of(leaves[: cp.size])  # independent recomputation from the leaves
        views.append(cp)
        seal = decode_entry(ledger.store.entry(cp.size - 1).body)
        assert seal.index == cp.size - 1
    for old, new in itertools.pairwise(views):
        verify_consistency(
            old.size, new.size, old.root_hash, new.root_hash, ledger.consistency_proof(old.size, new.size)
        )
    last = views[-1]
    for index in range(last.size):
        verify_inclusion(leaves[index], index, last.size, ledger.inclusion_proof(index, last.size), last.root_hash)


def test_store_rejects_update_and_delete(ledger: Ledger, producer: Ed25519Signer) -> None:
    _append(ledger, producer, [_event("ISSUED", "a", T0)])
    ledger.seal()  # so that every table holds a row for the triggers to guard
    path = ledger.store.url
    db = sqlite3.connect(path)
    for sql in (
        "UPDATE entries SET verdict = 'ok'",
        "DELETE FROM entries",
        "DELETE FROM checkpoints",
        "UPDATE envelopes SET producer = 'x'",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    db.close()
    with pytest.raises(StoreError):  # an existing index cannot be written twice
        ledger.store.write(BatchWrite(entries=[ledger.store.entry(1)]))


def test_revocation_set_and_token_state_follow_the_log(ledger: Ledger, producer: Ed25519Signer) -> None:
    a, b = token_fingerprint(SECRET, "a"), token_fingerprint(SECRET, "b")
    expiry = format_reading(T0 + 10_000, 0)
    _append(ledger, producer, [_event("ISSUED", "a", T0, expires_at=expiry), _event("ISSUED", "b", T0)])
    assert ledger.is_active(a, now_ns=T0 + 1)
    assert not ledger.is_active(a, now_ns=T0 + 10_000)  # past its own expires_at
    assert ledger.store.revoked([f"token:{a}", f"token:{b}"]) == {}
    (revoked_at,) = _append(ledger, producer, [_event("REVOKED", "b", T0 + 2)])
    _append(ledger, producer, [_event("REVOKED", "b", T0 + 3)])  # revoking twice is allowed (RFC 7009)
    assert ledger.store.revoked([f"token:{a}", f"token:{b}"]) == {f"token:{b}": revoked_at}
    assert ledger.token_state(b).state == "REVOKED"
    assert not ledger.is_active(b, now_ns=T0 + 4)
    assert not ledger.is_active(token_fingerprint(SECRET, "never"), now_ns=T0)


class _CommitsThenFails(SQLiteStore):
    """A real SQLite store whose next write commits and then reports a failure, as a connection that breaks
    while COMMIT's answer is on its way does (the outcome is unknown to the writer)."""

    fail_next = False

    def write(self, batch: BatchWrite) -> None:
        super().write(batch)
        if self.fail_next:
            self.fail_next = False
            raise StoreError("write failed with the connection, the batch may or may not be stored")


def test_a_write_of_unknown_outcome_makes_the_ledger_reload_before_the_next(
    tmp_path: Path, producer: Ed25519Signer, log_signer: Ed25519Signer
) -> None:
    url = str(tmp_path / "l.db")
    Ledger.create(url, log_signer).close()
    store = _CommitsThenFails(url)
    ledger = Ledger(store, log_signer, settings=LedgerSettings(block_size=8, block_seconds=1e9), clock=_Clock())
    ledger.register_key("svc-a", "svc-a-1", producer.public_key)
    first = [_event("ISSUED", "t1", T0), _event("USED", "t1", T0 + 1)]
    second = [_event("USED", "t1", T0 + 2), _event("REVOKED", "t1", T0 + 3)]
    store.fail_next = True
    with pytest.raises(StoreError):
        _append(ledger, producer, first)  # committed, though the ledger was told otherwise
    # the next append reloads the state (size, chain heads, token state) from the store first
    assert _append(ledger, producer, second) == [3, 4]
    assert ledger.token_state(token_fingerprint(SECRET, "t1")).state == "REVOKED"
    # the producer's retry of the first batch finds it recorded once
    retry = ledger.append(seal_batch(first, producer="svc-a", key_id="svc-a-1", signer=producer))
    assert [(r.index, r.duplicate) for r in retry.receipts] == [(1, True), (2, True)]
    ledger.seal()
    ledger.close()
    assert verify_ledger(url).ok


@pytest.mark.parametrize("freeze", [False, True])
def test_freezing_the_collector_at_each_seal_is_a_setting(
    tmp_path: Path, producer: Ed25519Signer, log_signer: Ed25519Signer, freeze: bool
) -> None:
    import gc

    gc.unfreeze()
    settings = LedgerSettings(block_size=10, block_seconds=1e9, freeze_gc_at_seal=freeze)
    ledger = Ledger.create(str(tmp_path / "gc.db"), log_signer, settings=settings)
    ledger.register_key("svc-a", "svc-a-1", producer.public_key)
    events = [_event("USED" if i else "ISSUED", "tok-gc", T0 + i, resource="/r") for i in range(12)]
    try:
        assert gc.get_freeze_count() == 0
        _append(ledger, producer, events)  # fills a block: sealed
        assert ledger.sealed_size == ledger.size
        assert (gc.get_freeze_count() > 0) is freeze
    finally:
        gc.unfreeze()
        ledger.close()
