"""Reads of archive files: whole ranges by index, and rows picked by a column, through pyarrow datasets.

Filters are pushed down to the Parquet reader: a lookup by subject or parent reads, in each file named, the
row groups whose statistics can hold the keys and only then the bytes of the matching rows. The last few
whole files read are kept decoded, so a scan in index order (verification, export) reads each file once.
A read returns the entries as the file holds them; ``lineage verify`` is what checks files against the log.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from lineage_ledger.archive.layout import rows_of_table, schema
from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.errors import StoreError
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
        except (pa.ArrowException, ValueError) as e:
            raise StoreError(f"the archive file {archive.file} cannot be read: {e}") from e
        self._files[key] = rows
        if len(self._files) > _KEEP_FILES:
            self._files.popitem(last=False)
        return rows

    def matching(self, archives: Sequence[ArchiveRow], column: str, values: Sequence[object]) -> list[EntryRow]:
        """The entries of these files whose ``column`` is one of ``values``, in index order."""
        if not archives or not values:
            return []
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        out: list[EntryRow] = []
        by_location: dict[str, list[str]] = {}
        for archive in archives:
            cached = self._files.get((archive.location, archive.file))
            if cached is not None:
                wanted = set(values)
                out.extend(r for r in cached if getattr(r, column) in wanted)
                continue
            by_location.setdefault(archive.location, []).append(archive.file)
        for url, names in by_location.items():
            paths, fs = self.location(url).dataset_source(sorted(set(names)))
            try:
                dataset = ds.dataset(paths, filesystem=fs, format="parquet", schema=schema())
                table = dataset.to_table(filter=pc.field(column).isin(list(values)))
            except FileNotFoundError as e:
                raise StoreError(f"an archive file of {url} is missing: {e}") from e
            except (pa.ArrowException, OSError) as e:
                raise StoreError(f"the archive files of {url} cannot be read: {e}") from e
            out.extend(rows_of_table(table))
        out.sort(key=lambda r: r.index)
        return out
