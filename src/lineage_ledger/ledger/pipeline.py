"""Pipelined commits: sequence the next group of batches while the store commits the previous one.

A durable commit is mostly waiting, for the disk's flush (SQLite's fsync) or the server's (PostgreSQL's
WAL flush), and the database drivers release the GIL while they wait. Sequencing is Python on the caller's
thread. Done one after the other the two add up; here one commit thread writes group k while the caller
checks and sequences group k+1 on top of the state group k will leave, so on two cores a group costs about
the larger of the two instead of their sum.

Nothing is answered before it is durable: a group's outcomes come back (from ``submit``, ``settle`` or
``drain``, always in submission order) only once its transaction has committed, and the ledger's listeners
hear of its entries at the same moment.

If a write fails, the groups sequenced on top of it are not written either (the commit thread skips them).
The ledger then reloads its state from the store and appends those groups again, one at a time and in their
order, with ``Ledger.append_together``: a group that repeats recorded events gets its duplicates and
conflicts sorted out exactly as there, and one whose write had in fact reached the store (a connection that
broke around COMMIT) comes back as duplicates. If that fails too (the store itself is failing: any
error but a conflict), the pipeline raises PipelineError naming that group and the ones after it, none of
which is written after the failure, and stays usable once the store is.

Writes made on the ledger outside the pipeline (key changes, seals, ticks, transport bookkeeping) first
let the pipeline's writes land, so the log's order is the order of the calls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from lineage_ledger.errors import ConflictError, InputError, LedgerError, StoreError
from lineage_ledger.ledger.writer import AppendResult, CheckedBatch, Ledger
from lineage_ledger.store.base import BatchWrite, OffsetRow

__all__ = ["Done", "Pipeline", "PipelineError"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """A group that landed: its caller's tag and, per batch, its result or the error that refused it."""

    tag: T
    outcomes: list[AppendResult | LedgerError]
    size: int
    """The log's size just after this group."""
    sealed_size: int
    """The sealed tree size just after this group."""


class PipelineError(StoreError):
    """Writing failed and appending again failed too: ``pending`` holds the tags of the groups whose outcome is
    unknown (not written, or written by a commit whose answer was lost), oldest first."""

    def __init__(self, message: str, pending: Sequence[object]) -> None:
        super().__init__(message)
        self.pending = list(pending)


class _Skipped(Exception):
    """A write not attempted because an earlier one failed."""


@dataclass(slots=True)
class _Group(Generic[T]):
    tag: T
    batches: list[CheckedBatch]
    offsets: list[list[OffsetRow]]
    results: list[AppendResult]
    write: BatchWrite
    size: int
    sealed_size: int
    future: Future[None] | None = field(default=None)


class Pipeline(Generic[T]):
    """Overlaps each group's durable commit with the sequencing of the next (see the module docstring).

    One caller thread drives it, as it drives the ledger. ``depth`` is how many groups may be committing or
    waiting to commit when ``submit`` returns: 1 overlaps one commit with the caller's next check and
    sequencing; more adds latency without adding overlap on two cores.
    """

    def __init__(self, ledger: Ledger, *, depth: int = 1) -> None:
        if depth < 1:
            raise InputError("depth", f"must be at least 1, not {depth}")
        self._ledger = ledger
        self._depth = depth
        self._flight: deque[_Group[T]] = deque()
        self._done: list[Done[T]] = []
        self._failed = False  # set on the commit thread when a write fails; later writes are skipped
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lineage-commit")
        self._closed = False
        ledger.attach_stage(self)

    @property
    def in_flight(self) -> int:
        """Groups sequenced whose commit has not been collected yet."""
        return len(self._flight)

    def submit(
        self, batches: Sequence[CheckedBatch], offsets: Sequence[Sequence[OffsetRow]] | None = None, *, tag: T
    ) -> list[Done[T]]:
        """Sequence ``batches`` (checked by ``Ledger.check``) as one group commit with each batch's transport
        positions, start writing them, and return the groups that have landed meanwhile, oldest first.

        Waits only while more than ``depth`` groups are in flight. A group too large to keep in the ledger's
        subject cache while it is in flight is appended synchronously instead (after what is in flight).
        """
        if self._closed:
            raise LedgerError("the pipeline is closed")
        positions = [list(rows) for rows in offsets] if offsets is not None else [[] for _ in batches]
        if len(positions) != len(batches):
            raise InputError("offsets", f"{len(positions)} lists of positions for {len(batches)} batches")
        if not batches:
            return self._take()
        ledger = self._ledger
        # the subjects of every group in flight must stay in the cache until they land (the store does not
        # have them yet): keep the groups in flight to half of it, with room for the cache's own eviction
        if sum(len(b.events) for b in batches) * (self._depth + 1) * 2 > ledger.settings.subject_cache:
            self.settle()
            outcomes = ledger.append_together(batches, positions)
            self._done.append(Done(tag, outcomes, ledger.size, ledger.sealed_size))
            return self._take()
        results, write = ledger.stage_together(batches, [row for rows in positions for row in rows])
        group = _Group(tag, list(batches), positions, results, write, ledger.size, ledger.sealed_size)
        group.future = self._thread.submit(self._write, write)
        self._flight.append(group)
        self._land(self._depth)
        return self._take()

    def settle(self) -> None:
        """Wait until everything in flight has landed; its outcomes come back from the next submit or drain."""
        self._land(0)

    def drain(self) -> list[Done[T]]:
        """Wait until everything in flight has landed and return every group not returned yet, oldest first."""
        self._land(0)
        return self._take()

    def close(self) -> None:
        """Let what is in flight land and stop the commit thread. Outcomes not collected with ``drain`` are
        dropped (they are durable: only the answers are lost)."""
        if self._closed:
            return
        try:
            self._land(0)
        finally:
            self._closed = True
            self._thread.shutdown(wait=True)
            self._ledger.detach_stage(self)

    def __enter__(self) -> Pipeline[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- on the commit thread ---------------------------------------------------------------------------

    def _write(self, batch: BatchWrite) -> None:
        if self._failed:
            raise _Skipped
        try:
            self._ledger.store.write(batch)
        except BaseException:
            self._failed = True
            raise

    # -- on the caller's thread -------------------------------------------------------------------------

    def _take(self) -> list[Done[T]]:
        done, self._done = self._done, []
        return done

    def _land(self, keep: int) -> None:
        """Collect the oldest groups' commits until at most ``keep`` are in flight."""
        ledger = self._ledger
        while len(self._flight) > keep:
            group = self._flight[0]
            assert group.future is not None
            try:
                group.future.result()
            except Exception:  # every failure of a write is handled by appending again
                self._recover()
                return
            self._flight.popleft()
            self._done.append(Done(group.tag, list(group.results), group.size, group.sealed_size))
            ledger.landed(group.write)

    def _recover(self) -> None:
        """A write failed: the rest in flight were skipped. Reload the ledger's state from the store and append
        every group in flight again, in order, synchronously."""
        groups = list(self._flight)
        self._flight.clear()
        for group in groups:  # the skipped ones finish at once; none is written after the failure
            assert group.future is not None
            group.future.exception()
        self._failed = False
        ledger = self._ledger
        ledger.discard_staged()  # the state adopted for the groups in flight is not the store's
        for i, group in enumerate(groups):
            before = _stored_size(ledger)
            try:
                outcomes = ledger.append_together(group.batches, group.offsets)
                # a batch refused for a recorded event id with other bytes is an answer; any other error
                # is the store failing, and the groups after it must not be written ahead of it
                failed = next((o for o in outcomes if isinstance(o, LedgerError) and not _refusal(o)), None)
                if failed is not None:
                    raise failed
            except LedgerError as e:
                pending = [g.tag for g in groups[i:]]
                raise PipelineError(f"appending failed: {e}; {_unstored(ledger, before, len(pending))}", pending) from e
            self._done.append(Done(group.tag, outcomes, ledger.size, ledger.sealed_size))


def _stored_size(ledger: Ledger) -> int | None:
    """The number of entries the store holds, or None if it cannot say."""
    try:
        return ledger.store.size()
    except LedgerError:
        return None


def _unstored(ledger: Ledger, before: int | None, count: int) -> str:
    """What became of the ``count`` groups left when the first of them failed to append (``before``: the
    store's size just before): each group is one transaction, and those after the first were not tried."""
    if before is not None and _stored_size(ledger) == before:
        return f"{count} group(s) not stored (the store holds nothing of them)"
    return f"{count} group(s) not acknowledged: the first may be stored (the store changed), the others are not"


def _refusal(error: LedgerError) -> bool:
    """An outcome that answers its batch (it was refused, nothing of it written) rather than a failure."""
    return isinstance(error, ConflictError)
