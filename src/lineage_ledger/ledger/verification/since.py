"""Verification since a trusted checkpoint: the entries appended after a checkpoint the caller verified
earlier and kept, at a cost that follows the new entries, not the history before them.

The trusted checkpoint is a signed note the caller saved (``lineage checkpoint > cp.note`` after a full
``lineage verify``): its signature under the log key is the only thing trusted. From it:

* the ledger extends it: the stored tree nodes before the cut, with the leaves read after it, give the
  trusted root at its size; each newer signed checkpoint's root is recomputed the same way; a consistency
  proof built from the stored nodes leads from the trusted checkpoint to the newest one;
* every entry from the cut on (the block boundary at or before the trusted size) gets every check a full
  verification makes of it (verification.chunk): leaf hash, derived columns, envelope and signature, blocks
  and the chain of block headers (from the cut's seal on), stored tree nodes;
* each subject's chain links to its head at the cut, and each new seal's subject map root is the map at the
  cut (stored, every node checked against its hash) with the new blocks applied (verification.cut);
* each lifecycle verdict is judged again from the token's state at the cut (verification.cut);
* the derived rows the new entries give: their revocations, their lineage links (every derived link stored,
  and no stored link for the same keys at or after the cut that the entries do not give), the subject
  index rows of the tokens they touch, the envelope rows they name, and the subject-map nodes of the new
  seals.

What it does not prove: anything about entries before the cut beyond what the trusted root commits to.
A change to their bytes is caught only where a new entry's check reads them (a chain head, a token's state);
a change to their derived rows (links, index rows, revocations of earlier entries) is not looked for. That
is the full verification's job (``lineage verify``), which a caller runs when they take a new trusted
checkpoint. See docs/verification.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from lineage_ledger.core.entry import BLOCKS_SUBJECT
from lineage_ledger.core.lifecycle import LifecyclePolicy
from lineage_ledger.core.merkle import CompactRange
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note
from lineage_ledger.core.routing import local_tokens
from lineage_ledger.errors import InputError, LedgerError
from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.ledger.verification.blocks import Seal, header_chain_problem
from lineage_ledger.ledger.verification.cut import Cut, CutChains, CutMap, CutVerdicts, prefix_range, read_cut
from lineage_ledger.ledger.verification.derived import Derived, IndexCheck, links_below, revocation_problems
from lineage_ledger.ledger.verification.log import (
    check_checkpoint_roots,
    consistency_problems,
    crossing_node_problems,
    signed_checkpoints,
)
from lineage_ledger.ledger.verification.merge import Merge
from lineage_ledger.ledger.verification.report import Problem, VerifyReport
from lineage_ledger.ledger.verification.setup import (
    LogKeys,
    log_keys,
    meta_problems,
    producer_keyring,
    recorded_policy,
)
from lineage_ledger.ledger.verification.since_rows import envelope_row_problems, link_problems, subject_row_problems
from lineage_ledger.ledger.verification.workers import chunk_ranges, chunk_results, start_method
from lineage_ledger.store import open_store

__all__ = ["verify_since"]

_TARGET_CHUNK = 16_384
"""Entries per chunk (the range is cut at block boundaries)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """What is read before the entries: the trusted checkpoint, the cut, the newer signed checkpoints."""

    meta: dict[str, str]
    policy: LifecyclePolicy
    size: int
    trusted: Checkpoint
    cut: Cut
    prefix: CompactRange
    seal_indices: list[int]
    signed: list[Checkpoint]
    keyring: Keyring
    links_below: int


def verify_since(
    url: str,
    trusted_note: str,
    *,
    verifier: NoteVerifier | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Verify the entries of the ledger at ``url`` appended since the checkpoint ``trusted_note`` (a signed
    note kept from an earlier verification); see the module docstring for what that proves.

    Raises InputError when the note cannot be used: it does not parse, is not signed by the log key of its
    size, names another log, or has more entries than the ledger holds (the ledger was truncated or rolled
    back since, or it is another ledger's). ``verifier`` is the log's key from outside the database, as for
    verify_ledger.
    """
    started = time.perf_counter()
    report = VerifyReport(url=url)
    plan = _plan(url, trusted_note, verifier, report)
    if plan is None:
        return report
    report.since = plan.cut.index
    store = _OpenLater(url)
    try:
        merge = _check_entries(url, plan, store, workers, progress, report)
        _check_after_entries(store, plan, merge, report)
    finally:
        store.close()
    report.problems.sort(key=lambda p: (p.index is None, p.index or 0))
    report.seconds = time.perf_counter() - started
    return report


def _plan(url: str, note: str, verifier: NoteVerifier | None, report: VerifyReport) -> _Plan | None:
    store = open_store(url, readonly=True)
    try:
        meta = store.meta()
        if found := meta_problems(meta):
            report.problems.extend(found)
            return None
        keys = log_keys(store, verifier, report)
        size = store.size()
        report.size = size
        trusted = _trusted(note, keys, meta["origin"], size)
        report.trusted_size = trusted.size
        seal_indices = [row.index for row in store.subject_entries([BLOCKS_SUBJECT])]
        start = max((i + 1 for i in seal_indices if i < trusted.size), default=0)
        try:
            cut = read_cut(store, start, trusted.size, trusted.root_hash)
            prefix = prefix_range(store, start)
        except (LedgerError, ValueError) as e:
            report.problems.append(
                Problem("trusted_checkpoint", f"the ledger is not an extension of the trusted checkpoint: {e}", start)
            )
            return None
        rows = store.checkpoints(trusted.size)
        report.checkpoints = len(rows)
        signed, found = signed_checkpoints(rows, keys.signing_key, meta["origin"], size)
        report.problems.extend(found)
        if trusted.size and not rows:
            report.problems.append(
                Problem(
                    "truncation",
                    f"the ledger holds no signed checkpoint of {trusted.size} entries or more: checkpoints removed",
                )
            )
        keyring = producer_keyring(store, report)
        below = links_below(store, max((cp.size for cp in signed), default=0))
        return _Plan(
            meta,
            recorded_policy(meta, report),
            size,
            trusted,
            cut,
            prefix,
            [i for i in seal_indices if i >= start],
            signed,
            keyring,
            start if below is None else max(below, start),
        )
    finally:
        store.close()


def _trusted(note: str, keys: LogKeys, origin: str, size: int) -> Checkpoint:
    """The trusted checkpoint, or InputError saying why it cannot be used."""
    try:
        text, signers = open_note(note, keys.keys)
        claimed = Checkpoint.from_text(text)
    except LedgerError as e:
        raise InputError("since", f"the trusted checkpoint is not a checkpoint signed by this log's key: {e}") from e
    if claimed.origin != origin:
        raise InputError("since", f"the trusted checkpoint is of the log {claimed.origin!r}, not {origin!r}")
    if keys.signing_key(claimed.size) not in signers:
        raise InputError("since", f"the trusted checkpoint is not signed by the log key of tree size {claimed.size}")
    if claimed.size > size:
        raise InputError(
            "since",
            f"the trusted checkpoint has {claimed.size} entries but the ledger holds {size}: it was truncated or "
            "rolled back since, or the checkpoint is another ledger's",
        )
    return claimed


class _OpenLater:
    """The coordinator's store, opened at first use: after the worker processes were forked, so none of
    them inherits its connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: Any = None

    def __getattr__(self, name: str) -> Any:
        if self.opened is None:
            self.opened = open_store(self.url, readonly=True)
        return getattr(self.opened, name)

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()


class _SinceMerge(Merge):
    """Merge from the cut on: the tree starts from the stored prefix, the header chain from the cut's seal,
    the chains and the subject map from the heads at the cut."""

    def __init__(self, report: VerifyReport, plan: _Plan, store: Any) -> None:
        cut = plan.cut
        self.cut_map = CutMap(store, cut.map_root)
        verdicts = CutVerdicts(plan.policy, local_tokens(plan.meta), store, cut, self.cut_map)
        super().__init__(
            report, verdicts, Derived("links", "lineage link", 3, 0), Derived("subject_index", "subject index", 1, 0)
        )
        self.cut_verdicts = verdicts
        self.chains = CutChains(self.cut_map, BLOCKS_SUBJECT, cut.seal_leaf)
        self.tree = plan.prefix.copy()
        self.roots = {cut.index: self.tree.root()}
        self.prev_header = cut.prev_header
        self.next_number = cut.next_block

    def seal(self, seal: Seal) -> None:
        if (found := header_chain_problem(seal, self.next_number, self.prev_header)) is not None:
            self.report.problems.append(found)
        try:
            root = self.cut_map.advance(seal.touched, seal.index)
        except LedgerError as e:
            self.report.problems.append(Problem("map_node", f"block {seal.number}: subject map: {e}", seal.index))
            root = ""
        if root and root != seal.subjects_root:
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


def _check_entries(
    url: str,
    plan: _Plan,
    store: Any,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
    report: VerifyReport,
) -> _SinceMerge:
    start, size = plan.cut.index, plan.size
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    ranges = chunk_ranges(size - start, [i - start for i in plan.seal_indices], _TARGET_CHUNK)
    chunks = [(a + start, b + start) for a, b in ranges]
    method = start_method() if n_workers > 1 and len(chunks) > 1 else None
    context = get_context(method) if method is not None else None
    cut_sizes = sorted({cp.size for cp in plan.signed} | {plan.trusted.size})
    merge = _SinceMerge(report, plan, store)
    check = IndexCheck(0, 0, os.urandom(32))  # every derived row handed back as it is
    done = 0
    for res in chunk_results(url, chunks, cut_sizes, plan.keyring, n_workers, context, None, check):
        try:
            merge.absorb(res)
        except LedgerError as e:
            report.problems.append(Problem("map_node", f"cannot read the state at the cut: {e}", res.start))
        done += res.end - res.start
        if progress:
            progress(done, size - start)
    report.envelopes = len(merge.envelopes)
    report.verdicts = merge.verdicts.judged
    report.chains_checked = True
    report.problems.extend(merge.cut_verdicts.history_problems)
    report.problems.extend(merge.verdicts.problems)
    report.problems.extend(merge.chains.problems())
    report.blocks = merge.next_number - plan.cut.next_block
    return merge


def _check_after_entries(store: Any, plan: _Plan, merge: _SinceMerge, report: VerifyReport) -> None:
    size, start = plan.size, plan.cut.index
    if merge.contiguous and not report.problems:
        report.problems.extend(crossing_node_problems(store, merge.crossing))
    if merge.tree.end != size:
        report.problems.append(
            Problem("missing", f"only {merge.tree.end} of {size} entries could be read", merge.tree.end)
        )
    if not report.problems:
        try:
            stored = [(s, i) for s, i in store.revocation_rows() if not (type(i) is int and i < start)]
            report.problems.extend(revocation_problems(merge.verdicts.revoked, stored, size, store.size()))
            report.problems.extend(link_problems(store, merge.links.above, start, plan.links_below, size))
            index_rows = merge.cut_verdicts.index_rows
            report.problems.extend(subject_row_problems(index_rows, merge.index.above, size))
            report.problems.extend(envelope_row_problems(store, merge.envelopes, start))
            report.problems.extend(merge.cut_map.stored_problems())
        except LedgerError as e:
            report.problems.append(Problem("derived_index", f"cannot read the derived rows: {e}"))
    check_checkpoint_roots(plan.signed, plan.trusted, merge.roots, report)
    if report.ok:
        report.problems.extend(consistency_problems(store, plan.signed, plan.trusted))
