"""Chain checks: every per-subject hash chain (token, asset, policy, producer-key and seal chains) links, each
entry's stored prev being the stored leaf of the subject's previous entry (64 zeros for its first).
Inside a chunk the worker follows the links (ledger.verification.chunk); ``Chains`` joins the chunks."""

from __future__ import annotations

from typing import Any, Final

from lineage_ledger.core.entry import ZERO_HASH
from lineage_ledger.ledger.verification.report import Problem

__all__ = ["MAX_CHAIN_BREAKS", "Chains"]

MAX_CHAIN_BREAKS: Final = 10
"""Chain breaks reported at most, as many as the store's own chain query reports."""


class Chains:
    """Joins the chunks' chain links: a subject's first entry in a chunk must link to its last leaf in the
    chunks before (zeros if none). Reports the first breaks in log order, as many as the store's own
    chain query reports."""

    def __init__(self) -> None:
        self.heads: dict[Any, Any] = {}
        self.breaks: list[tuple[int, Any]] = []

    def absorb(
        self, first_links: dict[Any, tuple[int, Any]], last_links: dict[Any, Any], breaks: list[tuple[int, Any]]
    ) -> None:
        """The next chunk's links: per subject column the (index, prev column) of its first entry in the chunk
        and the leaf column of its last, and the (index, subject) of the links broken inside the chunk."""
        heads = self.heads
        for subject, (idx, prev) in first_links.items():
            if prev != heads.get(subject, ZERO_HASH):
                self.breaks.append((idx, subject))
        heads.update(last_links)
        self.breaks.extend(breaks)

    def problems(self) -> list[Problem]:
        """The first breaks, in log order."""
        first = sorted(self.breaks, key=lambda br: br[0])[:MAX_CHAIN_BREAKS]
        return [
            Problem("chain", f"entry {idx}: chain of {subject} is broken (prev does not link)", idx)
            for idx, subject in first
        ]
