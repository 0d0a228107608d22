"""Which tier answered a query: the hot store, the archive, or both, and any range expired under retention.

``with tiers_of(store) as tiers:`` around the reads of one answer; ``tiers.to_json()`` gives the ``tier``
(and ``expired``) fields of ``--json`` output, ``tiers.describe()`` the note under the text output. A
question whose subject exists only in expired ranges is reported as expired under its policy (ExpiredError),
never as a bare "not found".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lineage_ledger.errors import ExpiredError, NotFoundError
from lineage_ledger.store.base import ExpiryRow, Store

__all__ = ["Tiers", "tiers_of"]


@dataclass(slots=True)
class Tiers:
    """The tiers one answer was read from."""

    names: list[str] = field(default_factory=lambda: ["hot"])
    expired: list[ExpiryRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``tier``: the tiers read ("hot", "archive"); ``expired``: ranges past retention the answer touched."""
        out: dict[str, Any] = {"tier": self.names}
        if self.expired:
            out["expired"] = [
                {"first": e.first, "last": e.last, "policy": e.policy, "record": e.record} for e in self.expired
            ]
        return out

    def describe(self) -> str:
        """A one-line note for text output."""
        text = "answered from: " + (" + ".join(self.names) or "hot")
        for e in self.expired:
            text += f"; entries {e.first}..{e.last} expired under retention policy {e.policy!r} (record at {e.record})"
        return text


@contextmanager
def tiers_of(store: Store) -> Iterator[Tiers]:
    """Collect the tiers the reads inside the block draw from (a store without an archive is all hot)."""
    tiers = Tiers()
    take = getattr(store, "take_report", None)
    if take is None:
        yield tiers
        return
    take()
    try:
        yield tiers
    except NotFoundError as e:
        report = take()
        if report.expired and not isinstance(e, ExpiredError):
            first = report.expired[0]
            raise ExpiredError(first.first, first.last, first.policy, first.record) from e
        raise
    report = take()
    tiers.names = report.names() or ["hot"]
    tiers.expired = report.expired
