"""Offline check of an evidence set (ledger.evidence_set): every member bundle checked by
``lineage_ledger.offline``, all against one checkpoint, and all one family.

Like ``offline.py`` it needs only the standard library and ``cryptography``; copied beside ``offline.py``
it runs on its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

try:
    from lineage_ledger.offline import BundleReport, verify_bundle
except ImportError:  # copied beside offline.py, without the package
    from offline import BundleReport, verify_bundle  # type: ignore[import-not-found,no-redef]

__all__ = ["EVIDENCE_SET_FORMAT", "SetReport", "is_evidence_set", "verify_evidence_set"]

EVIDENCE_SET_FORMAT: Final = "lineage-ledger-evidence-set/1"


@dataclass(frozen=True, slots=True)
class SetReport:
    """What an evidence set proves. ``ok`` only when every member bundle is ok, all name one checkpoint,
    and every member other than the scope's token descends from it through births other members hold.
    ``edges`` are (parent, child, birth event type, log index of the birth)."""

    ok: bool
    scope: dict[str, Any]
    tree_size: int | None
    members: tuple[BundleReport, ...]
    edges: tuple[tuple[str, str, str, int], ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def uses(self) -> list[tuple[str, int, str, str]]:
        """(token, index, occurred_at, resource) of every USED event of the members within the scope's window."""
        start, end = self.scope.get("start") or "", self.scope.get("end") or "~"
        out = []
        for member in self.members:
            token = (member.subject or "").removeprefix("token:")
            for e in member.events:
                if e.event_type == "USED" and e.resource is not None and start <= e.occurred_at < end:
                    out.append((token, e.index, e.occurred_at, e.resource))
        return sorted(out, key=lambda u: (u[2], u[1]))

    def to_json(self) -> dict[str, Any]:
        """A plain dict of the report."""
        return {
            "ok": self.ok,
            "scope": self.scope,
            "tree_size": self.tree_size,
            "tokens": [m.subject for m in self.members],
            "edges": [{"parent": p, "child": c, "kind": k, "index": i} for p, c, k, i in self.edges],
            "resources": sorted({u[3] for u in self.uses}),
            "members": [m.to_json() for m in self.members],
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


def is_evidence_set(data: bytes) -> bool:
    """True if ``data`` claims to be an evidence set (whether or not it is a sound one)."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(value, dict) and value.get("format") == EVIDENCE_SET_FORMAT


def verify_evidence_set(data: bytes, *, log_key: str | None = None) -> SetReport:
    """Check an evidence set offline; never raises for bad input. ``log_key`` as for ``verify_bundle``."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        return SetReport(False, {}, None, (), (), (f"not JSON: {e}",))
    if not isinstance(value, dict) or value.get("format") != EVIDENCE_SET_FORMAT:
        return SetReport(False, {}, None, (), (), (f"not an evidence set ({EVIDENCE_SET_FORMAT})",))
    raw_scope, raw_bundles = value.get("scope"), value.get("bundles")
    scope: dict[str, Any] = raw_scope if isinstance(raw_scope, dict) else {}
    bundles: list[Any] = raw_bundles if isinstance(raw_bundles, list) else []
    problems: list[str] = []
    members: list[BundleReport] = []
    for n, bundle in enumerate(bundles):
        text = json.dumps(bundle, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        report = verify_bundle(text.encode(), log_key=log_key)
        members.append(report)
        problems.extend(f"bundles[{n}] ({report.subject}): {p}" for p in report.problems)
    if not members:
        problems.append("the set holds no bundle")
    sizes = {m.tree_size for m in members} | {value.get("tree_size")}
    origins = {m.origin for m in members}
    if len(sizes) != 1 or len(origins) > 1:
        problems.append(f"the bundles are not all against one checkpoint (sizes {sorted(map(str, sizes))})")
    edges = _edges(members)
    if scope.get("kind") == "data-subject":  # a person's chains (docs/privacy.md): each bundle proves its own
        listed = scope.get("subjects")
        if not isinstance(listed, list) or sorted(str(m.subject) for m in members) != sorted(map(str, listed)):
            problems.append("the bundles are not exactly the chains the scope lists")
        warnings = tuple(sorted({w for m in members for w in m.warnings}))
        size = next(iter(sizes)) if len(sizes) == 1 and None not in sizes else None
        return SetReport(not problems, scope, size, tuple(members), tuple(edges), tuple(problems), warnings)
    root = scope.get("token_id")
    tokens = [(m.subject or "").removeprefix("token:") for m in members]
    if len(set(tokens)) != len(tokens):
        problems.append("a token appears in two bundles")
    if root not in tokens:
        problems.append(f"the scope's token {root!r} has no bundle in the set")
    reached = _reachable(str(root), edges)
    for token in tokens:
        if token not in reached:
            problems.append(f"token {token} does not descend from {root} through births the set holds")
    warnings = tuple(sorted({w for m in members for w in m.warnings}))
    return SetReport(
        not problems,
        scope,
        next(iter(sizes)) if len(sizes) == 1 and None not in sizes else None,
        tuple(members),
        tuple(edges),
        tuple(problems),
        warnings,
    )


def _edges(members: Sequence[BundleReport]) -> list[tuple[str, str, str, int]]:
    tokens = {(m.subject or "").removeprefix("token:") for m in members}
    edges = []
    for m in members:
        child = (m.subject or "").removeprefix("token:")
        for e in m.events:
            if e.parent is not None and e.parent in tokens and e.event_type in {"ISSUED", "REFRESHED", "ROTATED"}:
                edges.append((e.parent, child, "EXCHANGED" if e.event_type == "ISSUED" else e.event_type, e.index))
                break  # a token is born once
    return edges


def _reachable(root: str, edges: Sequence[tuple[str, str, str, int]]) -> set[str]:
    children: dict[str, list[str]] = {}
    for parent, child, _, _ in edges:
        children.setdefault(parent, []).append(child)
    seen, stack = {root}, [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen
