"""Check a producer's saved receipt against a ledger: does the ledger still hold what its log key promised?

The receipt's promise is checked under the log key the producer holds, then the ledger is asked (through a
:class:`LedgerView`: the store itself, or the HTTP API in cli.receipt) for the entry at the receipt's index,
its latest signed checkpoint and the proofs that tie them. The outcome names what the ledger broke:

* ``dropped``: the log no longer reaches the promised index (a rolled-back or truncated copy);
* ``rewritten``: the entry at that index is not the promised one (rewritten, or a rollback re-extended
  with other entries: a fork);
* ``inconsistent``: the ledger's own signed checkpoint does not include the promised leaf at that index,
  or is not an extension of the tree the promise named;
* ``overdue``: the entry is held but no signed checkpoint covers it although the promise's deadline passed.

``sealed`` (covered by a signed checkpoint that includes it) and ``pending`` (held, deadline not reached)
are the good outcomes. ``bad_receipt``: the receipt itself does not check out, so it proves nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lineage_ledger.core.merkle import (
    TiledNodeReader,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note
from lineage_ledger.core.receipt import SavedReceipt
from lineage_ledger.errors import LedgerError, NotFoundError
from lineage_ledger.store.base import Store

__all__ = ["GOOD", "LedgerView", "ReceiptCheck", "StoreView", "check_receipt"]

GOOD = frozenset({"sealed", "pending"})
"""The outcomes in which the ledger kept its promise (so far)."""


class LedgerView(Protocol):
    """What a receipt check asks of a ledger."""

    def size(self) -> int | None:
        """Entries in the log, or None if this view cannot say (then a missing entry tells)."""
        ...

    def entry(self, index: int) -> bytes | None:
        """The entry's bytes, or None if the ledger holds no entry there."""
        ...

    def latest_checkpoint(self) -> str | None:
        """The latest signed checkpoint note, if any."""
        ...

    def inclusion(self, index: int, size: int) -> Sequence[bytes]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` (a signed checkpoint's)."""
        ...

    def consistency(self, old: int, new: int) -> Sequence[bytes] | None:
        """RFC 9162 consistency proof between two tree sizes, or None if this view cannot give one for
        ``old`` (the HTTP API proves only between signed checkpoints)."""
        ...


class StoreView:
    """A ledger's store, read directly (``lineage receipt verify --ledger URL``)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._reader = TiledNodeReader(store.nodes, stride=8)

    def size(self) -> int:
        """Entries in the log."""
        return self.store.size()

    def entry(self, index: int) -> bytes | None:
        """The stored entry bytes at ``index``, if any."""
        try:
            return self.store.entry(index).body
        except NotFoundError:
            return None

    def latest_checkpoint(self) -> str | None:
        """The latest stored checkpoint note."""
        row = self.store.latest_checkpoint()
        return row.note if row is not None else None

    def inclusion(self, index: int, size: int) -> Sequence[bytes]:
        """An inclusion proof built from the stored tree nodes."""
        return inclusion_proof(index, size, self._reader)

    def consistency(self, old: int, new: int) -> Sequence[bytes] | None:
        """A consistency proof built from the stored tree nodes."""
        return consistency_proof(old, new, self._reader)


@dataclass(frozen=True, slots=True)
class ReceiptCheck:
    """The outcome of checking one receipt; ``ok`` when the ledger kept its promise (so far)."""

    event_id: str
    index: int
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        """True for ``sealed`` and ``pending``."""
        return self.status in GOOD

    def to_json(self) -> dict[str, Any]:
        """A plain dict for --json output."""
        return {
            "event_id": self.event_id,
            "index": self.index,
            "status": self.status,
            "ok": self.ok,
            "detail": self.detail,
        }


def check_receipt(saved: SavedReceipt, verifier: NoteVerifier, view: LedgerView, now: str) -> ReceiptCheck:
    """Check ``saved`` against the ledger behind ``view``; ``now`` is an HLC reading for the deadline."""

    def outcome(status: str, detail: str) -> ReceiptCheck:
        return ReceiptCheck(saved.event_id, saved.index, status, detail)

    try:
        promise = saved.verify(verifier)
    except LedgerError as e:
        return outcome("bad_receipt", f"the receipt does not check out under the log key, so it proves nothing: {e}")
    index = saved.index
    promised = f"the log key promised entry {index} with leaf {saved.leaf.hex()[:16]}..."
    size = view.size()
    if size is not None and index >= size:
        return outcome("dropped", f"{promised}, but the ledger holds only {size} entries (rolled back or truncated)")
    body = view.entry(index)
    if body is None:
        return outcome("dropped", f"{promised}, but the ledger holds no entry {index} (deleted)")
    if leaf_hash(body) != saved.leaf:
        return outcome(
            "rewritten",
            f"{promised}, but the ledger's entry {index} has leaf {leaf_hash(body).hex()[:16]}... "
            "(rewritten, or a rollback re-extended with other entries)",
        )
    note = view.latest_checkpoint()
    if note is None or _covers(note, verifier) <= index:
        if now > promise.deadline:
            return outcome(
                "overdue",
                f"entry {index} is held, but no signed checkpoint covers it past the "
                f"promised deadline {promise.deadline}",
            )
        return outcome("pending", f"entry {index} is held as promised; no signed checkpoint covers it yet")
    text, _ = open_note(note, [verifier])
    checkpoint = Checkpoint.from_text(text)
    try:
        verify_inclusion(
            saved.leaf, index, checkpoint.size, view.inclusion(index, checkpoint.size), checkpoint.root_hash
        )
    except (LedgerError, ValueError) as e:
        return outcome(
            "inconsistent",
            f"the ledger's signed checkpoint of {checkpoint.size} entries does not "
            f"include the promised entry {index}: {e}",
        )
    if checkpoint.size >= promise.size:
        proof = view.consistency(promise.size, checkpoint.size)
        if proof is not None:
            try:
                verify_consistency(promise.size, checkpoint.size, promise.tree_root, checkpoint.root_hash, proof)
            except (LedgerError, ValueError) as e:
                return outcome(
                    "inconsistent",
                    f"the ledger's signed checkpoint of {checkpoint.size} entries does "
                    f"not extend the tree of {promise.size} entries the log key promised: {e}",
                )
    return outcome(
        "sealed",
        f"entry {index} is held as promised and included in the signed checkpoint of {checkpoint.size} entries",
    )


def _covers(note: str, verifier: NoteVerifier) -> int:
    text, _ = open_note(note, [verifier])
    return Checkpoint.from_text(text).size
