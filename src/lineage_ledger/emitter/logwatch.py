"""A producer's watch over the log it writes to: each checkpoint the ledger shows must extend the last one.

The ledger answers every batch with its latest signed checkpoint. :class:`LogWatch` keeps the newest one
seen and, when a newer one arrives, asks the ledger for a consistency proof between the two and checks it;
a smaller tree, or a proof that fails, means the ledger rolled back or forked its log after acknowledging
events to this producer. With the log key given, every checkpoint's and promise's signature is checked too.

Saying so loudly: the failure is logged at ERROR, counted (``inconsistencies``), handed to the
``on_inconsistency`` callback, and kept, so :meth:`LogWatch.check` raises it. Delivery is not stopped:
the receipts the producer keeps are the evidence (``lineage receipt verify``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from lineage_ledger.core.merkle import verify_consistency
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note
from lineage_ledger.core.receipt import SignedPromise
from lineage_ledger.errors import InconsistencyError, LedgerError, TransportError

__all__ = ["ConsistencyFetcher", "LogWatch"]

log = logging.getLogger("lineage_ledger.emitter")

ConsistencyFetcher = Callable[[int, int], Sequence[bytes]]
"""Returns the ledger's RFC 9162 consistency proof between two tree sizes it signed checkpoints for."""


def _parse(note: str, log_key: NoteVerifier | None) -> Checkpoint:
    if log_key is not None:
        text, _ = open_note(note, [log_key])
    else:
        split = note.rfind("\n\n")
        if split < 0:
            raise InconsistencyError("the ledger's checkpoint is not a signed note")
        text = note[: split + 1]
    return Checkpoint.from_text(text)


class LogWatch:
    """The newest checkpoint a ledger has shown this producer, and the first inconsistency seen, if any.

    Thread-safe. ``log_key``: the log's public key from outside the ledger (without it, checkpoints are
    compared but their signatures are not checked).
    """

    def __init__(
        self,
        fetch_consistency: ConsistencyFetcher,
        *,
        log_key: NoteVerifier | None = None,
        on_inconsistency: Callable[[InconsistencyError], object] | None = None,
    ) -> None:
        self._fetch = fetch_consistency
        self.log_key = log_key
        self._on_inconsistency = on_inconsistency
        self._lock = threading.Lock()
        self.latest: Checkpoint | None = None
        """The newest checkpoint seen and checked."""
        self.latest_note: str | None = None
        self.failure: InconsistencyError | None = None
        """The first inconsistency seen (kept until the process ends)."""
        self.inconsistencies = 0
        """How many inconsistencies were seen (a metric)."""

    def observe(self, note: str | None) -> None:
        """Check ``note``, the ledger's latest checkpoint, against the newest one seen. A transport failure
        while fetching the proof is left for the next observation; anything else is an inconsistency."""
        if not note:
            return
        with self._lock:
            try:
                self._observe(note)
            except TransportError as e:
                log.warning("could not fetch a consistency proof from the ledger (will retry): %s", e)
            except LedgerError as e:
                failure = e if isinstance(e, InconsistencyError) else InconsistencyError(str(e))
                self._fail(failure)

    def _observe(self, note: str) -> None:
        new = _parse(note, self.log_key)
        old = self.latest
        if old is not None:
            if new.origin != old.origin:
                raise InconsistencyError(f"the ledger's checkpoint is of log {new.origin!r}, not {old.origin!r}")
            if new.size < old.size:  # an answer that read its checkpoint before another's did, or a rollback
                self._consistent(new, old)
                return
            if new.size == old.size:
                if new.root_hash != old.root_hash:
                    raise InconsistencyError(f"two checkpoints of size {new.size} with different roots: a fork")
                return
            self._consistent(old, new)
        self.latest, self.latest_note = new, note

    def _consistent(self, old: Checkpoint, new: Checkpoint) -> None:
        """The ledger's proof that ``new`` extends ``old``; a missing checkpoint (404) or a wrong proof is an
        inconsistency, since the ledger signed and showed both."""
        if old.size == 0:
            return
        try:
            proof = self._fetch(old.size, new.size)
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        except TransportError:
            raise
        except (LedgerError, ValueError) as e:
            raise InconsistencyError(
                f"the ledger's checkpoints of {old.size} and {new.size} entries, both shown to this producer, are "
                f"not one append-only log (a rollback, or a fork re-extended after one): {e}"
            ) from e

    def check_promise(self, signed: SignedPromise) -> None:
        """With a log key: the promise must verify under it (a bad one counts as an inconsistency)."""
        if self.log_key is None:
            return
        try:
            signed.verify(self.log_key)
        except LedgerError as e:
            with self._lock:
                self._fail(InconsistencyError(f"the ledger's signed promise does not verify: {e}"))

    def _fail(self, failure: InconsistencyError) -> None:
        self.inconsistencies += 1
        if self.failure is None:
            self.failure = failure
        log.error("THE LEDGER'S LOG IS NOT CONSISTENT WITH WHAT IT SHOWED BEFORE: %s", failure)
        if self._on_inconsistency is not None:
            try:
                self._on_inconsistency(failure)
            except Exception:
                log.exception("the on_inconsistency callback failed")

    def check(self) -> None:
        """Raise the first inconsistency seen, if any."""
        if self.failure is not None:
            raise self.failure
