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
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from lineage_ledger.core.encoding import MAX_SAFE_INTEGER
from lineage_ledger.errors import (
    InputError,
    LedgerError,
    NotFoundError,
    ProofError,
    RootMismatchError,
    StoreError,
)

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

HASH_SIZE = 32
"""Length in bytes of keys, value hashes and node hashes (SHA-256)."""

KEY_BITS = 256
"""Bits in a key, and so the greatest depth of a node and the most siblings a proof can hold."""

EMPTY: bytes = bytes(HASH_SIZE)
"""Hash of a subtree with no leaves, and so the root of the empty map: 32 zero bytes."""

_sha256 = hashlib.sha256
LEAF_PREFIX: Final = b"\x10"
"""The first byte hashed into a leaf node: SHA-256(0x10 || key || value hash)."""
INTERIOR_PREFIX: Final = b"\x11"
"""The first byte hashed into an interior node: SHA-256(0x11 || left || right)."""
_TOP_BIT = KEY_BITS - 1
_HEX_PATTERN = re.compile(r"[0-9a-f]{64}\Z")


# Hashing -------------------------------------------------------------------------------------------------


def key_of(subject: str) -> bytes:
    """Return the map key of ``subject`` (such as ``"token:<hex>"``): SHA-256 of its UTF-8 bytes, 32 bytes.

    Raises InputError (a ValueError) if ``subject`` is not a string or holds a lone surrogate.
    """
    if not isinstance(subject, str):
        raise InputError("subject", "must be a string")
    try:
        data = subject.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError("subject", "holds a lone surrogate, which is not valid UTF-8") from e
    return _sha256(data).digest()


def _check_hash(value: object, field: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, bytes) else type(value).__name__
        raise InputError(field, f"must be {HASH_SIZE} bytes, got {size}")


def leaf_node_hash(key: bytes, value_hash: bytes) -> bytes:
    """Return the hash of the leaf node for ``key``: SHA-256(0x10 || key || value_hash), 32 bytes.

    Raises InputError (a ValueError) unless both inputs are 32 bytes.
    """
    _check_hash(key, "key")
    _check_hash(value_hash, "value_hash")
    return _sha256(LEAF_PREFIX + key + value_hash).digest()


def interior_hash(left: bytes, right: bytes) -> bytes:
    """Return the hash of the interior node over two child hashes: SHA-256(0x11 || left || right), 32 bytes.

    Raises InputError (a ValueError) unless both inputs are 32 bytes.
    """
    _check_hash(left, "left")
    _check_hash(right, "right")
    return _sha256(INTERIOR_PREFIX + left + right).digest()


# Values and nodes ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubjectHead:
    """What the map holds for one subject: the head of its hash chain. Construction checks the rules below
    and raises InputError (a ValueError).

    ``head`` is the RFC 9162 leaf hash of the subject's latest entry (32 bytes), ``count`` the number of
    its entries (at least 1: a subject with no entries is absent from the map, so "no events" has exactly
    one proof), ``index`` the log index of its latest entry (at least ``count - 1``, since the entries sit
    at distinct indices). ``count`` and ``index`` are at most 2**53 - 1, so they travel as JSON integers.

    A dataclass rather than a NamedTuple: as tuple fields, ``count`` and ``index`` would hide the tuple
    methods of the same names, and a NamedTuple cannot check itself on construction.
    """

    head: bytes
    count: int
    index: int

    def __post_init__(self) -> None:
        _check_head(self, "value")

    def value_hash(self) -> bytes:
        """Return the hash the leaf commits to: SHA-256 of 48 bytes, laid out as

        ======  =====  ===============================
        offset  bytes  field
        ======  =====  ===============================
        0       32     head
        32      8      count, unsigned big-endian
        40      8      index, unsigned big-endian
        ======  =====  ===============================

        Raises InputError (a ValueError) if the fields were forced past the construction checks.
        """
        _check_head(self, "value")
        return _value_digest(self)


def _check_head(value: object, field: str) -> None:
    if not isinstance(value, SubjectHead):
        raise InputError(field, f"must be a SubjectHead, got {type(value).__name__}")
    _check_hash(value.head, f"{field}.head")
    count, index = value.count, value.index
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SAFE_INTEGER:
        raise InputError(f"{field}.count", f"must be an integer in [1, 2**53-1], got {count!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not count - 1 <= index <= MAX_SAFE_INTEGER:
        raise InputError(f"{field}.index", f"must be an integer in [count-1, 2**53-1], got {index!r}")


def _value_digest(value: SubjectHead) -> bytes:
    """``value_hash`` without the checks, for values already checked."""
    return _sha256(value.head + value.count.to_bytes(8, "big") + value.index.to_bytes(8, "big")).digest()


@dataclass(frozen=True, slots=True)
class Leaf:
    """A leaf node: ``key`` (32 bytes) maps to ``value``. Construction checks both (InputError)."""

    key: bytes
    value: SubjectHead

    def __post_init__(self) -> None:
        _check_hash(self.key, "key")
        _check_head(self.value, "value")

    def node_hash(self) -> bytes:
        """Return this node's hash, ``leaf_node_hash(key, value.value_hash())``: the id it is stored under."""
        return _sha256(LEAF_PREFIX + self.key + _value_digest(self.value)).digest()


@dataclass(frozen=True, slots=True)
class Interior:
    """An interior node naming its children by hash (``EMPTY`` for an empty side). Construction checks that
    both are 32 bytes (InputError)."""

    left: bytes
    right: bytes

    def __post_init__(self) -> None:
        _check_hash(self.left, "left")
        _check_hash(self.right, "right")

    def node_hash(self) -> bytes:
        """Return this node's hash, ``interior_hash(left, right)``: the id it is stored under."""
        return _sha256(INTERIOR_PREFIX + self.left + self.right).digest()


Node: TypeAlias = Leaf | Interior
"""A stored node. ``EMPTY`` is never stored: it is the hash of no node."""

NodeReader: TypeAlias = Callable[[bytes], Node]
"""``read(node_hash)`` returns the node stored under ``node_hash``; raises NotFoundError or KeyError when
there is none. Its answers are checked, so a store that returns the wrong node is caught."""


def _key_int(key: bytes) -> int:
    return int.from_bytes(key, "big")


def _fetch(read: NodeReader, node_hash: bytes, depth: int, *, checked: bool = False) -> Node:
    """Read the node stored under ``node_hash`` and check that it hashes to ``node_hash`` (unless the reader
    has ``checked`` it already)."""
    try:
        node = read(node_hash)
    except LedgerError:
        raise
    except LookupError as e:
        raise NotFoundError(f"node {node_hash.hex()} at depth {depth} is not in the store") from e
    if checked:
        if not isinstance(node, Leaf | Interior):
            raise StoreError(f"the store returned a {type(node).__name__} for node {node_hash.hex()}")
        return node
    if isinstance(node, Interior):
        calculated = _sha256(INTERIOR_PREFIX + node.left + node.right).digest()
    elif isinstance(node, Leaf):
        calculated = _sha256(LEAF_PREFIX + node.key + _value_digest(node.value)).digest()
    else:
        raise StoreError(f"the store returned a {type(node).__name__} for node {node_hash.hex()}")
    if calculated != node_hash:
        raise RootMismatchError(f"the stored node at depth {depth} does not hash to its name", node_hash, calculated)
    return node


def _check_leaf_position(leaf: Leaf, path: int, depth: int) -> None:
    """A leaf at ``depth`` must share its first ``depth`` key bits with every key whose path reaches it."""
    if depth and (_key_int(leaf.key) ^ path) >> (KEY_BITS - depth):
        raise ProofError(f"the leaf at depth {depth} holds key {leaf.key.hex()}, which is not on this path")


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
            _check_hash(key, "changes key")
            _check_head(value, f"changes[{key.hex()}]")
        items = sorted(changes.items())
        self.keys = [key for key, _ in items]
        self.values = [value for _, value in items]
        self.ints = [_key_int(key) for key in self.keys]
        self.read = read
        self.checked = checked
        self.created: dict[bytes, Node] | None = {} if keep else None

    def _split(self, lo: int, hi: int, depth: int) -> int:
        """Index of the first key in ``[lo, hi)`` with bit ``depth`` set (the keys share bits above it)."""
        shift = _TOP_BIT - depth
        return bisect_left(self.ints, ((self.ints[lo] >> shift) | 1) << shift, lo, hi)

    def apply(self, node_hash: bytes, depth: int, lo: int, hi: int) -> bytes:
        """Return the hash of the subtree at ``node_hash`` after the changes ``[lo, hi)`` (not empty)."""
        if node_hash == EMPTY:
            return self.build(lo, hi, depth, None, EMPTY)
        assert self.read is not None
        node = _fetch(self.read, node_hash, depth, checked=self.checked)
        if isinstance(node, Leaf):
            _check_leaf_position(node, self.ints[lo], depth)
            resident = _key_int(node.key)
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
                leaf_hash = _sha256(LEAF_PREFIX + key + _value_digest(value)).digest()
                # Only the old leaf itself can equal a new leaf here: same key, same value.
                if leaf_hash != old_leaf and self.created is not None:
                    self.created[leaf_hash] = _made_leaf(key, value)
                return leaf_hash
        elif count == 0:
            return old_leaf  # the old leaf, moved down unchanged: same node, nothing to store
        shift = _TOP_BIT - depth
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
    _check_hash(root, "root")
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


# Reading and proving -------------------------------------------------------------------------------------


def _descend(root: bytes, key: bytes, read: NodeReader) -> tuple[list[bytes], Leaf | None]:
    """Follow ``key``'s path from ``root``; return the siblings passed and the leaf at the end, if any."""
    _check_hash(root, "root")
    _check_hash(key, "key")
    path = _key_int(key)
    siblings: list[bytes] = []
    node_hash = root
    depth = 0
    while node_hash != EMPTY:
        node = _fetch(read, node_hash, depth)
        if isinstance(node, Leaf):
            _check_leaf_position(node, path, depth)
            return siblings, node
        if depth >= KEY_BITS:
            raise ProofError(f"the store holds an interior node at depth {depth}, below the deepest key bit")
        if (path >> (_TOP_BIT - depth)) & 1:
            siblings.append(node.left)
            node_hash = node.right
        else:
            siblings.append(node.right)
            node_hash = node.left
        depth += 1
    return siblings, None


def lookup(root: bytes, key: bytes, read: NodeReader) -> SubjectHead | None:
    """Return the value of ``key`` in the map with ``root``, or None when the key is absent.

    Every node read is checked against its parent's hash, so the answer is the one ``root`` commits to,
    and the one ``prove`` would prove. Raises InputError for a root or key that is not 32 bytes;
    NotFoundError, RootMismatchError or ProofError as ``update`` does.
    """
    _, leaf = _descend(root, key, read)
    if leaf is not None and leaf.key == key:
        return leaf.value
    return None


def _check_proof(proof: MapProof) -> None:
    if not isinstance(proof.key, bytes) or len(proof.key) != HASH_SIZE:
        raise ProofError(f"the proof's key must be {HASH_SIZE} bytes")
    if not isinstance(proof.siblings, tuple):
        raise ProofError("the proof's siblings must be a tuple")
    if len(proof.siblings) > KEY_BITS:
        raise ProofError(f"the proof has {len(proof.siblings)} siblings; a path has at most {KEY_BITS}")
    for position, sibling in enumerate(proof.siblings):
        if not isinstance(sibling, bytes) or len(sibling) != HASH_SIZE:
            raise ProofError(f"sibling {position} of the proof is not {HASH_SIZE} bytes")
    if proof.terminal is not None:
        if not isinstance(proof.terminal, Leaf):
            raise ProofError("the proof's terminal must be a Leaf or None")
        try:
            _check_hash(proof.terminal.key, "terminal.key")
            _check_head(proof.terminal.value, "terminal.value")
        except InputError as e:
            raise ProofError(f"the proof's terminal leaf is malformed: {e}") from e


@dataclass(frozen=True, slots=True)
class MapProof:
    """The path of ``key`` from a root: the sibling hashes from the root downwards, and ``terminal``, the
    node where the path ends: the key's own leaf (membership), or another key's leaf or None for an empty
    subtree (non-membership).

    Construction checks the shape (a 32-byte key, at most 256 siblings of 32 bytes each, a well-formed
    terminal leaf) and raises ProofError; only ``verify`` says whether the proof is true.
    """

    key: bytes
    siblings: tuple[bytes, ...]
    terminal: Leaf | None

    def __post_init__(self) -> None:
        _check_proof(self)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for evidence bundles: hashes as lowercase hex, integers as JSON integers::

        {"key": hex, "siblings": [hex, ...],
         "terminal": null | {"key": hex, "head": hex, "count": int, "index": int}}
        """
        terminal = self.terminal
        return {
            "key": self.key.hex(),
            "siblings": [sibling.hex() for sibling in self.siblings],
            "terminal": None
            if terminal is None
            else {
                "key": terminal.key.hex(),
                "head": terminal.value.head.hex(),
                "count": terminal.value.count,
                "index": terminal.value.index,
            },
        }

    @classmethod
    def from_json(cls, data: object) -> MapProof:
        """Parse what ``to_json`` produces (as decoded by a JSON parser); the inverse of ``to_json``.

        Strict: exactly the fields ``to_json`` writes, lowercase hex, integers that are not booleans.
        Raises ProofError for anything else.
        """
        fields = _json_object(data, "proof", {"key", "siblings", "terminal"})
        siblings = fields["siblings"]
        if not isinstance(siblings, list):
            raise ProofError("proof.siblings must be a list")
        if len(siblings) > KEY_BITS:
            raise ProofError(f"the proof has {len(siblings)} siblings; a path has at most {KEY_BITS}")
        raw = fields["terminal"]
        terminal = None
        if raw is not None:
            leaf = _json_object(raw, "proof.terminal", {"key", "head", "count", "index"})
            for name in ("count", "index"):
                if isinstance(leaf[name], bool) or not isinstance(leaf[name], int):
                    raise ProofError(f"proof.terminal.{name} must be an integer")
            head = _json_hash(leaf["head"], "proof.terminal.head")
            leaf_key = _json_hash(leaf["key"], "proof.terminal.key")
            try:
                terminal = Leaf(leaf_key, SubjectHead(head, leaf["count"], leaf["index"]))
            except InputError as e:
                raise ProofError(f"proof.terminal is malformed: {e}") from e
        return cls(
            _json_hash(fields["key"], "proof.key"),
            tuple(_json_hash(sibling, f"proof.siblings[{i}]") for i, sibling in enumerate(siblings)),
            terminal,
        )


def _json_object(data: object, field: str, names: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProofError(f"{field} must be a JSON object")
    if set(data) != names:
        raise ProofError(f"{field} must have exactly the fields {sorted(names)}, got {sorted(map(str, data))}")
    return data


def _json_hash(text: object, field: str) -> bytes:
    if not isinstance(text, str) or not _HEX_PATTERN.match(text):
        raise ProofError(f"{field} must be {2 * HASH_SIZE} lowercase hex digits")
    return bytes.fromhex(text)


def prove(root: bytes, key: bytes, read: NodeReader) -> MapProof:
    """Return the proof of what ``key`` maps to under ``root``: its value if present, its absence if not.

    The proof ``verify`` accepts for ``lookup(root, key, read)``; it holds one sibling per interior node on
    the key's path. Raises as ``lookup`` does.
    """
    siblings, leaf = _descend(root, key, read)
    return MapProof(key, tuple(siblings), leaf)


def verify(root: bytes, key: bytes, value: SubjectHead | None, proof: MapProof) -> None:
    """Return only if ``proof`` shows that, in the map with ``root``, ``key`` maps to ``value`` (None: the key
    is absent).

    Raises ProofError when the proof is malformed, is for another key, or shows something else: another
    value, a present key claimed absent, an absent key (an empty subtree or another key's leaf) claimed
    present; when its terminal leaf's key leaves the path its siblings trace; or when it is not the
    canonical proof (its last sibling is ``EMPTY``, so its terminal would have been a shortcut one level
    up). Raises RootMismatchError (expected, calculated) when the siblings do not lead to ``root``.
    """
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise ProofError(f"the root must be {HASH_SIZE} bytes")
    if not isinstance(proof, MapProof):
        raise ProofError(f"the proof must be a MapProof, got {type(proof).__name__}")
    _check_proof(proof)  # again: a frozen dataclass can still be forced
    if proof.key != key:
        raise ProofError("the proof is for another key")
    if value is not None:
        try:
            _check_head(value, "value")
        except InputError as e:
            raise ProofError(f"the claimed value is malformed: {e}") from e
    siblings = proof.siblings
    depth = len(siblings)
    path = _key_int(key)
    terminal = proof.terminal
    if terminal is None:
        if value is not None:
            raise ProofError("the proof ends in an empty subtree: the key is absent, not present")
        node_hash = EMPTY
    else:
        _check_leaf_position(terminal, path, depth)
        if terminal.key == key:
            if value is None:
                raise ProofError("the proof ends at the key's own leaf: the key is present, not absent")
            if terminal.value != value:
                raise ProofError("the proof shows another value for the key")
        elif value is not None:
            raise ProofError("the proof ends at another key's leaf: the key is absent, not present")
        node_hash = terminal.node_hash()
    if depth and siblings[-1] == EMPTY:
        raise ProofError("the proof's last sibling is empty, so its terminal is not where the tree keeps it")
    sha = _sha256
    prefix = INTERIOR_PREFIX
    for depth_above in range(depth - 1, -1, -1):
        sibling = siblings[depth_above]
        if (path >> (_TOP_BIT - depth_above)) & 1:
            node_hash = sha(prefix + sibling + node_hash).digest()
        else:
            node_hash = sha(prefix + node_hash + sibling).digest()
    if node_hash != root:
        raise RootMismatchError("the map proof does not lead to the root", root, node_hash)
