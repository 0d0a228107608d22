"""SQLite's store layout 2 keeps entries compactly and gives back their exact bytes; layout 1 ledgers stay as
they are. Entries here are real event entries (core.entry) of signed envelopes, so the compact form that
leaves out what other columns hold is the one taken."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from lineage_ledger.core.entry import ZERO_HASH, event_entry_bytes
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.errors import ConflictError
from lineage_ledger.store import open_store, sqlite, sqlite_compact
from lineage_ledger.store.base import BatchWrite, EntryRow, EnvelopeRow, PromiseRow

T0 = 1_763_000_000_000_000_000


def _event(i: int) -> bytes:
    token = hashlib.sha256(b"token %d" % (i % 7)).hexdigest()
    return (
        f'{{"event_id":"01a252a0-a8b7-7adf-b0a4-{i:012x}","event_type":"USED","kind":"token",'
        f'"occurred_at":"{format_reading(T0 + i, 0)}","payload":{{"resource":"/v1/orders/{i % 13}",'
        f'"user_id":"user-{i % 5}"}},"schema_version":1,"token_id":"{token}"}}'
    ).encode()


def _batch(start: int, count: int, heads: dict[str, bytes]) -> BatchWrite:
    digest = hashlib.sha256(b"envelope %d" % start).digest()
    rows = []
    for pos, i in enumerate(range(start, start + count)):
        event = _event(i)
        subject = "token:" + hashlib.sha256(b"token %d" % (i % 7)).hexdigest()
        prev = heads.get(subject, ZERO_HASH)
        verdict = "ok" if i % 11 else "R3-use-after-revoke"
        body = event_entry_bytes(
            index=i,
            recorded_at=format_reading(T0 + 10 * i, i % 3),
            prev=prev,
            producer="api-gateway",
            key_id="api-gateway-1",
            envelope=digest,
            position=pos,
            verdict=verdict,
            event=event,
        )
        leaf = leaf_hash(body)
        heads[subject] = leaf
        rows.append(EntryRow(i, subject, f"01a252a0-a8b7-7adf-b0a4-{i:012x}", None, prev, leaf, verdict, body))
    envelope = EnvelopeRow(digest, "api-gateway", "api-gateway-1", b"{}", b"sig", b"".join(r.leaf for r in rows), start)
    return BatchWrite(entries=rows, envelopes=[envelope])


@pytest.fixture
def train_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_compact, "TRAIN_AT", 40)


def _stored_bodies(path: Path) -> list[bytes]:
    with closing(sqlite3.connect(path)) as db:
        return [bytes(r[0]) for r in db.execute("SELECT body FROM entries ORDER BY idx")]


def test_bodies_come_back_byte_for_byte_and_compressed_once_a_dictionary_is_trained(
    tmp_path: Path, train_early: None
) -> None:
    path = tmp_path / "compact.db"
    store = open_store(str(path))
    heads: dict[str, bytes] = {}
    written: list[EntryRow] = []
    try:
        store.initialise({"origin": "compact.example/log"})
        for start in range(0, 120, 20):
            batch = _batch(start, 20, heads)
            store.write(batch)
            written += batch.entries
        assert list(store.entries(0, 120)) == written
    finally:
        store.close()
    reader = open_store(str(path), readonly=True)  # a fresh store: the dictionary is read from the ledger
    try:
        assert list(reader.entries(0, 120)) == written
        assert reader.events_by_id([written[77].event_id or ""]) == {written[77].event_id: written[77]}
        assert reader.subject_entries([written[5].subject]) == [r for r in written if r.subject == written[5].subject]
        assert reader.meta()["store_schema"] == "2"
    finally:
        reader.close()
    stored = _stored_bodies(path)
    assert stored[0][0] == 0x00  # compact, before the dictionary
    assert stored[-1][0] == 0x01  # compressed with it
    late = sum(len(b) for b in stored[60:]) / sum(len(r.body) for r in written[60:])
    assert late < 0.5


def test_a_write_that_trained_a_dictionary_and_failed_leaves_no_body_needing_it(
    tmp_path: Path, train_early: None
) -> None:
    path = tmp_path / "compact.db"
    store = open_store(str(path))
    heads: dict[str, bytes] = {}
    try:
        store.write(_batch(0, 40, heads))
        failing = _batch(40, 20, dict(heads))
        failing.entries.append(failing.entries[0])  # the same index twice: the write is refused
        with pytest.raises(ConflictError):
            store.write(failing)
        store.write(_batch(40, 20, heads))
        written = list(store.entries(0, 60))
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM dictionaries").fetchone()[0] == 1
    reader = open_store(str(path), readonly=True)
    try:
        assert list(reader.entries(0, 60)) == written
        assert all(leaf_hash(r.body) == r.leaf for r in written)
    finally:
        reader.close()


def test_a_ledger_in_layout_1_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    heads: dict[str, bytes] = {}
    with monkeypatch.context() as patch:
        patch.setattr(sqlite, "SCHEMA_VERSION", 1)
        store = open_store(str(path))
        store.initialise({"origin": "old.example/log"})
        first = _batch(0, 20, heads)
        store.write(first)
        store.close()
    assert _stored_bodies(path) == [r.body for r in first.entries]  # canonical bytes, as layout 1 keeps them
    store = open_store(str(path))  # by a version that creates layout 2
    try:
        second = _batch(20, 20, heads)
        store.write(second)
        assert list(store.entries(0, 40)) == first.entries + second.entries
        assert store.meta()["store_schema"] == "1"
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "subjects" not in tables
    assert _stored_bodies(path) == [r.body for r in first.entries + second.entries]


def test_a_body_that_disagrees_with_its_columns_is_kept_as_it_is(tmp_path: Path, train_early: None) -> None:
    """The compact form rebuilds a body from the columns; one whose bytes name another prev, index, verdict or
    envelope than its row does must come back as written, not as the columns would rebuild it."""
    path = tmp_path / "compact.db"
    heads: dict[str, bytes] = {}
    batch = _batch(0, 60, heads)
    rows = batch.entries
    rows[3] = rows[3]._replace(prev=bytes(range(32)))
    rows[4] = rows[4]._replace(verdict="ok" if rows[4].verdict != "ok" else "R1")
    rows[5] = rows[5]._replace(body=rows[5].body.replace(b'"position":5', b'"position":7'))
    rows[6] = rows[6]._replace(index=66)
    rows[7] = rows[7]._replace(body=rows[7].body.replace(b'","event":', b'","eveny":'))
    rows[8] = rows[8]._replace(body=rows[8].body.replace(b'"recorded_at":"', b'"recorded_at":",'))
    store = open_store(str(path))
    try:
        store.write(batch)
        store.write(_batch(100, 60, heads))  # trains the dictionary
        assert sorted(store.entries(0, 200), key=lambda r: r.index)[:60] == sorted(rows, key=lambda r: r.index)
    finally:
        store.close()
    stored = dict(zip(sorted(r.index for r in rows), _stored_bodies(path), strict=False))
    assert all(stored[r.index] == r.body for r in (rows[3], rows[4], rows[6], rows[7], rows[8]))


def test_signed_promises_come_back_byte_for_byte_and_compressed_once_a_dictionary_is_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_compact, "PROMISE_TRAIN_AT", 12)  # zstd trains on no fewer than about 10
    path = tmp_path / "compact.db"
    heads: dict[str, bytes] = {}
    written = []
    store = open_store(str(path))
    try:
        for n, start in enumerate(range(0, 200, 10)):
            batch = _batch(start, 10, heads)
            signed = (
                f'{{"payload":"{hashlib.sha256(b"%d" % n).hexdigest() * 3}","payloadType":"application/vnd.'
                f'lineage-ledger.promise.v1+json","signatures":[{{"keyid":"log+31048ab7","sig":"{n:064x}"}}]}}'
            ).encode()
            batch.promise = PromiseRow(start, 10, signed)
            store.write(batch)
            written.append(batch.promise)
        assert store.promises() == written
    finally:
        store.close()
    reader = open_store(str(path), readonly=True)
    try:
        assert reader.promises() == written
        assert reader.promise_covering(195) == written[-1]
    finally:
        reader.close()
    with closing(sqlite3.connect(path)) as db:
        stored = [bytes(r[0]) for r in db.execute("SELECT promise FROM promises ORDER BY first")]
    assert stored[:12] == [p.promise for p in written[:12]]  # as they are, until the dictionary is trained
    assert all(s[0] == 0x01 and len(s) < len(p.promise) for s, p in zip(stored[13:], written[13:], strict=True))
