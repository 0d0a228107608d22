"""What a verification check reports: a Problem, and the VerifyReport the driver adds them to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["MAX_PROBLEMS", "Problem", "VerifyReport"]

MAX_PROBLEMS: Final = 50
"""Problems of one kind of check reported at most (the first ones, in log order)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One way the ledger fails to check out."""

    kind: str
    message: str
    index: int | None = None
    block: int | None = None


@dataclass(slots=True)
class VerifyReport:
    """The outcome of verify_ledger; ``ok`` is True only if nothing at all was found."""

    url: str
    size: int = 0
    blocks: int = 0
    checkpoints: int = 0
    envelopes: int = 0
    chains_checked: bool = False
    verdicts: int = 0
    """Token events whose lifecycle verdict was judged again."""
    map_nodes: int = 0
    """Subject-map nodes read from the store and checked against their hashes (the newest stored map's)."""
    key_source: str = ""
    trusted_size: int | None = None
    since: int | None = None
    """The first entry checked when only the entries since a trusted checkpoint were (verification.since);
    None for a full verification."""
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.problems

    @property
    def checked(self) -> int:
        """How many entries were checked: all of them, or those from ``since`` on."""
        return self.size - (self.since or 0)

    @property
    def first_bad_index(self) -> int | None:
        """The lowest entry index any problem names."""
        indices = [p.index for p in self.problems if p.index is not None]
        return min(indices) if indices else None

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "ok": self.ok,
            "url": self.url,
            "size": self.size,
            "blocks": self.blocks,
            "checkpoints": self.checkpoints,
            "envelopes": self.envelopes,
            "verdicts": self.verdicts,
            "map_nodes": self.map_nodes,
            "key_source": self.key_source,
            "trusted_size": self.trusted_size,
            **({} if self.since is None else {"since": self.since, "checked": self.checked}),
            "first_bad_index": self.first_bad_index,
            "problems": [
                {"kind": p.kind, "message": p.message, "index": p.index, "block": p.block} for p in self.problems
            ],
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.checked / self.seconds) if self.seconds else None,
        }
