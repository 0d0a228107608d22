"""RFC 9162 (section 2.1) Merkle trees over SHA-256: hashing, proof shape, proof verification, compact ranges.

Split the way transparency-dev/merkle is; every name below is importable from here:

* hashing (core.merkle_hashing): ``leaf_hash`` (0x00 prefix), ``node_hash`` (0x01 prefix), ``EMPTY_ROOT``,
  ``root_of``;
* proof shape: ``inclusion_proof``, ``consistency_proof`` and ``range_root`` name the O(log n) aligned
  perfect subtrees they need and fetch each through an injected ``NodeGetter``;
* verification: ``verify_inclusion``, ``root_from_inclusion``, ``verify_consistency`` (pure, no getter);
* appends (core.compact_range): ``CompactRange`` keeps the perfect-subtree hashes covering a leaf range
  and reports every node it creates, so a store can persist the levels it wants; ``TiledNodeReader``
  serves any perfect node from a store that keeps only leaf hashes and every ``stride``-th level.

A node is named by ``(level, index)``: the perfect subtree covering leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes.

Nothing here does I/O; reading nodes goes through the callables the caller passes in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from lineage_ledger.core.compact_range import TILE_STRIDE, CompactRange, TiledNodeReader
from lineage_ledger.core.merkle_hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    NODE_PREFIX,
    NodeGetter,
    NodeVisitor,
    fold_right,
    leaf_hash,
    node_hash,
    root_of,
)
from lineage_ledger.errors import InconsistencyError, InputError, ProofError, RootMismatchError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TILE_STRIDE",
    "CompactRange",
    "NodeGetter",
    "NodeVisitor",
    "TiledNodeReader",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "range_root",
    "root_from_inclusion",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

_sha256 = hashlib.sha256


# Proof shape ---------------------------------------------------------------------------------------------


def range_root(begin: int, end: int, node: NodeGetter) -> bytes:
    """Return MTH of leaves ``[begin, end)``, fetching O(log(end - begin)) perfect nodes through ``node``.

    Precondition: ``0 <= begin <= end`` and, when ``end - begin > 1``, ``begin`` is a multiple of the
    largest power of two smaller than ``end - begin`` (so the RFC 9162 split of the range lands on aligned
    perfect subtrees). Every range the RFC's recursion produces from a tree ``[0, n)`` qualifies: the
    whole tree, each perfect subtree, and every right-border subtree of a proof. An empty range returns
    ``EMPTY_ROOT``. Raises InputError (a ValueError) when the precondition does not hold.
    """
    if begin < 0 or end < begin:
        raise InputError("range", f"need 0 <= begin <= end, got [{begin}, {end})")
    size = end - begin
    if size > 1:
        split = 1 << ((size - 1).bit_length() - 1)
        if begin % split:
            raise InputError("begin", f"{begin} is not a multiple of {split}, the split of [{begin}, {end})")
    hashes: list[bytes] = []
    while size:
        # Take the largest aligned perfect subtree that starts at begin and fits. After the first one,
        # begin is aligned to every smaller power of two, so the rest follow the binary digits of size.
        level = size.bit_length() - 1
        if begin & ((1 << level) - 1):
            level -= 1  # a power-of-two size whose begin is aligned only to half of it
        hashes.append(node(level, begin >> level))
        begin += 1 << level
        size -= 1 << level
    return fold_right(hashes)


def _node_path(level: int, index: int, size: int, node: NodeGetter) -> list[bytes]:
    """Audit path from the perfect node ``(level, index)`` to the root of the tree of ``size`` leaves.

    The node must lie wholly inside the tree. The path lists siblings bottom-up, as RFC 9162's PATH does.
    """
    last = (size - 1) >> level
    inner = (index ^ last).bit_length()
    path: list[bytes] = []
    # Below the level where the paths to this node and to the last leaf meet, every sibling is perfect,
    # except the topmost, which holds the last leaf and may be incomplete.
    for i in range(inner):
        sibling = (index >> i) ^ 1
        sibling_level = level + i
        start = sibling << sibling_level
        stop = start + (1 << sibling_level)
        if stop <= size:
            path.append(node(sibling_level, sibling))
        else:
            path.append(range_root(start, size, node))
    # Above it the path runs along the right border, where only left siblings exist.
    upper = index >> inner
    i = inner
    while upper:
        if upper & 1:
            path.append(node(level + i, (index >> i) ^ 1))
        upper >>= 1
        i += 1
    return path


def inclusion_proof(index: int, size: int, node: NodeGetter) -> list[bytes]:
    """Return RFC 9162 PATH(index, D[size]): the audit path for leaf ``index`` in the tree of ``size``.

    Fetches O(log size) aligned perfect nodes through ``node``. Raises InputError (a ValueError) unless
    ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise InputError("index", f"need 0 <= index < size, got index {index}, size {size}")
    return _node_path(0, index, size, node)


def consistency_proof(old_size: int, new_size: int, node: NodeGetter) -> list[bytes]:
    """Return RFC 9162 PROOF(old_size, D[new_size]): the consistency proof between two tree sizes.

    Equal sizes give the empty proof. Fetches O(log new_size) aligned perfect nodes through ``node``.
    Raises InputError (a ValueError) unless ``0 < old_size <= new_size``: a proof from the empty tree says
    nothing, and transparency-dev/merkle rejects it too.
    """
    if not 0 < old_size <= new_size:
        raise InputError("old_size", f"need 0 < old_size <= new_size, got {old_size}, {new_size}")
    if old_size == new_size:
        return []
    # The largest perfect subtree ending at old_size; the proof is its hash (unless the old tree is that
    # very subtree, whose hash the verifier holds as the old root) and then its audit path.
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    path = _node_path(level, index, new_size, node)
    if index:
        path.insert(0, node(level, index))
    return path


# Verification --------------------------------------------------------------------------------------------


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for position, value in enumerate(proof):
        if len(value) != HASH_SIZE:
            raise ProofError(f"proof[{position}] is {len(value)} bytes, want {HASH_SIZE}")


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root that ``proof`` yields for leaf hash ``leaf`` at ``index`` in a tree of ``size``.

    The result means nothing until compared with a trusted root (``verify_inclusion`` does that). Raises
    ProofError when ``index`` is not in ``[0, size)``, the leaf hash or a proof hash is not 32 bytes, or
    the proof does not have the length RFC 9162 prescribes for ``(index, size)``.
    """
    if not 0 <= index < size:
        raise ProofError(f"index {index} is out of range for tree size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf)} bytes, want {HASH_SIZE}")
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    if len(proof) != inner + border:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, want {inner + border}")
    _check_proof_hashes(proof)
    sha = _sha256
    prefix = NODE_PREFIX
    result = leaf
    for i in range(inner):
        if (index >> i) & 1:
            result = sha(prefix + proof[i] + result).digest()
        else:
            result = sha(prefix + result + proof[i]).digest()
    for i in range(inner, len(proof)):
        result = sha(prefix + proof[i] + result).digest()
    return result


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that leaf hash ``leaf`` is at ``index`` in the tree of ``size`` leaves whose root is ``root``.

    Returns only if the proof is well formed and leads to ``root`` (RFC 9162 section 2.1.3.2). Raises
    ProofError for malformed input (see ``root_from_inclusion``; also a root that is not 32 bytes) and
    RootMismatchError, carrying ``root`` as expected and the recomputed root as calculated, otherwise.
    The size is bound through the root: callers take ``size`` and ``root`` from one signed checkpoint.
    """
    if len(root) != HASH_SIZE:
        raise ProofError(f"root is {len(root)} bytes, want {HASH_SIZE}")
    calculated = root_from_inclusion(leaf, index, size, proof)
    if calculated != root:
        raise RootMismatchError("inclusion proof does not lead to the root", root, calculated)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of ``old_size`` with ``old_root`` is a prefix of ``new_size`` with ``new_root``.

    Returns only if the proof shows it (RFC 9162 section 2.1.4.2), with the edge cases of
    transparency-dev/merkle: equal sizes need an empty proof and equal roots (compared as given); an old
    size of 0 is always rejected, since a proof from the empty tree proves nothing. Raises:

    * ProofError when ``old_size`` is not in ``(0, new_size]``, the proof has the wrong length, or a
      root or proof hash of a non-trivial proof is not 32 bytes;
    * InconsistencyError when the sizes are equal but the roots differ (two roots for one tree size);
    * RootMismatchError (expected, calculated) when the proof does not lead to ``old_root`` or to
      ``new_root``.
    """
    if new_size < old_size:
        raise ProofError(f"old size {old_size} is greater than new size {new_size}")
    if old_size <= 0:
        raise ProofError(f"no consistency proof exists from tree size {old_size}")
    if old_size == new_size:
        if proof:
            raise ProofError(f"sizes are equal but the proof has {len(proof)} hashes, want 0")
        if old_root != new_root:
            raise InconsistencyError(
                f"two different roots for tree size {old_size}: {old_root.hex()} and {new_root.hex()}"
            )
        return
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE:
        raise ProofError(f"roots are {len(old_root)} and {len(new_root)} bytes, want {HASH_SIZE}")
    # The proof is the hash of the largest perfect subtree ending at old_size (left out when it is the
    # whole old tree) followed by that subtree's audit path in the new tree.
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    inner = (index ^ ((new_size - 1) >> level)).bit_length()
    border = (index >> inner).bit_count()
    start = 1 if index else 0
    if len(proof) != start + inner + border:
        raise ProofError(f"consistency proof has {len(proof)} hashes, want {start + inner + border}")
    _check_proof_hashes(proof)
    sha = _sha256
    prefix = NODE_PREFIX
    seed = proof[0] if index else old_root
    old_hash = new_hash = seed
    for i in range(inner):
        sibling = proof[start + i]
        if (index >> i) & 1:
            old_hash = sha(prefix + sibling + old_hash).digest()
            new_hash = sha(prefix + sibling + new_hash).digest()
        else:
            # Right siblings hold only leaves added after old_size.
            new_hash = sha(prefix + new_hash + sibling).digest()
    for i in range(start + inner, len(proof)):
        old_hash = sha(prefix + proof[i] + old_hash).digest()
        new_hash = sha(prefix + proof[i] + new_hash).digest()
    if old_hash != old_root:
        raise RootMismatchError("consistency proof does not lead to the old root", old_root, old_hash)
    if new_hash != new_root:
        raise RootMismatchError("consistency proof does not lead to the new root", new_root, new_hash)
