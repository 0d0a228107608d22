"""The spool's interface (``Spool``, ``SpoolBatch``, ``DeadLetter``), its record format and the index of
its unacknowledged records' event ids; the implementations are ``DiskSpool`` (emitter.disk_spool) and
``MemorySpool`` (emitter.spool).

A record is ``<u32 little-endian length><u32 CRC-32 of the length bytes and the body><body>``; the body is
one event's canonical bytes (already fingerprinted: a raw token never reaches a spool).

Records are keyed by the ``event_id`` in their body: :meth:`Spool.absent` tells the writer which records
the spool already holds unacknowledged with the same bytes, so emitting an event again while it waits
stores it once (the index costs about 200 bytes of memory per unacknowledged record and is rebuilt when
the spool is opened).
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.errors import StoreError

__all__ = [
    "MAX_RECORD_BYTES",
    "RECORD_HEADER",
    "DeadLetter",
    "PendingKeys",
    "Spool",
    "SpoolBatch",
    "encode_records",
    "event_key",
    "parse_records",
]

MAX_RECORD_BYTES: Final = 1024 * 1024
"""Larger lengths can only come from a torn or corrupt header (events are at most 64 KiB)."""

RECORD_HEADER: Final = struct.Struct("<II")
"""A record's header: its body's length and the CRC-32 of the length bytes and the body."""
_LENGTH: Final = struct.Struct("<I")


class _Key(msgspec.Struct):
    event_id: str | None = None


_KEY: Final = msgspec.json.Decoder(_Key)


def event_key(body: bytes) -> str | None:
    """The ``event_id`` a record's body names (None if it names none: the record is not keyed)."""
    try:
        key = _KEY.decode(body).event_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return key


class PendingKeys:
    """The event ids of a spool's unacknowledged records and where each record is. ``stored(end, length)``
    reads a record's body back, to tell a repeat of it from another event under the same id."""

    def __init__(self, stored: Callable[[int, int], bytes]) -> None:
        self._stored = stored
        self._where: dict[str, tuple[int, int]] = {}  # key -> (end position, body length) of its record
        self._ends: deque[tuple[int, str]] = deque()  # (end position, key) of every keyed record, in log order
        self._checked: dict[int, tuple[bytes, str | None]] = {}  # the keys absent() found, for add()

    def _key(self, body: bytes) -> str | None:
        seen = self._checked.get(id(body))
        return seen[1] if seen is not None and seen[0] is body else event_key(body)

    def add(self, end: int, body: bytes) -> None:
        """Index the record ``body`` ending at ``end``, just appended."""
        key = self._key(body)
        if key is not None:
            self._where.setdefault(key, (end, len(body)))
            self._ends.append((end, key))

    def added(self) -> None:
        """An append is done: forget the keys absent() found for it."""
        self._checked.clear()

    def absent(self, records: Sequence[bytes]) -> tuple[list[bytes], int]:
        """As :meth:`Spool.absent`, by this index."""
        self._checked.clear()
        fresh: list[bytes] = []
        firsts: dict[str, bytes] = {}
        for body in records:
            key = event_key(body)
            if key is not None:
                first = firsts.get(key)
                if first is None:
                    where = self._where.get(key)
                    if where is not None and where[1] == len(body) and self._stored(*where) == body:
                        continue
                    firsts[key] = body
                elif first == body:
                    continue
            self._checked[id(body)] = (body, key)
            fresh.append(body)
        return fresh, len(records) - len(fresh)

    def commit(self, position: int) -> None:
        """Forget the records before ``position``: they are acknowledged."""
        ends, where = self._ends, self._where
        while ends and ends[0][0] <= position:
            end, key = ends.popleft()
            if where.get(key, (0, 0))[0] == end:
                del where[key]


def _crc(length: int, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(_LENGTH.pack(length)))


def encode_records(records: Sequence[bytes]) -> bytes:
    """The on-disk form of ``records``, in order (what one append writes)."""
    parts: list[bytes] = []
    for body in records:
        n = len(body)
        if not 0 < n <= MAX_RECORD_BYTES:
            raise StoreError(f"a spool record must be 1 to {MAX_RECORD_BYTES} bytes, not {n}")
        parts.append(RECORD_HEADER.pack(n, _crc(n, body)))
        parts.append(body)
    return b"".join(parts)


def parse_records(chunk: bytes, limit: int) -> tuple[list[bytes], int, bool]:
    """Whole, valid records at the start of ``chunk`` (at most ``limit``), the bytes they take, and whether
    parsing stopped at a bad record (as opposed to the end of the chunk or the limit)."""
    records: list[bytes] = []
    i, size = 0, len(chunk)
    while len(records) < limit and i + RECORD_HEADER.size <= size:
        length, crc = RECORD_HEADER.unpack_from(chunk, i)
        if not 0 < length <= MAX_RECORD_BYTES:
            return records, i, True
        j = i + RECORD_HEADER.size + length
        if j > size:
            break
        body = chunk[i + RECORD_HEADER.size : j]
        if _crc(length, body) != crc:
            return records, i, True
        records.append(body)
        i = j
    return records, i, False


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """Consecutive records read from a spool: they occupy positions ``start`` up to ``end``."""

    records: tuple[bytes, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event the ledger (or the emitter's own validation) refused, and why.

    ``event`` holds the canonical event bytes when there are any: an object that could not be encoded is
    recorded by its reason alone, since its fields were never checked for raw tokens.
    """

    error: str
    reason: str
    field: str | None = None
    event_id: str | None = None
    event: bytes | None = None

    def to_json(self) -> bytes:
        """One JSON line (without the newline); the event bytes are embedded verbatim."""
        head = canonical_bytes(
            {"error": self.error, "event_id": self.event_id, "field": self.field, "reason": self.reason}
        )
        if self.event is None:
            return head
        return head[:-1] + b',"event":' + self.event + b"}"


class Spool(Protocol):
    """An ordered log of event records with a committed position. Safe to call from several threads.

    ``append`` returns only once the records are as durable as the spool can make them (``durable``).
    Positions grow with every append; ``read`` returns records in append order; ``commit(p)`` declares that
    every record before ``p`` was acknowledged, and they are never read again, even after a restart.
    """

    @property
    def durable(self) -> bool:
        """True if appended records survive the process being killed."""
        ...

    @property
    def committed(self) -> int:
        """Everything before this position has been acknowledged."""
        ...

    @property
    def end(self) -> int:
        """The position after the last appended record."""
        ...

    @property
    def pending(self) -> int:
        """How many appended records are not yet committed."""
        ...

    def room(self) -> int:
        """How many more records ``append`` takes now (bounded spools say less when full)."""
        ...

    def absent(self, records: Sequence[bytes]) -> tuple[list[bytes], int]:
        """``records`` without those already held unacknowledged with the same event id and bytes (and
        without repeats among them), in order, and how many were left out. The writer appends only these,
        so the spool keeps one record per event id."""
        ...

    def append(self, records: Sequence[bytes], written: Callable[[int], None] | None = None) -> int:
        """Append ``records`` in order and return the new end once they are as durable as the spool makes
        them; raises StoreError if they were not kept. ``written`` is called with the new end as soon as
        ``read`` can return the records (a disk spool calls it before its fsync: a process killed after the
        write loses nothing, and a reader need not wait for the disk)."""
        ...

    def read(self, position: int, max_records: int, max_bytes: int) -> SpoolBatch | None:
        """Up to ``max_records`` records from ``position`` (at least one, then at most ``max_bytes`` of
        bodies), or None when ``position`` is the end."""
        ...

    def commit(self, position: int, count: int) -> None:
        """Mark the ``count`` records before ``position`` as acknowledged (no-op for an older position)."""
        ...

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Keep ``letters`` where an operator can find them (raises StoreError if they were not kept)."""
        ...

    def close(self) -> None:
        """Release the spool; later calls are ignored or raise StoreError."""
        ...
