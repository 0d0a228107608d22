"""The store contract, written once: every backend runs exactly these tests.

A backend joins by adding a fixture parameter that yields (store, raw) where ``raw(sql)`` runs a statement
on the backend's own connection, as an attacker or a careless operator with database access would. For
PostgreSQL the store is the ledger's writer role and ``raw`` the tables' owner (a superuser): the
append-only triggers must refuse even that; tests/store/test_postgres.py covers what the roles may do.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lineage_ledger.errors import ConflictError, LedgerError, NotFoundError, StoreError
from lineage_ledger.store import open_store
from lineage_ledger.store.base import (
    BatchWrite,
    CheckpointRow,
    EntryRow,
    EnvelopeRow,
    OffsetRow,
    PromiseRow,
    QuarantineRow,
    RollupDay,
    RollupRow,
    SchemaRow,
    Store,
)
from lineage_ledger.store.sqlite import SQLiteStore
from tests.services import PostgresLedger, sql

Raw = Callable[[str], None]


def _sqlite_raw(path: str) -> Raw:
    def run(sql: str) -> None:
        db = sqlite3.connect(path)
        try:
            db.execute(sql)
            db.commit()
        finally:
            db.close()

    return run


def _postgres_raw(url: str) -> Raw:
    def run(statement: str) -> None:
        sql(url, statement)

    return run


@pytest.fixture(params=["sqlite-file", "sqlite-url", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Raw]]:
    if request.param == "postgres":
        # the store connects as the writer role; the attacker is the tables' owner (a superuser, even)
        database: PostgresLedger = request.getfixturevalue("postgres_ledger")
        store = open_store(database.writer_url)
        raw = _postgres_raw(database.owner_url)
    else:
        path = str(tmp_path / "contract.db")
        store = open_store(path if request.param == "sqlite-file" else f"sqlite:///{path}?synchronous=normal")
        raw = _sqlite_raw(path)
    store.initialise({"origin": "contract.example/log", "verifier_key": "unused"})
    yield store, raw
    store.close()


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _row(
    index: int, subject: str, event_id: str | None = None, parent: str | None = None, prev: bytes = bytes(32)
) -> EntryRow:
    body = f'{{"index":{index},"subject":"{subject}"}}'.encode()
    return EntryRow(index, subject, event_id, parent, prev, _h("leaf", index), "ok", body)


def _batch(start: int, rows: list[EntryRow]) -> BatchWrite:
    return BatchWrite(
        entries=rows,
        envelopes=[EnvelopeRow(_h("env", start), "svc-a", "k1", b"{}", b"sig", b"".join(r.leaf for r in rows), start)],
    )


def test_meta_is_written_once(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    assert store.meta()["origin"] == "contract.example/log"
    with pytest.raises(ConflictError):
        store.initialise({"origin": "other"})
    assert store.meta()["origin"] == "contract.example/log"


def test_wal_size_is_reported_where_the_store_keeps_the_file(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    store.write(_batch(0, [_row(0, "token:a", "e0")]))
    wal = store.wal_bytes()
    if isinstance(store, SQLiteStore):
        assert wal is not None
        assert wal == Path(f"{store.path}-wal").stat().st_size > 0
    else:
        assert wal is None  # PostgreSQL's WAL is the server's


def test_entries_round_trip_and_read_paths(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    assert store.size() == 0
    assert store.lowest_index() is None
    rows = [
        _row(0, "token:a", "e0"),
        _row(1, "token:b", "e1"),
        _row(2, "token:a", "e2", prev=_h("leaf", 0)),
        _row(3, "token:c", "e3", parent="token:a"),
        _row(4, "policy:p", "e4"),
        _row(5, "ledger:blocks"),
    ]
    store.write(_batch(0, rows))
    assert store.size() == 6
    assert store.lowest_index() == 0
    assert store.entry(3) == rows[3]
    assert list(store.entries(1, 4)) == rows[1:4]
    assert list(store.entries(0, 100)) == rows
    assert store.entries_at([4, 0, 4]) == [rows[0], rows[4]]
    assert store.events_by_id(["e2", "nope", "e0"]) == {"e0": rows[0], "e2": rows[2]}
    assert store.subject_entries(["token:c", "token:a"]) == [rows[0], rows[2], rows[3]]
    assert store.subjects_with_prefix("policy:") == [rows[4]]
    assert store.children_of("token:a") == [rows[3]]
    assert store.children_of_many(["token:a", "token:b"]) == [rows[3]]
    assert store.leaf_hashes(1, 3) == [r.leaf for r in rows[1:4]]
    assert store.nodes(0, 2, 2) == [rows[2].leaf, rows[3].leaf]
    with pytest.raises(NotFoundError):
        store.entry(6)
    with pytest.raises(NotFoundError):
        store.leaf_hashes(4, 5)


def test_a_failed_batch_writes_nothing(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    store.write(_batch(0, [_row(0, "token:a", "e0")]))
    # the second row reuses an event id: the whole batch, envelope and nodes included, must be refused
    bad = _batch(1, [_row(1, "token:b", "e1"), _row(2, "token:b", "e0")])
    bad.nodes = [(8, 0, _h("node"))]
    bad.checkpoint = CheckpointRow(3, "note")
    with pytest.raises(ConflictError):
        store.write(bad)
    assert store.size() == 1
    with pytest.raises(NotFoundError):
        store.envelope(_h("env", 1))
    with pytest.raises(NotFoundError):
        store.nodes(8, 0, 1)
    assert store.latest_checkpoint() is None
    with pytest.raises(ConflictError):  # an index cannot be written twice either
        store.write(_batch(5, [_row(0, "token:z", "e9")]))


def test_side_tables(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    batch = _batch(0, [_row(0, "token:a", "e0"), _row(1, "policy:p", "e1")])
    batch.nodes = [(8, 0, _h("n0")), (8, 1, _h("n1"))]
    batch.checkpoint = CheckpointRow(2, "note-2")
    batch.revocations = [("token:a", 0)]
    batch.links = [
        ("resource", "/x", "0000000000000000010.00000", 0, "token:a"),
        ("resource", "/x", "0000000000000000020.00000", 1, "token:b"),
        ("resource", "/y", "0000000000000000015.00000", 1, "token:b"),
    ]
    store.write(batch)
    store.write(BatchWrite(entries=[_row(2, "ledger:blocks")], checkpoint=CheckpointRow(3, "note-3")))
    assert store.nodes(8, 0, 2) == [_h("n0"), _h("n1")]
    assert store.checkpoints() == [CheckpointRow(2, "note-2"), CheckpointRow(3, "note-3")]
    assert store.checkpoints(3) == [CheckpointRow(3, "note-3")]
    assert store.latest_checkpoint() == CheckpointRow(3, "note-3")
    assert store.envelope(_h("env", 0)).producer == "svc-a"
    assert list(store.envelope_first_indexes()) == [(_h("env", 0), 0)]
    assert store.revoked(["token:a", "token:b"]) == {"token:a": 0}
    # windows are half-open: start <= at < end
    assert store.links("resource", "/x") == [
        ("0000000000000000010.00000", 0, "token:a"),
        ("0000000000000000020.00000", 1, "token:b"),
    ]
    assert store.links("resource", "/x", "0000000000000000010.00000", "0000000000000000020.00000") == [
        ("0000000000000000010.00000", 0, "token:a")
    ]
    assert store.links("user", "/x") == []
    # links are derived data written at seals, possibly again (ledger.links): a stored one is skipped
    store.write(BatchWrite(links=[batch.links[0], ("resource", "/x", "0000000000000000030.00000", 2, "token:c")]))
    assert [idx for _, idx, _ in store.links("resource", "/x")] == [0, 1, 2]


def test_promises_read_back_in_order_and_by_the_entry_they_cover(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    store.write(
        BatchWrite(entries=[_row(0, "token:a", "e0"), _row(1, "token:a", "e1")], promise=PromiseRow(0, 2, b"p0"))
    )
    store.write(BatchWrite(entries=[_row(2, "ledger:blocks")]))  # a seal: its checkpoint covers it
    store.write(BatchWrite(entries=[_row(3, "token:b", "e3")], promise=PromiseRow(3, 1, b"p3")))
    assert store.promises() == [PromiseRow(0, 2, b"p0"), PromiseRow(3, 1, b"p3")]
    assert store.promises(1) == [PromiseRow(3, 1, b"p3")]
    assert store.promise_covering(1) == PromiseRow(0, 2, b"p0")
    assert store.promise_covering(2) is None
    assert store.promise_covering(3) == PromiseRow(3, 1, b"p3")
    assert store.promise_covering(4) is None


def test_every_link_and_revocation_reads_back_for_the_verifier(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    # more than one page of link_rows, keys interleaved so the pages must follow the key order
    links = [("resource", f"/r/{i % 7}", f"{i:019d}.00000", i, f"token:{i % 3}") for i in range(10_005)]
    links.append(("user", "alice", f"{5:019d}.00000", 5, "token:2"))
    store.write(BatchWrite(links=links, revocations=[("token:a", 3), ("token:b", 5)]))
    assert list(store.link_rows()) == sorted(links)
    assert sorted(store.revocation_rows()) == [("token:a", 3), ("token:b", 5)]


def test_transport_positions_schemas_and_quarantine(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    assert store.offsets("orders") == {}
    assert store.schemas() == []
    first = _batch(0, [_row(0, "token:a", "e0")])
    first.offsets = [OffsetRow("orders", 0, 10), OffsetRow("orders", 1, 3), OffsetRow("other", 0, 99)]
    v1 = SchemaRow(b"\x01" * 8, "Batch", '{"type":"int"}', "0000000000000000010.00000")
    v2 = SchemaRow(b"\x02" * 8, "Batch", '{"type":"long"}', "0000000000000000020.00000")
    first.schemas = [v1]
    store.write(first)
    # a later write moves partition 0 on; registering v1 again keeps the first registration
    store.write(
        BatchWrite(
            offsets=[OffsetRow("orders", 0, 25)],
            schemas=[v2, v1._replace(registered_at="0000000000000000030.00000")],
            quarantine=[
                QuarantineRow("orders", 1, 2, "unknown producer key", _h("m2"), b"kept"),
                QuarantineRow("orders", 0, 12, "bad signature", _h("m1"), None),
            ],
        )
    )
    assert store.offsets("orders") == {0: 25, 1: 3}
    assert store.offsets("other") == {0: 99}
    assert store.schemas() == [v1, v2]
    assert store.quarantined("orders") == [
        QuarantineRow("orders", 0, 12, "bad signature", _h("m1"), None),
        QuarantineRow("orders", 1, 2, "unknown producer key", _h("m2"), b"kept"),
    ]
    assert store.quarantined("other") == []
    assert len(store.quarantined()) == 2
    # a position written twice is a conflict, and the whole batch (entry included) is refused
    again = _batch(1, [_row(1, "token:b", "e1")])
    again.offsets = [OffsetRow("orders", 0, 25)]
    with pytest.raises(ConflictError):
        store.write(again)
    assert store.size() == 1


def test_chain_breaks_compare_each_entry_with_its_subjects_previous(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    good = [
        _row(0, "token:a", "e0"),
        _row(1, "token:b", "e1"),
        _row(2, "token:a", "e2", prev=_h("leaf", 0)),
        _row(3, "token:b", "e3", prev=_h("leaf", 1)),
    ]
    store.write(_batch(0, good))
    assert store.chain_breaks() == []
    store.write(_batch(4, [_row(4, "token:a", "e4", prev=_h("leaf", 0))]))  # skips entry 2
    (brk,) = store.chain_breaks()
    assert (brk.index, brk.subject, brk.prev, brk.expected) == (4, "token:a", _h("leaf", 0), _h("leaf", 2))


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE entries SET verdict = 'forged'",
        "DELETE FROM entries",
        "UPDATE envelopes SET producer = 'x'",
        "DELETE FROM envelopes",
        "DELETE FROM checkpoints",
        "UPDATE nodes SET level = level + 8",
        "DELETE FROM revocations",
        "DELETE FROM links",
        "UPDATE meta SET value = 'x'",
        "UPDATE offsets SET next_offset = 0",
        "DELETE FROM schemas",
        "DELETE FROM quarantine",
        "DELETE FROM promises",
        "UPDATE cosignatures SET line = 'x'",
        "DELETE FROM cosignatures",
        "UPDATE timestamps SET token = 'x'",
        "DELETE FROM timestamps",
        "UPDATE rollups SET uses = uses + 1",
        "DELETE FROM rollups",
        "UPDATE rollup_days SET end_idx = 0",
        "DELETE FROM rollup_days",
    ],
)
def test_the_database_itself_refuses_update_and_delete(backend: tuple[Store, Raw], sql: str) -> None:
    store, raw = backend
    batch = _batch(0, [_row(0, "token:a", "e0")])
    batch.nodes = [(8, 0, _h("n"))]
    batch.checkpoint = CheckpointRow(1, "note")
    batch.revocations = [("token:a", 0)]
    batch.links = [("resource", "/x", "0000000000000000010.00000", 0, "token:a")]
    batch.offsets = [OffsetRow("topic", 0, 5)]
    batch.schemas = [SchemaRow(_h("schema")[:8], "Batch", '{"type":"int"}', "0000000000000000010.00000")]
    batch.quarantine = [QuarantineRow("topic", 0, 4, "bad signature", _h("msg"), None)]
    batch.promise = PromiseRow(0, 1, b"{}")
    store.write(batch)
    store.add_cosignatures(1, [("w.example/1", 7, "— w.example/1 AAAA\n")])
    store.add_timestamp(1, b"\x30\x00")
    store.add_rollups(RollupDay("2025-11-12", 0, 1), [_rollup("2025-11-12", "token:a")])
    with pytest.raises(Exception, match="append-only") as refused:
        raw(sql)
    assert not isinstance(refused.value, LedgerError)  # refused by the database, not by this package
    assert store.entry(0).verdict == "ok"
    assert store.size() == 1


def _rollup(day: str, subject: str, uses: int = 1) -> RollupRow:
    return RollupRow(
        day,
        subject,
        uses + 1,
        uses,
        "0000000000000000010.00000",
        "0000000000000000020.00000",
        0,
        1,
        '["/x"]',
        '{"ALLOW":1}',
    )


def test_daily_rollups_are_kept_by_day_and_read_by_token(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    assert store.rollup_days() == []
    assert store.rollups("token:a") == []
    store.add_rollups(
        RollupDay("2025-11-12", 0, 10), [_rollup("2025-11-12", "token:b"), _rollup("2025-11-12", "token:a")]
    )
    store.add_rollups(RollupDay("2025-11-13", 10, 25), [_rollup("2025-11-13", "token:a", uses=4)])
    store.add_rollups(RollupDay("2025-11-14", 25, 30), [])  # a day without token events
    assert store.rollup_days() == [
        RollupDay("2025-11-12", 0, 10),
        RollupDay("2025-11-13", 10, 25),
        RollupDay("2025-11-14", 25, 30),
    ]
    assert store.rollups("token:a") == [_rollup("2025-11-12", "token:a"), _rollup("2025-11-13", "token:a", uses=4)]
    assert store.rollups("token:c") == []
    assert list(store.rollup_rows()) == [
        _rollup("2025-11-12", "token:a"),
        _rollup("2025-11-13", "token:a", uses=4),
        _rollup("2025-11-12", "token:b"),
    ]
    with pytest.raises(ConflictError):  # a day is rolled up once, whole
        store.add_rollups(RollupDay("2025-11-13", 10, 25), [_rollup("2025-11-13", "token:c")])
    assert store.rollups("token:c") == []


def test_cosignatures_are_kept_beside_their_checkpoint_and_served_with_it(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    store.write(BatchWrite(entries=[_row(0, "token:a", "e0")], checkpoint=CheckpointRow(1, "cp-1\n\n— log A\n")))
    store.write(BatchWrite(entries=[_row(1, "token:a", "e1")], checkpoint=CheckpointRow(2, "cp-2\n\n— log B\n")))
    assert store.cosigned_size("w.example/1", 7) == 0
    store.add_cosignatures(1, [("w.example/2", 9, "— w.example/2 W2\n"), ("w.example/1", 7, "— w.example/1 W1\n")])
    store.add_cosignatures(2, [("w.example/1", 7, "— w.example/1 X1\n")])
    store.add_cosignatures(2, [("w.example/1", 7, "— w.example/1 other\n")])  # a later one is skipped
    assert store.checkpoints() == [
        CheckpointRow(1, "cp-1\n\n— log A\n— w.example/1 W1\n— w.example/2 W2\n"),
        CheckpointRow(2, "cp-2\n\n— log B\n— w.example/1 X1\n"),
    ]
    assert store.checkpoints(2) == [CheckpointRow(2, "cp-2\n\n— log B\n— w.example/1 X1\n")]
    assert store.latest_checkpoint() == CheckpointRow(2, "cp-2\n\n— log B\n— w.example/1 X1\n")
    assert store.cosigned_size("w.example/1", 7) == 2
    assert store.cosigned_size("w.example/2", 9) == 1
    assert store.cosigned_size("w.example/2", 8) == 0


def test_timestamp_tokens_are_kept_beside_their_checkpoint(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    store.write(BatchWrite(entries=[_row(0, "token:a", "e0")], checkpoint=CheckpointRow(1, "cp-1\n\n— log A\n")))
    store.write(BatchWrite(entries=[_row(1, "token:a", "e1")], checkpoint=CheckpointRow(2, "cp-2\n\n— log B\n")))
    assert store.timestamp(1) is None
    assert store.timestamped_sizes() == []
    store.add_timestamp(2, b"token-2")
    store.add_timestamp(1, b"token-1")
    store.add_timestamp(2, b"a later token")  # skipped: the first one is kept
    assert store.timestamp(1) == b"token-1"
    assert store.timestamp(2) == b"token-2"
    assert store.timestamp(3) is None
    assert store.timestamped_sizes() == [1, 2]
    assert store.latest_checkpoint() == CheckpointRow(2, "cp-2\n\n— log B\n")  # the note is unchanged


def test_closed_store_fails_cleanly(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    store.close()
    with pytest.raises(StoreError):
        store.size()


def test_map_nodes_read_back_one_by_one_and_in_bulk(backend: tuple[Store, Raw]) -> None:
    store, _ = backend
    nodes = [(_h("node", i), bytes([i]) * 65) for i in range(5)]
    store.write(BatchWrite(entries=[_row(0, "token:a", "e0")], map_nodes=nodes))
    store.write(BatchWrite(entries=[_row(1, "token:a", "e1")], map_nodes=nodes[:2]))  # written again: ignored
    assert store.map_node(nodes[3][0]) == nodes[3][1]
    assert store.map_node(_h("absent")) is None
    wanted = [nodes[4][0], _h("absent"), nodes[0][0]]
    assert store.map_nodes(wanted) == {nodes[4][0]: nodes[4][1], nodes[0][0]: nodes[0][1]}
    assert list(store.map_node_rows()) == sorted(nodes)


def test_batches_of_every_awkward_size_go_in_whole(backend: tuple[Store, Raw]) -> None:
    # SQLite writes rows in multi-row statements of 500 and the rest in powers of two: every size around
    # those boundaries must land row for row, in order
    store, _ = backend
    sizes = [1, 2, 3, 255, 256, 257, 499, 500, 501, 777, 1000, 1023]
    start = 0
    for size in sizes:
        rows = [_row(start + i, f"token:{(start + i) % 7}", f"e{start + i}") for i in range(size)]
        store.write(_batch(start, rows))
        start += size
    assert store.size() == start
    assert list(store.entries(0, start)) == [_row(i, f"token:{i % 7}", f"e{i}") for i in range(start)]


def test_entries_read_on_past_a_long_run_of_missing_indices(backend: tuple[Store, Raw]) -> None:
    # an intact log has no gaps, but verify reads tampered ones: rows after 10,000 missing indices (more
    # than a page) must still come back, and in order
    store, _ = backend
    rows = [_row(0, "token:a", "e0"), _row(1, "token:b", "e1"), _row(10_002, "token:a", "e2"), _row(10_003, "x")]
    store.write(_batch(0, rows))
    assert list(store.entries(0, 20_000)) == rows
    assert list(store.entries(2, 10_003)) == rows[2:3]
