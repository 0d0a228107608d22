"""Token families and blast radius across the shards of a sharded ledger.

A refreshed, rotated or exchanged token hashes to a shard of its own, so its family is spread over shards:
its birth event (which names the parent) lives in the child's shard. The family is found breadth first:
for each generation, every shard is asked for the births whose parent is in the frontier (one
``children_of_many`` query per shard and generation); the ancestors are found by asking each token's own
shard for its birth. Every cited entry is named by (shard, log index): an index alone is ambiguous across
shards, and each shard proves its own entries (``lineage prove --ledger <shard>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lineage_ledger.core import lifecycle
from lineage_ledger.core.model import TokenEvent
from lineage_ledger.errors import NotFoundError
from lineage_ledger.ledger.lineage import Lineage, Record, Time, _hlc, _tid
from lineage_ledger.ledger.lineage_answers import refresh_window, resources_of
from lineage_ledger.ledger.shards import ShardLayout
from lineage_ledger.store.base import Store

__all__ = ["CrossShardFinding", "ShardedBlastRadius", "ShardedFamily", "ShardedLineage"]

_BIRTHS = frozenset({"ISSUED", "REFRESHED", "ROTATED"})


@dataclass(frozen=True, slots=True)
class CrossShardFinding:
    """A lifecycle rule broken across shards, which neither shard could judge alone."""

    rule: str
    subject: str
    evidence: tuple[tuple[int, int], ...]
    """(shard, log index) of the entries involved."""
    message: str

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "rule": self.rule,
            "subject": self.subject,
            "evidence": [{"shard": s, "index": i} for s, i in self.evidence],
            "message": self.message,
        }


@dataclass(slots=True)
class ShardedFamily:
    """A token family over shards: edges (parent, child, kind, shard, log index of the child's birth)."""

    root: str
    tokens: list[str] = field(default_factory=list)
    edges: list[tuple[str, str, str, int, int]] = field(default_factory=list)

    @property
    def evidence(self) -> list[tuple[int, int]]:
        """(shard, index) of the entries that establish the edges."""
        return sorted({(e[3], e[4]) for e in self.edges})

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "root": self.root,
            "tokens": self.tokens,
            "edges": [{"parent": p, "child": c, "kind": k, "shard": s, "index": i} for p, c, k, s, i in self.edges],
        }


@dataclass(slots=True)
class ShardedBlastRadius:
    """Every use, in a window, of a token and all tokens derived from it, wherever their shards are."""

    token_id: str
    start: str
    end: str
    tokens: list[str]
    uses: list[tuple[int, Record]]
    """(shard, record) of each USED event, in time order."""

    @property
    def resources(self) -> list[str]:
        """Distinct resources touched, in order of first use."""
        return resources_of(r for _, r in self.uses)

    @property
    def evidence(self) -> list[tuple[int, int]]:
        """(shard, index) of the USED entries the answer rests on."""
        return [(s, r.index) for s, r in self.uses]

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "token_id": self.token_id,
            "start": self.start,
            "end": self.end,
            "tokens": self.tokens,
            "resources": self.resources,
            "uses": [{"shard": s, **r.to_json()} for s, r in self.uses],
        }


class ShardedLineage:
    """Family questions over every shard of a sharded ledger (read-only; one store per shard)."""

    def __init__(self, layout: ShardLayout, stores: Sequence[Store]) -> None:
        self.layout = layout
        self.shards = [Lineage(store) for store in stores]

    def _home(self, token_id: str) -> Lineage:
        return self.shards[self.layout.shard_of("token:" + token_id)]

    def timeline(self, token_id: str) -> list[Record]:
        """A token's events, from its shard (NotFoundError if none)."""
        return self._home(_tid(token_id)).timeline(token_id)

    def _parent_of(self, token_id: str) -> str | None:
        home = self._home(token_id)
        for rec in home.records(home.store.subject_entries(["token:" + token_id])):
            assert isinstance(rec.event, TokenEvent)
            if rec.event.event_type in _BIRTHS and rec.event.payload.parent_token_id:
                return rec.event.payload.parent_token_id
        return None

    def family(self, token_id: str) -> ShardedFamily:
        """The whole family of a token: up to its root ancestor, then every descendant, over all shards.
        NotFoundError for a token no shard knows anything of (no events of its own and no descendants)."""
        tid = root = _tid(token_id)
        seen = {root}
        while (parent := self._parent_of(root)) is not None and parent not in seen:
            seen.add(parent)
            root = parent
        fam = self.descendants(root)
        if not fam.edges and not self._home(tid).store.subject_entries(["token:" + tid]):
            raise NotFoundError(f"no events for token {tid}")
        return fam

    def descendants(self, token_id: str) -> ShardedFamily:
        """A token and every token derived from it, generation by generation over all shards."""
        root = _tid(token_id)
        fam = ShardedFamily(root=root, tokens=[root])
        seen = {root}
        frontier = [root]
        while frontier:
            subjects = ["token:" + t for t in frontier]
            births: list[tuple[str, int, int, Record]] = []
            for n, lineage in enumerate(self.shards):
                for rec in lineage.records(lineage.store.children_of_many(subjects)):
                    births.append((rec.event.occurred_at, n, rec.index, rec))
            births.sort(key=lambda b: b[:3])
            frontier = []
            for _, n, index, rec in births:
                ev = rec.event
                if not isinstance(ev, TokenEvent) or ev.payload.parent_token_id is None:
                    continue
                kind = "EXCHANGED" if ev.event_type == "ISSUED" else ev.event_type
                fam.edges.append((ev.payload.parent_token_id, ev.token_id, kind, n, index))
                if ev.payload.actor_token_id:
                    fam.edges.append((ev.payload.actor_token_id, ev.token_id, "ACTOR", n, index))
                if ev.token_id not in seen:
                    seen.add(ev.token_id)
                    fam.tokens.append(ev.token_id)
                    frontier.append(ev.token_id)
        return fam

    def blast_radius(self, token_id: str, start: Time | None = None, end: Time | None = None) -> ShardedBlastRadius:
        """Every descendant of ``token_id`` (itself included) and every USED event of any of them in the window.
        NotFoundError for a token no shard knows anything of (no events of its own and no descendants)."""
        lo, hi = _hlc(start, "", "start"), _hlc(end, "~", "end")
        fam = self.descendants(token_id)
        if not fam.edges and not self._home(fam.root).store.subject_entries(["token:" + fam.root]):
            raise NotFoundError(f"no events for token {fam.root}")
        by_shard: dict[int, list[str]] = {}
        for t in fam.tokens:
            by_shard.setdefault(self.layout.shard_of("token:" + t), []).append("token:" + t)
        uses: list[tuple[int, Record]] = []
        for n, subjects in by_shard.items():
            lineage = self.shards[n]
            for rec in lineage.records(lineage.store.subject_entries(subjects)):
                ev = rec.event
                if isinstance(ev, TokenEvent) and ev.event_type == "USED" and lo <= ev.occurred_at < hi:
                    uses.append((n, rec))
        uses.sort(key=lambda u: (u[1].event.occurred_at, u[0], u[1].index))
        return ShardedBlastRadius(_tid(token_id), lo, hi, fam.tokens, uses)

    def since_last_refresh(self, token_id: str) -> ShardedBlastRadius:
        """As ``Lineage.since_last_refresh``: from the latest refresh or rotation in the token's life (its own
        birth, or a child's, in any shard) to its REVOKED event, every use by it and its descendants."""
        tid = _tid(token_id)
        children = [
            rec for lineage in self.shards for rec in lineage.records(lineage.store.children_of("token:" + tid))
        ]
        start, end = refresh_window(self.timeline(tid), sorted(children, key=lambda r: r.event.occurred_at))
        return self.blast_radius(tid, start or None, None if end == "~" else end)

    def cross_shard_findings(self) -> list[CrossShardFinding]:
        """The lifecycle rules about a parent that a child's shard does not judge (the parent lives in another
        shard): a refresh, rotation or exchange from a parent that was never issued, revoked, expired or
        already rotated away at that time, and a parent's own use after a child in another shard rotated it.
        Reads every shard in full (an audit pass, like ``lineage findings scan``)."""
        births: list[tuple[str, int, int, TokenEvent]] = []
        for n, lineage in enumerate(self.shards):
            store = lineage.store
            for rec in lineage.records(r for r in store.entries(0, store.size()) if r.parent is not None):
                ev = rec.event
                if isinstance(ev, TokenEvent) and ev.payload.parent_token_id is not None:
                    births.append((ev.occurred_at, n, rec.index, ev))
        births.sort(key=lambda b: b[:3])
        out: list[CrossShardFinding] = []
        rotated: dict[str, tuple[str, int, int]] = {}
        for at, n, index, ev in births:
            parent = ev.payload.parent_token_id
            assert parent is not None
            home = self.layout.shard_of("token:" + parent)
            rotated_elsewhere = parent in rotated and rotated[parent][0] < at
            if home == n and not rotated_elsewhere:
                continue  # judged by the shard itself, which holds both
            try:
                state = lifecycle.ROTATED if rotated_elsewhere else self.shards[home].state_at(parent, at).state
            except NotFoundError:  # a parent its own shard never saw
                state = lifecycle.NONE
            rule = lifecycle.PARENT_RULES.get(state)
            if rule is not None:
                out.append(
                    CrossShardFinding(
                        rule,
                        "token:" + ev.token_id,
                        ((n, index),),
                        f"{ev.event_type} from parent {parent} (shard {home}), which was {state} at {at}",
                    )
                )
            elif ev.event_type == "ROTATED" and home != n and parent not in rotated:
                rotated[parent] = (at, n, index)
        for parent, (at, n, index) in rotated.items():
            home = self.layout.shard_of("token:" + parent)
            for rec in self.shards[home].timeline(parent):
                assert isinstance(rec.event, TokenEvent)
                if rec.event.occurred_at > at and rec.event.event_type in {"USED", "ACTIVATED"}:
                    out.append(
                        CrossShardFinding(
                            "token.use_after_rotation",
                            "token:" + parent,
                            ((home, rec.index), (n, index)),
                            f"{rec.event.event_type} at {rec.event.occurred_at} after a child in shard {n} rotated "
                            f"it at {at}",
                        )
                    )
        return out
