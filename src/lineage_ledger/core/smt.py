"""A persistent sparse Merkle map from subject id to the head of that subject's hash chain.

Every checkpoint can commit to this map, so one proof shows "these are all the events of subject S up to
checkpoint N" (membership, with the count and the head of S's chain) or "S has no events as of checkpoint
N" (non-membership).

The tree is a compressed binary sparse Merkle tree, as in Diem's Jellyfish Merkle tree:

* a key is SHA-256 of the subject id (``key_of``), read as 256 bits, most significant bit first; bit ``d``
  chooses the child at depth ``d`` (0 = left, 1 = right);
* a subtree with no leaves hashes to ``EMPTY`` (32 zero bytes, the hash of nothing);
* a subtree with exactly one leaf is that leaf's node itself, at whatever depth (a shortcut), and its hash
  is ``leaf_node_hash(key, value_hash)`` = SHA-256(0x10 || key || value_hash);
* any other subtree is an interior node, ``interior_hash(left, right)`` = SHA-256(0x11 || left || right),
  even when one side is empty (interior chains are not compressed).

The root is therefore a function of the map's contents alone. The prefixes 0x10 and 0x11 keep these hashes
apart from the RFC 9162 log's 0x00 and 0x01, and every preimage has a fixed length (65 bytes).

Nodes are content-addressed (a node is stored under its hash) and never change: ``update`` copies the paths
it changes and returns only the nodes it created, so every earlier root stays readable and provable from
the same store. Nothing here does I/O; nodes are read through the ``NodeReader`` the caller passes in, and
every node read is checked against the hash its parent names, so the store need not be trusted.

Keys, values, nodes and their hashes are in core.smt_nodes, reading and proofs in core.smt_proof; this
module makes updates and names all of them.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Mapping

from lineage_ledger.core.smt_nodes import (
    EMPTY,
    HASH_SIZE,
    INTERIOR_PREFIX,
    KEY_BITS,
    LEAF_PREFIX,
    TOP_BIT,
    Interior,
    Leaf,
    Node,
    NodeReader,
    SubjectHead,
    check_hash,
    check_head,
    check_leaf_position,
    fetch,
    interior_hash,
    key_int,
    key_of,
    leaf_node_hash,
    value_digest,
)
from lineage_ledger.core.smt_proof import MapProof, lookup, prove, verify
from lineage_ledger.errors import ProofError

__all__ = [
    "EMPTY",
    "HASH_SIZE",
    "INTERIOR_PREFIX",
    "KEY_BITS",
    "LEAF_PREFIX",
    "Interior",
    "Leaf",
    "MapProof",
    "Node",
    "NodeReader",
    "SubjectHead",
    "interior_hash",
    "key_of",
    "leaf_node_hash",
    "lookup",
    "prove",
    "root_of",
    "update",
    "verify",
]

_sha256 = hashlib.sha256


# Updates -------------------------------------------------------------------------------------------------


class _Batch:
    """One batch of changes, sorted by key, applied by one recursive walk down the old tree.

    Each recursive call handles the changes whose keys lie under one node, a slice ``[lo, hi)`` of the
    sorted keys; splitting a slice at bit ``depth`` is one bisection. So a node above several changes is
    read and hashed once per batch, not once per change.
    """

    __slots__ = ("checked", "created", "ints", "keys", "read", "values")

    def __init__(
        self, changes: Mapping[bytes, SubjectHead], read: NodeReader | None, keep: bool, checked: bool = False
    ) -> None:
        for key, value in changes.items():
            check_hash(key, "changes key")
            check_head(value, f"changes[{key.hex()}]")
        items = sorted(changes.items())
        self.keys = [key for key, _ in items]
        self.values = [value for _, value in items]
        self.ints = [key_int(key) for key in self.keys]
        self.read = read
        self.checked = checked
        self.created: dict[bytes, Node] | None = {} if keep else None

    def _split(self, lo: int, hi: int, depth: int) -> int:
        """Index of the first key in ``[lo, hi)`` with bit ``depth`` set (the keys share bits above it)."""
        shift = TOP_BIT - depth
        return bisect_left(self.ints, ((self.ints[lo] >> shift) | 1) << shift, lo, hi)

    def apply(self, node_hash: bytes, depth: int, lo: int, hi: int) -> bytes:
        """Return the hash of the subtree at ``node_hash`` after the changes ``[lo, hi)`` (not empty)."""
        if node_hash == EMPTY:
            return self.build(lo, hi, depth, None, EMPTY)
        assert self.read is not None
        node = fetch(self.read, node_hash, depth, checked=self.checked)
        if isinstance(node, Leaf):
            check_leaf_position(node, self.ints[lo], depth)
            resident = key_int(node.key)
            at = bisect_left(self.ints, resident, lo, hi)
            replaced = at < hi and self.ints[at] == resident
            return self.build(lo, hi, depth, None if replaced else resident, node_hash)
        if depth >= KEY_BITS:
            raise ProofError(f"the store holds an interior node at depth {depth}, below the deepest key bit")
        mid = self._split(lo, hi, depth)
        left, right = node.left, node.right
        if lo < mid:
            left = self.apply(left, depth + 1, lo, mid)
        if mid < hi:
            right = self.apply(right, depth + 1, mid, hi)
        if left == node.left and right == node.right:
            return node_hash  # every change under here rewrote a value with itself
        return self._interior(left, right)

    def build(self, lo: int, hi: int, depth: int, resident: int | None, old_leaf: bytes) -> bytes:
        """Return the hash of a subtree that held at most one leaf, ``old_leaf`` (or ``EMPTY``), now holding
        the changes ``[lo, hi)`` and, when ``resident`` names its key, that unchanged leaf as well."""
        count = hi - lo
        if resident is None:
            if count == 0:
                return EMPTY
            if count == 1:
                key, value = self.keys[lo], self.values[lo]
                leaf_hash = _sha256(LEAF_PREFIX + key + value_digest(value)).digest()
                # Only the old leaf itself can equal a new leaf here: same key, same value.
                if leaf_hash != old_leaf and self.created is not None:
                    self.created[leaf_hash] = _made_leaf(key, value)
                return leaf_hash
        elif count == 0:
            return old_leaf  # the old leaf, moved down unchanged: same node, nothing to store
        shift = TOP_BIT - depth
        reference = self.ints[lo] if count else resident
        assert reference is not None
        boundary = ((reference >> shift) | 1) << shift
        mid = bisect_left(self.ints, boundary, lo, hi)
        resident_left = resident if resident is not None and resident < boundary else None
        resident_right = resident if resident is not None and resident >= boundary else None
        left = self.build(lo, mid, depth + 1, resident_left, old_leaf)
        right = self.build(mid, hi, depth + 1, resident_right, old_leaf)
        return self._interior(left, right)

    def _interior(self, left: bytes, right: bytes) -> bytes:
        node_hash = _sha256(INTERIOR_PREFIX + left + right).digest()
        if self.created is not None:
            self.created[node_hash] = _made_interior(left, right)
        return node_hash


# The update's own nodes are made of parts already checked (the changes, on entry) or just hashed (32-byte
# digests), so they skip the constructors' checks, which were a fifth of a seal's time in a profile.


def _made_leaf(key: bytes, value: SubjectHead) -> Leaf:
    node = object.__new__(Leaf)
    object.__setattr__(node, "key", key)
    object.__setattr__(node, "value", value)
    return node


def _made_interior(left: bytes, right: bytes) -> Interior:
    node = object.__new__(Interior)
    object.__setattr__(node, "left", left)
    object.__setattr__(node, "right", right)
    return node


def update(
    root: bytes, changes: Mapping[bytes, SubjectHead], read: NodeReader, *, checked_reader: bool = False
) -> tuple[bytes, dict[bytes, Node]]:
    """Set every ``key -> value`` of ``changes`` in the map with ``root`` (``EMPTY`` for a new map).

    Returns the new root and the nodes to store (hash -> node): exactly the nodes of the new tree that are
    not nodes of the old one, so nothing already stored is returned again. No node is changed in place, so
    ``root`` and every earlier root stay readable. Setting a key to the value it holds changes nothing.

    The batch is applied in one walk: each old node on a changed path is read and checked once, and each
    new node hashed once, about ``k * (log2(n) - log2(k)) + k`` of each for ``k`` changes to a map of ``n``
    keys. Raises InputError (a ValueError) for a root, key or value that is not well formed (before
    reading anything); NotFoundError when a node is missing; RootMismatchError when a stored node does not
    hash to its name; ProofError when the stored tree is not shaped as this module builds it.

    ``checked_reader`` says that ``read`` only ever returns nodes it has checked against their hashes (as
    ``ledger.completeness.MapReader`` does when it loads them), so they are not hashed again on every read.
    """
    check_hash(root, "root")
    if not changes:
        return root, {}
    batch = _Batch(changes, read, keep=True, checked=checked_reader)
    new_root = batch.apply(root, 0, 0, len(batch.keys))
    assert batch.created is not None
    return new_root, batch.created


def root_of(items: Mapping[bytes, SubjectHead]) -> bytes:
    """Return the root of the map holding exactly ``items`` (``EMPTY`` for none), built from scratch.

    Equals the root ``update`` reaches from ``EMPTY`` by any sequence of batches that ends with these
    values. Raises InputError (a ValueError) for a key or value that is not well formed.
    """
    if not items:
        return EMPTY
    batch = _Batch(items, None, keep=False)
    return batch.build(0, len(batch.keys), 0, None, EMPTY)
