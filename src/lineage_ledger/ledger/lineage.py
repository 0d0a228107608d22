"""Lineage questions over a ledger, each answer resting on entries that can be proven.

Every answer lists the log indices of the entries it rests on (``evidence``); ``Lineage.proofs`` turns
those into RFC 9162 inclusion proofs against a signed checkpoint, so an incident responder can hand the
answer to someone who does not trust the ledger's operator.

Times are anything ``core.instant.parse_instant`` reads (RFC 3339 with a zone, dates, epoch seconds,
milliseconds or nanoseconds, HLC readings), an ``Instant``, or integer nanoseconds; anything else is an
InputError naming the argument. Windows are half-open, ``start <= occurred_at < end``, by the producers'
``occurred_at``; "at T" includes everything that occurred in T's nanosecond.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from lineage_ledger.core import lifecycle
from lineage_ledger.core.entry import read_event_entry
from lineage_ledger.core.instant import Instant, parse_instant
from lineage_ledger.core.lifecycle import LifecyclePolicy, TokenState
from lineage_ledger.core.merkle import TiledNodeReader, inclusion_proof
from lineage_ledger.core.model import DataEvent, PolicyEvent, TokenEvent, read_event
from lineage_ledger.errors import NotFoundError
from lineage_ledger.ledger.lineage_answers import (
    AssetLineage,
    BlastRadius,
    Family,
    PolicyVersion,
    Record,
    refresh_window,
)
from lineage_ledger.ledger.links import find_links
from lineage_ledger.privacy.reader import PersonalReader, personal_reader
from lineage_ledger.store.base import EntryRow, Store

__all__ = [
    "AssetLineage",
    "BlastRadius",
    "Family",
    "Lineage",
    "PolicyVersion",
    "Record",
    "Time",
]

Time = str | int | Instant
_BIRTHS = frozenset({"ISSUED", "ORIGIN", "REFRESHED", "ROTATED"})


def instant_of(value: Time, field: str) -> Instant:
    """``value`` as an Instant (InputError naming ``field`` if it is not a time)."""
    return value if isinstance(value, Instant) else parse_instant(value, field=field)


def _hlc(value: Time | None, default: str, field: str) -> str:
    """The HLC reading that bounds a window at ``value`` (``default`` for an open end)."""
    return default if value is None else instant_of(value, field).reading()


def _through(value: Time, field: str) -> str:
    """The last HLC reading within the instant ``value``: what "as of" compares against."""
    return instant_of(value, field).reading_through()


def recorded_policy(store: Store) -> LifecyclePolicy:
    """The lifecycle policy the ledger in ``store`` was created with (the default if it recorded none)."""
    text = store.meta().get("lifecycle")
    return LifecyclePolicy() if text is None else LifecyclePolicy.from_text(text)


def _record(row: EntryRow, reader: PersonalReader | None) -> Record | None:
    entry = read_event_entry(row.body)
    if entry is None:
        return None
    raw = bytes(entry.event)
    if reader is not None and row.event_id is not None:  # personal fields decrypted, or "erased"
        raw = reader.shown(raw, row.subject, row.event_id)
    return Record(row.index, row.subject, entry.recorded_at, entry.verdict, entry.producer, read_event(raw))


def _tid(token_id: str) -> str:
    return token_id.removeprefix("token:")


class Lineage:
    """Read-only lineage queries over one store."""

    def __init__(self, store: Store, *, policy: LifecyclePolicy | None = None) -> None:
        """Queries over ``store``, under ``policy`` (default: the lifecycle policy the ledger recorded)."""
        self.store = store
        self.policy = policy or recorded_policy(store)

    # -- building blocks --------------------------------------------------------------------------------

    def records(self, rows: Iterable[EntryRow]) -> list[Record]:
        """Decoded event records of ``rows`` (seals and key changes are skipped)."""
        reader = personal_reader(self.store)
        return [r for r in (_record(row, reader) for row in rows) if r is not None]

    def timeline(self, token_id: str) -> list[Record]:
        """Every event of a token, in log order (NotFoundError if none)."""
        rows = self.store.subject_entries(["token:" + _tid(token_id)])
        if not rows:
            raise NotFoundError(f"no events for token {_tid(token_id)}")
        return self.records(rows)

    def proofs(self, indices: Sequence[int], size: int | None = None) -> dict[str, Any]:
        """Inclusion proofs of ``indices`` against the signed checkpoint of ``size`` (default: latest).

        Entries not yet covered by that checkpoint are listed as pending.
        """
        rows = self.store.checkpoints(size or 0)
        checkpoint = rows[0] if size is not None and rows and rows[0].size == size else self.store.latest_checkpoint()
        if checkpoint is None:
            raise NotFoundError("the ledger has no signed checkpoint yet")
        reader = TiledNodeReader(self.store.nodes)
        proven: dict[str, list[str]] = {}
        pending: list[int] = []
        cited = self.store.entries_at(indices)
        for row in cited:
            if row.index >= checkpoint.size:
                pending.append(row.index)
                continue
            proven[str(row.index)] = [h.hex() for h in inclusion_proof(row.index, checkpoint.size, reader)]
        entries = {str(r.index): r.body.decode() for r in cited}
        return {
            "checkpoint": checkpoint.note,
            "tree_size": checkpoint.size,
            "entries": entries,
            "inclusion": proven,
            "pending": pending,
        }

    # -- token families ---------------------------------------------------------------------------------

    def family(self, token_id: str) -> Family:
        """The whole family of a token: up to its root ancestor, then every descendant (BFS). NotFoundError
        for a token the ledger knows nothing of (no events of its own and no descendants)."""
        tid = _tid(token_id)
        root = tid
        seen_up = {tid}
        while True:
            parent = self._parent_of(root)
            if parent is None or parent in seen_up:
                break
            seen_up.add(parent)
            root = parent
        fam = self._descend(root)
        if not fam.edges and not self.store.subject_entries(["token:" + tid]):
            raise NotFoundError(f"no events for token {tid}")
        return fam

    def descendants(self, token_id: str) -> Family:
        """A token and every token derived from it (not its ancestors)."""
        return self._descend(_tid(token_id))

    def _parent_of(self, tid: str) -> str | None:
        for rec in self.records(self.store.subject_entries(["token:" + tid])):
            assert isinstance(rec.event, TokenEvent)
            if rec.event.event_type in {"ISSUED", "REFRESHED", "ROTATED"} and rec.event.payload.parent_token_id:
                return rec.event.payload.parent_token_id
        return None

    def _descend(self, root: str) -> Family:
        fam = Family(root=root, tokens=[root])
        seen = {root}
        # one recursive query finds every birth in the family; log order puts parents before children
        for rec in self.records(self.store.descendant_births("token:" + root)):
            ev = rec.event
            if not isinstance(ev, TokenEvent) or ev.payload.parent_token_id is None:
                continue
            kind = "EXCHANGED" if ev.event_type == "ISSUED" else ev.event_type
            fam.edges.append((ev.payload.parent_token_id, ev.token_id, kind, rec.index))
            if ev.payload.actor_token_id:
                fam.edges.append((ev.payload.actor_token_id, ev.token_id, "ACTOR", rec.index))
            if ev.token_id not in seen:
                seen.add(ev.token_id)
                fam.tokens.append(ev.token_id)
        return fam

    def blast_radius(self, token_id: str, start: Time | None = None, end: Time | None = None) -> BlastRadius:
        """Every descendant of ``token_id`` (itself included) and every USED event of any of them in the window.
        NotFoundError for a token the ledger knows nothing of (no events of its own and no descendants)."""
        lo, hi = _hlc(start, "", "start"), _hlc(end, "~", "end")
        fam = self._descend(_tid(token_id))
        rows = self.store.subject_entries(["token:" + t for t in fam.tokens])
        if not rows:
            raise NotFoundError(f"no events for token {_tid(token_id)}")
        uses = [
            r
            for r in self.records(rows)
            if isinstance(r.event, TokenEvent) and r.event.event_type == "USED" and lo <= r.event.occurred_at < hi
        ]
        uses.sort(key=lambda r: (r.event.occurred_at, r.index))
        return BlastRadius(_tid(token_id), lo, hi, fam.tokens, uses)

    def since_last_refresh(self, token_id: str) -> BlastRadius:
        """Resources the token (and tokens derived from it) used between its last refresh and its revocation.

        The window opens at the latest refresh or rotation in the token's life (its own REFRESHED/ROTATED
        birth, or a child refreshed or rotated from it, whichever is later) and closes at its REVOKED event
        (open-ended if it was never revoked).
        """
        tid = _tid(token_id)
        start, end = refresh_window(self.timeline(tid), self.records(self.store.children_of("token:" + tid)))
        return self.blast_radius(tid, start or None, None if end == "~" else end)

    # -- resources, users, policies ---------------------------------------------------------------------

    def tokens_for_resource(self, resource: str, start: Time | None = None, end: Time | None = None) -> list[Record]:
        """Every USED event of ``resource`` in the window, any token, in time order."""
        links = find_links(self.store, "resource", resource, _hlc(start, "", "start"), _hlc(end, "~", "end"))
        return self.records(self.store.entries_at([i for _, i, _ in links]))

    def policy_history(self, policy_id: str | None = None) -> list[PolicyVersion]:
        """Every policy version ever recorded (of one policy, or all), in time order."""
        prefix = "policy:" + (policy_id or "")
        rows = self.store.subject_entries([prefix]) if policy_id else self.store.subjects_with_prefix("policy:")
        out = []
        for rec in self.records(rows):
            ev = rec.event
            assert isinstance(ev, PolicyEvent)
            out.append(
                PolicyVersion(ev.policy_id, ev.payload.policy_version, ev.occurred_at, rec.index, ev.payload.document)
            )
        out.sort(key=lambda p: (p.occurred_at, p.index))
        return out

    def policy_in_force(self, at: Time) -> dict[str, PolicyVersion]:
        """For each policy, the version in force at ``at`` (the latest change with occurred_at <= at)."""
        when = _through(at, "at")
        current: dict[str, PolicyVersion] = {}
        for version in self.policy_history():
            if version.occurred_at <= when:
                current[version.policy_id] = version
        return current

    def policy_for_token(self, token_id: str, event: str = "ISSUED") -> tuple[Record, dict[str, PolicyVersion]]:
        """The policies in force when the token's first ``event`` (ISSUED, USED, ...) occurred."""
        for rec in self.timeline(token_id):
            assert isinstance(rec.event, TokenEvent)
            if rec.event.event_type == event or (
                event == "ISSUED" and rec.event.event_type in {"ORIGIN", "REFRESHED", "ROTATED"}
            ):
                return rec, self.policy_in_force(rec.event.occurred_at)
        raise NotFoundError(f"token {_tid(token_id)} has no {event} event")

    def policy_changes_for_user(
        self, user_id: str, start: Time | None = None, end: Time | None = None
    ) -> list[dict[str, Any]]:
        """Policy changes during the lives of tokens issued to ``user_id`` in the window, with those tokens.

        A change affects a token when it happened after the token was issued and before the token ended
        (revoked, expired by an EXPIRED event or its own ``expires_at``, or rotated away) or, for a live
        token, at any time up to ``end``.
        """
        lo, hi = _hlc(start, "", "start"), _hlc(end, "~", "end")
        born = find_links(self.store, "user", user_id, lo, hi)
        if not born:
            return []
        subjects = sorted({s for _, _, s in born})
        lives: dict[str, tuple[str, str]] = {}
        for rec in self.records(self.store.subject_entries(subjects)):
            ev = rec.event
            assert isinstance(ev, TokenEvent)
            first, last = lives.get(ev.token_id, (ev.occurred_at, "~"))
            if ev.event_type in {"REVOKED", "EXPIRED"} and rec.verdict == "ok":
                last = min(last, ev.occurred_at)
            if ev.event_type in _BIRTHS and ev.payload.expires_at is not None:  # it ended by its own terms
                last = min(last, ev.payload.expires_at)
            lives[ev.token_id] = (min(first, ev.occurred_at), last)
        for rec in self.records(self.store.children_of_many(subjects)):
            ev = rec.event
            parent = ev.payload.parent_token_id if isinstance(ev, TokenEvent) else None
            if parent in lives and ev.event_type == "ROTATED" and rec.verdict == "ok":  # rotated away
                first, last = lives[parent]
                lives[parent] = (first, min(last, ev.occurred_at))
        out = []
        for version in self.policy_history():
            affected = [t for t, (b, e) in lives.items() if b <= version.occurred_at < min(e, hi)]
            if affected:
                out.append({"policy": version.to_json(), "tokens": affected})
        return out

    def state_at(self, token_id: str, at: Time) -> TokenState:
        """The token's lifecycle state as of ``at``: from its own and its children's events up to then,
        EXPIRED once its own ``expires_at`` has passed, and REVOKED once an ancestor was revoked when the
        ledger's lifecycle policy cascades revocations (``status_at`` also names that ancestor). NotFoundError
        for a token the ledger holds no event of (a state there would be made up)."""
        return self.status_at(token_id, at)[0]

    def status_at(self, token_id: str, at: Time) -> tuple[TokenState, str | None]:
        """``state_at`` and the id of the revoked ancestor that ended the token (None if none did)."""
        instant = instant_of(at, "at")
        when = instant.reading_through()
        tid = _tid(token_id)
        if not self.store.subject_entries(["token:" + tid]) and not self.store.children_of("token:" + tid):
            raise NotFoundError(f"no events for token {tid}")

        def own(subject: str) -> TokenState:
            return self._own_state_through(subject, when)

        return lifecycle.effective_state(tid, own, self.policy, instant.ns)

    def _own_state_through(self, tid: str, when: str) -> TokenState:
        """The state ``apply`` reached from the events of the token and its children that occurred by ``when``."""
        rows = sorted(
            self.store.subject_entries(["token:" + tid]) + self.store.children_of("token:" + tid),
            key=lambda r: r.index,
        )
        history = []
        for rec in self.records(rows):
            assert isinstance(rec.event, TokenEvent)
            if rec.event.occurred_at <= when:
                history.append((rec.event, rec.verdict))
        return lifecycle.replay(tid, history, self.policy)

    # -- data lineage -----------------------------------------------------------------------------------

    def upstream(self, asset_id: str) -> AssetLineage:
        """Everything ``asset_id`` was derived from, transitively, with the content hashes that were read."""
        out = AssetLineage(asset_id, "upstream")
        seen = {asset_id}
        queue = deque([asset_id])
        while queue:
            asset = queue.popleft()
            for rec in self.records(self.store.subject_entries(["asset:" + asset])):
                ev = rec.event
                assert isinstance(ev, DataEvent)
                out.steps.append(rec)
                for ref in ev.payload.inputs:
                    out.edges.append((ref.asset_id, asset, ref.content_hash, rec.index))
                    if ref.asset_id not in seen:
                        seen.add(ref.asset_id)
                        queue.append(ref.asset_id)
        return out

    def downstream(self, asset_id: str) -> AssetLineage:
        """Everything derived from ``asset_id``, transitively, and where it was transmitted."""
        out = AssetLineage(asset_id, "downstream")
        seen = {asset_id}
        queue = deque([asset_id])
        while queue:
            asset = queue.popleft()
            links = find_links(self.store, "input", asset)
            for rec in self.records(self.store.entries_at([i for _, i, _ in links])):
                ev = rec.event
                assert isinstance(ev, DataEvent)
                out.steps.append(rec)
                hashes = [r.content_hash for r in ev.payload.inputs if r.asset_id == asset]
                out.edges.append((asset, ev.asset_id, hashes[0] if hashes else None, rec.index))
                if ev.asset_id not in seen:
                    seen.add(ev.asset_id)
                    queue.append(ev.asset_id)
                    out.steps.extend(
                        r
                        for r in self.records(self.store.subject_entries(["asset:" + ev.asset_id]))
                        if isinstance(r.event, DataEvent)
                        and r.event.event_type in {"TRANSMITTED", "ACCESSED", "DELETED"}
                    )
        return out
