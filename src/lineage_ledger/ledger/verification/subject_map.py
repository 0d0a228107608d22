"""Map checks: the subject map root each seal commits to against the verifier's own copy of the map of
chain heads, rebuilt block by block (SubjectMap); and the stored map that completeness proofs are read
from (stored_map_problems)."""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Final

from lineage_ledger.core import smt
from lineage_ledger.core.entry import SealEntry, decode_entry
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.verification.report import Problem, VerifyReport
from lineage_ledger.store.base import EntryRow

__all__ = ["SubjectMap", "check_stored_map"]

_sha256 = hashlib.sha256
_MAP_LEAF: Final = smt.LEAF_PREFIX
_MAP_INTERIOR: Final = smt.INTERIOR_PREFIX
_MAP_TOP_BIT: Final = smt.KEY_BITS - 1
_INTERIOR_BYTES: Final = b"I"
_LEAF_BYTES: Final = b"L"

_MapLeaf = tuple[int, bytes]
"""A leaf of the verifier's subject map: (its key as an integer, its node hash)."""
_MapInterior = list[Any]
"""An interior node of the verifier's subject map: [left, right, node hash], children as _MapNode."""
_MapNode = _MapLeaf | _MapInterior | None
"""None for an empty subtree."""


class SubjectMap:
    """The verifier's own copy of the subject map, rebuilt block by block from verified entries.

    The same tree as core.smt (see its module docstring for the format: compressed sparse Merkle tree, leaf
    SHA-256(0x10 || key || value hash), interior SHA-256(0x11 || left || right), EMPTY for no subtree), held
    as linked nodes that each update changes in place: this process computed every node itself, so unlike
    core.smt reading a store's nodes it need not look them up by hash and hash them again, and only the
    current tree is kept. A test holds the two implementations to the same roots.

    Memory grows with the number of subjects (a leaf and about one interior node each): verification trades
    memory for never trusting a stored map node.
    """

    def __init__(self) -> None:
        self.tree: _MapNode = None
        self.counts: dict[bytes, int] = {}

    @property
    def root(self) -> bytes:
        """The map's root hash now."""
        return smt.EMPTY if self.tree is None else self.tree[-1]

    def advance(self, touched: dict[bytes, tuple[bytes, int, int]]) -> str:
        """Set the heads of the subjects a block touched; the root after the block, in hex."""
        # A little over 60 lines: build and apply are its seams, nested so that they share the sorted keys
        # and leaf hashes of this block without passing them down every level of the recursion.
        if not touched:
            return self.root.hex()
        counts = self.counts
        sha = _sha256
        empty = smt.EMPTY
        keys = sorted(touched)
        leaves: list[bytes] = []
        for key in keys:
            head, added, index = touched[key]
            count = counts.get(key, 0) + added
            counts[key] = count
            value = sha(head + count.to_bytes(8, "big") + index.to_bytes(8, "big")).digest()
            leaves.append(sha(_MAP_LEAF + key + value).digest())
        ints = [int.from_bytes(key, "big") for key in keys]

        def interior(left: _MapNode, right: _MapNode) -> bytes:
            return sha(
                _MAP_INTERIOR + (empty if left is None else left[-1]) + (empty if right is None else right[-1])
            ).digest()

        def build(lo: int, hi: int, depth: int, resident: _MapLeaf | None) -> _MapNode:
            """A subtree that held at most the leaf ``resident``, now also holding the new leaves [lo, hi)."""
            count = hi - lo
            if resident is None:
                if count == 1:
                    return (ints[lo], leaves[lo])
                if count == 0:
                    return None
            elif count == 0:
                return resident  # moved down unchanged
            # two or more leaves: split them at bit ``depth`` (the new ones share the bits above it)
            shift = _MAP_TOP_BIT - depth
            boundary = ((ints[lo] >> shift) | 1) << shift
            mid = bisect_left(ints, boundary, lo, hi)
            if resident is not None and resident[0] < boundary:
                left, right = build(lo, mid, depth + 1, resident), build(mid, hi, depth + 1, None)
            else:
                left, right = build(lo, mid, depth + 1, None), build(mid, hi, depth + 1, resident)
            return [left, right, interior(left, right)]

        def apply(node: _MapNode, depth: int, lo: int, hi: int) -> _MapNode:
            """``node``'s subtree with the new leaves [lo, hi) (not none) set in it."""
            if node is None:
                return build(lo, hi, depth, None)
            if type(node) is tuple:  # a leaf, alone in its subtree
                at = bisect_left(ints, node[0], lo, hi)
                if at < hi and ints[at] == node[0]:
                    return build(lo, hi, depth, None)  # its own value changes
                return build(lo, hi, depth, node)
            assert type(node) is list
            shift = _MAP_TOP_BIT - depth
            mid = bisect_left(ints, ((ints[lo] >> shift) | 1) << shift, lo, hi)
            if lo < mid:
                node[0] = apply(node[0], depth + 1, lo, mid)
            if mid < hi:
                node[1] = apply(node[1], depth + 1, mid, hi)
            node[2] = interior(node[0], node[1])
            return node

        self.tree = apply(self.tree, 0, 0, len(keys))
        return self.root.hex()


_MAP_PROBLEMS_SHOWN: Final = 10


def check_stored_map(store: Any, seal_rows: Sequence[EntryRow], report: VerifyReport) -> None:
    """The subject map the store serves completeness proofs from, under the newest seal whose map is stored.

    By now every seal's ``subjects_root`` is known to be the map of the chain heads (the verifier rebuilt
    it), so the stored map is right if every node reachable from that root is in the store and hashes to
    the name it is stored under: the hashes then chain the whole stored tree to the verified root. Here
    only the first is checked, walking the tree from the root; the second is checked of every stored node
    (stored_rows.map_node_row_problems, which verify runs beside this), so the walk does not hash again. The
    writer stores a sealed block's nodes after its seal, root last, so the newest seal's root may not be
    stored yet; then the seal before it is the one checked. Older seals' trees share most of their nodes
    with it and are not walked (their roots are the marker that they were written whole).
    """
    for row in reversed(seal_rows):
        try:
            seal = decode_entry(row.body)
        except LedgerError:
            return  # the entry checks reported it
        if not isinstance(seal, SealEntry):
            return
        root = bytes.fromhex(seal.block.subjects_root)
        if root == smt.EMPTY:
            return
        try:
            if store.map_node(root) is None:
                continue  # not stored yet: the writer's debt for this seal
            problems: list[Problem] = []
            frontier = [root]
            while frontier:
                stored = store.map_nodes(frontier)
                below: list[bytes] = []
                for digest in frontier:
                    data = stored.get(digest)
                    if data is None:
                        problems.append(Problem("map_node", f"subject-map node {digest.hex()} is missing", row.index))
                        continue
                    report.map_nodes += 1
                    if len(data) == 65 and data[:1] == _INTERIOR_BYTES:  # completeness.encode_node
                        below.extend(child for child in (data[1:33], data[33:65]) if child != smt.EMPTY)
                    elif len(data) != 81 or data[:1] != _LEAF_BYTES:
                        problems.append(Problem("map_node", f"subject-map node {digest.hex()} is malformed", row.index))
                frontier = below
        except LedgerError as e:
            report.problems.append(Problem("map_node", f"cannot read the subject map: {e}", row.index))
            return
        shown = problems[:_MAP_PROBLEMS_SHOWN]
        if len(problems) > len(shown):
            shown.append(Problem("map_node", f"... and {len(problems) - len(shown)} more", row.index))
        report.problems.extend(shown)
        return
