"""What an archive file holds and where it goes: its columns, its row order and its name.

A file holds the entries ``first`` .. ``last`` of whole sealed blocks of one day (the UTC day of the first
entry's ``recorded_at``). Each row is one entry: its exact bytes (``body``), its log index, and the columns
queries filter on, derived from the bytes: subject, parent, event id, event type, user, resource, verdict
and time (the event's ``occurred_at``, else ``recorded_at``, in nanoseconds). Rows are sorted by subject,
then index, so a file's row groups carry narrow subject ranges in their statistics (a lookup by subject
skips the others) and similar rows sit together for zstd. Leaf hashes and ``prev`` are not stored: both
follow from the bytes.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import msgspec

from lineage_ledger.core.entry import read_event_entry
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.store.base import EntryRow

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "COLUMNS",
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
    "event_id",
    "event_type",
    "user",
    "resource",
    "verdict",
    "time",
    "body",
)
ROW_GROUP: Final = 65_536
"""Rows per row group: a subject lookup reads the row groups whose subject range holds it."""
ZSTD_LEVEL: Final = 9
"""zstd level of every column. Measured on the demo workload: level 9 gives most of level 19's size at a
fraction of its time (docs/archive.md)."""


class _Payload(msgspec.Struct):
    user_id: str | None = None
    resource: str | None = None


class _Event(msgspec.Struct):
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
            ("event_id", text),
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
    """The rows of an archive file for these entries, in the file's order (subject, then index)."""
    import pyarrow as pa

    columns: dict[str, list[object]] = {name: [] for name in COLUMNS}
    for row in sorted(rows, key=lambda r: (r.subject, r.index)):
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
        for name, value in (
            ("index", row.index),
            ("subject", row.subject),
            ("parent", row.parent),
            ("event_id", row.event_id),
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
    """The entries an archive table holds, in index order, with ``prev`` and ``leaf`` taken from the bytes."""
    data = table.select(["index", "subject", "event_id", "parent", "verdict", "body"]).to_pydict()
    out: list[EntryRow] = []
    for index, subject, event_id, parent, verdict, body in zip(
        data["index"], data["subject"], data["event_id"], data["parent"], data["verdict"], data["body"], strict=True
    ):
        out.append(EntryRow(index, subject, event_id, parent, _prev_of(body), leaf_hash(body), verdict, body))
    out.sort(key=lambda r: r.index)
    return out


_PREV: Final = b'"prev":"'


def _prev_of(body: bytes) -> bytes:
    """The ``prev`` an entry's bytes name (the verifier checks the bytes themselves; this is the column)."""
    at = body.rfind(_PREV)
    if at < 0:
        return bytes(32)
    try:
        return bytes.fromhex(body[at + len(_PREV) : at + len(_PREV) + 64].decode())
    except ValueError:
        return bytes(32)
