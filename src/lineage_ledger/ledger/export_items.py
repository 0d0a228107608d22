"""What the export formats share: the answers they take and the facts collected from them (ledger.export)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from lineage_ledger.ledger.lineage import AssetLineage, BlastRadius, Family, Record

__all__ = [
    "DATA_USES",
    "PAYLOAD_SKIP",
    "TOKEN_BIRTHS",
    "TOKEN_ENDS",
    "TOKEN_USES",
    "Collected",
    "Exportable",
    "birth_kind",
    "collect",
]

Exportable = Family | BlastRadius | AssetLineage | Record

TOKEN_BIRTHS: Final = frozenset({"ISSUED", "ORIGIN", "REFRESHED", "ROTATED"})
TOKEN_USES: Final = frozenset({"USED", "ACTIVATED"})
TOKEN_ENDS: Final = frozenset({"REVOKED", "EXPIRED"})
DATA_USES: Final = frozenset({"TRANSMITTED", "ACCESSED"})
PAYLOAD_SKIP: Final = frozenset({"parent_token_id", "actor_token_id", "inputs", "token_id", "document"})


@dataclass(slots=True)
class Collected:
    """Everything the items say, deduplicated."""

    records: dict[int, Record] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    assets: set[str] = field(default_factory=set)
    token_edges: set[tuple[str, str, str, int]] = field(default_factory=set)
    asset_edges: set[tuple[str, str, str | None, int]] = field(default_factory=set)


def collect(items: Exportable | Iterable[Exportable]) -> Collected:
    """The records, tokens, assets and edges that ``items`` (one answer or many) hold, deduplicated."""
    flat: Iterable[Exportable] = [items] if isinstance(items, Family | BlastRadius | AssetLineage | Record) else items
    got = Collected()
    for item in flat:
        if isinstance(item, Record):
            got.records[item.index] = item
        elif isinstance(item, Family):
            got.tokens.update(item.tokens)
            got.token_edges.update(item.edges)
        elif isinstance(item, BlastRadius):
            got.tokens.update(item.tokens)
            got.records.update((r.index, r) for r in item.uses)
        else:
            got.assets.add(item.asset_id)
            got.asset_edges.update(item.edges)
            got.records.update((r.index, r) for r in item.steps)
    return got


def birth_kind(kind: str) -> str:
    """The label of the edge from a parent token to a child born by ``kind``."""
    return "EXCHANGED" if kind in {"ISSUED", "ORIGIN"} else kind
