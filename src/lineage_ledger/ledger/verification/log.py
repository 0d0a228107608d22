"""Log checks: the Merkle tree recomputed from the leaves (hashed in bulk), the stored tree nodes against it,
every checkpoint's signature and root, and the consistency proofs between checkpoints."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Final

from lineage_ledger.core.merkle import (
    TILE_STRIDE,
    CompactRange,
    TiledNodeReader,
    consistency_proof,
    verify_consistency,
)
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.verification.report import Problem, VerifyReport
from lineage_ledger.store.base import CheckpointRow

__all__ = [
    "TreeFeed",
    "check_checkpoint_roots",
    "check_trusted_checkpoint",
    "chunk_node_problems",
    "consistency_problems",
    "crossing_node_problems",
    "mth",
    "signed_checkpoints",
]

_sha256 = hashlib.sha256
_EMPTY_ROOT: Final = _sha256(b"").digest()
_TILE: Final = 1 << TILE_STRIDE


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH over leaf hashes, level by level: pairs from the left, an odd last node carried up
    unchanged. That is the same tree as the recursive definition (its left subtrees are the largest perfect
    ones), and a list comprehension per level costs a fraction of a Python-level push per leaf."""
    if not leaves:
        return _EMPTY_ROOT
    sha = _sha256
    nodes = leaves
    while len(nodes) > 1:
        pairs = iter(nodes)
        upper = [sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
        if len(nodes) & 1:
            upper.append(nodes[-1])
        nodes = upper
    return nodes[0]


class TreeFeed:
    """The chunk's CompactRange, fed in bulk: each whole aligned tile of 256 leaves is hashed level by level
    and merged as one node; only leaves outside whole tiles go through CompactRange.append. ``visit`` hears
    of every node the range creates at levels 8, 16, ..., as when appending leaf by leaf (of the nodes below
    level 8 only those outside whole tiles)."""

    __slots__ = ("pending", "range", "visit")

    def __init__(self, begin: int, visit: Callable[[int, int, bytes], None]) -> None:
        self.range = CompactRange(begin)
        self.visit = visit
        self.pending: list[bytes] = []

    @property
    def end(self) -> int:
        return self.range.end + len(self.pending)

    def flush(self, *, everything: bool) -> None:
        """Merge the pending leaves: all of them, or (``everything`` False) only up to the last whole tile."""
        tree, leaves, visit = self.range, self.pending, self.visit
        at, count = 0, len(leaves)
        while at < count and tree.end % _TILE:
            tree.append(leaves[at], visit)
            at += 1
        while count - at >= _TILE:
            first = tree.end
            node = mth(leaves[at : at + _TILE])
            visit(TILE_STRIDE, first >> TILE_STRIDE, node)
            tree.merge(CompactRange.from_hashes(first, first + _TILE, [node]), visit)
            at += _TILE
        if everything:
            for leaf in leaves[at:]:
                tree.append(leaf, visit)
            at = count
        del leaves[:at]

    def hashes(self) -> tuple[bytes, ...]:
        self.flush(everything=True)
        return self.range.hashes


# -- one chunk, in a worker --------------------------------------------------------------------------------


def chunk_node_problems(store: Any, start: int, end: int, computed: dict[tuple[int, int], bytes]) -> list[Problem]:
    """The stored tree nodes whose leaves all lie in [start, end) against the ``computed`` ones (levels 8, 16,
    ...): at each level the missing nodes or the first wrong one."""
    problems: list[Problem] = []
    for level in range(TILE_STRIDE, 64, TILE_STRIDE):
        first = -(-start // (1 << level))
        last_node = end // (1 << level)
        if first >= last_node:
            break
        try:
            stored = store.nodes(level, first, last_node - first)
        except LedgerError as e:
            problems.append(
                Problem("tree_node", f"stored tree nodes at level {level} are missing: {e}", first << level)
            )
            continue
        for i, digest in enumerate(stored):
            if computed.get((level, first + i)) != digest:
                problems.append(
                    Problem("tree_node", f"stored tree node ({level}, {first + i}) is wrong", (first + i) << level)
                )
                break
    return problems


def crossing_node_problems(store: Any, crossing: Sequence[tuple[int, int, bytes]]) -> list[Problem]:
    """The stored tree nodes above chunk boundaries, each (level, index, digest) as the coordinator
    computed it."""
    problems: list[Problem] = []
    for level, index, digest in crossing:
        try:
            stored = store.nodes(level, index, 1)[0]
        except LedgerError:
            stored = b""
        if stored != digest:
            problems.append(Problem("tree_node", f"stored tree node ({level}, {index}) is wrong", index << level))
    return problems


def signed_checkpoints(
    rows: Sequence[CheckpointRow], signing_key: Callable[[int], NoteVerifier], origin: str, size: int
) -> tuple[list[Checkpoint], list[Problem]]:
    """The stored checkpoints that are signed by the log key of their size, name this log and do not sign
    more entries than it holds; and the problems with the others."""
    signed: list[Checkpoint] = []
    problems: list[Problem] = []
    for row in rows:
        try:
            text, _ = open_note(row.note, [signing_key(row.size)])
            cp = Checkpoint.from_text(text)
        except LedgerError as e:
            problems.append(Problem("checkpoint", f"checkpoint {row.size}: {e}", None))
            continue
        if cp.size != row.size or cp.origin != origin:
            problems.append(Problem("checkpoint", f"checkpoint {row.size}: size or origin mismatch"))
            continue
        if cp.size > size:
            problems.append(
                Problem(
                    "truncation",
                    f"a checkpoint signs {cp.size} entries but the log holds {size}: entries were removed",
                    size,
                )
            )
            continue
        signed.append(cp)
    return signed, problems


def check_trusted_checkpoint(
    note: str,
    keys: Sequence[NoteVerifier],
    signing_key: Callable[[int], NoteVerifier],
    origin: str,
    size: int,
    report: VerifyReport,
) -> Checkpoint | None:
    """The checkpoint saved earlier, if it is signed by the log key of its size, names this log and is no
    longer than the log; else None, with the problem added to ``report`` (and its size, when it verifies)."""
    try:
        text, signers = open_note(note, keys)
        claimed = Checkpoint.from_text(text)
        if signing_key(claimed.size) not in signers:
            expected = signing_key(claimed.size)
            raise LedgerError(f"it is not signed by {expected}, the log key of tree size {claimed.size}")
    except LedgerError as e:
        report.problems.append(Problem("trusted_checkpoint", f"the trusted checkpoint does not verify: {e}"))
        return None
    report.trusted_size = claimed.size
    if claimed.origin != origin:
        report.problems.append(Problem("trusted_checkpoint", "the trusted checkpoint is of another log"))
        return None
    if claimed.size > size:
        report.problems.append(
            Problem(
                "truncation",
                f"the trusted checkpoint has {claimed.size} entries, the ledger only {size}: "
                "it was truncated or rolled back",
                size,
            )
        )
        return None
    return claimed


def check_checkpoint_roots(
    signed: Sequence[Checkpoint], trusted: Checkpoint | None, roots: dict[int, bytes], report: VerifyReport
) -> None:
    """Each signed checkpoint's root, and the trusted one's, against the ``roots`` recomputed from the leaves
    at their sizes; a problem is added to ``report`` as soon as found, and names the first bad entry the
    report knows of below the size, else the last entry the checkpoint covers."""
    for cp in signed:
        if roots.get(cp.size) != cp.root_hash:
            report.problems.append(
                Problem(
                    "checkpoint_root",
                    f"checkpoint {cp.size}: signed root does not match the entries (history rewritten)",
                    _first_index_hint(report, cp.size),
                )
            )
    if trusted is not None and roots.get(trusted.size) != trusted.root_hash:
        report.problems.append(
            Problem(
                "check_trusted_checkpoint",
                f"the ledger is not an append-only extension of the trusted checkpoint at size {trusted.size}",
                _first_index_hint(report, trusted.size),
            )
        )


def _first_index_hint(report: VerifyReport, size: int) -> int | None:
    bad = report.first_bad_index
    return bad if bad is not None and bad < size else max(0, size - 1)


def consistency_problems(store: Any, signed: Sequence[Checkpoint], trusted: Checkpoint | None) -> list[Problem]:
    """Consistency proofs built from the stored nodes between consecutive checkpoints (and the trusted one)."""
    reader = TiledNodeReader(store.nodes, stride=TILE_STRIDE)
    pairs = list(itertools.pairwise(signed))
    if trusted is not None and signed:
        pairs.append((trusted, signed[-1]))
    problems: list[Problem] = []
    for old, new in pairs:
        if old.size == 0 or old.size > new.size:
            continue
        try:
            proof = consistency_proof(old.size, new.size, reader)
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        except (LedgerError, ValueError) as e:
            problems.append(Problem("consistency", f"checkpoints {old.size} -> {new.size} are not consistent: {e}"))
    return problems
