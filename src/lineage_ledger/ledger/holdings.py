"""Which tokens a user held, and which tokens were active at an instant: token lives read from the log.

A token's life runs from its birth (ISSUED, ORIGIN, REFRESHED or ROTATED) to the first of: a valid REVOKED
or EXPIRED of its own, a valid ROTATED that replaced it, its own ``expires_at``, and (when the ledger's
lifecycle policy cascades revocations) the valid REVOKED of any ancestor. Every life cites the log indices
of its birth and of the entry that ended it, so ``Lineage.proofs`` proves an answer.

A token is held by a user when it was born to the user (its birth names ``user_id``) or descends, by
refresh, rotation or exchange, from a token born to the user. A token is active at T when it was born by T
and had not ended by T (events that occurred in T's nanosecond count, as in ``Lineage.state_at``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.model import TokenEvent
from lineage_ledger.ledger.lineage import Lineage, Time, instant_of
from lineage_ledger.ledger.links import find_links

__all__ = ["Holdings", "TokenLife", "active_at", "token_lives", "tokens_of_user"]

_BIRTHS: Final = frozenset({"ISSUED", "ORIGIN", "REFRESHED", "ROTATED"})


@dataclass(slots=True)
class TokenLife:
    """One token's life as the log records it (times are HLC readings)."""

    token_id: str
    born_at: str
    born_index: int
    parent: str | None = None
    user_id: str | None = None
    client_id: str | None = None
    ended_at: str | None = None
    ended_by: str | None = None
    """REVOKED, EXPIRED, ROTATED, expires_at, or ancestor_revoked:<token id>."""
    ended_index: int | None = None
    """The entry that ended it (the ancestor's REVOKED for a cascade; None for expires_at)."""
    revoked: tuple[str, int] | None = None
    """(occurred_at, index) of its own first valid REVOKED: what ends its descendants."""

    def active_at(self, through: str) -> bool:
        """Born by the reading ``through`` and not ended by it."""
        return self.born_at <= through and (self.ended_at is None or self.ended_at > through)

    def overlaps(self, start: str, end: str) -> bool:
        """Alive at some point of the half-open window [start, end)."""
        return self.born_at < end and (self.ended_at is None or self.ended_at > start)

    @property
    def evidence(self) -> list[int]:
        """The birth entry and the entry that ended the token."""
        return sorted({self.born_index, *([] if self.ended_index is None else [self.ended_index])})

    def end(self, at: str, by: str, index: int | None) -> None:
        """Record an end at ``at`` if it is earlier than the one known."""
        if self.ended_at is None or at < self.ended_at:
            self.ended_at, self.ended_by, self.ended_index = at, by, index

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output and HTTP answers."""
        return {
            "token_id": self.token_id,
            "born_at": self.born_at,
            "born_index": self.born_index,
            "parent": self.parent,
            "user_id": self.user_id,
            "client_id": self.client_id,
            "ended_at": self.ended_at,
            "ended_by": self.ended_by,
            "ended_index": self.ended_index,
        }


@dataclass(slots=True)
class Holdings:
    """The tokens an answer lists, with the question that selected them."""

    question: dict[str, Any]
    tokens: list[TokenLife] = field(default_factory=list)

    @property
    def evidence(self) -> list[int]:
        """Indices of the births and ends the answer rests on."""
        return sorted({i for life in self.tokens for i in life.evidence})

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output and HTTP answers."""
        return {**self.question, "tokens": [life.to_json() for life in self.tokens]}


def token_lives(lineage: Lineage, token_ids: Iterable[str]) -> dict[str, TokenLife]:
    """The lives of ``token_ids`` (tokens never born are left out), the revocation cascade applied."""
    lives = _own_lives(lineage, set(token_ids))
    if lineage.policy.revocation_cascade:
        known = dict(lives)
        missing = {life.parent for life in known.values() if life.parent and life.parent not in known}
        while missing:  # fetch ancestors level by level
            found = _own_lives(lineage, {m for m in missing if m is not None})
            known.update(found)
            missing = {life.parent for life in found.values() if life.parent and life.parent not in known}
            missing -= {None}
            if not found:
                break
        for life in lives.values():
            seen = {life.token_id}
            parent = life.parent
            while parent and parent not in seen and parent in known:
                seen.add(parent)
                ancestor = known[parent]
                if ancestor.revoked is not None:
                    life.end(ancestor.revoked[0], "ancestor_revoked:" + parent, ancestor.revoked[1])
                parent = ancestor.parent
    return lives


def _own_lives(lineage: Lineage, token_ids: set[str]) -> dict[str, TokenLife]:
    if not token_ids:
        return {}
    subjects = sorted("token:" + t for t in token_ids)
    lives: dict[str, TokenLife] = {}
    for rec in lineage.records(lineage.store.subject_entries(subjects)):
        ev = rec.event
        assert isinstance(ev, TokenEvent)
        life = lives.get(ev.token_id)
        if life is None:
            if ev.event_type not in _BIRTHS:
                continue  # a step before any birth changes no life
            p = ev.payload
            life = lives[ev.token_id] = TokenLife(
                ev.token_id, ev.occurred_at, rec.index, p.parent_token_id, p.user_id, p.client_id
            )
            if p.expires_at is not None:
                life.end(p.expires_at, "expires_at", None)
            continue
        if rec.verdict == "ok" and ev.event_type in {"REVOKED", "EXPIRED"}:
            life.end(ev.occurred_at, ev.event_type, rec.index)
            if ev.event_type == "REVOKED" and life.revoked is None:
                life.revoked = (ev.occurred_at, rec.index)
    for rec in lineage.records(lineage.store.children_of_many(subjects)):
        ev = rec.event
        if isinstance(ev, TokenEvent) and ev.event_type == "ROTATED" and rec.verdict == "ok":
            parent = lives.get(ev.payload.parent_token_id or "")
            if parent is not None:
                parent.end(ev.occurred_at, "ROTATED", rec.index)
    return lives


def _with_descendants(lineage: Lineage, roots: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for root in roots:
        if root not in out:
            out.update(lineage.descendants(root).tokens)
    return out


def tokens_of_user(lineage: Lineage, user_id: str, start: Time | None = None, end: Time | None = None) -> Holdings:
    """Every token ``user_id`` held at some point of [start, end) (all time without a window), by birth."""
    lo = "" if start is None else instant_of(start, "start").reading()
    hi = "~" if end is None else instant_of(end, "end").reading()
    born = {subject.removeprefix("token:") for _, _, subject in find_links(lineage.store, "user", user_id, "", hi)}
    lives = token_lives(lineage, _with_descendants(lineage, sorted(born)))
    held = sorted((life for life in lives.values() if life.overlaps(lo, hi)), key=lambda t: (t.born_at, t.token_id))
    window = {"start": lo or None, "end": None if hi == "~" else hi}
    return Holdings({"user_id": user_id, "window": window}, held)


def active_at(
    lineage: Lineage,
    at: Time,
    *,
    user_id: str | None = None,
    client_id: str | None = None,
    resource: str | None = None,
) -> Holdings:
    """Every token active at ``at``, optionally only those held by ``user_id``, born for ``client_id`` (or
    derived from one that was), or that had used ``resource`` by then. Without ``user_id`` or ``resource``
    every token entry is read."""
    instant = instant_of(at, "at")
    through = instant.reading_through()
    store = lineage.store
    if user_id is not None:
        links = find_links(store, "user", user_id, "", through + "~")
        candidates = _with_descendants(lineage, sorted({s.removeprefix("token:") for _, _, s in links}))
    elif resource is not None:
        links = find_links(store, "resource", resource, "", through + "~")
        candidates = {s.removeprefix("token:") for _, _, s in links}
    else:
        candidates = {row.subject.removeprefix("token:") for row in store.subjects_with_prefix("token:")}
    lives = token_lives(lineage, candidates)
    if client_id is not None:  # born for the client, or derived from a token that was
        roots = sorted(t for t, life in lives.items() if life.client_id == client_id)
        family = _with_descendants(lineage, roots)
        lives = {t: life for t, life in lives.items() if t in family}
    chosen = [life for life in lives.values() if life.active_at(through)]
    chosen.sort(key=lambda t: (t.born_at, t.token_id))
    question = {
        "at": format_reading(instant.ns, 0 if instant.counter is None else instant.counter),
        "user_id": user_id,
        "client_id": client_id,
        "resource": resource,
    }
    return Holdings(question, chosen)
