"""Integration, the third stage of the write path: sequenced entries' leaf hashes go into the log's tree and
into the tree of the open block.

Pure: it appends to copies of the compact ranges, so nothing changes until the caller adopts them (once the
commit has landed), and it reports the tree nodes the store keeps (every TILE_STRIDE-th level) to a visitor.
"""

from __future__ import annotations

from collections.abc import Sequence

from lineage_ledger.core.merkle import TILE_STRIDE, CompactRange, NodeVisitor
from lineage_ledger.store.base import EntryRow

__all__ = ["integrate", "stored_nodes"]


def stored_nodes() -> tuple[list[tuple[int, int, bytes]], NodeVisitor]:
    """A list and a visitor that appends to it the completed nodes the store keeps."""
    nodes: list[tuple[int, int, bytes]] = []

    def visit(level: int, index: int, digest: bytes) -> None:
        if level % TILE_STRIDE == 0:
            nodes.append((level, index, digest))

    return nodes, visit


def integrate(
    tree: CompactRange, block: CompactRange, rows: Sequence[EntryRow], visit: NodeVisitor
) -> tuple[CompactRange, CompactRange]:
    """Copies of ``tree`` (the log's) and ``block`` (the open block's) with the leaves of ``rows`` appended;
    ``visit`` hears of the log tree's completed nodes."""
    tree = tree.copy()
    block = block.copy()
    for row in rows:
        tree.append(row.leaf, visit)
        block.append(row.leaf)
    return tree, block
