"""Lineage links: which entries name a resource, a user or an input asset, written in bulk at each seal.

A link is ``(kind, key, occurred_at, log index, subject)``: "resource" for a USED event's resource, "user" for
the user a token was born to (ISSUED, ORIGIN, REFRESHED, ROTATED), "input" for an asset a data event read.
On a ledger that seals personal fields (core.sealed), a sealed user id is linked by its keyed
fingerprint, never in the clear, a sealed field gives no link of its own, and every sealed event has a
"personal" link keyed by the id of the subject key it is sealed under (how an export or an erasure finds
a person's entries).
The lineage queries (ledger.lineage) start from them. They are derived data: every one follows from an
entry's bytes, and none is part of what the log commits to.

Why at seals. The links table is keyed by (kind, key, ...), so the links of one batch land on as many
B-tree pages as the batch has distinct keys. Written with every batch, each commit rewrote each such page
in full, for one new row on it: measured in ``lineage bench``, 4 KB of write-ahead log per event and a third
of the commit, the largest single cost of ingest. The writer therefore keeps the links of the open block
in memory and writes them, sorted by key, in the seal's transaction: each page is then written once per
block, for all the block's rows on it.

The seal's own commit does not carry them either: it would be the slowest commit by far, and every event
queued behind it would wait for it. The writer writes them in slices with the commits after the seal
(publish.SealDebt), together with the block's subject-map nodes, the map root last. So the store holds
the links of every entry below the latest checkpoint's size once that seal's map root is stored, and below
the previous checkpoint's size until then; the links of the entries after that point (one block, or two
while a seal's are being written) follow from those entries' bytes. :func:`find_links` answers from
both; a writer opening a ledger derives its pending links the same way (entry_links), so a writer that
stopped before sealing loses nothing. Ledgers written before this change also hold links above the latest
checkpoint: answers are merged by log index, and the seal writes links with "insert or ignore".
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Final

from lineage_ledger.core.entry import EventEntry, SealEntry, decode_entry
from lineage_ledger.core.model import DataEvent, Event, TokenEvent, decode_event
from lineage_ledger.core.sealed import Personal, personal_of
from lineage_ledger.ledger.completeness import seal_paid
from lineage_ledger.privacy.reader import personal_reader
from lineage_ledger.store.base import EntryRow, Store

__all__ = [
    "Link",
    "data_links",
    "entry_links",
    "event_links",
    "find_links",
    "personal_links",
    "sealed_links",
    "stored_below",
    "token_links",
]

Link = tuple[str, str, str, int, str]
"""(kind, key, occurred_at, log index, subject), as the store's links table holds it."""

BIRTHS: Final = frozenset({"ISSUED", "ORIGIN", "REFRESHED", "ROTATED"})
"""Token events that start a token's life: their user is linked."""


def event_links(event: Event, index: int, subject: str, out: list[Link]) -> None:
    """Append the links of ``event``, recorded at ``index`` under ``subject``, to ``out``."""
    if type(event) is TokenEvent:
        p = event.payload
        token_links(event.event_type, event.occurred_at, p.resource, p.user_id, index, subject, out)
    elif type(event) is DataEvent:
        data_links(event.occurred_at, [ref.asset_id for ref in event.payload.inputs], index, subject, out)


def personal_links(event: Event, personal: Personal, index: int, subject: str, out: list[Link]) -> None:
    """Append the links of a sealed event (``event`` is its typed view, ``personal`` its sealed fields)."""
    sealed = personal.fields
    if type(event) is TokenEvent:
        p = event.payload
        resource = None if "resource" in sealed else p.resource
        user = None if "user_id" in sealed else p.user_id
        token_links(event.event_type, event.occurred_at, resource, user, index, subject, out)
    elif type(event) is DataEvent and "inputs" not in sealed:
        data_links(event.occurred_at, [ref.asset_id for ref in event.payload.inputs], index, subject, out)
    sealed_links(getattr(event, "event_type", ""), event.occurred_at, personal, index, subject, out)


def sealed_links(
    event_type: str, occurred_at: str, personal: Personal, index: int, subject: str, out: list[Link]
) -> None:
    """The links only a sealed event has: its user by fingerprint (for a token's birth whose user id is
    sealed) and its subject key."""
    if "user_id" in personal.fields and event_type in BIRTHS:
        out.append(("user", personal.subject, occurred_at, index, subject))
    out.append(("personal", personal.kid, occurred_at, index, subject))


def token_links(
    event_type: str,
    occurred_at: str,
    resource: str | None,
    user_id: str | None,
    index: int,
    subject: str,
    out: list[Link],
) -> None:
    """The links of a token event, from its fields (the verifier reads them without the typed event)."""
    if resource is not None and event_type == "USED":
        out.append(("resource", resource, occurred_at, index, subject))
    if user_id is not None and event_type in BIRTHS:
        out.append(("user", user_id, occurred_at, index, subject))


def data_links(occurred_at: str, inputs: Iterable[str], index: int, subject: str, out: list[Link]) -> None:
    """The links of a data event whose inputs are the assets ``inputs``."""
    for asset_id in inputs:
        out.append(("input", asset_id, occurred_at, index, subject))


def entry_links(rows: Iterable[EntryRow]) -> list[Link]:
    """The links of stored entries (seals, key and shard entries have none)."""
    out: list[Link] = []
    for row in rows:
        if row.event_id is None:
            continue
        entry = decode_entry(row.body)
        if isinstance(entry, EventEntry):
            raw = bytes(entry.event)
            personal = personal_of(raw)
            if personal is None:
                event_links(decode_event(raw), row.index, row.subject, out)
            else:
                personal_links(decode_event(raw), personal, row.index, row.subject, out)
    return out


def stored_below(store: Store, size: int) -> int:
    """Given a checkpoint's ``size``: the index below which every entry's links are stored. That is ``size``
    once the checkpoint's seal has its map root stored (the writer writes a sealed block's links before its
    map root), and the block's first index until then."""
    if size == 0:
        return 0
    seal = decode_entry(store.entry(size - 1).body)
    if not isinstance(seal, SealEntry):  # not a ledger this writer wrote; verify names what is wrong
        return 0
    return size if seal_paid(store, seal) else seal.block.first


class _Tail:
    """The links of one store's entries whose links may not be stored yet, derived from their bytes and kept
    up to date incrementally (a reader in a long-running service asks many times per block)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start = 0  # the links below are derived from this index on
        self.end = 0  # entries before this index are derived
        self.links: list[Link] = []
        self.complete = 0  # the latest checkpoint size known to have all its links stored

    def refresh(self, store: Store) -> list[Link]:
        with self.lock:
            latest = store.latest_checkpoint()
            start = latest.size if latest is not None else 0
            if start != self.complete:
                start = stored_below(store, start)
                if latest is not None and start == latest.size:
                    self.complete = start
            size = store.size()
            if size < self.end or start < self.start:  # not the store it was (replaced, or a tampered copy)
                self.start, self.end, self.links = 0, 0, []
            if start > self.start:
                self.links = [link for link in self.links if link[3] >= start]
                self.start = start
            begin = max(self.end, start)
            if begin < size:
                self.links = self.links + entry_links(store.entries(begin, size))
            self.end = max(self.end, size)
            return self.links


_TAILS: Final[weakref.WeakKeyDictionary[Store, _Tail]] = weakref.WeakKeyDictionary()
_TAILS_LOCK: Final = threading.Lock()


def find_links(store: Store, kind: str, key: str, start: str = "", end: str = "\uffff") -> list[tuple[str, int, str]]:
    """(occurred_at, log index, subject) of every ``kind`` link for ``key`` with start <= occurred_at < end,
    ordered by occurred_at then index: those the store holds and those of the entries whose links are not
    written yet (see the module's docstring)."""
    if kind == "user":  # on a sealing ledger the links hold the user's keyed fingerprint, never the id
        reader = personal_reader(store)
        if reader is not None:
            key = reader.user_key(key)
    with _TAILS_LOCK:
        tail = _TAILS.get(store)
        if tail is None:
            tail = _TAILS[store] = _Tail()
    pending = tail.refresh(store)  # before the table: a seal in between is then seen in one or both
    found = {idx: (at, idx, subject) for at, idx, subject in store.links(kind, key, start, end)}
    for k, name, at, idx, subject in pending:
        if k == kind and name == key and start <= at < end:
            found.setdefault(idx, (at, idx, subject))
    return sorted(found.values())
