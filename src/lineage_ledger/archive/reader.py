"""Reads of archive files: whole ranges by index, and rows picked by a column, through pyarrow datasets.

Filters are pushed down to the Parquet reader: a lookup by subject or parent reads, in each file named, the
row groups whose statistics can hold the keys and only then the bytes of the matching rows. The last few
whole files read are kept decoded, so a scan in index order (verification, export) reads each file once.
A read returns the entries as the file holds them; ``lineage verify`` is what checks files against the log.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

from lineage_ledger.archive.layout import rows_of_table, schema
from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.errors import LedgerError, StoreError
from lineage_ledger.store.base import ArchiveRow, EntryRow

__all__ = ["ArchiveReader"]

_KEEP_FILES: Final = 4


class ArchiveReader:
    """Entries read from archive files (each named by its ArchiveRow)."""

    def __init__(self) -> None:
        self._locations: dict[str, ArchiveLocation] = {}
        self._files: OrderedDict[tuple[str, str], list[EntryRow]] = OrderedDict()

    def location(self, url: str) -> ArchiveLocation:
        """The location ``url`` names (opened once)."""
        found = self._locations.get(url)
        if found is None:
            found = self._locations[url] = ArchiveLocation(url)
        return found

    def whole(self, archive: ArchiveRow) -> list[EntryRow]:
        """Every entry of ``archive``'s file, in index order."""
        key = (archive.location, archive.file)
        cached = self._files.get(key)
        if cached is not None:
            self._files.move_to_end(key)
            return cached
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = self.location(archive.location).read(archive.file)
        try:
            rows = rows_of_table(pq.read_table(pa.BufferReader(data), schema=schema()))
        except (pa.ArrowException, ValueError, LedgerError) as e:
            raise StoreError(f"the archive file {archive.file} cannot be read: {e}") from e
        self._files[key] = rows
        if len(self._files) > _KEEP_FILES:
            self._files.popitem(last=False)
        return rows

    def matching(
        self,
        archives: Sequence[ArchiveRow],
        column: str,
        values: Sequence[object],
        lo: int | None = None,
        hi: int | None = None,
    ) -> list[EntryRow]:
        """The entries of these files whose ``column`` is one of ``values`` (and whose index is within
        ``lo`` .. ``hi`` when given: the row groups outside are skipped unread), in index order.

        Two passes: the index and subject of the matching rows, then the runs of those subjects up to the
        last match (a row's ``prev`` is put back from the earlier rows of its subject in the file:
        archive.layout). For a subject lookup, ``lo`` is the subject's first row, so both stay in the span."""
        if not archives or not values:
            return []
        out: list[EntryRow] = []
        wanted = set(values)
        by_location: dict[str, list[str]] = {}
        for archive in archives:
            cached = self._files.get((archive.location, archive.file))
            if cached is not None:
                out.extend(r for r in cached if getattr(r, column) in wanted)
                continue
            by_location.setdefault(archive.location, []).append(archive.file)
        for url, names in by_location.items():
            paths, fs = self.location(url).dataset_source(sorted(set(names)))
            hits = self._scan(url, paths, fs, column, list(values), ["index", "subject"], lo, hi).to_pydict()
            if not hits["index"]:
                continue
            picked = set(hits["index"])
            start = lo if column == "subject" else None
            runs = self._scan(url, paths, fs, "subject", sorted(set(hits["subject"])), None, start, max(picked))
            out.extend(r for r in rows_of_table(runs) if r.index in picked)
        out.sort(key=lambda r: r.index)
        return out

    @staticmethod
    def _scan(
        url: str,
        paths: list[str],
        fs: Any,
        column: str,
        values: list[object],
        columns: list[str] | None,
        lo: int | None = None,
        hi: int | None = None,
    ) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        where = pc.field(column).isin(values)
        if lo is not None:
            where = where & (pc.field("index") >= lo)
        if hi is not None:
            where = where & (pc.field("index") <= hi)
        try:
            dataset = ds.dataset(paths, filesystem=fs, format="parquet", schema=schema())
            return dataset.to_table(filter=where, columns=columns)
        except FileNotFoundError as e:
            raise StoreError(f"an archive file of {url} is missing: {e}") from e
        except (pa.ArrowException, OSError) as e:
            raise StoreError(f"the archive files of {url} cannot be read: {e}") from e
