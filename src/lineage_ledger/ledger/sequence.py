"""Sequencing, the second stage of the write path: each event gets its log index, recorded_at, the link to
the previous entry of its subject (prev) and its lifecycle verdict.

``SubjectCache.preload`` first reads the chain heads and token states of a group's subjects from the store;
``sequence`` then builds the group's entries without I/O and without changing the cache: what it changes is
returned as an overlay, which the ledger adopts only once the entries are committed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lineage_ledger.core import lifecycle
from lineage_ledger.core.entry import ZERO_HASH, EventEntry, decode_entry, event_entry_bytes
from lineage_ledger.core.envelope import OpenedEnvelope
from lineage_ledger.core.lifecycle import LifecyclePolicy, TokenState
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.model import DataEvent, Event, PolicyEvent, TokenEvent, decode_event
from lineage_ledger.core.receipt import Receipt
from lineage_ledger.errors import InputError
from lineage_ledger.ledger.check import MAX_NEW_EVENT_BYTES
from lineage_ledger.ledger.links import Link, event_links, personal_links
from lineage_ledger.store.base import EntryRow, EnvelopeRow, Store

if TYPE_CHECKING:
    from lineage_ledger.privacy.personal import PersonalData

__all__ = ["Part", "Sequenced", "SubjectCache", "SubjectHead", "sequence", "subjects_of"]


@dataclass(frozen=True, slots=True)
class Part:
    """One checked batch in a group: the ``positions`` of its events still to be sequenced, and receipts for
    the ones already recorded (``duplicates``, by position)."""

    opened: OpenedEnvelope
    events: Sequence[Event]
    positions: list[int]
    duplicates: dict[int, Receipt]


@dataclass(slots=True)
class SubjectHead:
    """The head of one subject's chain, and the state of its token (None for a subject that is no token)."""

    head: bytes
    token: TokenState | None
    count: int = 0
    """Entries in the subject's chain so far."""
    index: int = -1
    """Log index of the head entry (-1 when the chain is empty)."""


class SubjectCache:
    """The chain heads and token states of the subjects used last, at most ``limit()`` of them (so memory
    stays flat; read at every change, so a new setting applies at once): past the limit, the least recently
    remembered tenth is forgotten."""

    __slots__ = ("_heads", "limit")

    def __init__(self, limit: Callable[[], int]) -> None:
        self._heads: OrderedDict[str, SubjectHead] = OrderedDict()
        self.limit = limit

    def __getitem__(self, subject: str) -> SubjectHead:
        return self._heads[subject]

    def __len__(self) -> int:
        return len(self._heads)

    def clear(self) -> None:
        """Forget every subject (the store is read again on the next preload)."""
        self._heads.clear()

    def remember(self, subject: str, value: SubjectHead) -> None:
        """Hold ``value`` as the current head of ``subject``."""
        cache = self._heads
        cache[subject] = value
        cache.move_to_end(subject)
        if len(cache) > self.limit():
            for _ in range(len(cache) // 10):
                cache.popitem(last=False)

    def preload(self, store: Store, subjects: set[str], policy: LifecyclePolicy) -> None:
        """Bring the chain heads (and token states, judged by ``policy``) of ``subjects`` into the cache with
        one query."""
        cache = self._heads
        missing = [s for s in subjects if s not in cache]
        if not missing:
            return
        rows = store.subject_entries(missing)
        by_subject: dict[str, list[EntryRow]] = {}
        for row in rows:
            by_subject.setdefault(row.subject, []).append(row)
        # a token's state also depends on its children's ROTATED events: one query for all of them
        known_tokens = [s for s in missing if s in by_subject and s.startswith("token:")]
        children: dict[str, list[EntryRow]] = {}
        for row in store.children_of_many(known_tokens) if known_tokens else ():
            assert row.parent is not None
            children.setdefault(row.parent, []).append(row)
        for subject in missing:
            own = by_subject.get(subject)
            if not own:
                self.remember(subject, SubjectHead(ZERO_HASH, lifecycle.NEVER_SEEN if subject[0] == "t" else None))
                continue
            token = None
            if subject.startswith("token:"):
                history = sorted(own + children.get(subject, []), key=lambda r: r.index)
                token = lifecycle.replay(subject[6:], _token_events(history), policy)
            self.remember(subject, SubjectHead(own[-1].leaf, token, len(own), own[-1].index))


def subjects_of(parts: Sequence[Part]) -> tuple[set[str], str]:
    """The subjects the events to be sequenced touch (a token event also its parent token), and the latest
    occurred_at among them."""
    subjects: set[str] = set()
    latest = ""
    for part in parts:
        for pos in part.positions:
            ev = part.events[pos]
            latest = max(latest, ev.occurred_at)
            if type(ev) is TokenEvent:
                subjects.add("token:" + ev.token_id)
                parent = ev.payload.parent_token_id
                if parent is not None:
                    subjects.add("token:" + parent)
            elif type(ev) is DataEvent:
                subjects.add("asset:" + ev.asset_id)
            else:
                assert type(ev) is PolicyEvent
                subjects.add("policy:" + ev.policy_id)
    return subjects, latest


@dataclass(frozen=True, slots=True)
class Sequenced:
    """A sequenced group: its entries in log order, one envelope row per batch, what the store indexes beside
    them, a receipt per event (by batch, then position), and the subjects' new heads."""

    rows: list[EntryRow]
    envelopes: list[EnvelopeRow]
    revocations: list[tuple[str, int]]
    links: list[Link]
    receipts: list[dict[int, Receipt]]
    overlay: dict[str, SubjectHead]


def sequence(
    parts: Sequence[Part],
    cache: SubjectCache,
    readings: Sequence[str],
    first_index: int,
    policy: LifecyclePolicy,
    local: Callable[[str], bool] | None,
    personal: PersonalData | None = None,
) -> Sequenced:
    """Sequence the events of ``parts`` from log index ``first_index`` with the HLC ``readings`` (one per
    event), judging token events by ``policy``. Every subject touched must be in ``cache`` (``preload``);
    the cache is not changed. ``personal``, on a ledger that seals personal fields, seals each event's
    (privacy.personal) and gives its links by fingerprint; its new subject keys must be stored before the
    commit."""
    overlay: dict[str, SubjectHead] = {}

    def state_of(token_id: str) -> TokenState:
        subj = "token:" + token_id
        got = overlay.get(subj) or cache[subj]
        return got.token or lifecycle.NEVER_SEEN

    index = first_index
    k = 0
    rows: list[EntryRow] = []
    envelope_rows: list[EnvelopeRow] = []
    revocations: list[tuple[str, int]] = []
    links: list[Link] = []
    all_receipts: list[dict[int, Receipt]] = []
    for part in parts:
        opened, events = part.opened, part.events
        receipts = dict(part.duplicates)
        all_receipts.append(receipts)
        digest = opened.digest
        producer = opened.statement.producer
        key_id = opened.statement.key_id
        first = index
        for pos in part.positions:
            ev = events[pos]
            verdict = "ok"
            parent_subject = None
            if type(ev) is TokenEvent:
                subject = "token:" + ev.token_id
                verdict, changes = lifecycle.apply(ev, state_of, policy, local)
                for tid, st in changes.items():
                    s = "token:" + tid
                    cur = overlay.get(s) or cache[s]
                    overlay[s] = SubjectHead(cur.head, st, cur.count, cur.index)
                    if st.state == "REVOKED":
                        revocations.append((s, index))
                parent = ev.payload.parent_token_id
                if parent is not None:
                    parent_subject = "token:" + parent
            elif type(ev) is DataEvent:
                subject = "asset:" + ev.asset_id
            else:
                assert type(ev) is PolicyEvent
                subject = "policy:" + ev.policy_id
            stored = opened.events[pos]
            sealed = None if personal is None else personal.seal(stored, ev, subject)
            if sealed is None:
                event_links(ev, index, subject, links)
            else:  # the links the stored bytes give: the user by fingerprint, never in the clear
                stored, sealing = sealed
                if len(stored) > MAX_NEW_EVENT_BYTES:
                    raise InputError(
                        f"events[{pos}]",
                        f"sealed, the event is {len(stored)} bytes; the limit is {MAX_NEW_EVENT_BYTES}",
                    )
                personal_links(ev, sealing, index, subject, links)
            cur = overlay.get(subject) or cache[subject]
            prev = cur.head
            body = event_entry_bytes(
                index=index,
                recorded_at=readings[k],
                prev=prev,
                producer=producer,
                key_id=key_id,
                envelope=digest,
                position=pos,
                verdict=verdict,
                event=stored,
            )
            leaf = leaf_hash(body)
            overlay[subject] = SubjectHead(leaf, cur.token, cur.count + 1, index)
            rows.append(EntryRow(index, subject, ev.event_id, parent_subject, prev, leaf, verdict, body))
            receipts[pos] = Receipt(ev.event_id, index, verdict, False, leaf)
            index += 1
            k += 1
        envelope_rows.append(
            EnvelopeRow(
                digest, producer, key_id, opened.payload, opened.signature, b"".join(opened.event_leaves), first
            )
        )
    return Sequenced(rows, envelope_rows, revocations, links, all_receipts, overlay)


def _token_events(rows: list[EntryRow]) -> list[tuple[TokenEvent, str]]:
    out = []
    for row in rows:
        entry = decode_entry(row.body)
        if isinstance(entry, EventEntry):
            event = decode_event(bytes(entry.event))
            if isinstance(event, TokenEvent):
                out.append((event, row.verdict))
    return out
