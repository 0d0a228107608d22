"""Resuming a bulk load: which of a producer's events the ledger already holds, found at the speed of a read.

A load that crashed, or one run twice, hands the ledger events it already recorded. Appending them anyway is
correct (the ledger answers duplicates with their original receipts) but slow: the optimistic write fails on
the event-id constraint and the writer reloads its state. Splitting them off first, with one indexed lookup
per event, makes a rerun cost a read of what is there plus the work of what is new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lineage_ledger.core.entry import EventEntry, decode_entry
from lineage_ledger.core.model import decode_event
from lineage_ledger.store.base import Store

__all__ = ["Recorded", "split_recorded"]


@dataclass(frozen=True, slots=True)
class Recorded:
    """The positions of a list of events, split by what the ledger already holds."""

    fresh: list[int] = field(default_factory=list)
    """Positions whose event id the ledger does not hold: to append, in this order."""
    duplicates: dict[int, int] = field(default_factory=dict)
    """Position -> log index, for events recorded with exactly these bytes."""
    conflicts: dict[int, int] = field(default_factory=dict)
    """Position -> log index, for event ids recorded with other bytes: never appended."""


def split_recorded(store: Store, events: Sequence[bytes]) -> Recorded:
    """Split canonical event bytes by whether ``store`` records their event ids, comparing bytes exactly.

    The events must be valid (decode_event raises InputError otherwise)."""
    ids = [decode_event(raw, field=f"events[{i}]").event_id for i, raw in enumerate(events)]
    known = store.events_by_id(ids)
    out = Recorded()
    for pos, (event_id, raw) in enumerate(zip(ids, events, strict=True)):
        row = known.get(event_id)
        if row is None:
            out.fresh.append(pos)
            continue
        entry = decode_entry(row.body)
        if isinstance(entry, EventEntry) and bytes(entry.event) == raw:
            out.duplicates[pos] = row.index
        else:
            out.conflicts[pos] = row.index
    return out
