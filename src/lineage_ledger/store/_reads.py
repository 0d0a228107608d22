"""The store reads whose SQL is the same on every backend, written once.

A backend mixes in SqlReads and gives ``_all(sql, params)`` (run a read, StoreError on failure) and
``_param`` (its placeholder: "?" or "%s"). What differs between backends (reads by many keys at once, the
subject index, recursive queries with collations) stays in each backend's module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

from lineage_ledger.errors import NotFoundError
from lineage_ledger.store.base import (
    CheckpointRow,
    EntryRow,
    EnvelopeRow,
    PromiseRow,
    RollupDay,
    RollupRow,
    keyset_pages,
    with_cosignatures,
)

__all__ = ["ENTRY_COLUMNS", "ENVELOPE_COLUMNS", "ROLLUP_COLUMNS", "SqlReads"]

ENTRY_COLUMNS: Final = "idx, subject, event_id, parent, prev, leaf, verdict, body"
ENVELOPE_COLUMNS: Final = "digest, producer, key_id, payload, signature, event_leaves, first_idx"
ROLLUP_COLUMNS: Final = "day, subject, events, uses, first_at, last_at, first_idx, last_idx, resources, outcomes"
_PAGE: Final = 4096


class SqlReads:
    """Store methods (see store.base.Store) that read the same rows with the same SQL on every backend."""

    _param: str
    """The driver's placeholder for a bound parameter."""
    _entry_sql: str = f"SELECT {ENTRY_COLUMNS} FROM entries AS e"
    """Selects entry rows (``_entry_row`` makes each an EntryRow); a WHERE clause may follow, naming ``e.``."""

    def _entry_row(self, row: Sequence[Any]) -> EntryRow:
        return EntryRow(*row)

    def _promise_bytes(self, stored: Any) -> bytes:
        """A signed promise's bytes, from the promise column as stored."""
        return bytes(stored)

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def size(self) -> int:
        row = self._all("SELECT max(idx) FROM entries")[0]
        return 0 if row[0] is None else int(row[0]) + 1

    def lowest_index(self) -> int | None:
        row = self._all("SELECT min(idx) FROM entries")[0]
        return None if row[0] is None else int(row[0])

    def entry(self, index: int) -> EntryRow:
        rows = self._all(f"{self._entry_sql} WHERE e.idx = {self._param}", (index,))
        if not rows:
            raise NotFoundError(f"no entry at index {index}")
        return self._entry_row(rows[0])

    def entries(self, start: int, end: int) -> Iterator[EntryRow]:
        p = self._param
        query = f"{self._entry_sql} WHERE e.idx >= {p} AND e.idx < {p} ORDER BY e.idx LIMIT {p}"
        pos = start
        while pos < end:
            # pages of rows, not of indices: a run of missing indices does not end the range
            rows = self._all(query, (pos, end, _PAGE))
            for row in rows:
                yield self._entry_row(row)
            if len(rows) < _PAGE:
                return
            pos = int(rows[-1][0]) + 1

    def children_of(self, subject: str) -> list[EntryRow]:
        rows = self._all(f"{self._entry_sql} WHERE e.parent = {self._param} ORDER BY e.idx", (subject,))
        return [self._entry_row(r) for r in rows]

    def leaf_hashes(self, start: int, count: int) -> list[bytes]:
        p = self._param
        query = f"SELECT leaf FROM entries WHERE idx >= {p} AND idx < {p} ORDER BY idx"
        rows = self._all(query, (start, start + count))
        if len(rows) != count:
            raise NotFoundError(f"entries {start}..{start + count - 1} are not all present")
        return [bytes(r[0]) for r in rows]

    def nodes(self, level: int, start: int, count: int) -> list[bytes]:
        if level == 0:
            return self.leaf_hashes(start, count)
        p = self._param
        rows = self._all(
            f"SELECT hash FROM nodes WHERE level = {p} AND idx >= {p} AND idx < {p} ORDER BY idx",
            (level, start, start + count),
        )
        if len(rows) != count:
            raise NotFoundError(f"tree nodes at level {level}, {start}..{start + count - 1} are missing")
        return [bytes(r[0]) for r in rows]

    def checkpoints(self, start_size: int = 0) -> list[CheckpointRow]:
        rows = self._all(f"SELECT size, note FROM checkpoints WHERE size >= {self._param} ORDER BY size", (start_size,))
        return self._cosigned([CheckpointRow(*r) for r in rows], start_size)

    def latest_checkpoint(self) -> CheckpointRow | None:
        rows = self._all("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return self._cosigned([CheckpointRow(*rows[0])], rows[0][0])[0] if rows else None

    def _has_cosignatures(self) -> bool:
        """Whether the cosignatures table exists (a ledger from before it, opened read-only, has none)."""
        return True

    def _cosigned(self, rows: list[CheckpointRow], start_size: int) -> list[CheckpointRow]:
        """The checkpoints with their stored witness cosignature lines appended to each note."""
        if not rows or not self._has_cosignatures():
            return rows
        lines = self._all(
            f"SELECT size, line FROM cosignatures WHERE size >= {self._param} ORDER BY size, witness, key_id",
            (start_size,),
        )
        return with_cosignatures(rows, lines)

    def _has_timestamps(self) -> bool:
        """Whether the timestamps table exists (a ledger from before it, opened read-only, has none)."""
        return True

    def timestamp(self, size: int) -> bytes | None:
        if not self._has_timestamps():
            return None
        rows = self._all(f"SELECT token FROM timestamps WHERE size = {self._param}", (size,))
        return bytes(rows[0][0]) if rows else None

    def timestamped_sizes(self) -> list[int]:
        if not self._has_timestamps():
            return []
        return [int(r[0]) for r in self._all("SELECT size FROM timestamps ORDER BY size")]

    def promises(self, start_first: int = -(1 << 63)) -> list[PromiseRow]:
        p = self._param
        rows = self._all(
            f"SELECT first, length, promise FROM promises WHERE first >= {p} ORDER BY first", (start_first,)
        )
        return [PromiseRow(r[0], r[1], self._promise_bytes(r[2])) for r in rows]

    def promise_covering(self, index: int) -> PromiseRow | None:
        p = self._param
        rows = self._all(
            f"SELECT first, length, promise FROM promises WHERE first <= {p} ORDER BY first DESC LIMIT 1", (index,)
        )
        if not rows or rows[0][0] + rows[0][1] <= index:
            return None
        return PromiseRow(rows[0][0], rows[0][1], self._promise_bytes(rows[0][2]))

    def envelope(self, digest: bytes) -> EnvelopeRow:
        rows = self._all(f"SELECT {ENVELOPE_COLUMNS} FROM envelopes WHERE digest = {self._param}", (digest,))
        if not rows:
            raise NotFoundError(f"no envelope {digest.hex()}")
        return EnvelopeRow(*rows[0])

    def envelope_first_indexes(self) -> Iterator[tuple[bytes, int]]:
        rows = keyset_pages(self._all, "SELECT digest, first_idx FROM envelopes", ("digest",), self._param)
        return ((bytes(digest), first) for digest, first in rows)

    def links(self, kind: str, key: str, start: str = "", end: str = "\uffff") -> list[tuple[str, int, str]]:
        p = self._param
        rows = self._all(
            f"SELECT at, idx, subject FROM links WHERE kind = {p} AND key = {p} AND at >= {p} AND at < {p} "
            "ORDER BY at, idx",
            (kind, key, start, end),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def link_rows(self) -> Iterator[tuple[str, str, str, int, str]]:
        select = "SELECT kind, key, at, idx, subject FROM links"
        return keyset_pages(self._all, select, ("kind", "key", "at", "idx"), self._param)

    def revocation_rows(self) -> list[tuple[str, int]]:
        return [(subject, idx) for subject, idx in self._all("SELECT subject, idx FROM revocations")]

    def _has_rollups(self) -> bool:
        """Whether the rollup tables exist (a ledger from before them, opened read-only, has none)."""
        return True

    def rollup_days(self) -> list[RollupDay]:
        if not self._has_rollups():
            return []
        return [RollupDay(*r) for r in self._all("SELECT day, first_idx, end_idx FROM rollup_days ORDER BY day")]

    def rollups(self, subject: str) -> list[RollupRow]:
        if not self._has_rollups():
            return []
        query = f"SELECT {ROLLUP_COLUMNS} FROM rollups WHERE subject = {self._param} ORDER BY day"
        return [RollupRow(*r) for r in self._all(query, (subject,))]

    def rollup_rows(self) -> Iterator[RollupRow]:
        if not self._has_rollups():
            return iter(())
        select = f"SELECT subject, day, {ROLLUP_COLUMNS} FROM rollups"
        return (RollupRow(*r[2:]) for r in keyset_pages(self._all, select, ("subject", "day"), self._param))

    def map_node(self, digest: bytes) -> bytes | None:
        rows = self._all(f"SELECT node FROM map_nodes WHERE hash = {self._param}", (digest,))
        return bytes(rows[0][0]) if rows else None

    def map_node_rows(self) -> Iterator[tuple[bytes, bytes]]:
        rows = keyset_pages(self._all, "SELECT hash, node FROM map_nodes", ("hash",), self._param)
        return ((bytes(digest), bytes(node)) for digest, node in rows)
