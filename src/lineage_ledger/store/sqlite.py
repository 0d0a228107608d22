"""The embedded default store: one SQLite file in WAL mode, one transaction per batch.

Append-only is enforced inside the database: a trigger on every table aborts any UPDATE or DELETE, so even a
bug in this package cannot rewrite history through this connection (someone with the file can, and
``lineage verify`` is what catches that).

Durability: ``synchronous=FULL`` by default, so an acknowledged batch survives power loss, not only a
killed process; ``?synchronous=normal`` in the URL trades that for speed (still safe against SIGKILL).

Files: created 0600, or as ``?file_mode=`` says; a read-only ledger is refused for writing (sqlite_files.py).

The subject index is written in runs, not with each entry (see :class:`_SubjectRuns`).
"""

from __future__ import annotations

import bisect
import contextlib
import operator
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

from lineage_ledger.errors import ConflictError, InputError, NotFoundError, StorageFullError, StoreError
from lineage_ledger.store._archive_rows import ARCHIVE_DELETE, ArchiveRows, archive_inserts
from lineage_ledger.store._reads import ENTRY_COLUMNS, SqlReads
from lineage_ledger.store.base import (
    BatchWrite,
    ChainBreak,
    EntryRow,
    QuarantineRow,
    RollupDay,
    RollupRow,
    SchemaRow,
    keyset_pages,
)
from lineage_ledger.store.compact import BodyCodec, event_id_key
from lineage_ledger.store.sqlite_compact import (
    COMPACT_SCHEMA,
    COMPACT_TABLES,
    ENTRY_SELECT,
    CompactWriter,
    Names,
    entry_row,
    name_of,
)
from lineage_ledger.store.sqlite_files import file_mode, prepare_for_writing
from lineage_ledger.store.writer_lock import LOCK_SUFFIX, FileWriterLock

__all__ = ["SQLiteStore", "sqlite_path_from_url"]

SCHEMA_VERSION: Final = 2
"""The store layout new ledgers get (store.sqlite_compact); layout 1 (text subjects, bodies as they are)
is still read and written, for ledgers created with it."""
_TABLES: Final = (
    "meta",
    "entries",
    "envelopes",
    "nodes",
    "checkpoints",
    "promises",
    "revocations",
    "links",
    "map_nodes",
    "offsets",
    "schemas",
    "quarantine",
    "subject_index",
    "subject_index_mark",
    "cosignatures",
    "timestamps",
    "rollups",
    "rollup_days",
    "archives",
    "archive_keys",
    "expiries",
)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    event_id TEXT UNIQUE,
    parent TEXT,
    prev BLOB NOT NULL,
    leaf BLOB NOT NULL,
    verdict TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_parent ON entries (parent) WHERE parent IS NOT NULL;
CREATE TABLE IF NOT EXISTS envelopes (
    digest BLOB PRIMARY KEY,
    producer TEXT NOT NULL,
    key_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    signature BLOB NOT NULL,
    event_leaves BLOB NOT NULL,
    first_idx INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS promises (first INTEGER PRIMARY KEY, length INTEGER NOT NULL, promise BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (subject TEXT PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS map_nodes (hash BLOB PRIMARY KEY, node BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS links (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    at TEXT NOT NULL,
    idx INTEGER NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (kind, key, at, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
    source TEXT NOT NULL,
    part INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (source, part, next_offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schemas (
    fingerprint BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    source TEXT NOT NULL,
    part INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    reason TEXT NOT NULL,
    digest BLOB NOT NULL,
    value BLOB,
    PRIMARY KEY (source, part, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_index (
    subject TEXT NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (subject, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_index_mark (through INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL,
    witness TEXT NOT NULL,
    key_id INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (size, witness, key_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timestamps (size INTEGER PRIMARY KEY, token BLOB NOT NULL);
"""

_LAYOUT_ANY_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rollups (
    day TEXT NOT NULL,
    subject TEXT NOT NULL,
    events INTEGER NOT NULL,
    uses INTEGER NOT NULL,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    first_idx INTEGER NOT NULL,
    last_idx INTEGER NOT NULL,
    resources TEXT NOT NULL,
    outcomes TEXT NOT NULL,
    PRIMARY KEY (subject, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_days (day TEXT PRIMARY KEY, first_idx INTEGER NOT NULL, end_idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS archives (
    first INTEGER PRIMARY KEY,
    last INTEGER NOT NULL,
    location TEXT NOT NULL,
    file TEXT NOT NULL,
    sha256 BLOB NOT NULL,
    record INTEGER NOT NULL,
    edge_leaves BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS archive_keys (
    key TEXT NOT NULL,
    first INTEGER NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    PRIMARY KEY (key, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expiries (
    first INTEGER PRIMARY KEY,
    last INTEGER NOT NULL,
    policy TEXT NOT NULL,
    policy_index INTEGER NOT NULL,
    record INTEGER NOT NULL
);
"""
"""Tables both layouts keep in the same form."""

SUBJECT_RUN: Final = 32768
"""Entries indexed by subject together, in one sorted run (_SubjectRuns). Each run rewrites about one page
per distinct subject in it, so longer runs write less per entry when subjects recur: on the delivery
workload (1,000 tokens) at 300,000 entries, 5.1 KB of WAL per event with runs of 8,192, 4.15 with 32,768,
3.9 with 65,536. Longer runs cost a longer sort when a run starts (about 10 ms for 32,768 pairs) and a
bigger in-memory tail (up to two runs of (subject, idx) pairs, in the writer and in each read-only store)."""
_RUN_SLICE_MIN: Final = 1024
_RUN_SLICE_PER_ENTRY: Final = 4
"""A run is written at least _RUN_SLICE_MIN rows at a time, or this many per entry of the commit."""
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
_MARK: Final = "(SELECT coalesce(max(through), 0) FROM subject_index_mark)"
"""Entries below this index are in subject_index; those at or above it are in the tail (_SubjectRuns)."""


class _SubjectRuns:
    """The subject index, written in sorted runs instead of with each entry.

    Indexed with each entry (an index on entries (subject, idx)), every event landed on the index page of
    its subject, a random one: each commit rewrote a page per distinct subject in it, and at the batch sizes
    a producer sends (a few hundred events) that was the largest cost of the commit, 17 us and 8 KB of WAL
    per event measured (``benchmarks/bench_emitter.py``'s events at 200 per commit: 61 against 44 us per
    event without it). Events of one subject come close together in time (a token is used many times), so
    the writer now gathers ``SUBJECT_RUN`` entries, sorts their (subject, idx) pairs, and writes them a
    slice with each later commit: each page then takes all of the run's rows for it at once. The last
    slice's commit records the run's end in ``subject_index_mark``. Reads take the indexed entries below
    the mark from ``subject_index``, and the tens of thousands above it from this object's map of them: the
    writer's store keeps it up to date as it commits, a read-only store reads the (subject, idx) of the
    entries added since its last look before each answer (:meth:`SQLiteStore._tail`). A writer killed
    mid-run leaves some of its rows and no mark: the next one to open the file starts the run again and
    "insert or ignore" skips what is there.
    """

    def __init__(self, mark: int, tail: list[tuple[Any, int]]) -> None:
        self.lock = threading.Lock()
        """Held while the committed state changes (adopt) and while a reader takes a snapshot of it."""
        self.mark = mark
        self.tail = tail
        """(subject, idx) of the entries at or above the mark, in log order."""
        self.where: dict[Any, list[int]] = {}
        """subject -> idx of its entries in the tail, ascending."""
        for subject, idx in tail:
            self.where.setdefault(subject, []).append(idx)
        self.end = tail[-1][1] + 1 if tail else mark
        """A reader's: the entries below this index have been looked at."""
        self.run: list[tuple[Any, int]] = []
        self.pos = 0
        self.run_end = mark

    def snapshot(self, subjects: Iterable[Any]) -> tuple[int, list[int]]:
        """The mark and the tail's entries of ``subjects``, as of the latest commit."""
        with self.lock:
            found: list[int] = []
            for subject in subjects:
                found.extend(self.where.get(subject, ()))
            return self.mark, found

    def snapshot_prefix(self, prefix: str) -> tuple[int, list[int]]:
        """The mark and the tail's entries of every subject starting with ``prefix``."""
        with self.lock:
            return self.mark, [
                idx for subject, found in self.where.items() if subject.startswith(prefix) for idx in found
            ]

    def plan(self, entries: Sequence[tuple[Any, int]]) -> tuple[list[tuple[Any, int]], int | None, int]:
        """The index rows to write with ``entries`` ((subject key, idx) pairs), the mark to record with them
        (if the run ends), and the run position to :meth:`adopt` once they are committed. Entries below the
        mark (written out of order) are indexed at once."""
        if not self.run and len(self.tail) >= SUBJECT_RUN:
            self.tail.sort(key=_second)
            # stable: by subject, then by idx as the tail already is (a third of the time of sorting the pairs)
            self.run = sorted(self.tail[:SUBJECT_RUN], key=_first)
            self.run_end = self.tail[SUBJECT_RUN][1] if len(self.tail) > SUBJECT_RUN else self.tail[-1][1] + 1
            self.pos = 0
        below = self.run_end if self.run else self.mark  # the mark once this run is written
        rows = [pair for pair in entries if pair[1] < below]
        if not self.run:
            return rows, None, 0
        end = min(len(self.run), self.pos + max(_RUN_SLICE_MIN, _RUN_SLICE_PER_ENTRY * len(entries)))
        rows.extend(self.run[self.pos : end])
        return rows, self.run_end if end == len(self.run) else None, end

    def adopt(self, entries: Sequence[tuple[Any, int]], mark: int | None, pos: int) -> None:
        """The writer's: ``entries`` and the index rows planned with them are committed."""
        with self.lock:
            self.add(entries)
            self.pos = pos
            if mark is not None:
                self.advance(mark)

    def add(self, pairs: Iterable[tuple[Any, int]]) -> None:
        """Add committed entries' (subject, idx) to the tail (the caller holds the lock)."""
        where = self.where
        for subject, idx in pairs:
            if idx < self.mark:
                continue
            self.tail.append((subject, idx))
            self.end = max(self.end, idx + 1)
            found = where.get(subject)
            if found is None:
                where[subject] = [idx]
            elif idx > found[-1]:
                found.append(idx)
            else:
                bisect.insort(found, idx)

    def advance(self, mark: int) -> None:
        """The entries below ``mark`` are indexed now: drop them from the tail (the caller holds the lock)."""
        self.mark = mark
        self.tail = [item for item in self.tail if item[1] >= mark]
        self.where = {}
        for subject, idx in sorted(self.tail, key=lambda item: item[1]):
            self.where.setdefault(subject, []).append(idx)
        self.end = max(self.end, mark)
        self.run = []
        self.pos = 0


def _triggers(tables: Sequence[str]) -> str:
    # An event entry inside a recorded archived range may be deleted (its bytes are in a verified archive
    # file); any other DELETE on entries, as on every table, is refused.
    out = [
        "DROP TRIGGER IF EXISTS entries_no_delete;",
        "CREATE TRIGGER IF NOT EXISTS entries_no_delete_unarchived BEFORE DELETE ON entries "
        "WHEN OLD.event_id IS NULL OR NOT EXISTS (SELECT 1 FROM archives WHERE OLD.idx BETWEEN first AND last) "
        "BEGIN SELECT RAISE(ABORT, 'lineage ledger tables are append-only: DELETE on entries outside an "
        "archived range'); END;",
    ]
    for table in tables:
        for op in ("UPDATE", "DELETE"):
            if (table, op) == ("entries", "DELETE"):
                continue
            out.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'lineage ledger tables are append-only: {op} on {table}'); END;"
            )
    return "\n".join(out)


_RESTART_FRAMES: Final = 16384
"""The WAL is started over once it holds this many frames (64 MB of 4-KB pages); see _Checkpointer."""
_LAST_PASS_FRAMES: Final = 64
"""At most this many frames are copied with the writer held (see _Checkpointer)."""
_CATCH_UP_PASSES: Final = 8
_FORCE_FACTOR: Final = 4
"""Past this many times _RESTART_FRAMES, the last pass holds the writer even if the catch-up passes never
got down to _LAST_PASS_FRAMES (a bulk load at synchronous=normal can outpace them every round)."""
_CHECKPOINT_INTERVAL_S: Final = 0.25
_WAL_LIMIT_BYTES: Final = 128 << 20
"""journal_size_limit: a WAL that grew past this (a burst, a long reader) is cut back to it when it restarts.
Above _RESTART_FRAMES' 64 MB, so that a steady writer reuses the file instead of cutting and growing it."""


class _Checkpointer:
    """Checkpoints the WAL from its own connection every ``interval`` seconds, so commits stay short (SQLite's
    automatic checkpoint would run inside COMMIT) and the WAL stays bounded. Stopped by the store's close().

    A checkpoint beside a steady writer never finishes: frames committed while it copies are left for the
    next one, and SQLite starts the WAL over only when a write transaction begins with every frame copied.
    With PASSIVE checkpoints alone, the WAL grew for as long as the writer wrote (1.3 GB at 400,000 entries
    of the delivery benchmark's events, over twice the database; a day of such load fills a disk). So each
    round runs lock-free passes (PASSIVE: readers and the writer carry on) until few frames arrive during
    one; then, once the WAL holds _RESTART_FRAMES, a last pass holding ``write_lock`` (the store's writer
    lock, so no commit lands meanwhile) copies those few, and the next write transaction starts the WAL
    over. That pass stalls the writer (at 10,000 events/s: 6 ms at the median, up to 14 ms, mostly the
    database's fsync), so it runs once per 64 MB of WAL rather than every round. A writer that outpaces
    every catch-up pass (a bulk load) is held anyway once the WAL passes 256 MB."""

    def __init__(self, path: str, write_lock: threading.RLock, interval: float) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._write_lock = write_lock
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="lineage-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._round()
            except sqlite3.Error:
                continue  # busy or locked: the next round tries again; nothing depends on one checkpoint

    def _passive(self) -> int:
        """One PASSIVE checkpoint; the WAL's frame count as it saw it (frames committed meanwhile are not
        counted, nor copied)."""
        _, log, _ = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log)

    def _round(self) -> None:
        seen = self._passive()
        if seen < _RESTART_FRAMES:
            return  # small yet: one pass a round, the writer never held
        for _ in range(_CATCH_UP_PASSES):
            log = self._passive()
            if log < seen:  # the WAL started over since the last pass
                return
            arrived, seen = log - seen, log
            if arrived <= _LAST_PASS_FRAMES:
                break  # the frames committed during this pass are few: copy them with the writer held
        else:
            if seen < _FORCE_FACTOR * _RESTART_FRAMES:
                return  # the writer keeps outpacing the passes: try again next round
            # A writer this fast would keep the WAL growing: hold it anyway, for what one pass let in.
        while not self._write_lock.acquire(timeout=0.05):
            if self._stop.is_set():
                return
        try:
            self._passive()
        finally:
            self._write_lock.release()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(sqlite3.Error):  # a reader holds the WAL: the next round or open does it
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


def sqlite_path_from_url(url: str) -> str:
    """The file path named by a ledger URL.

    As SQLAlchemy does: ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``;
    a bare path is taken as it is.
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif "://" in url:
        raise InputError("ledger", f"{url!r} is neither a sqlite:/// URL nor a path")
    else:
        path = url
    if not path:
        raise InputError("ledger", f"{url!r} names no file")
    return path


_ROWS_PER_INSERT: Final = 500


def _insert_rows(
    db: sqlite3.Connection, table: str, width: int, rows: Sequence[Sequence[Any]], *, verb: str = "INSERT"
) -> None:
    """INSERT many rows with multi-row VALUES statements of up to _ROWS_PER_INSERT rows: one sqlite3_step per
    statement instead of one per row, so the driver gives up and takes back the GIL a few times per batch
    instead of once per row (which, with another thread busy in Python, is where a commit thread's time went).

    The rest after the full statements goes in chunks of powers of two, so each table has at most a dozen
    statement shapes: the connection caches its prepared statements, and one per remainder size (each with
    thousands of parameters) held tens of megabytes."""
    one = "(" + ", ".join("?" * width) + ")"
    start, total = 0, len(rows)
    while start < total:
        left = total - start
        size = _ROWS_PER_INSERT if left >= _ROWS_PER_INSERT else 1 << (left.bit_length() - 1)
        chunk = rows[start : start + size]
        params = [value for row in chunk for value in row]
        db.execute(f"{verb} INTO {table} VALUES " + ", ".join([one] * size), params)
        start += size


class SQLiteStore(SqlReads, ArchiveRows):
    """Store backed by one SQLite database file (or memory, for tests and benchmarks)."""

    _param = "?"

    def __init__(self, url: str, *, synchronous: str | None = None, readonly: bool = False) -> None:
        self.url = url
        base = url.split("?", 1)[0]
        query = parse_qs(url.split("?", 1)[1]) if "?" in url else {}
        sync = (synchronous or query.get("synchronous", ["full"])[0]).upper()
        if sync not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise InputError("ledger", f"synchronous={sync.lower()} is not one of full, normal, extra, off")
        self.path = sqlite_path_from_url(base)
        self._lock = threading.RLock()
        self._writer_lock: FileWriterLock | None = None
        if not readonly and self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            mode = file_mode(query)
            prepare_for_writing(Path(self.path), mode)  # a read-only ledger is refused, naming the file
            # taken before the first write to the database (even the schema), held until close()
            self._writer_lock = FileWriterLock(Path(self.path + LOCK_SUFFIX), self.path, mode)
            self._writer_lock.acquire()
        try:
            self._open(readonly, sync)
        except BaseException:
            if self._writer_lock is not None:
                self._writer_lock.release()
            raise

    def _open(self, readonly: bool, sync: str) -> None:
        try:
            if readonly:
                if self.path == ":memory:" or not Path(self.path).exists():
                    raise NotFoundError(f"no ledger at {self.path}")
                uri = f"file:{Path(self.path).absolute()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._runs: _SubjectRuns | None = None
            self._compact = self._has("table", "subjects") or (
                not self._has("table", "entries") and SCHEMA_VERSION >= 2
            )
            """Store layout 2 (store.sqlite_compact): every ledger created now; 1 for older ones."""
            self._codec = BodyCodec(self._dictionary)
            self._writer: CompactWriter | None = None
            if not readonly:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute(f"PRAGMA synchronous = {sync}")
                self._db.execute("PRAGMA cache_size = -65536")
                if self._compact:
                    self._db.executescript(COMPACT_SCHEMA + _LAYOUT_ANY_SCHEMA + _triggers((*_TABLES, *COMPACT_TABLES)))
                else:
                    self._db.executescript(_SCHEMA + _LAYOUT_ANY_SCHEMA + _triggers(_TABLES))
                self._runs = self._open_runs()
                if self._compact:
                    names = Names()
                    names.load_counters(self._db)
                    next_envelope = self._db.execute("SELECT coalesce(max(n), 0) + 1 FROM envelopes").fetchone()[0]
                    self._writer = CompactWriter(names, self._codec, int(next_envelope))
            if self._compact:
                for dict_id, data in self._db.execute("SELECT id, dict FROM dictionaries ORDER BY id"):
                    self._codec.add_dictionary(int(dict_id), bytes(data))
            self._legacy = not self._has("table", "subject_index")
            self._entry_sql = ENTRY_SELECT if self._compact else f"SELECT {ENTRY_COLUMNS} FROM entries AS e"
            self._cosigned_table = self._has("table", "cosignatures")
            self._timestamps_table = self._has("table", "timestamps")
            self._rollups_table = self._has("table", "rollups")
            """False only for a ledger from before cosignatures, opened read-only."""
            self._seen: _SubjectRuns | None = None
            """A read-only store's view of the unindexed tail (see _tail)."""
            """A ledger written before the subject index was written in runs, opened read-only: its entries
            carry the old index on (subject, idx) instead."""
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite ledger {self.path}: {e}") from e
        # Reads go through a connection of their own (WAL: readers never wait for the writer), so a read made
        # while a batch is being committed on another thread (Ledger.pipeline) does not queue behind the fsync.
        # It sees only committed data, which is what a read of the store means. In memory there is one.
        self._reads = self._db
        self._read_lock = self._lock
        if not readonly and self.path != ":memory:":
            try:
                self._reads = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._reads.execute("PRAGMA busy_timeout = 10000")
                self._reads.execute("PRAGMA cache_size = -16384")  # lookups; the writer keeps the big cache
                self._reads.execute("PRAGMA query_only = ON")
            except sqlite3.Error as e:
                self._db.close()
                raise StoreError(f"cannot open SQLite ledger {self.path}: {e}") from e
            self._read_lock = threading.RLock()
        self._checkpointer: _Checkpointer | None = None
        if not readonly and self.path != ":memory:":
            # Copying the WAL back into the database ("checkpointing") happens on a thread of its own, so a
            # commit pays only for its own pages; SQLite's automatic checkpoint would run inside COMMIT.
            self._db.execute("PRAGMA wal_autocheckpoint = 0")
            self._db.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
            self._checkpointer = _Checkpointer(self.path, self._lock, _CHECKPOINT_INTERVAL_S)

    def _has(self, kind: str, name: str) -> bool:
        found = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?", (kind, name)).fetchone()
        return found is not None

    def _open_runs(self) -> _SubjectRuns:
        """The subject index's state; a ledger from before runs gets its index moved into subject_index."""
        db = self._db
        if self._has("index", "entries_subject"):
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR IGNORE INTO subject_index SELECT subject, idx FROM entries ORDER BY subject, idx")
                db.execute("INSERT OR IGNORE INTO subject_index_mark SELECT coalesce(max(idx), -1) + 1 FROM entries")
                db.execute("DROP INDEX entries_subject")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        mark = db.execute(f"SELECT {_MARK}").fetchone()[0]
        tail = db.execute("SELECT subject, idx FROM entries WHERE idx >= ? ORDER BY idx", (mark,)).fetchall()
        return _SubjectRuns(mark, tail)

    # -- creation ---------------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        with self._lock:
            try:
                return dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.Error as e:
                raise StoreError(f"cannot read ledger settings: {e}") from e

    def initialise(self, meta: dict[str, str]) -> None:
        with self._lock:
            if self.meta():
                raise ConflictError(f"ledger {self.path} is already initialised")
            rows = sorted({**meta, "store_schema": "2" if self._compact else "1"}.items())
            self._transaction(lambda db: db.executemany("INSERT INTO meta VALUES (?, ?)", rows))

    # -- writes -----------------------------------------------------------------------------------------

    def _transaction(self, body: Any) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"cannot start a transaction: {e}") from e
        try:
            body(db)
            db.execute("COMMIT")
        except sqlite3.IntegrityError as e:
            db.execute("ROLLBACK")
            raise ConflictError(f"write refused, nothing was written: {e}") from e
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL:
                raise StorageFullError(f"write failed, nothing was written: the disk of {self.path} is full") from e
            raise StoreError(f"write failed, nothing was written: {e}") from e
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def write(self, batch: BatchWrite) -> None:
        runs = self._runs
        if runs is None:
            raise StoreError(f"the ledger {self.path} is open read-only")
        writer = self._writer
        pairs: list[tuple[Any, int]] = []
        planned: list[tuple[list[tuple[Any, int]], int | None, int]] = []

        def body(db: sqlite3.Connection) -> None:
            links: Sequence[Sequence[Any]] = batch.links
            envelopes: Sequence[Sequence[Any]] = batch.envelopes
            if writer is not None:
                promise = None if batch.promise is None else batch.promise.promise
                compact = writer.rows(db, batch.entries, batch.envelopes, batch.links, promise)
                for table in ("subjects", "link_keys", "dictionaries"):
                    if compact[table]:
                        _insert_rows(db, table, len(compact[table][0]), compact[table])
                pairs.extend(writer.pairs)
                _insert_rows(db, "entries", 9, compact["entries"])
                links, envelopes = compact["links"], compact["envelopes"]
            else:
                pairs.extend((e.subject, e.index) for e in batch.entries)
                _insert_rows(db, "entries", 8, batch.entries)
            index_rows, mark, pos = runs.plan(pairs)
            planned.append((index_rows, mark, pos))
            if index_rows:
                _insert_rows(db, "subject_index", 2, index_rows, verb="INSERT OR IGNORE")
            if mark is not None:
                db.execute("INSERT OR IGNORE INTO subject_index_mark VALUES (?)", (mark,))
            if envelopes:
                _insert_rows(db, "envelopes", len(envelopes[0]), envelopes)
            if batch.nodes:
                _insert_rows(db, "nodes", 3, batch.nodes)
            if batch.revocations:
                _insert_rows(db, "revocations", 2, batch.revocations)
            if batch.map_nodes:
                _insert_rows(db, "map_nodes", 2, batch.map_nodes, verb="INSERT OR IGNORE")
            if links:
                # at seals, some possibly stored already by a version that wrote them with each batch
                _insert_rows(db, "links", len(links[0]), links, verb="INSERT OR IGNORE")
            if batch.offsets:
                _insert_rows(db, "offsets", 3, batch.offsets)
            if batch.schemas:
                db.executemany(
                    "INSERT OR IGNORE INTO schemas SELECT ?, ?, ?, ?, coalesce(max(seq), 0) + 1 FROM schemas",
                    batch.schemas,
                )
            if batch.quarantine:
                _insert_rows(db, "quarantine", 6, batch.quarantine)
            if batch.checkpoint is not None:
                db.execute("INSERT INTO checkpoints VALUES (?, ?)", batch.checkpoint)
            if batch.promise is not None:
                first, length, signed = batch.promise
                stored = signed if writer is None or writer.promise is None else writer.promise
                db.execute("INSERT INTO promises VALUES (?, ?, ?)", (first, length, stored))
            for statement, rows in archive_inserts(batch, "?"):
                db.executemany(statement, rows)

        with self._lock:
            self._transaction(body)
            if writer is not None:
                writer.commit()
            _, mark, pos = planned[-1]
            runs.adopt(pairs, mark, pos)

    # -- reads ------------------------------------------------------------------------------------------

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._read_lock:
            try:
                return self._reads.execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"read failed: {e}") from e

    def _entry_row(self, row: Sequence[Any]) -> EntryRow:
        return entry_row(self._codec, row) if self._compact else EntryRow(*row)

    def _promise_bytes(self, stored: Any) -> bytes:
        return self._codec.decode_promise(bytes(stored)) if self._compact else bytes(stored)

    def _dictionary(self, dict_id: int) -> bytes | None:
        rows = self._all("SELECT dict FROM dictionaries WHERE id = ?", (dict_id,))
        return bytes(rows[0][0]) if rows else None

    def _keys(self, subjects: Sequence[str]) -> list[Any]:
        """How these subjects are stored in the subject columns: their ids (layout 2; absent ones left out),
        or themselves."""
        if not self._compact:
            return list(subjects)
        out: list[Any] = []
        for i in range(0, len(subjects), 900):
            chunk = subjects[i : i + 900]
            marks = ",".join("?" * len(chunk))
            out.extend(r[0] for r in self._all(f"SELECT sid FROM subjects WHERE subject IN ({marks})", chunk))
        return out

    def _prefix_keys(self, prefix: str, upper: str) -> list[Any]:
        """The stored ids of the subjects with this prefix (layout 2)."""
        return [r[0] for r in self._all("SELECT sid FROM subjects WHERE subject >= ? AND subject < ?", (prefix, upper))]

    def events_by_id(self, event_ids: Sequence[str]) -> dict[str, EntryRow]:
        out: dict[str, EntryRow] = {}
        keys = [event_id_key(e) for e in event_ids] if self._compact else list(event_ids)
        for i in range(0, len(keys), 900):
            chunk = keys[i : i + 900]
            marks = ",".join("?" * len(chunk))
            for row in self._all(f"{self._entry_sql} WHERE e.event_id IN ({marks})", chunk):
                entry = self._entry_row(row)
                if entry.event_id is not None:
                    out[entry.event_id] = entry
        return out

    def _tail(self) -> _SubjectRuns:
        """The unindexed tail's map: the writer's own, or, read-only, brought up to date with the entries
        committed since the last call (usually none or a few: a query does not rescan the tail)."""
        if self._runs is not None:
            return self._runs
        with self._read_lock:
            mark = int(self._all(f"SELECT {_MARK}")[0][0])
            seen = self._seen
            if seen is None or mark < seen.mark:  # first use, or not the file it was
                seen = self._seen = _SubjectRuns(mark, [])
            with seen.lock:
                if mark > seen.mark:
                    seen.advance(mark)
                seen.add(self._all("SELECT subject, idx FROM entries WHERE idx >= ? ORDER BY idx", (seen.end,)))
            return seen

    def subject_entries(self, subjects: Iterable[str]) -> list[EntryRow]:
        wanted = self._keys(list(dict.fromkeys(subjects)))
        out: list[EntryRow] = []
        if not self._legacy:
            mark, tail = self._tail().snapshot(wanted)
            for i in range(0, len(wanted), 900):
                chunk = wanted[i : i + 900]
                out.extend(
                    self._entry_row(r)
                    for r in self._all(
                        f"{self._entry_sql} WHERE e.idx IN (SELECT idx FROM subject_index "
                        f"WHERE subject IN ({','.join('?' * len(chunk))}) AND idx < ?)",
                        [*chunk, mark],
                    )
                )
            out.extend(self.entries_at(tail))
            out.sort(key=lambda r: (r.subject, r.index))
            return out
        for i in range(0, len(wanted), 900):  # a ledger from before the runs, read-only
            chunk = wanted[i : i + 900]
            marks = ",".join("?" * len(chunk))
            out.extend(self._entry_row(r) for r in self._all(f"{self._entry_sql} WHERE e.subject IN ({marks})", chunk))
        out.sort(key=lambda r: (r.subject, r.index))
        return out

    def subjects_with_prefix(self, prefix: str) -> list[EntryRow]:
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        if self._compact:
            return sorted(
                self.subject_entries(name_of(k) for k in self._prefix_names(prefix, upper)), key=lambda r: r.index
            )
        if self._legacy:
            rows = self._all(f"{self._entry_sql} WHERE subject >= ? AND subject < ?", (prefix, upper))
            return sorted((self._entry_row(r) for r in rows), key=lambda r: r.index)
        mark, tail = self._tail().snapshot_prefix(prefix)
        out = [
            self._entry_row(r)
            for r in self._all(
                f"{self._entry_sql} WHERE idx IN "
                "(SELECT idx FROM subject_index WHERE subject >= ? AND subject < ? AND idx < ?)",
                (prefix, upper, mark),
            )
        ]
        out.extend(self.entries_at(tail))
        out.sort(key=lambda r: r.index)
        return out

    def _prefix_names(self, prefix: str, upper: str) -> list[str]:
        return [
            r[0] for r in self._all("SELECT subject FROM subjects WHERE subject >= ? AND subject < ?", (prefix, upper))
        ]

    def _in_chunks(self, sql: str, values: Sequence[Any]) -> list[EntryRow]:
        out: list[EntryRow] = []
        for i in range(0, len(values), 900):
            chunk = values[i : i + 900]
            out.extend(self._entry_row(r) for r in self._all(sql.format(marks=",".join("?" * len(chunk))), chunk))
        out.sort(key=lambda r: r.index)
        return out

    def entries_at(self, indices: Sequence[int]) -> list[EntryRow]:
        return self._in_chunks(f"{self._entry_sql} WHERE e.idx IN ({{marks}})", list(dict.fromkeys(indices)))

    def children_of_many(self, subjects: Sequence[str]) -> list[EntryRow]:
        return self._in_chunks(f"{self._entry_sql} WHERE e.parent IN ({{marks}})", self._keys(list(subjects)))

    def children_of(self, subject: str) -> list[EntryRow]:
        return self.children_of_many([subject])

    def descendant_births(self, subject: str) -> list[EntryRow]:
        keys = self._keys([subject])
        if not keys:
            return []
        return [
            self._entry_row(r)
            for r in self._all(
                f"""
                WITH RECURSIVE family(subject) AS (
                    SELECT ?
                    UNION
                    SELECT c.subject FROM entries AS c JOIN family AS f ON c.parent = f.subject
                )
                {self._entry_sql} WHERE e.parent IN (SELECT subject FROM family) ORDER BY e.idx
                """,
                (keys[0],),
            )
        ]

    def links(self, kind: str, key: str, start: str = "", end: str = "\uffff") -> list[tuple[str, int, str]]:
        if not self._compact:
            return super().links(kind, key, start, end)
        rows = self._all(
            "SELECT l.at, l.idx, coalesce(s.subject, l.subject) FROM links AS l "
            "JOIN link_keys AS k ON k.id = l.key LEFT JOIN subjects AS s ON s.sid = l.subject "
            "WHERE k.kind = ? AND k.key = ? AND l.at >= ? AND l.at < ? ORDER BY l.at, l.idx",
            (kind, key, start, end),
        )
        return [(at, idx, name_of(subject)) for at, idx, subject in rows]

    def link_rows(self) -> Iterator[tuple[str, str, str, int, str]]:
        if not self._compact:
            return super().link_rows()
        select = (
            "SELECT l.key, l.at, l.idx, k.kind, coalesce(k.key, l.key), coalesce(s.subject, l.subject) FROM links AS l "
            "LEFT JOIN link_keys AS k ON k.id = l.key LEFT JOIN subjects AS s ON s.sid = l.subject"
        )
        rows = keyset_pages(self._all, select, ("l.key", "l.at", "l.idx"), "?")
        return ((name_of(kind), name_of(key), at, idx, name_of(subj)) for _, at, idx, kind, key, subj in rows)

    def _has_cosignatures(self) -> bool:
        return self._cosigned_table

    def add_cosignatures(self, size: int, lines: Sequence[tuple[str, int, str]]) -> None:
        if self._runs is None:
            raise StoreError(f"the ledger {self.path} is open read-only")
        rows = [(size, name, key_id, line) for name, key_id, line in lines]
        with self._lock:
            self._transaction(lambda db: db.executemany("INSERT OR IGNORE INTO cosignatures VALUES (?, ?, ?, ?)", rows))

    def cosigned_size(self, witness: str, key_id: int) -> int:
        if not self._cosigned_table:
            return 0
        rows = self._all("SELECT max(size) FROM cosignatures WHERE witness = ? AND key_id = ?", (witness, key_id))
        return int(rows[0][0] or 0)

    def _has_timestamps(self) -> bool:
        return self._timestamps_table

    def add_timestamp(self, size: int, token: bytes) -> None:
        if self._runs is None:
            raise StoreError(f"the ledger {self.path} is open read-only")
        with self._lock:
            self._transaction(lambda db: db.execute("INSERT OR IGNORE INTO timestamps VALUES (?, ?)", (size, token)))

    def _has_rollups(self) -> bool:
        return self._rollups_table

    def add_rollups(self, day: RollupDay, rows: Sequence[RollupRow]) -> None:
        if self._runs is None:
            raise StoreError(f"the ledger {self.path} is open read-only")

        def body(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO rollup_days VALUES (?, ?, ?)", day)
            if rows:
                _insert_rows(db, "rollups", 10, rows)

        with self._lock:
            self._transaction(body)

    def map_nodes(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for i in range(0, len(digests), 900):
            chunk = digests[i : i + 900]
            marks = ",".join("?" * len(chunk))
            out.update(
                (bytes(h), bytes(n))
                for h, n in self._all(f"SELECT hash, node FROM map_nodes WHERE hash IN ({marks})", chunk)
            )
        return out

    def subject_index_rows(self) -> tuple[int, Iterator[tuple[str, int]]] | None:
        if self._legacy:
            return None
        mark = int(self._all(f"SELECT {_MARK}")[0][0])
        if not self._compact:
            return mark, keyset_pages(self._all, "SELECT subject, idx FROM subject_index", ("subject", "idx"), "?")
        select = (
            "SELECT i.subject, i.idx, coalesce(s.subject, i.subject) FROM subject_index AS i "
            "LEFT JOIN subjects AS s ON s.sid = i.subject"
        )
        rows = keyset_pages(self._all, select, ("i.subject", "i.idx"), "?")
        return mark, ((name_of(name), idx) for _, idx, name in rows)

    def wal_bytes(self) -> int | None:
        if self.path == ":memory:":
            return None
        try:
            return Path(f"{self.path}-wal").stat().st_size
        except FileNotFoundError:
            return 0  # none yet, or removed by the last connection's close

    def revoked(self, subjects: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(subjects), 900):
            chunk = subjects[i : i + 900]
            marks = ",".join("?" * len(chunk))
            out.update(self._all(f"SELECT subject, idx FROM revocations WHERE subject IN ({marks})", chunk))
        return out

    def offsets(self, source: str) -> dict[int, int]:
        rows = self._all("SELECT part, max(next_offset) FROM offsets WHERE source = ? GROUP BY part", (source,))
        return {int(part): int(offset) for part, offset in rows}

    def schemas(self) -> list[SchemaRow]:
        rows = self._all("SELECT fingerprint, name, text, registered_at FROM schemas ORDER BY seq")
        return [SchemaRow(bytes(f), n, t, r) for f, n, t, r in rows]

    def quarantined(self, source: str | None = None) -> list[QuarantineRow]:
        sql = 'SELECT source, part, "offset", reason, digest, value FROM quarantine'
        rows = self._all(
            sql + (" WHERE source = ?" if source is not None else "") + ' ORDER BY source, part, "offset"',
            (source,) if source is not None else (),
        )
        return [QuarantineRow(s, p, o, r, bytes(d), None if v is None else bytes(v)) for s, p, o, r, d, v in rows]

    def chain_breaks(self, limit: int = 10) -> list[ChainBreak]:
        zero = bytes(32)
        rows = self._all(
            f"""
            SELECT c.idx, coalesce(s.subject, c.subject), c.prev, c.expected FROM (
                SELECT idx, subject, coalesce(prev, ?1) AS prev,
                       coalesce(lag(leaf) OVER (PARTITION BY subject ORDER BY idx), ?1) AS expected
                FROM entries
            ) AS c LEFT JOIN {"subjects" if self._compact else "(SELECT NULL AS sid, NULL AS subject)"} AS s
            ON s.sid = c.subject
            WHERE c.prev != c.expected ORDER BY c.idx LIMIT ?2
            """,
            (zero, limit),
        )
        return [ChainBreak(idx, name_of(subject), prev, expected) for idx, subject, prev, expected in rows]

    def _archive_tables(self) -> bool:
        return self._has("table", "archives")

    def delete_archived(self, first: int, last: int) -> int:
        if self._runs is None:
            raise StoreError(f"the ledger {self.path} is open read-only")
        deleted: list[int] = []

        def body(db: sqlite3.Connection) -> None:
            deleted.append(db.execute(ARCHIVE_DELETE.format(p="?"), (first, last)).rowcount)

        with self._lock:
            self._transaction(body)
        return deleted[0]

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            with self._read_lock:
                if self._reads is not self._db:
                    self._reads.close()
            self._db.close()
            if self._writer_lock is not None:
                self._writer_lock.release()
            if self._runs is not None:  # its memory can go back to the system (the arena of the commit thread)
                self._runs = _SubjectRuns(self._runs.mark, [])
