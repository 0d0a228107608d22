"""Daily rollups per token: one row per token and day, derived from the log, kept in a table of their own.

A day is a UTC day of the ledger's own clock (``recorded_at``): it grows with the log index, so each day is
one contiguous range of entries, and once an entry of a later day is covered by a signed checkpoint the day
is complete and can be rolled up for good. A token's row for a day says how many of its events the ledger
recorded that day, how many were uses (USED), the first and last ``occurred_at`` among them, the first and
last index, the resources its uses touched and how many uses ended in each outcome.

``roll_up`` writes the complete days not yet rolled up (``lineage rollup``); the rows are meant to outlive
the entries they summarise in the hot store. ``token_rollups`` answers a query: the stored rows, plus rows
computed from the entries for the days not yet rolled up. ``lineage verify`` recomputes every stored row from
the entries (ledger.verification.rollups).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.errors import LedgerError
from lineage_ledger.store.base import RollupDay, RollupRow

__all__ = ["NS_PER_DAY", "Rollup", "day_name", "day_of", "roll_up", "rollups_of", "token_rollups"]

NS_PER_DAY: Final = 86_400 * 1_000_000_000
_PAGE: Final = 20_000


def day_of(recorded_at: str) -> int:
    """The day number (days since 1970-01-01, UTC) of an HLC reading."""
    return int(recorded_at[:19]) // NS_PER_DAY


def day_name(day: int) -> str:
    """A day number as an ISO date, YYYY-MM-DD."""
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=day)).isoformat()


@dataclass(slots=True)
class Rollup:
    """One token's events of one day, summed up; ``add`` them in log order."""

    events: int = 0
    uses: int = 0
    first_at: str = ""
    last_at: str = ""
    first_idx: int = -1
    last_idx: int = -1
    resources: set[str] = field(default_factory=set)
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, index: int, event_type: object, occurred_at: str, resource: object, outcome: object) -> None:
        """One token event (its fields as its bytes give them)."""
        if self.events == 0:
            self.first_idx = index
            self.first_at = self.last_at = occurred_at
        self.events += 1
        self.last_idx = index
        self.first_at = min(self.first_at, occurred_at)
        self.last_at = max(self.last_at, occurred_at)
        if event_type == "USED":
            self.uses += 1
            if type(resource) is str:
                self.resources.add(resource)
            if type(outcome) is str:
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def merge(self, later: Rollup) -> None:
        """Fold in the same token's rollup of a later part of the same day."""
        if later.events == 0:
            return
        if self.events == 0:
            self.first_idx, self.first_at, self.last_at = later.first_idx, later.first_at, later.last_at
        self.events += later.events
        self.uses += later.uses
        self.last_idx = later.last_idx
        self.first_at = min(self.first_at, later.first_at)
        self.last_at = max(self.last_at, later.last_at)
        self.resources |= later.resources
        for outcome, count in later.outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + count

    def row(self, day: int, subject: str) -> RollupRow:
        """The stored row: resources as a sorted JSON array, outcomes as a JSON object (canonical JSON)."""
        return RollupRow(
            day_name(day),
            subject,
            self.events,
            self.uses,
            self.first_at,
            self.last_at,
            self.first_idx,
            self.last_idx,
            canonical_bytes(sorted(self.resources)).decode(),
            canonical_bytes(self.outcomes).decode(),
        )


class _Fields(msgspec.Struct, gc=False):
    resource: object = None
    outcome: object = None


class _Event(msgspec.Struct, gc=False):
    kind: str = ""
    token_id: str = ""
    event_type: str = ""
    occurred_at: str = ""
    payload: _Fields | None = None


class _Entry(msgspec.Struct, gc=False):
    recorded_at: str
    event: _Event | None = None


_DECODE: Final = msgspec.json.Decoder(_Entry).decode


def rollups_of(rows: Iterable[Any]) -> Iterator[tuple[int, int, dict[str, Rollup]]]:
    """(day, index of its first entry, token subject -> rollup) for each day of the entry ``rows`` (in log
    order), each as soon as an entry of a later day is read, and the last day at the end."""
    day = -1
    first = 0
    tokens: dict[str, Rollup] = {}
    for row in rows:
        try:
            entry = _DECODE(row.body)
            today = day_of(entry.recorded_at)
        except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as e:
            raise LedgerError(f"entry {row.index}: cannot read it to roll it up ({e})") from e
        if today != day:
            if day >= 0:
                yield day, first, tokens
            day, first, tokens = today, row.index, {}
        event = entry.event
        if event is None or event.kind != "token" or row.event_id is None:
            continue
        subject = "token:" + event.token_id
        rollup = tokens.get(subject)
        if rollup is None:
            rollup = tokens[subject] = Rollup()
        p = event.payload
        rollup.add(row.index, event.event_type, event.occurred_at, p and p.resource, p and p.outcome)
    if day >= 0:
        yield day, first, tokens


def roll_up(store: Any) -> list[RollupDay]:
    """Write the rollups of every complete day not yet rolled up: the days before the day of the last entry
    a signed checkpoint covers. One transaction per day; the days written, oldest first."""
    done = store.rollup_days()
    start = done[-1].end if done else 0
    latest = store.latest_checkpoint()
    if latest is None or latest.size <= start:
        return []
    written: list[RollupDay] = []
    pending: tuple[int, int, dict[str, Rollup]] | None = None
    for day, first, tokens in rollups_of(store.entries(start, latest.size)):
        if pending is not None:  # a later day has begun: the pending one is complete
            written.append(_write(store, *pending, end=first))
        pending = (day, first, tokens)
    return written


def _write(store: Any, day: int, first: int, tokens: dict[str, Rollup], *, end: int) -> RollupDay:
    marker = RollupDay(day_name(day), first, end)
    store.add_rollups(marker, [rollup.row(day, subject) for subject, rollup in sorted(tokens.items())])
    return marker


def token_rollups(store: Any, subject: str, day: str | None = None) -> list[dict[str, Any]]:
    """The daily rollups of the token ``subject`` (of ``day`` only, when given), oldest first, as JSON
    objects: the stored rows (``"stored": true``), then those computed from the entries of the days not yet
    rolled up (``"stored": false``)."""
    done = store.rollup_days()
    through = done[-1].end if done else 0
    out = [_json(row, stored=True) for row in store.rollups(subject) if day is None or row.day == day]
    recent = [row for row in store.subject_entries([subject]) if row.index >= through]
    for number, _, tokens in rollups_of(recent):
        rollup = tokens.get(subject)
        if rollup is not None and (day is None or day_name(number) == day):
            out.append(_json(rollup.row(number, subject), stored=False))
    return out


def _json(row: RollupRow, *, stored: bool) -> dict[str, Any]:
    return {
        "day": row.day,
        "subject": row.subject,
        "events": row.events,
        "uses": row.uses,
        "first_at": row.first_at,
        "last_at": row.last_at,
        "first_index": row.first_idx,
        "last_index": row.last_idx,
        "resources": msgspec.json.decode(row.resources),
        "outcomes": msgspec.json.decode(row.outcomes),
        "stored": stored,
    }
