"""The coordinator's share: the chunks' results folded in log order into the checks that need the whole
log before them: chain links across chunks, the block header chain, the subject map roots, the verdicts,
the derived-index sums and the tree (with the roots at the checkpoints' sizes)."""

from __future__ import annotations

from lineage_ledger.core.entry import ZERO_HASH
from lineage_ledger.core.merkle import TILE_STRIDE, CompactRange
from lineage_ledger.ledger.verification.blocks import Seal, header_chain_problem
from lineage_ledger.ledger.verification.chains import Chains
from lineage_ledger.ledger.verification.chunk import ChunkResult
from lineage_ledger.ledger.verification.derived import Derived
from lineage_ledger.ledger.verification.report import Problem, VerifyReport
from lineage_ledger.ledger.verification.rollups import RollupCheck
from lineage_ledger.ledger.verification.subject_map import SubjectMap
from lineage_ledger.ledger.verification.verdicts import Verdicts

__all__ = ["Merge"]


class Merge:
    """Folds the chunk results, in log order, into the whole log's checks."""

    def __init__(self, report: VerifyReport, verdicts: Verdicts, links: Derived, index: Derived) -> None:
        self.report = report
        self.verdicts = verdicts
        self.links = links
        self.index = index
        self.chains = Chains()
        self.tree = CompactRange()
        self.roots: dict[int, bytes] = {0: self.tree.root()}
        self.prev_header = ZERO_HASH
        self.next_number = 0
        self.subject_map = SubjectMap()
        self.crossing: list[tuple[int, int, bytes]] = []
        self.contiguous = True
        self.envelopes: dict[bytes, int] = {}
        """Digest -> the index of the first entry naming the envelope."""
        self.rollups: RollupCheck | None = None
        """The stored daily rollups' check, when there are any."""

    def _visit(self, level: int, index: int, digest: bytes) -> None:
        if level % TILE_STRIDE == 0:
            self.crossing.append((level, index, digest))

    def absorb(self, res: ChunkResult) -> None:
        """Fold the next chunk's result (chunks come in log order)."""
        report = self.report
        report.problems.extend(res.problems)
        report.problems.extend(res.envelope_problems)
        for digest, first in res.envelopes:
            self.envelopes.setdefault(digest, first)
        self.chains.absorb(res.first_links, res.last_links, res.chain_breaks)
        self.verdicts.absorb(res.token_indices, res.token_verdicts, res.token_events, res.token_sizes)
        self.links.add(res.start, res.link_sum, res.links_above)
        self.index.add(res.start, res.index_sum, res.index_above)
        if self.rollups is not None:
            self.rollups.absorb(res.day_starts, res.rollups)
        self.contiguous = self.contiguous and res.start == self.tree.end
        for cut, hashes in sorted(res.cuts.items()):
            if not self.contiguous:
                break
            partial = self.tree.copy()
            partial.merge(CompactRange.from_hashes(res.start, cut, hashes))
            self.roots[cut] = partial.root()
        for seal in res.seals:
            self.seal(seal)
        if self.contiguous:
            self.tree.merge(CompactRange.from_hashes(res.start, res.end, res.hashes), self._visit)

    def seal(self, seal: Seal) -> None:
        """The next seal in the log: the header chain, and the subject map after its block."""
        if (found := header_chain_problem(seal, self.next_number, self.prev_header)) is not None:
            self.report.problems.append(found)
        if self.subject_map.advance(seal.touched) != seal.subjects_root:
            self.report.problems.append(
                Problem(
                    "subject_map",
                    f"block {seal.number}: subjects_root is not the map of chain heads after the block",
                    seal.index,
                    seal.number,
                )
            )
        self.prev_header = seal.header_hash
        self.next_number = seal.number + 1
