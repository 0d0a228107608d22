"""SQLite writes its subject index in sorted runs (store.sqlite._SubjectRuns): reads must not see the difference.

The runs are made short here (8 entries, written 3 index rows per commit) so that every state occurs within
a few dozen entries: indexed, being indexed, not yet indexed, a writer gone mid-run, and a ledger written
before runs existed. Each answer is compared with one worked out from all the entries, read by index.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineage_ledger.store import open_store, sqlite
from lineage_ledger.store.base import BatchWrite, EntryRow, Store
from tests.store.test_contract import _batch, _row

SUBJECTS = ["token:a", "token:b", "token:c", "asset:x", "policy:p", "producer:svc", "ledger:blocks"]


@pytest.fixture(autouse=True)
def short_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "SUBJECT_RUN", 8)
    monkeypatch.setattr(sqlite, "_RUN_SLICE_MIN", 3)
    monkeypatch.setattr(sqlite, "_RUN_SLICE_PER_ENTRY", 0)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "runs.db")


@pytest.fixture
def store(path: str) -> Iterator[Store]:
    s = open_store(path)
    s.initialise({"origin": "runs.example/log", "verifier_key": "unused"})
    yield s
    s.close()


def _write(store: Store, start: int, count: int, rng: random.Random) -> list[EntryRow]:
    rows = [_row(i, rng.choice(SUBJECTS), f"e{i}") for i in range(start, start + count)]
    store.write(_batch(start, rows))
    return rows


def _check(store: Store, everything: list[EntryRow]) -> None:
    """Every subject's entries, and every prefix's, as a scan of all entries gives them."""
    for subject in SUBJECTS:
        assert store.subject_entries([subject]) == [r for r in everything if r.subject == subject], subject
    pair = ["token:b", "asset:x"]
    assert store.subject_entries(pair) == sorted(
        (r for r in everything if r.subject in pair), key=lambda r: (r.subject, r.index)
    )
    for prefix in ("token:", "producer:", "policy:"):
        assert store.subjects_with_prefix(prefix) == [r for r in everything if r.subject.startswith(prefix)]


def _mark(path: str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT coalesce(max(through), 0) FROM subject_index_mark").fetchone()[0])
    finally:
        db.close()


def test_answers_are_the_same_in_every_state_of_a_run(store: Store, path: str) -> None:
    rng = random.Random(7)
    reader = open_store(path, readonly=True)
    everything: list[EntryRow] = []
    marks = set()
    try:
        for _ in range(30):
            everything += _write(store, len(everything), rng.choice([1, 2, 5]), rng)
            _check(store, everything)
            _check(reader, everything)
            marks.add(_mark(path))
    finally:
        reader.close()
    # runs were started and finished along the way, so the index really was read from
    assert len(marks) >= 3
    assert max(marks) >= 16


def test_a_writer_gone_mid_run_leaves_nothing_missing(store: Store, path: str) -> None:
    rng = random.Random(11)
    everything = _write(store, 0, 9, rng)  # a run of 8 is due: the next commit writes its first 3 rows
    everything += _write(store, 9, 1, rng)
    assert _mark(path) == 0  # started, not finished
    store.close()
    again = open_store(path)
    try:
        _check(again, everything)
        for _ in range(6):
            everything += _write(again, len(everything), 1, rng)
            _check(again, everything)
        assert _mark(path) >= 8
    finally:
        again.close()


def test_a_ledger_from_before_runs_is_read_as_it_is_and_moved_over_when_opened_for_writing(
    store: Store, path: str
) -> None:
    rng = random.Random(3)
    everything = _write(store, 0, 20, rng)
    store.close()
    # as an older version left it: an index on entries (subject, idx), no subject_index tables
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE subject_index; DROP TABLE subject_index_mark; "
        "CREATE INDEX entries_subject ON entries (subject, idx);"
    )
    db.close()
    reader = open_store(path, readonly=True)
    try:
        _check(reader, everything)
    finally:
        reader.close()
    writer = open_store(path)
    try:
        db = sqlite3.connect(path)
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        db.close()
        assert "entries_subject" not in indexes
        assert _mark(path) == 20
        _check(writer, everything)
        everything += _write(writer, 20, 3, rng)
        _check(writer, everything)
    finally:
        writer.close()


def test_an_entry_written_below_the_mark_is_indexed_at_once(store: Store, path: str) -> None:
    rng = random.Random(5)
    everything = _write(store, 10, 12, rng)
    for _ in range(4):
        everything += _write(store, everything[-1].index + 1, 1, rng)
    assert _mark(path) > 10
    low = _row(3, "token:a", "low")  # below every entry so far (verify reports such a row as an insertion)
    store.write(BatchWrite(entries=[low]))
    everything = [low, *everything]
    _check(store, everything)


def test_an_entry_written_into_a_run_being_written_is_indexed_at_once(store: Store, path: str) -> None:
    rng = random.Random(9)
    everything = _write(store, 10, 9, rng)  # a run of 8 (10 to 17) is due; the next commit starts it
    everything += _write(store, 30, 1, rng)
    assert _mark(path) == 0
    inside = _row(5, "token:c", "inside")  # not yet indexed, below where the run will put the mark
    store.write(BatchWrite(entries=[inside]))
    everything = [inside, *everything]
    for _ in range(4):
        everything += _write(store, everything[-1].index + 1, 1, rng)
        _check(store, everything)
    assert _mark(path) > 5
    _check(store, everything)
