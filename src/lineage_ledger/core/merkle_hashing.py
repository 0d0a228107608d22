"""RFC 9162 (section 2.1) Merkle tree hashing over SHA-256: leaf and interior node hashes, the empty tree,
the root of a list of leaf hashes. The proofs (core.merkle) and compact ranges (core.compact_range) build on
these; nothing here does I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

from lineage_ledger.errors import InputError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "NodeGetter",
    "NodeVisitor",
    "check_hash",
    "fold_right",
    "leaf_hash",
    "node_hash",
    "root_of",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""Root of the tree with no leaves: SHA-256 of the empty string."""

NodeGetter: TypeAlias = Callable[[int, int], bytes]
"""``node(level, index)`` returns the hash of the perfect subtree covering leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 returns leaf hashes. It is only asked for nodes
whose leaves all exist."""

NodeVisitor: TypeAlias = Callable[[int, int, bytes], None]
"""``visit(level, index, hash)``: told about each perfect interior node a compact range creates."""

_sha256 = hashlib.sha256
LEAF_PREFIX: Final = b"\x00"
"""Prefix of a leaf hash's input."""
NODE_PREFIX: Final = b"\x01"
"""Prefix of an interior node hash's input."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash of ``data``: SHA-256(0x00 || data), 32 bytes."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior-node hash SHA-256(0x01 || left || right), 32 bytes.

    The inputs are hashed as given; callers pass 32-byte child hashes.
    """
    return _sha256(NODE_PREFIX + left + right).digest()


def check_hash(value: bytes, field: str) -> None:
    """InputError naming ``field`` unless ``value`` is HASH_SIZE bytes long."""
    if len(value) != HASH_SIZE:
        raise InputError(field, f"must be {HASH_SIZE} bytes, got {len(value)}")


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash a left-to-right list of subtree hashes into one root, right to left.

    For the canonical decomposition of ``[0, n)`` (or of any range ``range_root`` accepts) this is the MTH.
    """
    if not hashes:
        return EMPTY_ROOT
    sha = _sha256
    prefix = NODE_PREFIX
    root = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        root = sha(prefix + hashes[i] + root).digest()
    return root


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return MTH over ``leaf_hashes`` (already leaf-hashed, 32 bytes each); ``EMPTY_ROOT`` for none.

    Raises InputError (a ValueError) if any hash is not 32 bytes.
    """
    sha = _sha256
    prefix = NODE_PREFIX
    stack: list[bytes] = []
    push = stack.append
    pop = stack.pop
    for position, item in enumerate(leaf_hashes):
        if len(item) != HASH_SIZE:
            raise InputError(f"leaf_hashes[{position}]", f"must be {HASH_SIZE} bytes, got {len(item)}")
        count, value = position, item
        # The stack holds the perfect subtrees of [0, count): one per set bit of count, so adding a leaf
        # merges once for every trailing one bit.
        while count & 1:
            value = sha(prefix + pop() + value).digest()
            count >>= 1
        push(value)
    return fold_right(stack)
