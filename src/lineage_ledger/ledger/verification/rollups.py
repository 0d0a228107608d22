"""Rollup checks: every stored daily rollup (ledger.rollups) recomputed from the entries.

The days whose rollups are stored end at some index (the last stored day's end). Each chunk below it notes
the days its entries were recorded on (``DayScan``) and sums up its token events per day and token; the
coordinator merges the chunks' rollups of a day as they come (``RollupCheck``) and, once a later day has
begun, turns the day's rows into a keyed multiset hash (as derived.Derived does for the links), so memory
holds one day at a time. After the entries, the stored rows are read once and summed per day the same way.

A stored day must be one the entries give, with their range of indices; every day before the last stored
one must be stored; each day's stored rows must be exactly those its entries give. Removing the newest
stored days altogether (rows and days) leaves a ledger whose newest days are not rolled up yet, which
changes no answer: a query computes those days from the entries.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.rollups import Rollup, day_name, day_of
from lineage_ledger.ledger.verification.derived import row_hasher
from lineage_ledger.ledger.verification.entries import LeanEvent
from lineage_ledger.ledger.verification.report import MAX_PROBLEMS, Problem

__all__ = ["DayScan", "Rollup", "RollupCheck"]

_HASH_MOD: Final = 1 << 256


class DayScan:
    """A chunk's days and token rollups, for the entries up to ``end`` (the last stored day's end; the
    entry at ``end`` itself is read for its day only, to show the stored day ends where the log's does)."""

    __slots__ = ("bounds", "day", "end", "starts", "tokens")

    def __init__(self, end: int) -> None:
        self.end = end
        self.day = -1
        self.bounds = ("", "")
        """The recorded_at readings [low, high) of the current day: a reading outside starts another."""
        self.starts: list[tuple[int, int]] = []
        self.tokens: dict[tuple[int, str], Rollup] = {}

    def entry(self, idx: int, recorded_at: str) -> None:
        """Any entry, in log order."""
        if idx > self.end:
            return
        low, high = self.bounds
        if low <= recorded_at < high:
            return
        try:
            day = day_of(recorded_at)
        except ValueError:
            return  # not a reading: the entry checks report it
        self.day = day
        self.bounds = (f"{day * 86_400_000_000_000:019d}", f"{(day + 1) * 86_400_000_000_000:019d}")
        self.starts.append((day, idx))

    def token_event(self, idx: int, subject: str, event: LeanEvent) -> None:
        """A token event (after ``entry`` for the same entry)."""
        if idx >= self.end:
            return
        key = (self.day, subject)
        rollup = self.tokens.get(key)
        if rollup is None:
            rollup = self.tokens[key] = Rollup()
        p = event.payload
        rollup.add(idx, event.event_type, event.occurred_at, p and p.resource, p and p.outcome)

    def rollups(self) -> list[tuple[int, str, Rollup]]:
        return [(day, subject, rollup) for (day, subject), rollup in self.tokens.items()]


class RollupCheck:
    """The coordinator's side: the chunks' days and rollups merged in log order, each day hashed once
    complete, then compared with the stored rows."""

    def __init__(self, key: bytes) -> None:
        self.row_hash = row_hasher(key)
        self.firsts: dict[int, int] = {}
        """Day -> index of its first entry."""
        self.order: list[int] = []
        self.open: dict[int, dict[str, Rollup]] = {}
        self.sums: dict[int, int] = {}

    def absorb(self, day_starts: list[tuple[int, int]], rollups: list[tuple[int, str, Rollup]]) -> None:
        """The next chunk's days and rollups."""
        for day, first in day_starts:
            if day not in self.firsts:
                self.firsts[day] = first
                self.order.append(day)
        for day, subject, rollup in rollups:
            tokens = self.open.setdefault(day, {})
            have = tokens.get(subject)
            if have is None:
                tokens[subject] = rollup
            else:
                have.merge(rollup)
        if self.order:
            for day in [d for d in self.open if d != self.order[-1]]:
                self._close(day)

    def _close(self, day: int) -> None:
        tokens = self.open.pop(day)
        total = sum(self.row_hash(rollup.row(day, subject)) for subject, rollup in tokens.items())
        self.sums[day] = (self.sums.get(day, 0) + total) % _HASH_MOD

    def problems(self, store: Any) -> list[Problem]:
        """The stored days and rows against those the entries give."""
        for still_open in list(self.open):
            self._close(still_open)
        try:
            stored_days = store.rollup_days()
            stored_sums: dict[str, int] = defaultdict(int)
            for row in store.rollup_rows():
                stored_sums[str(row.day)] += self.row_hash(row)
        except LedgerError as e:
            return [Problem("rollups", f"cannot read the rollups: {e}")]
        names = {day_name(day): day for day in self.order}
        ends = dict(zip(self.order, [self.firsts[d] for d in self.order[1:]] + [-1], strict=True))
        problems: list[Problem] = []

        def problem(message: str, index: int | None) -> None:
            if len(problems) < MAX_PROBLEMS:
                problems.append(Problem("rollups", message, index))

        kept = set()
        for name, first, end in stored_days:
            number = names.get(name)
            if number is None or self.firsts[number] != first or ends[number] != end:
                problem(f"rolled-up day {name} ({first}..{end}) is not a day of the log's entries", first)
                continue
            kept.add(number)
            if stored_sums.get(name, 0) % _HASH_MOD != self.sums.get(number, 0):
                problem(f"the stored rollups of {name} are not those its entries give (rows changed or removed)", first)
        for day in self.order[:-1]:
            if day not in kept:
                problem(f"day {day_name(day)} is not rolled up, though a later day is", self.firsts[day])
        for name in stored_sums.keys() - {d.day for d in stored_days}:
            problem(f"stored rollups of {name}, a day that is not rolled up (forged)", None)
        return problems
