"""Appends to RFC 9162 trees: compact ranges, and reading any perfect node from a store that keeps only
some levels.

``CompactRange`` keeps the perfect-subtree hashes covering a leaf range and reports every node it creates, so
a store can persist the levels it wants; ``TiledNodeReader`` serves any perfect node from a store that keeps
only leaf hashes and every ``stride``-th level. Nothing here does I/O; reading goes through a callable.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from lineage_ledger.core.merkle_hashing import (
    HASH_SIZE,
    NODE_PREFIX,
    NodeVisitor,
    check_hash,
    fold_right,
)
from lineage_ledger.errors import InputError, StoreError

__all__ = ["TILE_STRIDE", "CompactRange", "TiledNodeReader"]

_sha256 = hashlib.sha256


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
                value = _sha256(NODE_PREFIX + hashes.pop() + value).digest()
                index >>= 1
        else:
            held = len(hashes)
            level = 0
            while index & 1:
                held -= 1
                value = _sha256(NODE_PREFIX + hashes[held] + value).digest()
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
        prefix = NODE_PREFIX
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
            value = _sha256(NODE_PREFIX + hashes[held] + value).digest()
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
        return fold_right(self._hashes)

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
            check_hash(value, f"hashes[{position}]")
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
        prefix = NODE_PREFIX
        while len(hashes) > 1:
            hashes = [sha(prefix + hashes[i] + hashes[i + 1]).digest() for i in range(0, len(hashes), 2)]
        value = hashes[0]
        if self._cache_size:
            cache[key] = value
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return value
