"""The subject map's keys, values, nodes and their hashes (core.smt describes the tree), and the checked
reading of a node from a store. Used by its updates (core.smt) and proofs (core.smt_proof)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

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
    "HEX_PATTERN",
    "INTERIOR_PREFIX",
    "KEY_BITS",
    "LEAF_PREFIX",
    "TOP_BIT",
    "Interior",
    "Leaf",
    "Node",
    "NodeReader",
    "SubjectHead",
    "check_hash",
    "check_head",
    "check_leaf_position",
    "fetch",
    "interior_hash",
    "key_int",
    "key_of",
    "leaf_node_hash",
    "value_digest",
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
TOP_BIT = KEY_BITS - 1
HEX_PATTERN = re.compile(r"[0-9a-f]{64}\Z")


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


def check_hash(value: object, field: str) -> None:
    """InputError naming ``field`` unless ``value`` is HASH_SIZE bytes."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, bytes) else type(value).__name__
        raise InputError(field, f"must be {HASH_SIZE} bytes, got {size}")


def leaf_node_hash(key: bytes, value_hash: bytes) -> bytes:
    """Return the hash of the leaf node for ``key``: SHA-256(0x10 || key || value_hash), 32 bytes.

    Raises InputError (a ValueError) unless both inputs are 32 bytes.
    """
    check_hash(key, "key")
    check_hash(value_hash, "value_hash")
    return _sha256(LEAF_PREFIX + key + value_hash).digest()


def interior_hash(left: bytes, right: bytes) -> bytes:
    """Return the hash of the interior node over two child hashes: SHA-256(0x11 || left || right), 32 bytes.

    Raises InputError (a ValueError) unless both inputs are 32 bytes.
    """
    check_hash(left, "left")
    check_hash(right, "right")
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
        check_head(self, "value")

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
        check_head(self, "value")
        return value_digest(self)


def check_head(value: object, field: str) -> None:
    """InputError naming ``field`` (or its member) unless ``value`` is a valid SubjectHead."""
    if not isinstance(value, SubjectHead):
        raise InputError(field, f"must be a SubjectHead, got {type(value).__name__}")
    check_hash(value.head, f"{field}.head")
    count, index = value.count, value.index
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SAFE_INTEGER:
        raise InputError(f"{field}.count", f"must be an integer in [1, 2**53-1], got {count!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not count - 1 <= index <= MAX_SAFE_INTEGER:
        raise InputError(f"{field}.index", f"must be an integer in [count-1, 2**53-1], got {index!r}")


def value_digest(value: SubjectHead) -> bytes:
    """``value_hash`` without the checks, for values already checked."""
    return _sha256(value.head + value.count.to_bytes(8, "big") + value.index.to_bytes(8, "big")).digest()


@dataclass(frozen=True, slots=True)
class Leaf:
    """A leaf node: ``key`` (32 bytes) maps to ``value``. Construction checks both (InputError)."""

    key: bytes
    value: SubjectHead

    def __post_init__(self) -> None:
        check_hash(self.key, "key")
        check_head(self.value, "value")

    def node_hash(self) -> bytes:
        """Return this node's hash, ``leaf_node_hash(key, value.value_hash())``: the id it is stored under."""
        return _sha256(LEAF_PREFIX + self.key + value_digest(self.value)).digest()


@dataclass(frozen=True, slots=True)
class Interior:
    """An interior node naming its children by hash (``EMPTY`` for an empty side). Construction checks that
    both are 32 bytes (InputError)."""

    left: bytes
    right: bytes

    def __post_init__(self) -> None:
        check_hash(self.left, "left")
        check_hash(self.right, "right")

    def node_hash(self) -> bytes:
        """Return this node's hash, ``interior_hash(left, right)``: the id it is stored under."""
        return _sha256(INTERIOR_PREFIX + self.left + self.right).digest()


Node: TypeAlias = Leaf | Interior
"""A stored node. ``EMPTY`` is never stored: it is the hash of no node."""

NodeReader: TypeAlias = Callable[[bytes], Node]
"""``read(node_hash)`` returns the node stored under ``node_hash``; raises NotFoundError or KeyError when
there is none. Its answers are checked, so a store that returns the wrong node is caught."""


def key_int(key: bytes) -> int:
    """``key`` as a 256-bit integer, most significant bit first."""
    return int.from_bytes(key, "big")


def fetch(read: NodeReader, node_hash: bytes, depth: int, *, checked: bool = False) -> Node:
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
        calculated = _sha256(LEAF_PREFIX + node.key + value_digest(node.value)).digest()
    else:
        raise StoreError(f"the store returned a {type(node).__name__} for node {node_hash.hex()}")
    if calculated != node_hash:
        raise RootMismatchError(f"the stored node at depth {depth} does not hash to its name", node_hash, calculated)
    return node


def check_leaf_position(leaf: Leaf, path: int, depth: int) -> None:
    """A leaf at ``depth`` must share its first ``depth`` key bits with every key whose path reaches it."""
    if depth and (key_int(leaf.key) ^ path) >> (KEY_BITS - depth):
        raise ProofError(f"the leaf at depth {depth} holds key {leaf.key.hex()}, which is not on this path")
