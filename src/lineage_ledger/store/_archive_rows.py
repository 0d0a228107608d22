"""The store reads and writes of the archive tier (docs/archive.md) whose SQL is the same on every backend.

A backend mixes in ArchiveRows beside SqlReads and gives ``_all`` and ``_param``; ``_archive_tables()`` says
whether the tables exist (a ledger from before the archive tier, opened read-only, has none: nothing of it
is archived). The database's own triggers decide what may be deleted; these methods only ask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from lineage_ledger.store.base import ArchiveRow, BatchWrite, ExpiryRow

__all__ = ["ARCHIVE_DELETE", "ArchiveRows", "archive_inserts"]

ARCHIVE_DELETE: Final = "DELETE FROM entries WHERE idx >= {p} AND idx <= {p} AND event_id IS NOT NULL"
"""The event entries of an archived range (system entries, seals and records, stay hot)."""


def archive_inserts(batch: BatchWrite, param: str) -> list[tuple[str, Sequence[Sequence[Any]]]]:
    """(statement, rows) for the archive rows of ``batch``, in the order they must be inserted."""
    out: list[tuple[str, Sequence[Sequence[Any]]]] = []
    if batch.archives:
        out.append((f"INSERT INTO archives VALUES ({', '.join([param] * 7)})", batch.archives))
    if batch.archive_keys:
        out.append((f"INSERT INTO archive_keys VALUES ({', '.join([param] * 4)})", batch.archive_keys))
    if batch.expiries:
        out.append((f"INSERT INTO expiries VALUES ({', '.join([param] * 5)})", batch.expiries))
    return out


class ArchiveRows:
    """Store methods (store.base.Store) that read the archive tier's rows."""

    _param: str

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _archive_tables(self) -> bool:
        return True

    def archives(self) -> list[ArchiveRow]:
        if not self._archive_tables():
            return []
        rows = self._all("SELECT first, last, location, file, sha256, record, edge_leaves FROM archives ORDER BY first")
        return [ArchiveRow(int(a), int(b), str(c), str(d), bytes(e), int(f), bytes(g)) for a, b, c, d, e, f, g in rows]

    def archive_keys(self, keys: Sequence[str], prefix: bool = False) -> list[tuple[str, int, int, int]]:
        if not self._archive_tables() or not keys:
            return []
        p = self._param
        out: list[tuple[str, int, int, int]] = []
        columns = "key, first, lo, hi"
        if prefix:
            for key in keys:
                upper = key[:-1] + chr(ord(key[-1]) + 1)
                out.extend(
                    self._all(f"SELECT {columns} FROM archive_keys WHERE key >= {p} AND key < {p}", (key, upper))
                )
        else:
            for i in range(0, len(keys), 900):
                chunk = list(keys[i : i + 900])
                marks = ", ".join([p] * len(chunk))
                out.extend(self._all(f"SELECT {columns} FROM archive_keys WHERE key IN ({marks})", chunk))
        return sorted((str(k), int(f), int(lo), int(hi)) for k, f, lo, hi in out)

    def expiries(self) -> list[ExpiryRow]:
        if not self._archive_tables():
            return []
        rows = self._all("SELECT first, last, policy, policy_index, record FROM expiries ORDER BY first")
        return [ExpiryRow(int(a), int(b), str(c), int(d), int(e)) for a, b, c, d, e in rows]
