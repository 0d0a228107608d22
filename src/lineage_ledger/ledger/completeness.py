"""The subject map every seal commits to, and completeness proofs built on it.

Each seal's block header carries ``subjects_root``: the root of a sparse Merkle map (core.smt) from every
subject (``token:<id>``, ``asset:<id>``, ``policy:<id>``, ``producer:<id>``) to the head of its chain: head
leaf hash, number of entries, head index. Because the seal entry is in the log, a checkpoint commits to it.

So two statements no transparency log offers become provable:

* "these are all the events of token T up to checkpoint N": T's entries (each with an inclusion proof) chain
  from 64 zeros to the head the map names, and there are exactly ``count`` of them;
* "token T was never revoked as of checkpoint N": the same complete chain holds no REVOKED event.

A subject absent from the map (a non-membership proof) has no entries at all as of that checkpoint.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from lineage_ledger.core import smt
from lineage_ledger.core.encoding import MAX_SAFE_INTEGER
from lineage_ledger.core.entry import BLOCKS_SUBJECT, SealEntry, decode_entry
from lineage_ledger.errors import LedgerError, NotFoundError, RootMismatchError, StoreError
from lineage_ledger.store.base import Store

__all__ = [
    "MapReader",
    "block_heads",
    "checked_node",
    "decode_node",
    "encode_node",
    "map_changes",
    "seal_paid",
    "stored_node_hash",
    "unwritten_map",
]

_sha256 = hashlib.sha256
_LEAF: Final = b"L"
_INTERIOR: Final = b"I"


def encode_node(node: smt.Leaf | smt.Interior) -> bytes:
    """Storage bytes of a map node: b"L" key head count(8) index(8), or b"I" left right."""
    if isinstance(node, smt.Leaf):
        v = node.value
        return _LEAF + node.key + v.head + v.count.to_bytes(8, "big") + v.index.to_bytes(8, "big")
    return _INTERIOR + node.left + node.right


def decode_node(data: bytes) -> smt.Leaf | smt.Interior:
    """The node stored as ``data`` (StoreError if malformed). Its hash is checked by whoever reads it."""
    if len(data) == 81 and data[:1] == _LEAF:
        head = smt.SubjectHead(data[33:65], int.from_bytes(data[65:73], "big"), int.from_bytes(data[73:81], "big"))
        return smt.Leaf(data[1:33], head)
    if len(data) == 65 and data[:1] == _INTERIOR:
        return smt.Interior(data[1:33], data[33:65])
    raise StoreError(f"malformed subject-map node ({len(data)} bytes)")


class MapReader:
    """Reads map nodes from a store, with a bounded cache (nodes are immutable, so caching is safe). Every
    node loaded from the store is checked against the hash it is stored under before it enters the cache,
    so its answers are checked (``smt.update(..., checked_reader=True)``)."""

    def __init__(self, store: Store, cache_size: int = 100_000) -> None:
        self._store = store
        self._cache: OrderedDict[bytes, smt.Leaf | smt.Interior] = OrderedDict()
        self._cache_size = cache_size
        self._held: dict[bytes, smt.Leaf | smt.Interior] = {}

    def add(self, nodes: dict[bytes, smt.Leaf | smt.Interior]) -> None:
        """Remember nodes just written (or about to be)."""
        for digest, node in nodes.items():
            self._remember(digest, node)

    def hold(self, nodes: dict[bytes, smt.Leaf | smt.Interior]) -> None:
        """Cache ``nodes`` and keep answering from them until :meth:`release` even once the bounded cache
        has evicted them: they are not all stored yet (the writer writes a sealed block's nodes after its
        seal). Holds the caller's dict, not a copy."""
        self.add(nodes)
        self._held = nodes

    def release(self) -> None:
        """The held nodes are all stored now: read them from the store once they leave the cache."""
        self._held = {}

    def _get(self, digest: bytes) -> smt.Leaf | smt.Interior | None:
        node = self._cache.get(digest)
        return self._held.get(digest) if node is None else node

    def _remember(self, digest: bytes, node: smt.Leaf | smt.Interior) -> None:
        self._cache[digest] = node
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def prefetch(self, root: bytes, keys: Iterable[bytes]) -> None:
        """Load the nodes on the paths of ``keys`` level by level, one store query per level, so an update
        of thousands of keys reads from memory instead of making one round trip per node. Each node is
        checked against its hash as it is loaded."""
        if root == smt.EMPTY:
            return
        paths = sorted({int.from_bytes(k, "big") for k in keys})
        if not paths:
            return
        # each node of the frontier with the slice [lo, hi) of the sorted paths that pass through it: the
        # paths under a node share its prefix, so one bisection splits them between its children
        frontier: list[tuple[bytes, int, int]] = [(root, 0, len(paths))]
        depth = 0
        while frontier and depth < smt.KEY_BITS:
            missing = [h for h, _, _ in frontier if h not in self._cache and h not in self._held]
            if missing:
                for digest, data in self._store.map_nodes(missing).items():
                    self._remember(digest, checked_node(digest, data))
            below: list[tuple[bytes, int, int]] = []
            shift = smt.KEY_BITS - 1 - depth
            for digest, lo, hi in frontier:
                node = self._get(digest)
                if not isinstance(node, smt.Interior):
                    continue
                mid = bisect_left(paths, ((paths[lo] >> shift) | 1) << shift, lo, hi)
                if lo < mid and node.left != smt.EMPTY:
                    below.append((node.left, lo, mid))
                if mid < hi and node.right != smt.EMPTY:
                    below.append((node.right, mid, hi))
            frontier = below
            depth += 1

    def __call__(self, digest: bytes) -> smt.Leaf | smt.Interior:
        node = self._get(digest)
        if node is None:
            data = self._store.map_node(digest)
            if data is None:
                raise NotFoundError(f"subject-map node {digest.hex()} is missing")
            node = checked_node(digest, data)
            self._remember(digest, node)
        return node


def checked_node(digest: bytes, data: bytes) -> smt.Leaf | smt.Interior:
    """The node stored as ``data`` under ``digest``; RootMismatchError if it does not hash to ``digest``."""
    node = decode_node(data)
    calculated = node.node_hash()
    if calculated != digest:
        raise RootMismatchError("a stored subject-map node does not hash to its name", digest, calculated)
    return node


def stored_node_hash(data: bytes) -> bytes | None:
    """The hash of the node stored as ``data``, straight from its bytes, or None when they are not a well
    formed node (checked_node then says what is wrong). The same hash checked_node computes, without
    building the node: for checking a whole table of nodes."""
    if len(data) == 81 and data[:1] == _LEAF:
        count, index = int.from_bytes(data[65:73], "big"), int.from_bytes(data[73:81], "big")
        if not 1 <= count <= MAX_SAFE_INTEGER or not count - 1 <= index <= MAX_SAFE_INTEGER:
            return None
        return _sha256(smt.LEAF_PREFIX + data[1:33] + _sha256(data[33:81]).digest()).digest()
    if len(data) == 65 and data[:1] == _INTERIOR:
        return _sha256(smt.INTERIOR_PREFIX + data[1:65]).digest()
    return None


def map_changes(heads: Iterable[tuple[str, bytes, int, int]]) -> dict[bytes, smt.SubjectHead]:
    """Map updates from (subject, head leaf, count, head index); later items win."""
    return {smt.key_of(subject): smt.SubjectHead(head, count, index) for subject, head, count, index in heads}


def block_heads(store: Store, first: int, end: int) -> dict[str, tuple[bytes, int, int]]:
    """(head leaf, count, head index) as of index ``end`` of every subject with an entry in [first, end),
    seals excepted: the changes a block makes to the subject map."""
    subjects = {row.subject for row in store.entries(first, end) if row.subject != BLOCKS_SUBJECT}
    heads: dict[str, tuple[bytes, int, int]] = {}
    for row in store.subject_entries(subjects):
        if row.index < end:
            seen = heads.get(row.subject)
            heads[row.subject] = (row.leaf, seen[1] + 1 if seen else 1, row.index)
    return heads


def seal_paid(store: Store, seal: SealEntry) -> bool:
    """True once ``seal``'s subject-map root is stored. The writer writes a sealed block's lineage links and
    map nodes after the seal, a slice per commit, the root last (ledger.publish, SealDebt): so then every
    one of them is stored too."""
    root = bytes.fromhex(seal.block.subjects_root)
    return root == smt.EMPTY or store.map_node(root) is not None


def unwritten_map(
    store: Store, seal_index: int, seal: SealEntry, reader: MapReader
) -> dict[bytes, smt.Leaf | smt.Interior]:
    """The map nodes of the seal at ``seal_index`` if they are not all stored yet, else {}.

    The writer stores a sealed block's map nodes (and its lineage links) in slices with the commits after
    the seal, the root last (ledger.publish, SealDebt), so a stored root means all of them are. Until then
    they follow from the block's entries: this rebuilds them on the previous seal's map (whose nodes are
    all stored: a seal's commit carries what the one before it still owed), checks the result against the
    seal's ``subjects_root``, and holds them in ``reader`` so proofs under this seal can be made now.
    LedgerError if the entries do not give that root.
    """
    if seal_paid(store, seal):
        return {}
    root = bytes.fromhex(seal.block.subjects_root)
    first = seal.block.first
    previous = smt.EMPTY
    if first > 0:
        before = decode_entry(store.entry(first - 1).body)
        if not isinstance(before, SealEntry):
            raise LedgerError(f"entry {first - 1}, before block {seal.block.number}, is not a seal")
        previous = bytes.fromhex(before.block.subjects_root)
    changes = map_changes((subject, *head) for subject, head in block_heads(store, first, seal_index).items())
    reader.prefetch(previous, changes)
    rebuilt, nodes = smt.update(previous, changes, reader, checked_reader=True)
    if rebuilt != root:
        raise LedgerError(
            f"block {seal.block.number}'s entries give subject-map root {rebuilt.hex()}, not its seal's {root.hex()}"
        )
    reader.hold(nodes)
    return nodes
