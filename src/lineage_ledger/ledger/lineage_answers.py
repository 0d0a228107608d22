"""The answers lineage questions give (ledger.lineage): records, families, blast radii, policy versions and
asset lineage, each with the log indices it rests on and a plain-dict form for --json."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from lineage_ledger.core.model import Event, TokenEvent

__all__ = ["AssetLineage", "BlastRadius", "Family", "PolicyVersion", "Record", "refresh_window", "resources_of"]


class Record(msgspec.Struct, frozen=True):
    """One recorded event as a lineage answer cites it."""

    index: int
    subject: str
    recorded_at: str
    verdict: str
    producer: str
    event: Event

    def to_json(self) -> dict[str, Any]:
        """A plain dict (the event as its canonical fields)."""
        return {
            "index": self.index,
            "subject": self.subject,
            "recorded_at": self.recorded_at,
            "verdict": self.verdict,
            "producer": self.producer,
            "event": msgspec.to_builtins(self.event),
        }


@dataclass(slots=True)
class Family:
    """A token family as a DAG: edges parent -> child labelled REFRESHED, ROTATED, EXCHANGED or ACTOR."""

    root: str
    tokens: list[str] = field(default_factory=list)
    edges: list[tuple[str, str, str, int]] = field(default_factory=list)
    """(parent token id, child token id, kind, log index of the child's birth event)."""

    @property
    def evidence(self) -> list[int]:
        """Indices of the entries that establish the edges."""
        return sorted({e[3] for e in self.edges})

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "root": self.root,
            "tokens": self.tokens,
            "edges": [{"parent": p, "child": c, "kind": k, "index": i} for p, c, k, i in self.edges],
        }


def resources_of(uses: Iterable[Record]) -> list[str]:
    """Distinct resources of USED records, in order of first use."""
    seen: dict[str, None] = {}
    for r in uses:
        assert isinstance(r.event, TokenEvent)
        if r.event.payload.resource is not None:
            seen[r.event.payload.resource] = None
    return list(seen)


def refresh_window(own: Iterable[Record], children: Iterable[Record]) -> tuple[str, str]:
    """(start, end) of "since the last refresh": from the latest refresh or rotation in a token's life (its
    own REFRESHED/ROTATED birth, or a child refreshed or rotated from it before the end) to its first valid
    REVOKED ("~", open, if never revoked)."""
    start, end = "", "~"
    for rec in own:
        assert isinstance(rec.event, TokenEvent)
        if rec.event.event_type in {"REFRESHED", "ROTATED"}:
            start = max(start, rec.event.occurred_at)
        if rec.event.event_type == "REVOKED" and rec.verdict == "ok" and end == "~":
            end = rec.event.occurred_at
    for rec in children:
        assert isinstance(rec.event, TokenEvent)
        if rec.event.event_type in {"REFRESHED", "ROTATED"} and rec.event.occurred_at < end:
            start = max(start, rec.event.occurred_at)
    return start, end


@dataclass(slots=True)
class BlastRadius:
    """Everything a leaked token and all tokens derived from it touched in a window."""

    token_id: str
    start: str
    end: str
    tokens: list[str]
    uses: list[Record]

    @property
    def resources(self) -> list[str]:
        """Distinct resources touched, in order of first use."""
        return resources_of(self.uses)

    @property
    def evidence(self) -> list[int]:
        """Indices of the USED entries the answer rests on."""
        return [r.index for r in self.uses]

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "token_id": self.token_id,
            "window": {"start": self.start, "end": self.end},
            "tokens": self.tokens,
            "resources": self.resources,
            "uses": [r.to_json() for r in self.uses],
        }


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """A policy document as it was in force from ``occurred_at`` on."""

    policy_id: str
    version: str
    occurred_at: str
    index: int
    document: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "policy_id": self.policy_id,
            "version": self.version,
            "occurred_at": self.occurred_at,
            "index": self.index,
            "document": self.document,
        }


@dataclass(slots=True)
class AssetLineage:
    """Upstream or downstream derivations of a data asset, with content hashes."""

    asset_id: str
    direction: str
    steps: list[Record] = field(default_factory=list)
    edges: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    """(input asset, output asset, input content hash, log index of the deriving event)."""

    @property
    def evidence(self) -> list[int]:
        """Indices of the entries the answer rests on."""
        return sorted({r.index for r in self.steps})

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "asset_id": self.asset_id,
            "direction": self.direction,
            "edges": [{"input": a, "output": b, "content_hash": h, "index": i} for a, b, h, i in self.edges],
            "steps": [r.to_json() for r in self.steps],
        }
