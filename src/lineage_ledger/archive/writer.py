"""``lineage archive``: move whole sealed blocks older than the hot window into verified Parquet files.

For each file, in this order (docs/archive.md):

1. read the entries ``first`` .. ``last`` (whole blocks of one day) from the hot store;
2. write the file whole (a temporary name and a rename, or one object PUT);
3. read it back and check it against the log: its SHA-256, exactly the indexes of the range, every leaf
   hash recomputed from the stored bytes equal to the log's, and each block's RFC 9162 root equal to the
   root its seal entry commits to;
4. record the range, the file name, its size and SHA-256 in a signed ``archive`` entry; the store rows that
   let the range's event entries go are committed in the same transaction;
5. delete those event entries from the hot store (the database refuses any outside a recorded range).

A crash before 4 leaves the hot entries (and perhaps a file no record names, replaced by the next run); a
crash after 4 leaves a verified, recorded file, and the next run checks it again and finishes step 5.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from lineage_ledger.archive.crash import crash_point
from lineage_ledger.archive.layout import (
    PAGE_BYTES,
    ROW_GROUP,
    ZSTD_LEVEL,
    archive_table,
    day_of,
    file_name,
    rows_of_table,
)
from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.archive.tiered import edge_indices
from lineage_ledger.core.entry import BLOCKS_SUBJECT, ArchiveChange, SealEntry, decode_entry
from lineage_ledger.core.merkle import root_of
from lineage_ledger.errors import InputError, LedgerError, VerificationError
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store.base import ArchiveRow, BatchWrite, EntryRow, Store

__all__ = ["ArchivedFile", "Block", "archive_ledger", "check_file", "encode_file", "sealed_blocks"]

MAX_FILE_ENTRIES: Final = 4_000_000
"""A file closes at the end of the block that takes it past this many entries (or at the day's end)."""


@dataclass(frozen=True, slots=True)
class Block:
    """A sealed block as its seal entry states it: entries ``first`` .. ``seal - 1`` under ``root``."""

    number: int
    first: int
    seal: int
    root: bytes
    hlc_first: str
    hlc_last: str


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    """One file ``lineage archive`` wrote and recorded (or finished deleting the hot entries of)."""

    first: int
    last: int
    file: str
    bytes: int
    entries: int
    deleted: int
    record: int
    seconds: float


def sealed_blocks(store: Store) -> list[Block]:
    """Every sealed block of the log, in order, from the seal entries (which stay hot)."""
    out = []
    for row in store.subject_entries([BLOCKS_SUBJECT]):
        seal = decode_entry(row.body)
        if isinstance(seal, SealEntry):
            h = seal.block
            out.append(Block(h.number, h.first, seal.index, bytes.fromhex(h.root), h.hlc_first, h.hlc_last))
    return out


def _plan(blocks: Sequence[Block], start: int, before: str, max_entries: int) -> list[list[Block]]:
    """Whole blocks from ``start`` on, all of whose entries were recorded before ``before`` (an HLC reading),
    cut into files by day and size."""
    files: list[list[Block]] = []
    for block in blocks:
        if block.first < start:
            continue
        if block.hlc_last >= before or block.first != (files[-1][-1].seal + 1 if files else start):
            break
        current = files[-1] if files else None
        if (
            current is None
            or day_of(current[0].hlc_first) != day_of(block.hlc_first)
            or block.seal - current[0].first >= max_entries
        ):
            files.append([block])
        else:
            current.append(block)
    return files


def encode_file(rows: Sequence[EntryRow]) -> bytes:
    """The Parquet bytes of an archive file holding ``rows`` (zstd, the layout's row groups)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(
        archive_table(rows),
        sink,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        row_group_size=ROW_GROUP,
        data_page_size=PAGE_BYTES,
        use_dictionary=["subject", "parent", "event_type", "user", "resource", "verdict"],
        column_encoding={"index": "DELTA_BINARY_PACKED", "time": "DELTA_BINARY_PACKED", "body": "PLAIN"},
        write_statistics=["index", "time"],
    )
    return bytes(sink.getvalue().to_pybytes())


def check_file(
    data: bytes, first: int, last: int, leaves: Callable[[int], bytes | None], blocks: Sequence[Block]
) -> list[EntryRow]:
    """The entries of an archive file's bytes, once they check out against the log: exactly the indexes
    ``first`` .. ``last``, each leaf hash (recomputed from the bytes) equal to ``leaves(index)`` where the
    log still has it, and each block's root over its entries equal to its seal's. VerificationError naming
    the first index that differs otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = rows_of_table(pq.read_table(pa.BufferReader(data)))
    except (pa.ArrowException, ValueError, KeyError, LedgerError) as e:
        raise VerificationError(f"the archive file of entries {first}..{last} cannot be read: {e}") from e
    indexes = [r.index for r in rows]
    if indexes != list(range(first, last + 1)):
        missing = sorted(set(range(first, last + 1)) - set(indexes))
        where = f"missing {missing[0]}" if missing else "rows twice or outside the range"
        raise VerificationError(f"the archive file of entries {first}..{last} holds {len(rows)} rows ({where})")
    for row in rows:
        known = leaves(row.index)
        if known is not None and known != row.leaf:
            raise VerificationError(f"entry {row.index}: the archive file's bytes do not hash to the log's leaf")
    for block in blocks:
        block_leaves = [r.leaf for r in rows[block.first - first : block.seal - first]]
        if root_of(block_leaves) != block.root:
            raise VerificationError(
                f"block {block.number} (entries {block.first}..{block.seal - 1}): the archive file's entries do "
                "not hash to the root its seal commits to"
            )
    return rows


def _keys(rows: Sequence[EntryRow], first: int) -> list[tuple[str, int, int, int]]:
    spans: dict[str, list[int]] = {}
    for r in rows:
        if r.event_id is not None:
            for key in ("s:" + r.subject, None if r.parent is None else "p:" + r.parent):
                if key is not None:
                    span = spans.setdefault(key, [r.index, r.index])
                    span[1] = r.index
    return [(k, first, lo, hi) for k, (lo, hi) in sorted(spans.items())]


def archive_ledger(
    ledger: Ledger,
    location: ArchiveLocation,
    before: str,
    *,
    max_entries: int = MAX_FILE_ENTRIES,
    progress: Callable[[ArchivedFile], None] | None = None,
) -> list[ArchivedFile]:
    """Archive every whole sealed block recorded before ``before`` (an HLC reading) not archived yet, into
    files at ``location``; first finish any range recorded but still hot. Returns the files handled."""
    if max_entries < 1:
        raise InputError("max_entries", f"must be >= 1, got {max_entries}")
    store = ledger.store
    blocks = sealed_blocks(store)
    done: list[ArchivedFile] = []
    recorded = store.archives()
    if recorded and _any_hot(ledger, recorded[-1]):  # runs go in order: only the latest can be unfinished
        done.append(_finish(ledger, recorded[-1], blocks))
    start = recorded[-1].last + 1 if recorded else 0
    meta = store.meta()
    shard = int(meta.get("shard_index", "0"))
    for group in _plan(blocks, start, before, max_entries):
        began = time.perf_counter()
        first, last = group[0].first, group[-1].seal
        rows = list(store.entries(first, last + 1))
        if [r.index for r in rows] != list(range(first, last + 1)):
            raise VerificationError(f"entries {first}..{last} are not all in the hot store; run lineage verify")
        name = file_name(day_of(group[0].hlc_first), shard, first, last)
        data = encode_file(rows)
        location.write(name, data)
        crash_point("written")
        digest = hashlib.sha256(data).digest()
        back = location.read(name)
        if hashlib.sha256(back).digest() != digest:
            raise VerificationError(f"the archive file {name} read back differs from what was written")
        hot = {r.index: r.leaf for r in rows}
        check_file(back, first, last, hot.get, group)
        crash_point("verified")
        root = root_of([r.leaf for r in rows])
        edges = b"".join(hot[i] for i in edge_indices(first, last))
        change = ArchiveChange(
            action="archive",
            first=first,
            last=last,
            file=name,
            bytes=len(data),
            sha256=digest.hex(),
            root=root.hex(),
        )
        keys = _keys(rows, first)

        row = ArchiveRow(first, last, location.describe(), name, digest, 0, edges)
        record = ledger.record_archive_change(change, functools.partial(_rows, row, keys))
        crash_point("recorded")
        deleted = store.delete_archived(first, last)
        crash_point("deleted")
        item = ArchivedFile(first, last, name, len(data), len(rows), deleted, record, time.perf_counter() - began)
        done.append(item)
        if progress is not None:
            progress(item)
    return done


def _rows(row: ArchiveRow, keys: list[tuple[str, int, int, int]], record: int) -> BatchWrite:
    """The store rows of an archived range whose record is at ``record``."""
    return BatchWrite(archives=[row._replace(record=record)], archive_keys=keys)


def _any_hot(ledger: Ledger, archive: ArchiveRow) -> bool:
    """Whether any event entry of an archived range is still in the hot store (a run stopped before its
    step 5)."""
    hot = getattr(ledger.store, "hot", ledger.store)
    return any(r.event_id is not None for r in hot.entries(archive.first, archive.last + 1))


def _finish(ledger: Ledger, archive: ArchiveRow, blocks: Sequence[Block]) -> ArchivedFile:
    """Check a recorded file against the hot entries still there, then delete them (step 5 of a run that
    stopped after recording)."""
    began = time.perf_counter()
    hot_store = getattr(ledger.store, "hot", ledger.store)
    location = ArchiveLocation(archive.location)
    data = location.read(archive.file)
    if hashlib.sha256(data).digest() != archive.sha256:
        raise VerificationError(f"the archive file {archive.file} is not the file its record names (SHA-256 differs)")
    hot = {r.index: r.leaf for r in hot_store.entries(archive.first, archive.last + 1)}
    group = [b for b in blocks if archive.first <= b.first and b.seal <= archive.last]
    rows = check_file(data, archive.first, archive.last, hot.get, group)
    deleted = ledger.store.delete_archived(archive.first, archive.last)
    return ArchivedFile(
        archive.first,
        archive.last,
        archive.file,
        len(data),
        len(rows),
        deleted,
        archive.record,
        time.perf_counter() - began,
    )
