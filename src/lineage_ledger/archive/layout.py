"""What an archive file holds and where it goes: its columns, its row order and its name.

A file holds the entries ``first`` .. ``last`` of whole sealed blocks of one day (the UTC day of the first
entry's ``recorded_at``), in index order. Each row is one entry: its bytes (``body``), its log index, and
the columns queries filter on, derived from the bytes: subject, parent, event type, user, resource, verdict
and time (the event's ``occurred_at``, else ``recorded_at``, in nanoseconds).

The bytes are exact but for one field: an entry's ``prev`` is the leaf hash of the previous entry of its
subject, 32 random bytes that no compressor can shrink and that follow from that entry. When that entry is
in the same file (``chained`` true), the stored bytes hold 64 zeros in its place and a reader puts back the
leaf hash of the subject's previous row, recomputed from its bytes (so the file shrinks by about a third
and every entry's bytes, hence its leaf hash, come back exactly; a row changed anywhere in a chain changes
every later leaf of that chain, which verification catches). Leaf hashes are not stored.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import msgspec

from lineage_ledger.core.entry import read_event_entry
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.errors import InputError
from lineage_ledger.store.base import EntryRow

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "COLUMNS",
    "PAGE_BYTES",
    "ROW_GROUP",
    "ZSTD_LEVEL",
    "archive_table",
    "day_of",
    "file_name",
    "rows_of_table",
    "schema",
]

COLUMNS: Final = (
    "index",
    "subject",
    "parent",
    "chained",
    "event_type",
    "user",
    "resource",
    "verdict",
    "time",
    "body",
)
ROW_GROUP: Final = 8192
"""Rows per row group: a lookup reads only the groups whose index statistics meet the span the hot
``archive_keys`` row gives for its key (a token's events are close together in the log). Measured on the
demo workload: 90 bytes per entry against 87 with one group per file, for a timeline read ten times faster."""
PAGE_BYTES: Final = 16 << 20
"""Parquet compresses each page on its own: pages of 16 MB let zstd find the repeats (token ids, envelope
digests) across a whole block, 10% smaller than 1 MB pages on the demo workload (docs/archive.md)."""
ZSTD_LEVEL: Final = 6
"""zstd level of every column: on the demo workload, within 2% of level 12's size at a quarter of its time."""
ZEROS: Final = b"0" * 64


class _Payload(msgspec.Struct):
    user_id: str | None = None
    resource: str | None = None


class _Event(msgspec.Struct):
    event_id: str | None = None
    event_type: str = ""
    occurred_at: str = ""
    payload: _Payload | None = None


_EVENT = msgspec.json.Decoder(_Event)
_RECORDED = msgspec.json.Decoder(dict[str, object])


def schema() -> pa.Schema:
    """The Arrow schema of an archive file."""
    import pyarrow as pa

    text = pa.string()
    return pa.schema(
        [
            ("index", pa.int64()),
            ("subject", text),
            ("parent", text),
            ("chained", pa.bool_()),
            ("event_type", text),
            ("user", text),
            ("resource", text),
            ("verdict", text),
            ("time", pa.int64()),
            ("body", pa.binary()),
        ]
    )


def _ns(hlc: str) -> int:
    return int(hlc.split(".", 1)[0]) if hlc else 0


def day_of(recorded_at: str) -> str:
    """The UTC day (YYYY-MM-DD) of an HLC reading: the partition a block starting then goes to."""
    seconds = _ns(recorded_at) // 1_000_000_000
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d")


def file_name(day: str, shard: int, first: int, last: int) -> str:
    """The path of the file of entries ``first`` .. ``last`` under the archive location (Hive partitions)."""
    return f"day={day}/shard={shard}/entries-{first:012d}-{last:012d}.parquet"


def archive_table(rows: Iterable[EntryRow]) -> pa.Table:
    """The rows of an archive file for these entries (a contiguous range of the log), in index order."""
    import pyarrow as pa

    columns: dict[str, list[object]] = {name: [] for name in COLUMNS}
    seen: set[str] = set()
    for row in sorted(rows, key=lambda r: r.index):
        body = bytes(row.body)
        stored = read_event_entry(body)
        event_type = user = resource = None
        if stored is not None:
            event = _EVENT.decode(bytes(stored.event))
            event_type = event.event_type or None
            if event.payload is not None:
                user, resource = event.payload.user_id, event.payload.resource
            at = _ns(event.occurred_at) or _ns(stored.recorded_at)
        else:
            decoded = _RECORDED.decode(body)
            event_type = str(decoded.get("type", "")) or None
            at = _ns(str(decoded.get("recorded_at", "")))
        chained = row.subject in seen
        seen.add(row.subject)
        if chained:
            start = _prev_at(body)
            body = body[:start] + ZEROS + body[start + 64 :]
        for name, value in (
            ("index", row.index),
            ("subject", row.subject),
            ("parent", row.parent),
            ("chained", chained),
            ("event_type", event_type),
            ("user", user),
            ("resource", resource),
            ("verdict", row.verdict),
            ("time", at),
            ("body", body),
        ):
            columns[name].append(value)
    return pa.table(columns, schema=schema())


def rows_of_table(table: pa.Table) -> list[EntryRow]:
    """The entries an archive table holds, in index order, each ``prev`` put back (a chained row needs the
    earlier rows of its subject in the table: read whole subjects) and ``leaf`` recomputed from the bytes.
    InputError if a chained row has no earlier row of its subject."""
    data = table.select(["index", "subject", "parent", "chained", "verdict", "body"]).to_pydict()
    order = sorted(range(len(data["index"])), key=data["index"].__getitem__)
    last: dict[str, bytes] = {}
    out: list[EntryRow] = []
    for i in order:
        index, subject, body = data["index"][i], data["subject"][i], bytes(data["body"][i])
        start = _prev_at(body)
        if data["chained"][i]:
            prev = last.get(subject)
            if prev is None:
                raise InputError("archive", f"entry {index}: chained to an earlier entry of {subject} the file lacks")
            body = body[:start] + prev.hex().encode() + body[start + 64 :]
        else:
            prev = _hex32(body[start : start + 64]) if start >= 0 else bytes(32)
        leaf = leaf_hash(body)
        last[subject] = leaf
        stored = read_event_entry(body)
        event_id = _EVENT.decode(bytes(stored.event)).event_id if stored is not None else None
        out.append(EntryRow(index, subject, event_id, data["parent"][i], prev, leaf, data["verdict"][i], body))
    return out


_PREV: Final = b'"prev":"'


def _prev_at(body: bytes) -> int:
    """Where the 64 hex digits of an entry's own ``prev`` start in its bytes (-1 if it has none). The last
    ``"prev":"`` is the entry's own: every field after it is the ledger's, none of which can hold it."""
    at = body.rfind(_PREV)
    return at + len(_PREV) if at >= 0 else -1


def _hex32(text: bytes) -> bytes:
    try:
        return bytes.fromhex(text.decode())
    except ValueError:
        return bytes(32)
