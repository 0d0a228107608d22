"""A witness's memory: for each log origin, the latest checkpoint it cosigned.

One SQLite file, ``synchronous=FULL``: an answered cosignature survives power loss. Checking the submitted
old size against the stored size and storing the new checkpoint happen in one ``BEGIN IMMEDIATE``
transaction, so two concurrent requests (threads or processes) can never roll the record back
(tlog-witness, "add-checkpoint").
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from lineage_ledger.errors import StoreError

__all__ = ["WitnessRecord", "WitnessState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL
) WITHOUT ROWID;
"""


class WitnessRecord(NamedTuple):
    """The latest checkpoint cosigned for a log: its size, root and note (log signature and cosignature)."""

    size: int
    root: bytes
    note: str


class WitnessState:
    """The per-log records of a witness, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open witness state {self.path}: {e}") from e

    def get(self, origin: str) -> WitnessRecord | None:
        """The latest cosigned checkpoint of ``origin``, or None if none was cosigned."""
        with self._lock:
            try:
                row = self._db.execute("SELECT size, root, note FROM logs WHERE origin = ?", (origin,)).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read witness state: {e}") from e
        return None if row is None else WitnessRecord(int(row[0]), bytes(row[1]), str(row[2]))

    def advance(self, origin: str, decide: Callable[[WitnessRecord | None], WitnessRecord]) -> WitnessRecord:
        """Atomically replace the record of ``origin`` by ``decide(current record)``, durably.

        ``decide`` runs inside the transaction; if it raises, nothing changes and the error passes through.
        """
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreError(f"cannot start a witness state transaction: {e}") from e
            try:
                row = db.execute("SELECT size, root, note FROM logs WHERE origin = ?", (origin,)).fetchone()
                current = None if row is None else WitnessRecord(int(row[0]), bytes(row[1]), str(row[2]))
                new = decide(current)
                db.execute(
                    "INSERT INTO logs (origin, size, root, note) VALUES (?, ?, ?, ?) ON CONFLICT (origin) "
                    "DO UPDATE SET size = excluded.size, root = excluded.root, note = excluded.note",
                    (origin, new.size, new.root, new.note),
                )
                db.execute("COMMIT")
                return new
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"cannot write witness state: {e}") from e
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
