"""Hybrid logical clock readings (Kulkarni et al., 2014) in the ledger's fixed text form.

A reading is ``"<19-digit nanoseconds since the epoch>.<5-digit counter>"``, for example
``"1763891234123456789.00002"``. The width is fixed, so comparing the strings compares the times.
The clock's physical source is injected, so the module does no I/O of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lineage_ledger.errors import InputError

__all__ = [
    "HLC_PATTERN",
    "HybridClock",
    "Reading",
    "format_reading",
    "parse_reading",
]

# \Z, not $: in Python $ also matches before a trailing newline, which would admit a 26-character reading.
HLC_PATTERN = r"^[0-9]{19}\.[0-9]{5}\Z"
_HLC_RE = re.compile(HLC_PATTERN)
_MAX_COUNTER = 99_999


@dataclass(frozen=True, order=True, slots=True)
class Reading:
    """One clock reading: physical nanoseconds and a logical counter."""

    physical_ns: int
    counter: int

    def __str__(self) -> str:
        return format_reading(self.physical_ns, self.counter)


def format_reading(physical_ns: int, counter: int) -> str:
    """The fixed-width text form of a reading."""
    return f"{physical_ns:019d}.{counter:05d}"


def parse_reading(text: str, *, field: str = "hlc") -> Reading:
    """Parse the text form; InputError names ``field`` when it is malformed."""
    if not isinstance(text, str) or not _HLC_RE.match(text):
        raise InputError(field, f"{text!r} is not an HLC reading '<19 digits>.<5 digits>'")
    physical, counter = text.split(".")
    return Reading(int(physical), int(counter))


class HybridClock:
    """A monotonic hybrid logical clock.

    ``now()`` and ``reserve()`` never return a reading at or below one returned before. ``observe()``
    merges a remote reading, but only when it is at most ``max_offset_ns`` ahead of the physical clock:
    a reading further ahead is reported (False) and ignored, so one producer's broken clock cannot drag the
    ledger's time into the future.
    """

    def __init__(
        self,
        physical: Callable[[], int],
        *,
        max_offset_ns: int = 60_000_000_000,
        last: Reading | None = None,
    ) -> None:
        self._physical = physical
        self.max_offset_ns = max_offset_ns
        self._l = last.physical_ns if last else 0
        self._c = last.counter if last else 0

    @property
    def last(self) -> Reading:
        """The latest reading handed out or merged."""
        return Reading(self._l, self._c)

    def now(self) -> str:
        """A new reading for a local event."""
        return self.reserve(1)[0]

    def reserve(self, count: int) -> list[str]:
        """``count`` consecutive readings, strictly increasing, cheaper than ``count`` calls of now()."""
        pt = self._physical()
        if pt > self._l:
            lt, c = pt, -1
        else:
            lt, c = self._l, self._c
        out = []
        for _ in range(count):
            c += 1
            if c > _MAX_COUNTER:
                lt, c = lt + 1, 0
            out.append(f"{lt:019d}.{c:05d}")
        self._l, self._c = lt, c
        return out

    def observe(self, remote: str) -> bool:
        """Merge a remote reading (receive rule); False if it was too far ahead to accept."""
        r = parse_reading(remote)
        pt = self._physical()
        if r.physical_ns - pt > self.max_offset_ns:
            return False
        l_old = self._l
        lt = max(l_old, r.physical_ns, pt)
        if lt == l_old and lt == r.physical_ns:
            c = max(self._c, r.counter) + 1
        elif lt == l_old:
            c = self._c + 1
        elif lt == r.physical_ns:
            c = r.counter + 1
        else:
            c = 0
        if c > _MAX_COUNTER:
            lt, c = lt + 1, 0
        self._l, self._c = lt, c
        return True
