"""Where an emitter keeps events between ``emit()`` and the ledger's acknowledgement.

The emitter writes every event here before sending it (a write-ahead log) and reads batches back in order;
a batch's records are committed once the ledger has acknowledged them. Positions are plain integers that
only grow, so "everything before position p" is a well-defined set of events.

:class:`DiskSpool` (emitter.disk_spool) is durable: append-only segments with a CRC per record, one fdatasync
per append, and recovery from a torn tail. :class:`MemorySpool` has the same interface without durability,
for emitters without a spool directory. The interface and the record format are in emitter.spool_records;
every name is importable from here.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

from lineage_ledger.emitter.disk_spool import DEFAULT_SEGMENT_BYTES, DiskSpool
from lineage_ledger.emitter.spool_records import (
    DeadLetter,
    PendingKeys,
    Spool,
    SpoolBatch,
)

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "DeadLetter",
    "DiskSpool",
    "MemorySpool",
    "Spool",
    "SpoolBatch",
]


class MemorySpool:
    """A :class:`Spool` in process memory holding at most ``capacity`` unacknowledged records.

    Nothing survives the process; dead letters are kept in :attr:`dead_letters` (the latest 1,000).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: deque[bytes] = deque()
        self._base = 0
        self._lock = threading.Lock()
        self._keys = PendingKeys(lambda end, _length: self._records[end - 1 - self._base])
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
