"""Reading the lineage back: a token's timeline with its chain status, verdicts, family and resources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lineage_ledger.core.entry import ZERO_HASH, EventEntry, decode_entry
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.model import TokenEvent, decode_event
from lineage_ledger.errors import NotFoundError
from lineage_ledger.store.base import Store

__all__ = ["TimelineStep", "TokenTrace", "trace_token"]


@dataclass(frozen=True, slots=True)
class TimelineStep:
    """One event of a token's life as the ledger recorded it."""

    index: int
    recorded_at: str
    occurred_at: str
    event_type: str
    verdict: str
    producer: str
    sealed: bool
    resource: str | None
    outcome: str | None
    policy_version: str | None
    parent_token_id: str | None


@dataclass(slots=True)
class TokenTrace:
    """A token's timeline and family. ``chain_ok`` is False if any stored link or hash fails to check."""

    token_id: str
    steps: list[TimelineStep] = field(default_factory=list)
    chain_ok: bool = True
    chain_problem: str | None = None
    parents: list[str] = field(default_factory=list)
    children: list[tuple[str, str, int]] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[TimelineStep]:
        """Steps whose verdict names a broken rule."""
        return [s for s in self.steps if s.verdict != "ok"]

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "token_id": self.token_id,
            "chain_ok": self.chain_ok,
            "chain_problem": self.chain_problem,
            "parents": self.parents,
            "children": [{"token_id": t, "event_type": k, "index": i} for t, k, i in self.children],
            "resources": self.resources,
            "violations": [{"index": s.index, "rule": s.verdict} for s in self.violations],
            "timeline": [
                {
                    "index": s.index,
                    "recorded_at": s.recorded_at,
                    "occurred_at": s.occurred_at,
                    "event_type": s.event_type,
                    "verdict": s.verdict,
                    "producer": s.producer,
                    "status": "sealed" if s.sealed else "pending",
                    "resource": s.resource,
                    "outcome": s.outcome,
                    "policy_version": s.policy_version,
                    "parent_token_id": s.parent_token_id,
                }
                for s in self.steps
            ],
        }


def _token_event(body: bytes) -> tuple[EventEntry, TokenEvent] | None:
    entry = decode_entry(body)
    if not isinstance(entry, EventEntry):
        return None
    event = decode_event(bytes(entry.event))
    if not isinstance(event, TokenEvent):
        return None
    return entry, event


def trace_token(store: Store, token_id: str, *, sealed_size: int | None = None) -> TokenTrace:
    """The timeline of ``token_id`` (a fingerprint, with or without the ``token:`` prefix).

    Each entry's hash is recomputed from its bytes and each link checked, so a tampered row shows up as a
    broken chain here too. NotFoundError if the ledger holds no event of the token.
    """
    token_id = token_id.removeprefix("token:")
    subject = "token:" + token_id
    rows = store.subject_entries([subject])
    if not rows:
        raise NotFoundError(f"no events for token {token_id}")
    if sealed_size is None:
        latest = store.latest_checkpoint()
        sealed_size = latest.size if latest else 0
    trace = TokenTrace(token_id)
    expected_prev = ZERO_HASH
    resources: dict[str, None] = {}
    for row in rows:
        if trace.chain_ok:
            if leaf_hash(row.body) != row.leaf:
                trace.chain_ok, trace.chain_problem = False, f"entry {row.index}: bytes do not match its hash"
            elif row.prev != expected_prev:
                trace.chain_ok, trace.chain_problem = (
                    False,
                    f"entry {row.index}: does not link to the previous",
                )
        expected_prev = row.leaf
        parsed = _token_event(row.body)
        if parsed is None:
            continue
        entry, event = parsed
        p = event.payload
        trace.steps.append(
            TimelineStep(
                index=row.index,
                recorded_at=entry.recorded_at,
                occurred_at=event.occurred_at,
                event_type=event.event_type,
                verdict=entry.verdict,
                producer=entry.producer,
                sealed=row.index < sealed_size,
                resource=p.resource,
                outcome=p.outcome,
                policy_version=p.policy_version,
                parent_token_id=p.parent_token_id,
            )
        )
        if p.parent_token_id and p.parent_token_id not in trace.parents:
            trace.parents.append(p.parent_token_id)
        if event.event_type == "USED" and p.resource:
            resources[p.resource] = None
    for row in store.children_of(subject):
        parsed = _token_event(row.body)
        if parsed is not None:
            trace.children.append((parsed[1].token_id, parsed[1].event_type, row.index))
    trace.resources = list(resources)
    return trace
