"""The subject key store: one AES-256 key per data subject, kept apart from the log and wrapped by the
ledger's key-encryption key.

Where: beside an embedded ledger ``x.db``, its own SQLite file ``x.db.subjects``; for PostgreSQL, the table
``privacy_subject_keys`` in the ledger's database (outside every table the log and its indexes use). A row
is ``(subject fingerprint, key id, wrapped key, erasing)``; the wrapped key is the subject key encrypted by
a KeyWrapper (privacy.keys), with the fingerprint and key id as associated data, so a row copied under
another subject does not unwrap. Destroying a subject's keys deletes its rows; SQLite then overwrites the
freed pages (``secure_delete``) and the file's write-ahead log is checkpointed and truncated, so the
wrapped bytes do not linger in the file. Backups (``lineage subject keys backup``) hold wrapped keys only.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from lineage_ledger.errors import StoreError

__all__ = ["KEY_STORE_ENV_VAR", "KeyRow", "PostgresKeyStore", "SqliteKeyStore", "SubjectKeyStore", "open_key_store"]


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One stored subject key: whose, its id, the wrapped key, and whether an erasure has begun for it."""

    fingerprint: str
    kid: str
    wrapped: bytes
    erasing: bool = False


class SubjectKeyStore(Protocol):
    """What the ledger needs of a key store. Every method is durable on return."""

    def add(self, rows: Sequence[KeyRow]) -> None:
        """Store new keys (an existing (fingerprint, kid) is kept)."""
        ...

    def get(self, fingerprint: str, kid: str) -> KeyRow | None:
        """The key ``kid`` of a subject, or None (never created, or destroyed)."""
        ...

    def keys_of(self, fingerprint: str) -> list[KeyRow]:
        """Every stored key of a subject, erasing or not."""
        ...

    def keys_of_many(self, fingerprints: Sequence[str]) -> list[KeyRow]:
        """Every stored key of these subjects, in one round trip per chunk."""
        ...

    def mark_erasing(self, fingerprint: str) -> list[KeyRow]:
        """Mark every key of a subject as being erased (the ledger seals nothing more under them); returns
        every key of the subject now marked."""
        ...

    def destroy(self, fingerprint: str, kids: Sequence[str]) -> None:
        """Delete these keys of a subject, so that nothing in the store can decrypt their data."""
        ...

    def rows(self) -> Iterator[KeyRow]:
        """Every stored key (for a backup)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS subject_keys (
    fingerprint TEXT NOT NULL, kid TEXT NOT NULL, wrapped BLOB NOT NULL, erasing INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (fingerprint, kid)
) WITHOUT ROWID
"""


class SqliteKeyStore:
    """The key store of an embedded ledger: its own SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the subject key store {self.path}: {e}") from e
        self.path.chmod(0o600)

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"subject key store {self.path}: {e}") from e

    def add(self, rows: Sequence[KeyRow]) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR IGNORE INTO subject_keys VALUES (?, ?, ?, ?)",
                    [(r.fingerprint, r.kid, r.wrapped, int(r.erasing)) for r in rows],
                )
        except sqlite3.Error as e:
            raise StoreError(f"subject key store {self.path}: {e}") from e

    def get(self, fingerprint: str, kid: str) -> KeyRow | None:
        got = self._run(
            "SELECT fingerprint, kid, wrapped, erasing FROM subject_keys WHERE fingerprint = ? AND kid = ?",
            (fingerprint, kid),
        )
        return KeyRow(got[0][0], got[0][1], bytes(got[0][2]), bool(got[0][3])) if got else None

    def keys_of(self, fingerprint: str) -> list[KeyRow]:
        got = self._run(
            "SELECT fingerprint, kid, wrapped, erasing FROM subject_keys WHERE fingerprint = ? ORDER BY kid",
            (fingerprint,),
        )
        return [KeyRow(f, k, bytes(w), bool(e)) for f, k, w, e in got]

    def keys_of_many(self, fingerprints: Sequence[str]) -> list[KeyRow]:
        out = []
        for i in range(0, len(fingerprints), 500):
            chunk = list(fingerprints[i : i + 500])
            marks = ",".join("?" * len(chunk))
            got = self._run(
                f"SELECT fingerprint, kid, wrapped, erasing FROM subject_keys WHERE fingerprint IN ({marks}) "  # noqa: S608
                "ORDER BY fingerprint, kid",
                chunk,
            )
            out += [KeyRow(f, k, bytes(w), bool(e)) for f, k, w, e in got]
        return out

    def mark_erasing(self, fingerprint: str) -> list[KeyRow]:
        self._run("UPDATE subject_keys SET erasing = 1 WHERE fingerprint = ?", (fingerprint,))
        return self.keys_of(fingerprint)

    def destroy(self, fingerprint: str, kids: Sequence[str]) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "DELETE FROM subject_keys WHERE fingerprint = ? AND kid = ?", [(fingerprint, k) for k in kids]
                )
            # the deleted rows' pages are zeroed (secure_delete); the log's copies go with the checkpoint
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            raise StoreError(f"subject key store {self.path}: {e}") from e

    def rows(self) -> Iterator[KeyRow]:
        for f, k, w, e in self._run("SELECT fingerprint, kid, wrapped, erasing FROM subject_keys ORDER BY 1, 2"):
            yield KeyRow(f, k, bytes(w), bool(e))

    def close(self) -> None:
        self._db.close()


class PostgresKeyStore:
    """The key store of a PostgreSQL ledger: the table ``privacy_subject_keys`` in its database."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        try:
            self._conn = psycopg.connect(url, autocommit=True)
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS privacy_subject_keys (fingerprint text NOT NULL, kid text NOT NULL, "
                "wrapped bytea NOT NULL, erasing boolean NOT NULL DEFAULT false, PRIMARY KEY (fingerprint, kid))"
            )
        except psycopg.Error as e:
            raise StoreError(f"cannot open the subject key store: {e}") from e

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            cur = self._conn.execute(sql, params)
            return cur.fetchall() if cur.description else []
        except self._psycopg.Error as e:
            raise StoreError(f"subject key store: {e}") from e

    def add(self, rows: Sequence[KeyRow]) -> None:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO privacy_subject_keys VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(r.fingerprint, r.kid, r.wrapped, r.erasing) for r in rows],
                )
        except self._psycopg.Error as e:
            raise StoreError(f"subject key store: {e}") from e

    def get(self, fingerprint: str, kid: str) -> KeyRow | None:
        got = self._run(
            "SELECT fingerprint, kid, wrapped, erasing FROM privacy_subject_keys WHERE fingerprint = %s AND kid = %s",
            (fingerprint, kid),
        )
        return KeyRow(got[0][0], got[0][1], bytes(got[0][2]), bool(got[0][3])) if got else None

    def keys_of(self, fingerprint: str) -> list[KeyRow]:
        got = self._run(
            "SELECT fingerprint, kid, wrapped, erasing FROM privacy_subject_keys WHERE fingerprint = %s ORDER BY kid",
            (fingerprint,),
        )
        return [KeyRow(f, k, bytes(w), bool(e)) for f, k, w, e in got]

    def keys_of_many(self, fingerprints: Sequence[str]) -> list[KeyRow]:
        got = self._run(
            "SELECT fingerprint, kid, wrapped, erasing FROM privacy_subject_keys WHERE fingerprint = ANY(%s) "
            "ORDER BY fingerprint, kid",
            (list(fingerprints),),
        )
        return [KeyRow(f, k, bytes(w), bool(e)) for f, k, w, e in got]

    def mark_erasing(self, fingerprint: str) -> list[KeyRow]:
        self._run("UPDATE privacy_subject_keys SET erasing = true WHERE fingerprint = %s", (fingerprint,))
        return self.keys_of(fingerprint)

    def destroy(self, fingerprint: str, kids: Sequence[str]) -> None:
        self._run(
            "DELETE FROM privacy_subject_keys WHERE fingerprint = %s AND kid = ANY(%s)", (fingerprint, list(kids))
        )

    def rows(self) -> Iterator[KeyRow]:
        got = self._run("SELECT fingerprint, kid, wrapped, erasing FROM privacy_subject_keys ORDER BY 1, 2")
        for f, k, w, e in got:
            yield KeyRow(f, k, bytes(w), bool(e))

    def close(self) -> None:
        self._conn.close()


KEY_STORE_ENV_VAR: Final = "LINEAGE_SUBJECT_KEYS"
"""Where the subject key store is, if not in its default place: a SQLite file path or a PostgreSQL URL (a
database or role apart from the ledger's; the role needs SELECT, INSERT, UPDATE and DELETE on its table)."""


def open_key_store(ledger_url: str) -> SubjectKeyStore:
    """The key store of the ledger at ``ledger_url`` (created if absent): ``$LINEAGE_SUBJECT_KEYS`` if set,
    else beside an embedded ledger, else the ledger's PostgreSQL database."""
    named = os.environ.get(KEY_STORE_ENV_VAR)
    if named:
        if named.startswith(("postgresql://", "postgres://")):
            return PostgresKeyStore(named)
        return SqliteKeyStore(named)
    if ledger_url.startswith(("postgresql://", "postgres://")):
        return PostgresKeyStore(ledger_url)
    from lineage_ledger.store.sqlite import sqlite_path_from_url

    path = sqlite_path_from_url(ledger_url.split("?", 1)[0])
    if path == ":memory:":
        raise StoreError("an in-memory ledger has no subject key store; personal data needs a ledger file")
    return SqliteKeyStore(path + ".subjects")
