"""Where an emitter keeps events between ``emit()`` and the ledger's acknowledgement.

The emitter writes every event here before sending it (a write-ahead log) and reads batches back in order;
a batch's records are committed once the ledger has acknowledged them. Positions are plain integers that
only grow, so "everything before position p" is a well-defined set of events.

:class:`DiskSpool` is durable. Its directory holds:

* ``<20-digit position>.seg``: append-only segments, named by the position of their first byte. A record is
  ``<u32 little-endian length><u32 CRC-32 of the length bytes and the body><body>``; the body is one event's
  canonical bytes (already fingerprinted: a raw token never reaches a spool). Every append is one
  ``write`` followed by ``fdatasync`` before it returns. Once the write has returned, the records survive
  SIGKILL (they are in the kernel's page cache) and readers may send them; the fdatasync makes them
  survive power loss too, and runs without blocking readers.
* ``committed``: the position up to which the ledger has acknowledged everything (8 bytes and a CRC). It is
  written without fsync on purpose: if it is lost or torn, the spool replays from an older position and the
  ledger answers the repeated events as duplicates (event ids are idempotent), so only time is lost.
* ``dead-letters.jsonl``: events the ledger refused as bad input, one JSON object per line with the reason.
* ``lock``: an exclusive ``flock`` so that two emitters never share a spool.
* ``corrupt-<position>.bin``: bytes that failed their CRC in the middle of the log, kept for inspection.

Records are keyed by the ``event_id`` in their body: :meth:`Spool.absent` tells the writer which records
the spool already holds unacknowledged with the same bytes, so emitting an event again while it waits
stores it once (the index costs about 200 bytes of memory per unacknowledged record and is rebuilt when
the spool is opened). A write the disk refuses (full, over quota, any OSError) raises StoreError and
leaves nothing behind; once everything is acknowledged the spool starts a fresh segment and deletes the
old ones, which is how a full disk gets its space back.

A process killed mid-write leaves a torn tail (a short header, a short body, zeros, or a bad CRC). Opening
the spool detects it, truncates the last segment back to the last whole record and carries on: the torn
record had not been acknowledged as spooled, because the append that wrote it never returned.

:class:`MemorySpool` has the same interface without durability, for emitters without a spool directory.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import re
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import msgspec

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.errors import StoreError

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "DeadLetter",
    "DiskSpool",
    "MemorySpool",
    "Spool",
    "SpoolBatch",
]

DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
MAX_RECORD_BYTES: Final = 1024 * 1024
"""Larger lengths can only come from a torn or corrupt header (events are at most 64 KiB)."""

_HEADER: Final = struct.Struct("<II")
_LENGTH: Final = struct.Struct("<I")
_COMMITTED: Final = struct.Struct("<QI")
_SEGMENT_RE: Final = re.compile(r"^([0-9]{20})\.seg\Z")
_READ_CHUNK: Final = 1024 * 1024
_DEAD_LETTERS: Final = "dead-letters.jsonl"
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_RECLAIM_BYTES: Final = 4 * 1024 * 1024
"""A wholly acknowledged spool starts a new segment once its current one holds this much (or after a
refused write), so disk space comes back without waiting for ``segment_bytes``."""


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


class _PendingKeys:
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
        key = self._key(body)
        if key is not None:
            self._where.setdefault(key, (end, len(body)))
            self._ends.append((end, key))

    def added(self) -> None:
        self._checked.clear()

    def absent(self, records: Sequence[bytes]) -> tuple[list[bytes], int]:
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
        parts.append(_HEADER.pack(n, _crc(n, body)))
        parts.append(body)
    return b"".join(parts)


def _parse(chunk: bytes, limit: int) -> tuple[list[bytes], int, bool]:
    """Whole, valid records at the start of ``chunk`` (at most ``limit``), the bytes they take, and whether
    parsing stopped at a bad record (as opposed to the end of the chunk or the limit)."""
    records: list[bytes] = []
    i, size = 0, len(chunk)
    while len(records) < limit and i + _HEADER.size <= size:
        length, crc = _HEADER.unpack_from(chunk, i)
        if not 0 < length <= MAX_RECORD_BYTES:
            return records, i, True
        j = i + _HEADER.size + length
        if j > size:
            break
        body = chunk[i + _HEADER.size : j]
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


class DiskSpool:
    """A durable :class:`Spool` in a directory (see the module docstring for the layout).

    Opening recovers from a crash: it truncates a torn tail, moves bytes that fail their CRC in an older
    segment to a ``corrupt-*.bin`` file, and resumes reading at the committed position. Raises StoreError
    if another process (or another DiskSpool in this one) holds the directory.
    """

    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()  # file positions and sizes, for readers and writers alike
        self._append_lock = threading.Lock()  # one append (write, then fsync) at a time
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o600)
        except OSError as e:
            raise StoreError(f"cannot open spool directory {self.directory}: {e.strerror}") from e
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._lock_fd)
            raise StoreError(f"spool directory {self.directory} is in use by another emitter") from e
        try:
            self._open()
        except OSError as e:
            self._release()
            raise StoreError(f"cannot recover spool {self.directory}: {e.strerror}") from e
        except BaseException:
            self._release()
            raise

    # -- opening and recovery -----------------------------------------------------------------------------

    def _segment_path(self, base: int) -> Path:
        return self.directory / f"{base:020d}.seg"

    def _open(self) -> None:
        self._bases: list[int] = sorted(
            int(m.group(1)) for name in os.listdir(self.directory) if (m := _SEGMENT_RE.match(name))
        )
        self._sizes: dict[int, int] = {b: self._segment_path(b).stat().st_size for b in self._bases}
        self._read_fds: dict[int, int] = {}
        self._committed_fd = os.open(self.directory / "committed", os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o600)
        committed = self._load_committed()
        if not self._bases:
            self._create_segment(committed)
        first = self._bases[0]
        last_end = self._bases[-1] + self._sizes[self._bases[-1]]
        # The committed file may be stale (older) or, after a lost write, point past what survived: clamp it.
        self._committed = min(max(committed, first), last_end)
        self._keys = _PendingKeys(self._stored)
        self._refused_write = False
        self._pending = self._recover()
        last = self._bases[-1]
        self._end = last + self._sizes[last]
        self._append_fd = os.open(self._segment_path(last), os.O_WRONLY | os.O_APPEND | _O_CLOEXEC)
        self._dead_fd: int | None = None

    def _load_committed(self) -> int:
        data = os.pread(self._committed_fd, _COMMITTED.size, 0)
        if len(data) != _COMMITTED.size:
            return 0
        position, crc = _COMMITTED.unpack(data)
        return int(position) if zlib.crc32(data[:8]) == crc else 0

    def _create_segment(self, base: int) -> None:
        fd = os.open(self._segment_path(base), os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
        os.close(fd)
        self._fsync_directory()
        self._bases.append(base)
        self._sizes[base] = 0

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | _O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _recover(self) -> int:
        """Check every record from the committed position on; returns how many there are."""
        count = 0
        for k, base in enumerate(self._bases):
            size = self._sizes[base]
            if base + size <= self._committed:
                continue
            offset = max(self._committed - base, 0)
            fd = os.open(self._segment_path(base), os.O_RDWR | _O_CLOEXEC)
            try:
                while offset < size:
                    chunk = os.pread(fd, min(size - offset, _READ_CHUNK + _HEADER.size), offset)
                    records, used, bad = _parse(chunk, len(chunk))
                    count += len(records)
                    end = base + offset
                    for body in records:
                        end += _HEADER.size + len(body)
                        self._keys.add(end, body)
                    offset += used
                    if bad or used == 0:
                        break
                if offset < size:
                    if k < len(self._bases) - 1:
                        # Not a torn tail: later segments exist, so this one was once complete. Keep the bytes.
                        self._quarantine(fd, base + offset, offset, size)
                    os.ftruncate(fd, offset)
                    os.fsync(fd)
                    self._sizes[base] = offset
            finally:
                os.close(fd)
        return count

    def _quarantine(self, fd: int, position: int, offset: int, size: int) -> None:
        target = self.directory / f"corrupt-{position:020d}.bin"
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o600)
        try:
            while offset < size:
                data = os.pread(fd, min(size - offset, _READ_CHUNK), offset)
                if not data:
                    break
                _write_all(out, data)
                offset += len(data)
            os.fsync(out)
        finally:
            os.close(out)

    def _release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    # -- the Spool interface --------------------------------------------------------------------------------

    @property
    def durable(self) -> bool:
        """Always True: records are fsync'd before ``append`` returns."""
        return True

    @property
    def committed(self) -> int:
        """Everything before this position has been acknowledged."""
        return self._committed

    @property
    def end(self) -> int:
        """The position after the last appended record."""
        return self._end

    @property
    def pending(self) -> int:
        """How many appended records are not yet committed."""
        return self._pending

    def room(self) -> int:
        """Unbounded: the disk is the limit (a full disk makes ``append`` raise StoreError)."""
        return 1 << 62

    def absent(self, records: Sequence[bytes]) -> tuple[list[bytes], int]:
        """``records`` less those held unacknowledged with the same event id and bytes (see Spool)."""
        with self._lock:
            return self._keys.absent(records)

    def append(self, records: Sequence[bytes], written: Callable[[int], None] | None = None) -> int:
        """Write ``records`` with one write and fdatasync them; returns the new end position.

        Readers see the records as soon as the write returns (``written`` is called then); the fdatasync
        runs outside the readers' lock.
        """
        if not records:
            return self._end
        data = encode_records(records)
        with self._append_lock:
            with self._lock:
                if self._closed:
                    raise StoreError(f"spool {self.directory} is closed")
                for attempt in (1, 2):
                    last = self._bases[-1]
                    before = self._sizes[last]
                    try:
                        _write_all(self._append_fd, data)
                        break
                    except OSError as e:
                        # Cut off whatever part was written, so the next append does not follow a torn record.
                        with contextlib.suppress(OSError):
                            os.ftruncate(self._append_fd, before)
                        self._refused_write = True
                        # Everything acknowledged: old segments can go, and the write may fit then.
                        if attempt == 2 or not self._give_space_back():
                            raise StoreError(f"cannot write to spool {self.directory}: {e.strerror}") from e
                end = last + before
                for body in records:
                    end += _HEADER.size + len(body)
                    self._keys.add(end, body)
                self._keys.added()
                self._sizes[last] = before + len(data)
                self._end += len(data)
                self._pending += len(records)
                end, fd = self._end, self._append_fd
            if written is not None:
                written(end)
            try:
                os.fdatasync(fd)
            except OSError as e:
                raise StoreError(f"spool {self.directory}: written but not synced to disk: {e.strerror}") from e
            with self._lock:
                if not self._closed and self._sizes[self._bases[-1]] >= self.segment_bytes:
                    self._roll()
            return end

    def _roll(self) -> None:
        try:
            self._create_segment(self._end)
            fd = os.open(self._segment_path(self._end), os.O_WRONLY | os.O_APPEND | _O_CLOEXEC)
        except OSError:
            return  # keep appending to the current segment; rolling is retried on the next append
        os.close(self._append_fd)
        self._append_fd = fd

    def _reclaim(self) -> None:
        """Start a new segment at the end of a wholly acknowledged spool and delete the old ones (call with
        ``_lock`` held; if an append is running, that append does it when it needs the space)."""
        if self._append_lock.acquire(blocking=False):
            try:
                self._give_space_back()
            finally:
                self._append_lock.release()

    def _give_space_back(self) -> bool:
        """If every record is acknowledged, move to a fresh segment and delete the others (call with both
        locks held); True if some space was given back."""
        if self._committed != self._end or self._sizes[self._bases[-1]] == 0:
            return False
        self._roll()
        if self._bases[-1] != self._end:
            return False
        self._refused_write = False
        while len(self._bases) > 1:
            base = self._bases.pop(0)
            del self._sizes[base]
            fd = self._read_fds.pop(base, None)
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(OSError):
                self._segment_path(base).unlink()
        return True

    def _stored(self, end: int, length: int) -> bytes:
        """The body of the record that ends at ``end`` (call with ``_lock`` held); b"" if unreadable."""
        start = end - length
        base = self._segment_of(start)
        try:
            return os.pread(self._read_fd(base), length, start - base)
        except OSError:
            return b""

    def _segment_of(self, position: int) -> int:
        return self._bases[bisect.bisect_right(self._bases, position) - 1]

    def _read_fd(self, base: int) -> int:
        fd = self._read_fds.get(base)
        if fd is None:
            fd = self._read_fds[base] = os.open(self._segment_path(base), os.O_RDONLY | _O_CLOEXEC)
        return fd

    def read(self, position: int, max_records: int, max_bytes: int) -> SpoolBatch | None:
        """Up to ``max_records`` records from ``position``, in order; None at the end."""
        with self._lock:
            if self._closed:
                raise StoreError(f"spool {self.directory} is closed")
            records: list[bytes] = []
            pos, total = max(position, self._bases[0]), 0
            while pos < self._end and len(records) < max_records:
                base = self._segment_of(pos)
                seg_end = base + self._sizes[base]
                if pos >= seg_end:
                    pos = self._bases[self._bases.index(base) + 1]
                    continue
                want = min(seg_end - pos, max(max_bytes - total, 0) + MAX_RECORD_BYTES + _HEADER.size)
                try:
                    chunk = os.pread(self._read_fd(base), want, pos - base)
                except OSError as e:
                    raise StoreError(f"cannot read spool {self.directory}: {e.strerror}") from e
                got, used, bad = _parse(chunk, max_records - len(records))
                if bad:
                    raise StoreError(f"spool {self.directory} is corrupt at position {pos + used}")
                for body in got:
                    if records and total + len(body) > max_bytes:
                        break
                    records.append(body)
                    total += len(body)
                    pos += _HEADER.size + len(body)
                else:
                    if used == 0:
                        raise StoreError(f"spool {self.directory} is corrupt at position {pos}")
                    continue
                break
            if pos < self._end:
                base = self._segment_of(pos)
                if pos == base + self._sizes[base] and base != self._bases[-1]:
                    pos = self._bases[self._bases.index(base) + 1]
            if not records:
                return None
            return SpoolBatch(tuple(records), position, pos)

    def commit(self, position: int, count: int) -> None:
        """Record ``position`` as acknowledged and delete segments that are wholly before it."""
        with self._lock:
            if self._closed or position <= self._committed:
                return
            self._committed = position
            self._pending = max(self._pending - count, 0)
            self._keys.commit(position)
            packed = struct.pack("<Q", position)
            try:
                os.pwrite(self._committed_fd, packed + struct.pack("<I", zlib.crc32(packed)), 0)
                last = self._bases[-1]
                if position == self._end and (self._refused_write or self._sizes[last] >= _RECLAIM_BYTES):
                    self._reclaim()
                while len(self._bases) > 1 and self._bases[1] <= position:
                    base = self._bases.pop(0)
                    del self._sizes[base]
                    fd = self._read_fds.pop(base, None)
                    if fd is not None:
                        os.close(fd)
                    self._segment_path(base).unlink()
            except OSError as e:
                raise StoreError(f"cannot commit spool position in {self.directory}: {e.strerror}") from e

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Append ``letters`` to ``dead-letters.jsonl`` and fsync it."""
        if not letters:
            return
        data = b"".join(letter.to_json() + b"\n" for letter in letters)
        with self._lock:
            if self._closed:
                raise StoreError(f"spool {self.directory} is closed")
            try:
                if self._dead_fd is None:
                    self._dead_fd = os.open(
                        self.directory / _DEAD_LETTERS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_CLOEXEC, 0o600
                    )
                _write_all(self._dead_fd, data)
                os.fsync(self._dead_fd)
            except OSError as e:
                raise StoreError(f"cannot write dead letters to {self.directory}: {e.strerror}") from e

    @property
    def dead_letter_path(self) -> Path:
        """The dead-letter file (it exists once something was refused)."""
        return self.directory / _DEAD_LETTERS

    def close(self) -> None:
        """Close every file and release the directory lock; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fds = [self._append_fd, self._committed_fd, *self._read_fds.values()]
            if self._dead_fd is not None:
                fds.append(self._dead_fd)
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._release()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class MemorySpool:
    """A :class:`Spool` in process memory holding at most ``capacity`` unacknowledged records.

    Nothing survives the process; dead letters are kept in :attr:`dead_letters` (the latest 1,000).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: deque[bytes] = deque()
        self._base = 0
        self._lock = threading.Lock()
        self._keys = _PendingKeys(lambda end, _length: self._records[end - 1 - self._base])
        self.dead_letters: deque[DeadLetter] = deque(maxlen=1000)

    @property
    def durable(self) -> bool:
        """Always False."""
        return False

    @property
    def committed(self) -> int:
        """Everything before this position has been acknowledged."""
        return self._base

    @property
    def end(self) -> int:
        """The position after the last appended record."""
        return self._base + len(self._records)

    @property
    def pending(self) -> int:
        """How many appended records are not yet committed."""
        return len(self._records)

    def room(self) -> int:
        """``capacity`` minus the records held."""
        return max(self.capacity - len(self._records), 0)

    def absent(self, records: Sequence[bytes]) -> tuple[list[bytes], int]:
        """``records`` less those held unacknowledged with the same event id and bytes (see Spool)."""
        with self._lock:
            return self._keys.absent(records)

    def append(self, records: Sequence[bytes], written: Callable[[int], None] | None = None) -> int:
        """Keep ``records``; returns the new end (and passes it to ``written``)."""
        with self._lock:
            end = self._base + len(self._records)
            for body in records:
                end += 1
                self._keys.add(end, body)
            self._keys.added()
            self._records.extend(records)
        if written is not None:
            written(end)
        return end

    def read(self, position: int, max_records: int, max_bytes: int) -> SpoolBatch | None:
        """Up to ``max_records`` records from ``position``; None at the end."""
        with self._lock:
            start = max(position, self._base)
            records: list[bytes] = []
            total = 0
            for i in range(start - self._base, len(self._records)):
                body = self._records[i]
                if len(records) == max_records or (records and total + len(body) > max_bytes):
                    break
                records.append(body)
                total += len(body)
            if not records:
                return None
            return SpoolBatch(tuple(records), start, start + len(records))

    def commit(self, position: int, count: int) -> None:
        """Forget the records before ``position``."""
        with self._lock:
            while self._base < position and self._records:
                self._records.popleft()
                self._base += 1
            self._keys.commit(position)

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Keep ``letters`` in :attr:`dead_letters`."""
        self.dead_letters.extend(letters)

    def close(self) -> None:
        """Nothing to release."""
