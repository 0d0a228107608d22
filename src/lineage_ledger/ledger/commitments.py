"""Checks of what the log key signed beside the log: its promises and its chain of checkpoints.

Each acknowledgement the writer gave carries a signed promise (core.receipt) stored in the ``promises``
table, and each seal made a signed checkpoint stored in ``checkpoints``. These checks find what the entry
checks of ledger.verify cannot see on their own:

* :func:`promise_problems`: every stored promise verifies under the log key, its entries are present
  (entries acknowledged and then removed from the tail, which no checkpoint covered yet, are caught here),
  their leaf hashes have the promised root, the log's root at the promise's size is the promised
  ``tree_root``, and promises follow each other with nothing but seal entries between them and after the
  last one (an entry no promise covers was never acknowledged: slipped in);
* :func:`checkpoint_chain_problems`: every seal entry has the checkpoint of its size and every checkpoint
  belongs to a seal, so a deleted checkpoint row is a gap (signature, root and consistency of each
  checkpoint are ledger.verify's own checks).

Whoever rewrites the database can delete promises together with the entries they cover; that is caught by
the producers holding receipts (``lineage receipt verify``), not here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple, Protocol

from lineage_ledger.core.merkle import CompactRange, NodeGetter, TiledNodeReader, root_of
from lineage_ledger.core.note import NoteVerifier
from lineage_ledger.core.receipt import Promise, SignedPromise
from lineage_ledger.errors import LedgerError
from lineage_ledger.store.base import CheckpointRow, PromiseRow

__all__ = [
    "CommitmentProblem",
    "checkpoint_chain_problems",
    "commitment_problems",
    "promise_problems",
    "tree_root_at",
]

TILE_STRIDE: Final = 8
_SHOWN: Final = 10
"""Problems of one kind reported in full; the rest are counted in one more line."""


class CommitmentProblem(NamedTuple):
    """One way the signed commitments and the log disagree (ledger.verify reports it as a Problem)."""

    kind: str
    message: str
    entry: int | None
    """The lowest log index concerned."""


class _Reads(Protocol):
    def promises(self, start_first: int = -(1 << 63)) -> list[PromiseRow]: ...
    def leaf_hashes(self, start: int, count: int) -> list[bytes]: ...
    def nodes(self, level: int, start: int, count: int) -> list[bytes]: ...


def tree_root_at(size: int, node: NodeGetter) -> bytes:
    """The RFC 9162 root of the log's first ``size`` entries, from perfect-subtree hashes."""
    return CompactRange.from_hashes(0, size, [node(level, i) for level, i in CompactRange.decompose(0, size)]).root()


def _capped(problems: list[CommitmentProblem]) -> list[CommitmentProblem]:
    if len(problems) <= _SHOWN:
        return problems
    rest = len(problems) - _SHOWN
    return [*problems[:_SHOWN], CommitmentProblem(problems[0].kind, f"... and {rest} more", problems[_SHOWN].entry)]


def promise_problems(
    store: _Reads, signing_key: Callable[[int], NoteVerifier], origin: str, size: int, seal_indices: Iterable[int]
) -> list[CommitmentProblem]:
    """The stored promises against the log of ``size`` entries (see the module docstring). ``signing_key(n)``
    is the log key in force for a tree of size n (log keys can be rotated): a promise is signed by the key of
    the tree its commit made, as a checkpoint of that size would be."""
    seals = set(seal_indices)
    reader = TiledNodeReader(store.nodes, stride=TILE_STRIDE)
    problems: list[CommitmentProblem] = []
    expected_next: int | None = None
    for row in store.promises():
        promise = _opened(row, signing_key(row.first + row.length), origin, problems)
        if promise is None:  # reported; its stated range still counts as covered, so no gap follows from it
            expected_next = row.first + row.length
            continue
        if expected_next is not None:
            _between(expected_next, promise.first, seals, problems)
        expected_next = promise.first + promise.count
        if promise.size > size:
            missing = max(promise.first, size)
            problems.append(
                CommitmentProblem(
                    "promise_missing",
                    f"entries {missing}..{promise.size - 1} were acknowledged with a signed promise but the log "
                    f"holds only {size} entries: acknowledged entries were removed",
                    missing,
                )
            )
            continue
        try:
            leaves = store.leaf_hashes(promise.first, promise.count)
            if root_of(leaves) != promise.leaves_root:
                problems.append(
                    CommitmentProblem(
                        "promise_leaves",
                        f"entries {promise.first}..{promise.size - 1} are not the entries the log key promised "
                        "(rewritten after acknowledgement)",
                        promise.first,
                    )
                )
            elif tree_root_at(promise.size, reader) != promise.tree_root:
                problems.append(
                    CommitmentProblem(
                        "promise_tree",
                        f"the log's root at size {promise.size} is not the one promised: an earlier entry changed",
                        promise.first,
                    )
                )
        except LedgerError as e:
            problems.append(CommitmentProblem("promise_missing", f"promise at {promise.first}: {e}", promise.first))
    if expected_next is not None and expected_next <= size:
        _between(expected_next, size, seals, problems, tail=True)
    return _capped(problems)


def _opened(row: PromiseRow, verifier: NoteVerifier, origin: str, problems: list[CommitmentProblem]) -> Promise | None:
    try:
        promise = SignedPromise.from_json(row.promise).verify(verifier)
    except LedgerError as e:
        problems.append(
            CommitmentProblem("promise", f"the promise stored at {row.first} does not verify: {e}", row.first)
        )
        return None
    if (promise.first, promise.count) != (row.first, row.length) or promise.log != origin:
        problems.append(
            CommitmentProblem(
                "promise", f"the promise stored at {row.first} is filed under the wrong range or log", row.first
            )
        )
        return None
    return promise


def _between(start: int, end: int, seals: set[int], problems: list[CommitmentProblem], *, tail: bool = False) -> None:
    """Entries start .. end-1 lie between two promises (or after the last): only seals may."""
    if end < start:
        problems.append(CommitmentProblem("promise", f"two stored promises both cover entry {end}", end))
        return
    unpromised = next((i for i in range(start, end) if i not in seals), None)
    if unpromised is not None:
        where = "after the last signed promise" if tail else "between two signed promises"
        problems.append(
            CommitmentProblem(
                "unpromised",
                f"entry {unpromised} lies {where} and no promise covers it: it was never acknowledged "
                "(slipped in), or the promise that covered it was deleted",
                unpromised,
            )
        )


def checkpoint_chain_problems(
    seal_indices: Sequence[int], checkpoints: Sequence[CheckpointRow]
) -> list[CommitmentProblem]:
    """Every seal entry has the checkpoint of size ``seal index + 1`` and every checkpoint belongs to a seal."""
    sizes = {row.size for row in checkpoints}
    problems = [
        CommitmentProblem(
            "checkpoint_missing",
            f"the seal at entry {i} signed a checkpoint of size {i + 1} that is no longer stored "
            "(a checkpoint was deleted)",
            i,
        )
        for i in seal_indices
        if i + 1 not in sizes
    ]
    sealed = {i + 1 for i in seal_indices}
    problems.extend(
        CommitmentProblem(
            "checkpoint_unsealed", f"the checkpoint of size {size} has no seal entry at {size - 1}", size - 1
        )
        for size in sorted(sizes - sealed)
    )
    return _capped(problems)


def commitment_problems(
    store: _Reads,
    signing_key: Callable[[int], NoteVerifier],
    origin: str,
    size: int,
    seal_indices: Sequence[int],
    checkpoints: Sequence[CheckpointRow],
) -> list[CommitmentProblem]:
    """Both checks of this module, for ledger.verify's driver."""
    return [
        *promise_problems(store, signing_key, origin, size, seal_indices),
        *checkpoint_chain_problems(seal_indices, checkpoints),
    ]
