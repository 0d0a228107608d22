"""RFC 9162 (section 2.1) Merkle trees over SHA-256: hashing, proof shape, proof verification, compact ranges.

The module is split the way transparency-dev/merkle is:

* hashing: ``leaf_hash`` (0x00 prefix), ``node_hash`` (0x01 prefix), ``EMPTY_ROOT``, ``root_of``;
* proof shape: ``inclusion_proof``, ``consistency_proof`` and ``range_root`` name the O(log n) aligned
  perfect subtrees they need and fetch each through an injected ``NodeGetter``;
* verification: ``verify_inclusion``, ``root_from_inclusion``, ``verify_consistency`` (pure, no getter);
* appends: ``CompactRange`` keeps the perfect-subtree hashes covering a leaf range and reports every node
  it creates, so a store can persist the levels it wants; ``TiledNodeReader`` serves any perfect node
  from a store that keeps only leaf hashes and every ``stride``-th level.

A node is named by ``(level, index)``: the perfect subtree covering leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes.

Nothing here does I/O; reading nodes goes through the callables the caller passes in.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeAlias

from lineage_ledger.errors import InconsistencyError, InputError, ProofError, RootMismatchError, StoreError

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
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash of ``data``: SHA-256(0x00 || data), 32 bytes."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior-node hash SHA-256(0x01 || left || right), 32 bytes.

    The inputs are hashed as given; callers pass 32-byte child hashes.
    """
    return _sha256(_NODE_PREFIX + left + right).digest()


def _check_hash(value: bytes, field: str) -> None:
    if len(value) != HASH_SIZE:
        raise InputError(field, f"must be {HASH_SIZE} bytes, got {len(value)}")


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash a left-to-right list of subtree hashes into one root, right to left.

    For the canonical decomposition of ``[0, n)`` (or of any range ``range_root`` accepts) this is the MTH.
    """
    if not hashes:
        return EMPTY_ROOT
    sha = _sha256
    prefix = _NODE_PREFIX
    root = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        root = sha(prefix + hashes[i] + root).digest()
    return root


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return MTH over ``leaf_hashes`` (already leaf-hashed, 32 bytes each); ``EMPTY_ROOT`` for none.

    Raises InputError (a ValueError) if any hash is not 32 bytes.
    """
    sha = _sha256
    prefix = _NODE_PREFIX
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
    return _fold_right(stack)


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
    return _fold_right(hashes)


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
    prefix = _NODE_PREFIX
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
    prefix = _NODE_PREFIX
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


# Compact ranges ------------------------------------------------------------------------------------------


class CompactRange:
    """The hashes of the perfect subtrees that exactly cover leaves ``[begin, end)``, left to right.

    The covering is the canonical one (each subtree is maximal: its parent would reach outside the
    range), as in transparency-dev/merkle's ``compact.Range``, so ``len(hashes)`` is O(log(end - begin))
    and the hashes are the same whichever way the range was built. A range starting at 0 yields the tree
    root. Appends are amortised one node hash per leaf.
    """

    __slots__ = ("_begin", "_end", "_hashes")

    def __init__(self, begin: int = 0) -> None:
        if begin < 0:
            raise InputError("begin", f"must be >= 0, got {begin}")
        self._begin = begin
        self._end = begin
        self._hashes: list[bytes] = []

    @property
    def begin(self) -> int:
        """Index of the first leaf covered."""
        return self._begin

    @property
    def end(self) -> int:
        """Index one past the last leaf covered; the next leaf appended gets this index."""
        return self._end

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The covering subtree hashes, left to right, in the order ``decompose(begin, end)`` names them."""
        return tuple(self._hashes)

    def __len__(self) -> int:
        return self._end - self._begin

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return (self._begin, self._end, self._hashes) == (other._begin, other._end, other._hashes)

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable

    def __repr__(self) -> str:
        return f"CompactRange(begin={self._begin}, end={self._end}, hashes={len(self._hashes)})"

    def append(self, leaf_hash: bytes, visit: NodeVisitor | None = None) -> None:
        """Add one leaf hash (32 bytes) at index ``end``.

        ``visit(level, index, hash)`` is called, bottom-up, for every perfect interior node (level >= 1)
        this creates, so a range built leaf by leaf reports each of its interior nodes once. If ``visit``
        raises, the range is left unchanged (a retry reports those nodes again). Raises InputError (a
        ValueError) if the hash is not 32 bytes, leaving the range unchanged.
        """
        if len(leaf_hash) != HASH_SIZE:
            raise InputError("leaf_hash", f"must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
        end = self._end
        if self._begin:
            self._push(0, end, leaf_hash, visit)
            self._end = end + 1
            return
        # From 0 the covering is one subtree per set bit of end, so the new leaf merges once for every
        # trailing one bit of its index. This is _push without the begin check, for the hot path.
        hashes = self._hashes
        index = end
        value = leaf_hash
        if visit is None:
            while index & 1:
                value = _sha256(_NODE_PREFIX + hashes.pop() + value).digest()
                index >>= 1
        else:
            held = len(hashes)
            level = 0
            while index & 1:
                held -= 1
                value = _sha256(_NODE_PREFIX + hashes[held] + value).digest()
                index >>= 1
                level += 1
                visit(level, index, value)
            del hashes[held:]
        hashes.append(value)
        self._end = end + 1

    def append_many(self, leaf_hashes: Iterable[bytes], visit: NodeVisitor | None = None) -> None:
        """Append each leaf hash in order, as ``append`` would; stops at the first bad hash, with the
        leaves before it appended."""
        if self._begin != 0 or visit is not None:
            for value in leaf_hashes:
                self.append(value, visit)
            return
        hashes = self._hashes
        push = hashes.append
        pop = hashes.pop
        sha = _sha256
        prefix = _NODE_PREFIX
        end = self._end
        try:
            for item in leaf_hashes:
                if len(item) != HASH_SIZE:
                    raise InputError("leaf_hash", f"must be {HASH_SIZE} bytes, got {len(item)}")
                value = item
                index = end
                end += 1
                while index & 1:
                    value = sha(prefix + pop() + value).digest()
                    index >>= 1
                push(value)
        finally:
            self._end = end

    def _push(self, level: int, index: int, value: bytes, visit: NodeVisitor | None) -> None:
        """Add the perfect node ``(level, index)``, which starts at ``end``, merging it leftwards.

        The held hashes change only after every ``visit`` call returned, so a raising visitor leaves the
        hashes as they were.
        """
        hashes = self._hashes
        begin = self._begin
        held = len(hashes)
        # The node merges with its left sibling while it is a right child and the sibling lies inside
        # the range; the sibling is then the last hash held.
        while index & 1 and (index - 1) << level >= begin:
            held -= 1
            value = _sha256(_NODE_PREFIX + hashes[held] + value).digest()
            index >>= 1
            level += 1
            if visit is not None:
                visit(level, index, value)
        del hashes[held:]
        hashes.append(value)

    def merge(self, other: CompactRange, visit: NodeVisitor | None = None) -> None:
        """Extend this range by ``other``, which must start at ``self.end``; ``other`` is left unchanged.

        ``visit`` is told about every perfect interior node the merge creates; if it raises, this range
        is left covering a valid prefix of the merged range. Raises InputError (a ValueError) if the ranges
        are not adjacent.
        """
        if other._begin != self._end:
            raise InputError("other", f"begins at {other._begin}, not at this range's end {self._end}")
        nodes = self.decompose(other._begin, other._end)
        for (level, index), value in zip(nodes, list(other._hashes), strict=True):
            self._push(level, index, value, visit)
            self._end = (index + 1) << level

    def root(self) -> bytes:
        """Return MTH of leaves ``[0, end)``; ``EMPTY_ROOT`` when empty.

        Raises InputError (a ValueError) when ``begin`` is not 0: such a range does not determine a root.
        """
        if self._begin != 0:
            raise InputError("begin", f"a root needs a range starting at 0, not {self._begin}")
        return _fold_right(self._hashes)

    def copy(self) -> CompactRange:
        """Return an independent range with the same begin, end and hashes."""
        duplicate = CompactRange.__new__(CompactRange)
        duplicate._begin = self._begin
        duplicate._end = self._end
        duplicate._hashes = list(self._hashes)
        return duplicate

    @classmethod
    def from_hashes(cls, begin: int, end: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild a range from its ``hashes`` (left to right, as ``hashes`` returns them).

        Raises InputError (a ValueError) when ``0 <= begin <= end`` fails, when the number of hashes is not
        the number of subtrees in the canonical covering of ``[begin, end)``, or when a hash is not 32
        bytes. The hash values themselves cannot be checked here.
        """
        if not 0 <= begin <= end:
            raise InputError("range", f"need 0 <= begin <= end, got [{begin}, {end})")
        want = len(cls.decompose(begin, end))
        if len(hashes) != want:
            raise InputError("hashes", f"[{begin}, {end}) is covered by {want} subtrees, got {len(hashes)}")
        for position, value in enumerate(hashes):
            _check_hash(value, f"hashes[{position}]")
        result = cls(begin)
        result._end = end
        result._hashes = list(hashes)
        return result

    @staticmethod
    def decompose(begin: int, end: int) -> list[tuple[int, int]]:
        """Return ``(level, index)`` of each perfect subtree in the canonical covering of ``[begin, end)``.

        Left to right: sizes first grow, then shrink. Empty for an empty range. Raises InputError (a
        ValueError) unless ``0 <= begin <= end``.
        """
        if not 0 <= begin <= end:
            raise InputError("range", f"need 0 <= begin <= end, got [{begin}, {end})")
        left: list[tuple[int, int]] = []
        right: list[tuple[int, int]] = []
        level = 0
        while begin < end:
            if begin & 1:
                left.append((level, begin))
                begin += 1
            if end & 1 and begin < end:
                end -= 1
                right.append((level, end))
            begin >>= 1
            end >>= 1
            level += 1
        right.reverse()
        return left + right


# Tiled node storage --------------------------------------------------------------------------------------

TILE_STRIDE: Final = 8
"""The ledger's stores keep the perfect nodes of every TILE_STRIDE-th level (8, 16, ...) beside the leaf
hashes: what the writer stores, the verifier checks and TiledNodeReader reads back."""


class TiledNodeReader:
    """A ``NodeGetter`` over a store that keeps leaf hashes and the perfect nodes of every ``stride``-th
    level (0, stride, 2 * stride, ...), such as a store fed by ``CompactRange.append``'s visitor.

    ``read(level, start, count)`` must return the stored hashes of nodes ``start .. start + count - 1`` at
    a stored level. A node at a stored level costs one read of one hash; a node ``d`` levels above its
    nearest stored level costs one read of ``2**d <= 2**(stride - 1)`` hashes and ``2**d - 1`` node
    hashes. The last ``cache_size`` nodes served are kept (perfect nodes never change). Raises StoreError if
    ``read`` returns the wrong number of hashes; errors ``read`` raises pass through.
    """

    __slots__ = ("_cache", "_cache_size", "_read", "_stride")

    def __init__(
        self,
        read: Callable[[int, int, int], Sequence[bytes]],
        stride: int = 8,
        cache_size: int = 4096,
    ) -> None:
        if stride < 1:
            raise InputError("stride", f"must be >= 1, got {stride}")
        if cache_size < 0:
            raise InputError("cache_size", f"must be >= 0, got {cache_size}")
        self._read = read
        self._stride = stride
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    @property
    def stride(self) -> int:
        """Distance between stored levels."""
        return self._stride

    def __call__(self, level: int, index: int) -> bytes:
        """Return the hash of the perfect node ``(level, index)``; the node must exist in the store."""
        if level < 0 or index < 0:
            raise InputError("node", f"no node at level {level}, index {index}")
        key = (level, index)
        cache = self._cache
        cached = cache.get(key)
        if cached is not None:
            cache.move_to_end(key)
            return cached
        above = level % self._stride
        base = level - above
        count = 1 << above
        hashes = list(self._read(base, index << above, count))
        if len(hashes) != count:
            raise StoreError(f"read({base}, {index << above}, {count}) returned {len(hashes)} hashes")
        sha = _sha256
        prefix = _NODE_PREFIX
        while len(hashes) > 1:
            hashes = [sha(prefix + hashes[i] + hashes[i + 1]).digest() for i in range(0, len(hashes), 2)]
        value = hashes[0]
        if self._cache_size:
            cache[key] = value
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return value
