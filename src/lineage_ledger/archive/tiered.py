"""The hot store and the archive read as one store, saying which tier answered.

``TieredStore`` wraps a backend store whose ledger has archived ranges (store.open_store wraps it): every
read of entries looks in the hot store and, for indexes inside an archived range, in that range's archive
file. Lookups by subject or parent find their files through the hot ``archive_keys`` rows, so a subject
never archived costs no archive read at all. Entries of a range expired under a retention policy are gone:
a read of them by index raises ExpiredError naming the policy; a lookup by subject answers with what
remains and lists the expiry in ``expired_seen``. Everything else is the wrapped store's.

Proofs stay buildable for archived ranges without their files: the tree nodes of every 256th level stay
hot, and so do the leaf hashes of each range's edge tiles (ArchiveRow.edge_leaves); an inclusion proof of
an archived entry reads its tile's leaves from the file.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from lineage_ledger.archive.reader import ArchiveReader
from lineage_ledger.errors import ExpiredError, NotFoundError
from lineage_ledger.store.base import (
    ArchiveRow,
    BatchWrite,
    ChainBreak,
    CheckpointRow,
    EntryRow,
    EnvelopeRow,
    ExpiryRow,
    PromiseRow,
    QuarantineRow,
    RollupDay,
    RollupRow,
    SchemaRow,
    Store,
)

__all__ = ["TILE", "TierReport", "TieredStore", "edge_indices"]

TILE: Final = 256
"""Leaves under one stored tree node (merkle.TILE_STRIDE = 8 levels)."""


def edge_indices(first: int, last: int) -> list[int]:
    """The indexes of ``first`` .. ``last`` whose 256-entry tile also holds entries outside it: the leaves a
    proof crossing the range needs and no stored node gives."""
    end = last + 1
    head_end = min(end, -(-first // TILE) * TILE)
    tail_start = max(head_end, (end // TILE) * TILE)
    return [*range(first, head_end), *range(tail_start, end)]


@dataclass(slots=True)
class TierReport:
    """Which tiers a series of reads drew entries from, and the expired ranges it touched."""

    tiers: set[str] = field(default_factory=set)
    expired: list[ExpiryRow] = field(default_factory=list)

    def names(self) -> list[str]:
        """The tiers, hot first."""
        return [t for t in ("hot", "archive") if t in self.tiers]


class TieredStore:
    """A Store whose entry reads span the hot store and the archive files (see the module docstring)."""

    def __init__(self, hot: Store) -> None:
        self.hot = hot
        self.url = hot.url
        self.reader = ArchiveReader()
        self.report = TierReport()
        self.refresh()

    def refresh(self) -> None:
        """Read the archived ranges and expiries again (after this process recorded new ones)."""
        self._archives = self.hot.archives()
        self._firsts = [a.first for a in self._archives]
        self._expired = {e.first: e for e in self.hot.expiries()}
        self._edges: dict[int, bytes] = {}
        for a in self._archives:
            for n, i in enumerate(edge_indices(a.first, a.last)):
                self._edges[i] = a.edge_leaves[32 * n : 32 * n + 32]

    def take_report(self) -> TierReport:
        """The tiers read since the last call (and start a new report)."""
        report, self.report = self.report, TierReport()
        return report

    # -- where an index lives ---------------------------------------------------------------------------

    def archive_of(self, index: int) -> ArchiveRow | None:
        """The archived range holding ``index``, if any."""
        at = bisect.bisect_right(self._firsts, index) - 1
        if at >= 0 and self._archives[at].last >= index:
            return self._archives[at]
        return None

    def _overlapping(self, start: int, end: int) -> list[ArchiveRow]:
        lo = max(bisect.bisect_right(self._firsts, start) - 1, 0)
        return [a for a in self._archives[lo:] if a.first < end and a.last >= start]

    def _file_rows(self, archive: ArchiveRow) -> list[EntryRow]:
        expiry = self._expired.get(archive.first)
        if expiry is not None:
            raise ExpiredError(archive.first, archive.last, expiry.policy, expiry.record)
        rows = self.reader.whole(archive)
        self.report.tiers.add("archive")
        return rows

    def _hot(self, rows: list[EntryRow]) -> list[EntryRow]:
        if rows:
            self.report.tiers.add("hot")
        return rows

    def _by_key(self, keys: Sequence[str], column: str, prefix: bool = False) -> list[EntryRow]:
        found = self.hot.archive_keys(keys, prefix)
        if not found:
            return []
        files: dict[int, tuple[ArchiveRow, set[str], list[int]]] = {}
        for key, first, lo, hi in found:
            at = bisect.bisect_left(self._firsts, first)
            if at == len(self._firsts) or self._firsts[at] != first:
                continue
            archive = self._archives[at]
            expiry = self._expired.get(first)
            if expiry is not None:
                if expiry not in self.report.expired:
                    self.report.expired.append(expiry)
                continue
            _, values, span = files.setdefault(first, (archive, set(), [lo, hi]))
            values.add(key[2:])
            span[0], span[1] = min(span[0], lo), max(span[1], hi)
        rows: list[EntryRow] = []
        for archive, values, (lo, hi) in files.values():
            rows.extend(self.reader.matching([archive], column, sorted(values), lo, hi))
        rows.sort(key=lambda r: r.index)
        if rows:
            self.report.tiers.add("archive")
        return rows

    @staticmethod
    def _merge(hot: Iterable[EntryRow], cold: Iterable[EntryRow]) -> list[EntryRow]:
        merged = {r.index: r for r in cold}
        merged.update((r.index, r) for r in hot)
        return [merged[i] for i in sorted(merged)]

    # -- entry reads across tiers -----------------------------------------------------------------------

    def lowest_index(self) -> int | None:
        hot = self.hot.lowest_index()
        if self._archives and (hot is None or self._archives[0].first < hot):
            return self._archives[0].first
        return hot

    def entry(self, index: int) -> EntryRow:
        try:
            row = self.hot.entry(index)
        except NotFoundError:
            archive = self.archive_of(index)
            if archive is None:
                raise
            for row in self._file_rows(archive):
                if row.index == index:
                    return row
            raise NotFoundError(f"no entry at index {index} (not in the archive file {archive.file})") from None
        self.report.tiers.add("hot")
        return row

    def entries(self, start: int, end: int) -> Iterator[EntryRow]:
        pos = start
        for archive in self._overlapping(start, end):
            if pos < archive.first:
                yield from self._hot_range(pos, archive.first)
                pos = archive.first
            stop = min(archive.last + 1, end)
            cold = [r for r in self._file_rows(archive) if pos <= r.index < stop]
            yield from self._merge(self.hot.entries(pos, stop), cold)
            pos = stop
        if pos < end:
            yield from self._hot_range(pos, end)

    def _hot_range(self, start: int, end: int) -> Iterator[EntryRow]:
        for row in self.hot.entries(start, end):
            self.report.tiers.add("hot")
            yield row

    def entries_at(self, indices: Sequence[int]) -> list[EntryRow]:
        hot = self._hot(self.hot.entries_at(indices))
        have = {r.index for r in hot}
        cold: list[EntryRow] = []
        wanted: dict[int, ArchiveRow] = {}
        for i in indices:
            if i not in have:
                archive = self.archive_of(i)
                if archive is not None:
                    wanted[i] = archive
        for archive in {a.first: a for a in wanted.values()}.values():
            expiry = self._expired.get(archive.first)
            if expiry is not None:
                if expiry not in self.report.expired:
                    self.report.expired.append(expiry)
                continue
            picked = [i for i, a in wanted.items() if a.first == archive.first]
            cold.extend(self.reader.matching([archive], "index", picked))
            self.report.tiers.add("archive")
        return self._merge(hot, cold)

    def subject_entries(self, subjects: Iterable[str]) -> list[EntryRow]:
        wanted = list(dict.fromkeys(subjects))
        rows = self._merge(
            self._hot(self.hot.subject_entries(wanted)), self._by_key(["s:" + s for s in wanted], "subject")
        )
        rows.sort(key=lambda r: (r.subject, r.index))
        return rows

    def subjects_with_prefix(self, prefix: str) -> list[EntryRow]:
        return self._merge(
            self._hot(self.hot.subjects_with_prefix(prefix)), self._by_key(["s:" + prefix], "subject", True)
        )

    def children_of_many(self, subjects: Sequence[str]) -> list[EntryRow]:
        return self._merge(
            self._hot(self.hot.children_of_many(subjects)), self._by_key(["p:" + s for s in subjects], "parent")
        )

    def children_of(self, subject: str) -> list[EntryRow]:
        return self.children_of_many([subject])

    def descendant_births(self, subject: str) -> list[EntryRow]:
        out: dict[int, EntryRow] = {}
        seen = {subject}
        frontier = [subject]
        while frontier:
            born = self.children_of_many(frontier)
            frontier = []
            for row in born:
                out[row.index] = row
                if row.subject not in seen:
                    seen.add(row.subject)
                    frontier.append(row.subject)
        return [out[i] for i in sorted(out)]

    def leaf_hashes(self, start: int, count: int) -> list[bytes]:
        if not self._overlapping(start, start + count):
            return self.hot.leaf_hashes(start, count)
        leaves = {r.index: r.leaf for r in self.hot.entries(start, start + count)}
        for i in range(start, start + count):
            if i not in leaves and i in self._edges:
                leaves[i] = self._edges[i]
        missing = [i for i in range(start, start + count) if i not in leaves]
        for archive in {a.first: a for a in (self.archive_of(i) for i in missing) if a is not None}.values():
            leaves.update((r.index, r.leaf) for r in self._file_rows(archive) if start <= r.index < start + count)
        if len(leaves) != count:
            raise NotFoundError(f"entries {start}..{start + count - 1} are not all present")
        return [leaves[i] for i in range(start, start + count)]

    def nodes(self, level: int, start: int, count: int) -> list[bytes]:
        if level == 0:
            return self.leaf_hashes(start, count)
        return self.hot.nodes(level, start, count)

    def chain_breaks(self, limit: int = 10) -> list[ChainBreak]:
        # the hot store sees an archived predecessor as missing: only a break against a hot one counts
        return [
            b
            for b in self.hot.chain_breaks(limit)
            if b.expected != bytes(32) or not self.hot.archive_keys(["s:" + b.subject])
        ]

    # -- the archive tier's own rows --------------------------------------------------------------------

    def archives(self) -> list[ArchiveRow]:
        return self.hot.archives()

    def archive_keys(self, keys: Sequence[str], prefix: bool = False) -> list[tuple[str, int, int, int]]:
        return self.hot.archive_keys(keys, prefix)

    def expiries(self) -> list[ExpiryRow]:
        return self.hot.expiries()

    def delete_archived(self, first: int, last: int) -> int:
        return self.hot.delete_archived(first, last)

    # -- everything else is the hot store's -------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return self.hot.meta()

    def initialise(self, meta: dict[str, str]) -> None:
        self.hot.initialise(meta)

    def size(self) -> int:
        return self.hot.size()

    def write(self, batch: BatchWrite) -> None:
        self.hot.write(batch)

    def events_by_id(self, event_ids: Sequence[str]) -> dict[str, EntryRow]:
        return self.hot.events_by_id(event_ids)

    def checkpoints(self, start_size: int = 0) -> list[CheckpointRow]:
        return self.hot.checkpoints(start_size)

    def latest_checkpoint(self) -> CheckpointRow | None:
        return self.hot.latest_checkpoint()

    def promises(self, start_first: int = -(1 << 63)) -> list[PromiseRow]:
        return self.hot.promises(start_first)

    def promise_covering(self, index: int) -> PromiseRow | None:
        return self.hot.promise_covering(index)

    def add_cosignatures(self, size: int, lines: Sequence[tuple[str, int, str]]) -> None:
        self.hot.add_cosignatures(size, lines)

    def cosigned_size(self, witness: str, key_id: int) -> int:
        return self.hot.cosigned_size(witness, key_id)

    def add_timestamp(self, size: int, token: bytes) -> None:
        self.hot.add_timestamp(size, token)

    def timestamp(self, size: int) -> bytes | None:
        return self.hot.timestamp(size)

    def timestamped_sizes(self) -> list[int]:
        return self.hot.timestamped_sizes()

    def envelope(self, digest: bytes) -> EnvelopeRow:
        return self.hot.envelope(digest)

    def envelope_first_indexes(self) -> Iterator[tuple[bytes, int]]:
        return self.hot.envelope_first_indexes()

    def links(self, kind: str, key: str, start: str = "", end: str = "\uffff") -> list[tuple[str, int, str]]:
        return self.hot.links(kind, key, start, end)

    def link_rows(self) -> Iterator[tuple[str, str, str, int, str]]:
        return self.hot.link_rows()

    def revocation_rows(self) -> list[tuple[str, int]]:
        return self.hot.revocation_rows()

    def subject_index_rows(self) -> tuple[int, Iterator[tuple[str, int]]] | None:
        return self.hot.subject_index_rows()

    def wal_bytes(self) -> int | None:
        return self.hot.wal_bytes()

    def add_rollups(self, day: RollupDay, rows: Sequence[RollupRow]) -> None:
        self.hot.add_rollups(day, rows)

    def rollup_days(self) -> list[RollupDay]:
        return self.hot.rollup_days()

    def rollups(self, subject: str) -> list[RollupRow]:
        return self.hot.rollups(subject)

    def rollup_rows(self) -> Iterator[RollupRow]:
        return self.hot.rollup_rows()

    def map_node(self, digest: bytes) -> bytes | None:
        return self.hot.map_node(digest)

    def map_nodes(self, digests: Sequence[bytes]) -> dict[bytes, bytes]:
        return self.hot.map_nodes(digests)

    def map_node_rows(self) -> Iterator[tuple[bytes, bytes]]:
        return self.hot.map_node_rows()

    def revoked(self, subjects: Sequence[str]) -> dict[str, int]:
        return self.hot.revoked(subjects)

    def offsets(self, source: str) -> dict[int, int]:
        return self.hot.offsets(source)

    def schemas(self) -> list[SchemaRow]:
        return self.hot.schemas()

    def quarantined(self, source: str | None = None) -> list[QuarantineRow]:
        return self.hot.quarantined(source)

    def close(self) -> None:
        self.hot.close()

    def __getattr__(self, name: str) -> object:
        # backend extras (a SQLite store's path, a test's look at its connection) stay reachable
        return getattr(self.hot, name)
