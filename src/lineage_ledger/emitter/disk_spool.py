"""A durable spool: :class:`DiskSpool` keeps an emitter's events in a directory between ``emit()`` and
the ledger's acknowledgement (emitter.spool_records has the interface and the record format). Its directory
holds:

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

Records are keyed by their ``event_id`` (spool_records.PendingKeys; the index is rebuilt when the spool is
opened). A write the disk refuses (full, over quota, any OSError) raises StoreError and
leaves nothing behind; once everything is acknowledged the spool starts a fresh segment and deletes the
old ones, which is how a full disk gets its space back.

A process killed mid-write leaves a torn tail (a short header, a short body, zeros, or a bad CRC). Opening
the spool detects it, truncates the last segment back to the last whole record and carries on: the torn
record had not been acknowledged as spooled, because the append that wrote it never returned.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from lineage_ledger.emitter.spool_records import (
    MAX_RECORD_BYTES,
    RECORD_HEADER,
    DeadLetter,
    PendingKeys,
    SpoolBatch,
    encode_records,
    parse_records,
)
from lineage_ledger.errors import StoreError

__all__ = ["DEFAULT_SEGMENT_BYTES", "DiskSpool"]

DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
_COMMITTED: Final = struct.Struct("<QI")
_SEGMENT_RE: Final = re.compile(r"^([0-9]{20})\.seg\Z")
_READ_CHUNK: Final = 1024 * 1024
_DEAD_LETTERS: Final = "dead-letters.jsonl"
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_RECLAIM_BYTES: Final = 4 * 1024 * 1024
"""A wholly acknowledged spool starts a new segment once its current one holds this much (or after a
refused write), so disk space comes back without waiting for ``segment_bytes``."""


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
        self._keys = PendingKeys(self._stored)
        self._refused_write = False
        self._pending = self._recover()
        last = self._bases[-1]
        self._end = last + self._sizes[last]
        self._append_fd = os.open(self._segment_path(last), os.O_WRONLY | os.O_APPEND | _O_CLOEXEC)
        self._dead_fd: int | None = None

    def _load_committed(self) -> int:
        data = os.pread(self._committed_fd, _COMMITTED.size, 0)
        if len(data) != _COMMITTED.size:
            # A new spool: the position's bytes are written now, so that every later commit overwrites them in
            # place and needs no new space (on a full volume, recording what was delivered is what frees it).
            with contextlib.suppress(OSError):
                os.pwrite(self._committed_fd, _COMMITTED.pack(0, zlib.crc32(struct.pack("<Q", 0))), 0)
                os.fsync(self._committed_fd)
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
                    chunk = os.pread(fd, min(size - offset, _READ_CHUNK + RECORD_HEADER.size), offset)
                    records, used, bad = parse_records(chunk, len(chunk))
                    count += len(records)
                    end = base + offset
                    for body in records:
                        end += RECORD_HEADER.size + len(body)
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
                    end += RECORD_HEADER.size + len(body)
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
                want = min(seg_end - pos, max(max_bytes - total, 0) + MAX_RECORD_BYTES + RECORD_HEADER.size)
                try:
                    chunk = os.pread(self._read_fd(base), want, pos - base)
                except OSError as e:
                    raise StoreError(f"cannot read spool {self.directory}: {e.strerror}") from e
                got, used, bad = parse_records(chunk, max_records - len(records))
                if bad:
                    raise StoreError(f"spool {self.directory} is corrupt at position {pos + used}")
                for body in got:
                    if records and total + len(body) > max_bytes:
                        break
                    records.append(body)
                    total += len(body)
                    pos += RECORD_HEADER.size + len(body)
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
