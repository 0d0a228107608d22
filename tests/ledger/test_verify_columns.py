"""Every stored value is covered: change one value in any column of any table and `verify` fails.

A small ledger with rows in every table the ledger keeps (several blocks and checkpoints, stored tree nodes,
revocations, links, the subject map, SQLite's subject index, daily rollups, policy and data events, key
entries) is copied,
one value is changed with the append-only triggers dropped (anyone holding the file can), and the ledger is
verified with the log's key held outside the database. Each column is changed in its first, middle and last
row. The tables that are not derived from the log are listed in NOT_DERIVED with the reason a change there
cannot change an answer about the log, and the archive tier's tables (empty here) in ARCHIVE_TIER with where
they are tested; a table in none of these lists fails the test, so a new table must be classified when it is
added.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.note import NoteVerifier
from lineage_ledger.ledger.rollups import roll_up
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store import sqlite as sqlite_store
from lineage_ledger.store import sqlite_compact
from lineage_ledger.workload import PRODUCERS, batches, generate
from tests.conftest import make_log_signer
from tests.services import PostgresLedger

T0 = 1_763_000_000_000_000_000
SETTINGS = LedgerSettings(block_size=60, block_seconds=1e9)
"""Blocks close on size only, so the layout depends on the inputs alone: several seals and checkpoints."""

NOT_DERIVED: dict[str, str] = {
    "offsets": "the Kafka consumer's committed positions: transport bookkeeping, not derived from the log; a "
    "changed position re-reads messages (deduplicated by event id) or skips them, which the log cannot show",
    "schemas": "Avro schemas registered for decoding transport messages; the log holds the decoded events, "
    "which are checked, so a changed schema can only make later messages fail to decode (quarantined)",
    "quarantine": "messages the ledger refused, kept for an operator; nothing in the log derives from them",
    "schema_migrations": "PostgreSQL's record of the schema steps applied: the tables themselves are what is read",
    "cosignatures": "witnesses' cosignatures of checkpoints, signed by the witnesses, not derived from the log: "
    "verify checks them against the witnesses' keys only under a trust policy (--witness-key, --witness-quorum), "
    "where a changed or missing line leaves the checkpoint short of its quorum (tests/witness)",
    "timestamps": "RFC 3161 tokens a Time Stamping Authority signed over checkpoints, not derived from the log: "
    "verify checks them against the TSA's certificate when given one (--tsa-cert), where a changed token fails "
    "(tests/timestamps)",
}
"""Tables the ledger keeps that are not derived from the log, and why no answer about the log depends on them."""
ARCHIVE_TIER: dict[str, str] = {
    "archives": "archived ranges, empty until lineage archive runs: checked against the signed archive records "
    "and the files by tests/archive/test_archive_tamper.py",
    "archive_keys": "the archive's lookup keys, empty until lineage archive runs (docs/storage.md says what a "
    "changed row can do: hide archived entries from a lookup, never change one)",
    "expiries": "expired ranges, empty until lineage retention apply runs: checked against the signed expire "
    "records by tests/archive/test_archive_tamper.py",
}
"""Tables of the archive tier, which this test's ledger does not use, and where they are tested."""
UNREAD: dict[tuple[str, str], str] = {
    ("meta", "store_schema"): "a label of the store's schema version at creation: no reader consults it (the "
    "store reads its tables as they are), so a changed label changes no answer",
}
"""(table, row key) of single values that cannot change an answer, and why."""


def _runs_short(monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite's subject index is written in runs of 32,768 entries; a short run puts rows in it here.
    monkeypatch.setattr(sqlite_store, "SUBJECT_RUN", 16)
    monkeypatch.setattr(sqlite_store, "_RUN_SLICE_MIN", 4)
    monkeypatch.setattr(sqlite_store, "_RUN_SLICE_PER_ENTRY", 0)
    # and the bodies' zstd dictionary is trained after 100 entries, not 2,000, so later bodies use it
    monkeypatch.setattr(sqlite_compact, "TRAIN_AT", 100)
    monkeypatch.setattr(sqlite_compact, "PROMISE_TRAIN_AT", 12)  # and the signed promises' after 12


@dataclass(frozen=True)
class Built:
    path: Path
    verifier: NoteVerifier


def _days_clock() -> Callable[[], int]:
    """A clock that moves on three hours each time it is read, so the ledger records entries on several days
    (each with daily rollups)."""
    readings = itertools.count()
    return lambda: T0 + next(readings) * 3 * 3_600_000_000_000


def _build(url: str) -> NoteVerifier:
    """The workload's ledger at ``url``, its complete days rolled up; its log key's verifier."""
    workload = generate(45, start_ns=T0)
    signers = {p: Ed25519Signer(p, p.encode().ljust(32, b".")[:32]) for p in PRODUCERS}
    key_ids = {p: f"{p}-1" for p in PRODUCERS}
    with Ledger.create(url, make_log_signer(), settings=SETTINGS, clock=_days_clock()) as ledger:
        for producer, signer in signers.items():
            ledger.register_key(producer, key_ids[producer], signer.public_key)
        for envelope in batches(workload, signers, key_ids):
            ledger.append(envelope)
        ledger.seal()
        assert len(roll_up(ledger.store)) > 2
        return ledger.log_verifier()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Built:
    path = tmp_path_factory.mktemp("columns") / "ledger.db"
    with pytest.MonkeyPatch.context() as patch:
        _runs_short(patch)
        verifier = _build(str(path))
    return Built(path, verifier)


@pytest.fixture
def runs_short(monkeypatch: pytest.MonkeyPatch) -> None:
    _runs_short(monkeypatch)


def _tables(path: Path) -> dict[str, list[str]]:
    with closing(sqlite3.connect(path)) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: [c[1] for c in db.execute(f'PRAGMA table_info("{name}")')] for name in names}


def _cases(path: Path) -> Iterator[tuple[str, str, int]]:
    with closing(sqlite3.connect(path)) as db:
        for table, columns in _tables(path).items():
            if table in NOT_DERIVED or table in ARCHIVE_TIER:
                continue
            count = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            # small tables (the settings) in every row, the others in their first, middle and last rows
            offsets = range(count) if count <= 8 else sorted({0, count // 2, count - 1})
            for column in columns:
                for offset in offsets:
                    yield table, column, offset


def _changed(value: object) -> object:
    if isinstance(value, bool | int):
        return value + 1
    if isinstance(value, bytes):
        return value[:-1] + bytes([value[-1] ^ 0x01]) if value else b"\x01"
    if isinstance(value, str):
        last = value[-1:] or "a"
        return value[:-1] + ("b" if last != "b" else "c")
    raise AssertionError(f"no way to change {value!r}")


def _row_key(path: Path, table: str, offset: int) -> str:
    with closing(sqlite3.connect(path)) as db:
        columns = ", ".join(f'"{c}"' for c in _tables(path)[table])
        row = db.execute(f'SELECT {columns} FROM "{table}" ORDER BY {columns} LIMIT 1 OFFSET ?', (offset,)).fetchone()
        return str(row[0])


def _flip(path: Path, table: str, column: str, offset: int) -> str:
    """Change ``column`` in the row at ``offset`` (in rowid or key order) of ``table``; describe the change."""
    with closing(sqlite3.connect(path)) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
        columns = _tables(path)[table]
        key = ", ".join(f'"{c}"' for c in columns)
        row = db.execute(f'SELECT {key} FROM "{table}" ORDER BY {key} LIMIT 1 OFFSET ?', (offset,)).fetchone()
        assert row is not None, (table, offset)
        where = " AND ".join(f'"{c}" IS ?' for c in columns)
        old = row[columns.index(column)]
        if old is None:
            return ""
        new = _changed(old)
        for attempt in (new, _changed(new), -1 if isinstance(old, int) else new):
            try:
                db.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE {where}', (attempt, *row))
                break
            except sqlite3.IntegrityError:
                continue
        else:
            raise AssertionError(f"cannot change {table}.{column}")
        db.commit()
        return f"{table}.{column} row {offset}: {old!r:.60} -> {attempt!r:.60}"


def test_the_ledger_has_rows_in_every_derived_table(pristine: Built) -> None:
    with closing(sqlite3.connect(pristine.path)) as db:
        for table in _tables(pristine.path):
            if table not in NOT_DERIVED and table not in ARCHIVE_TIER:
                assert db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] > 0, table
        # the bodies' dictionary and the signed promises': a changed value in either is among the cases
        assert db.execute("SELECT count(*) FROM dictionaries").fetchone()[0] == 2
    report = verify_ledger(str(pristine.path), verifier=pristine.verifier, workers=1)
    assert report.ok, report.problems
    assert report.checkpoints > 2
    assert report.blocks > 2


def test_every_changed_value_fails_verify(pristine: Built, tmp_path: Path, runs_short: None) -> None:
    undetected = []
    cases = list(_cases(pristine.path))
    assert len(cases) > 60
    for n, (table, column, offset) in enumerate(cases):
        if (table, _row_key(pristine.path, table, offset)) in UNREAD:
            continue
        if table == "subject_index_mark":
            continue  # test_the_subject_index_mark_cannot_claim_more_than_is_indexed
        copy = tmp_path / f"flip-{n}.db"
        shutil.copyfile(pristine.path, copy)
        what = _flip(copy, table, column, offset)
        if not what:
            continue
        report = verify_ledger(str(copy), verifier=pristine.verifier, workers=1)
        if report.ok:
            undetected.append(what)
        copy.unlink()
    print("\n".join(undetected))
    assert undetected == []


def test_the_subject_index_mark_cannot_claim_more_than_is_indexed(
    pristine: Built, tmp_path: Path, runs_short: None
) -> None:
    """subject_index_mark holds one row per finished run; readers take the largest, so an older row is
    superseded and cannot change an answer, and the largest changed to a mark that is still true (the index
    already holds the entries below it) changes none either. Claiming entries the index does not hold would
    hide them from timelines: verify must fail."""
    copy = tmp_path / "mark.db"
    shutil.copyfile(pristine.path, copy)
    with closing(sqlite3.connect(copy)) as db:
        size = db.execute("SELECT count(*) FROM entries").fetchone()[0]
        indexed = {i for (i,) in db.execute("SELECT idx FROM subject_index")}
        mark = db.execute("SELECT max(through) FROM subject_index_mark").fetchone()[0]
        assert min(set(range(size)) - indexed) >= mark  # what the mark claims is true
        claim = min(set(range(size)) - indexed) + 1  # one entry more than the index holds
        db.execute("INSERT INTO subject_index_mark VALUES (?)", (claim,))
        db.commit()
    report = verify_ledger(str(copy), verifier=pristine.verifier, workers=1)
    assert not report.ok
    assert "subject_index" in {p.kind for p in report.problems}


def test_every_changed_value_fails_verify_on_postgresql(postgres_ledger: PostgresLedger) -> None:
    """The same on PostgreSQL (no subject index there: the database indexes subjects itself). The owner
    turns the append-only triggers off for its session, changes one value, and puts it back after verify."""
    import psycopg

    verifier = _build(postgres_ledger.writer_url)
    undetected = []
    flips = 0
    with psycopg.connect(postgres_ledger.owner_url, autocommit=True) as db:
        db.execute("SET session_replication_role = replica")  # no triggers fire in this session
        tables = [
            r[0]
            for r in db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
            )
        ]
        derived = {"entries", "envelopes", "nodes", "checkpoints", "map_nodes", "links", "revocations", "rollups"}
        assert derived | {"rollup_days"} <= set(tables)
        for table in tables:
            if table in NOT_DERIVED or table in ARCHIVE_TIER:
                continue
            columns = [
                r[0]
                for r in db.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "ORDER BY ordinal_position",
                    (table,),
                )
            ]
            order = ", ".join(f'"{c}"' for c in columns)
            count = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]  # type: ignore[index]
            assert count > 0, table
            offsets = range(count) if count <= 8 else sorted({0, count // 2, count - 1})
            for column in columns:
                for offset in offsets:
                    row = db.execute(
                        f'SELECT ctid, "{column}", "{columns[0]}" FROM "{table}" ORDER BY {order} LIMIT 1 OFFSET %s',
                        (offset,),
                    ).fetchone()
                    assert row is not None
                    ctid, old, key = row[0], row[1], row[2]
                    if old is None or (table, str(key)) in UNREAD:
                        continue
                    old = bytes(old) if isinstance(old, memoryview) else old
                    changed = None
                    for new in (_changed(old), _changed(_changed(old)), -1 if isinstance(old, int) else old):
                        try:
                            changed = db.execute(
                                f'UPDATE "{table}" SET "{column}" = %s WHERE ctid = %s RETURNING ctid', (new, ctid)
                            ).fetchone()
                            break
                        except psycopg.errors.UniqueViolation:
                            continue
                    assert changed is not None
                    flips += 1
                    try:
                        report = verify_ledger(postgres_ledger.auditor_url, verifier=verifier, workers=1)
                        if report.ok:
                            undetected.append(f"{table}.{column} row {offset}: {old!r:.60} -> {new!r:.60}")
                    finally:
                        db.execute(f'UPDATE "{table}" SET "{column}" = %s WHERE ctid = %s', (old, changed[0]))
    assert flips > 60
    assert undetected == []
    assert verify_ledger(postgres_ledger.auditor_url, verifier=verifier, workers=1).ok
