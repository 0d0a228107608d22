"""Block checks: a seal entry against the entries of its block, and the chain of block headers."""

from __future__ import annotations

from dataclasses import dataclass

from lineage_ledger.core.entry import BLOCKS_SUBJECT, SealEntry
from lineage_ledger.ledger.verification.log import mth
from lineage_ledger.ledger.verification.report import Problem

__all__ = ["BlockSpan", "Seal", "block_problems", "header_chain_problem", "seal_column_problem"]


@dataclass(slots=True)
class Seal:
    """What the coordinator needs of a seal a chunk read: the header chain and the subject map's changes."""

    index: int
    number: int
    prev_header: str
    header_hash: bytes
    subjects_root: str
    touched: dict[bytes, tuple[bytes, int, int]]
    """Map key of each subject with entries in the block: (last leaf, entries in the block, last index)."""


@dataclass(slots=True)
class BlockSpan:
    """A block's entries as read: its first index, their leaf hashes and their HLC range."""

    first: int
    leaves: list[bytes]
    hlc_first: str
    hlc_last: str


def seal_column_problem(
    seal: SealEntry, idx: int, subject: object, event_id: object, parent: object, verdict: object
) -> Problem | None:
    """A seal's derived columns: the blocks subject, no event id or parent, verdict "ok"."""
    if subject != BLOCKS_SUBJECT or event_id is not None or parent is not None or verdict != "ok":
        return Problem("derived_column", f"seal {idx}: derived columns differ from its bytes", idx, seal.block.number)
    return None


def block_problems(seal: SealEntry, idx: int, span: BlockSpan, first_bad: int | None) -> list[Problem]:
    """The seal at ``idx`` against the block it closes: the range it covers, the root over exactly its
    entries and their HLC range. A wrong root is reported at ``first_bad`` (the first entry of the block
    already found bad, which explains it) or else at the seal itself."""
    h = seal.block
    blk = h.number
    problems: list[Problem] = []
    if h.first != span.first or h.last != idx - 1:
        problems.append(
            Problem("block", f"block {blk}: covers {h.first}..{h.last}, expected {span.first}..{idx - 1}", idx, blk)
        )
    if h.root != mth(span.leaves).hex():
        at = idx if first_bad is None else first_bad
        problems.append(Problem("block", f"block {blk}: root does not match its entries", at, blk))
    if h.hlc_first != span.hlc_first or h.hlc_last != span.hlc_last:
        problems.append(Problem("block", f"block {blk}: HLC range does not match its entries", idx, blk))
    return problems


def header_chain_problem(seal: Seal, number: int, prev_header: bytes) -> Problem | None:
    """A seal must carry the next block number and the hash of the previous block's header."""
    if seal.number != number or seal.prev_header != prev_header.hex():
        return Problem(
            "block", f"block {seal.number}: header chain broken at seal {seal.index}", seal.index, seal.number
        )
    return None
