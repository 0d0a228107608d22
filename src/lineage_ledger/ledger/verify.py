"""Full verification of a ledger from its stored bytes, trusting nothing the store derived.

What is checked, and how a failure is reported (a Problem with the first bad index or block):

* the settings recorded at creation: present, and of the format this verifier knows;
* every entry: its leaf hash recomputed from the stored bytes, and every derived column (index, subject,
  event id, parent, prev, verdict) against those bytes; a gap in the indices is a deletion;
* every envelope: its producer key (from the key entries in the log itself) was valid when the batch was
  recorded, its Ed25519 signature, its batch root over the events' leaf hashes, and that each event entry
  holds exactly the event bytes at its position;
* every per-subject hash chain (token, asset, policy, producer-key and seal chains): each entry's stored
  prev must be the stored leaf of the subject's previous entry (64 zeros for its first);
* every block: its root over exactly its entries, its entry range and HLC range, and the chain of headers;
* every block's subject map root: the verifier's own copy of the map of chain heads after the block;
* every stored tree node against the tree recomputed from the leaves;
* every checkpoint: its signature under the log key of its tree size (the chain of log key rotations,
  core.log_key, followed from the trusted key; a rotation its retiring key did not sign is a problem),
  and its root against the root recomputed from the leaves at its size, which makes consecutive
  checkpoints consistent; a consistency proof built from the stored nodes is also checked for each
  consecutive pair;
* every lifecycle verdict: the token events are judged again, in log order, by the state machine under the
  policy recorded when the ledger was created, and each result must equal the verdict the entry records,
  so a sequencer that recorded "ok" for a use after revocation (or flagged an honest event) is caught;
* once the entries check out, what the log key signed beside the log (ledger.commitments): every stored
  promise of an acknowledgement against the entries it names, and the checkpoints as a chain, one per seal;
* optionally, a checkpoint saved earlier: the ledger must be an append-only extension of it, so truncation
  and rollback are caught even when the attacker also removed the later checkpoints;
* the stored daily rollups per token (ledger.rollups), recomputed from the entries (verification.rollups);
* once all of the above holds, the store's derived indexes, which no signature covers: the links table
  the lineage queries start from ("which tokens used this resource") must hold exactly the links the
  entries' events give, SQLite's subject index exactly the entries' (subject, index) pairs (verification.derived), and
  the revocation set exactly the tokens the lifecycle rules revoked, each at the entry that revoked it. A
  row removed, changed or slipped in is reported, with the chunk of entries whose rows differ. And the
  stored subject map that completeness proofs are read from: every node under the newest stored map root
  present (verification.subject_map), and every stored node hashing to its name; every envelope row named by an
  entry, its first index that of the first entry naming it (ledger.stored_rows, docs/storage.md).

How the work is split. The log is cut into chunks of whole blocks. A worker process reads each chunk once and
does everything that needs only the chunk: hashes, columns, blocks, tree nodes, the envelopes the chunk refers
to (each checked at its first use in the chunk), the chain links inside the chunk. It hands back compact
summaries: the chunk's compact range, the first link and the last leaf of each subject it touched, the changes
each block makes to the subject map, the bytes of its token events with their recorded verdicts, and multiset
hashes of its lineage links and subject-index rows. The coordinator folds those in log order while the workers
go on with later chunks: the chain links across chunks, the subject map roots, the verdicts (the state machine
needs every earlier token event), the block header chain and the tree. So each entry is read once, and both
cores work from start to end. Workers are forked where that is safe (see verification.workers), else spawned.

Each kind of check is a module of ledger.verification (listed in its docstring); verify_ledger below is
the driver that composes them.

Memory grows with the number of subjects (chain heads, subject map, token states) and with the longest
block (a chunk's result holds its token events), not with the number of entries.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from multiprocessing import get_context
from typing import Final

from lineage_ledger.core.note import Checkpoint, NoteVerifier
from lineage_ledger.core.routing import local_tokens
from lineage_ledger.ledger.commitments import commitment_problems
from lineage_ledger.ledger.verification.derived import (
    Derived,
    IndexCheck,
    Scan,
    check_stored_rows,
    derived_problems,
)
from lineage_ledger.ledger.verification.log import (
    TreeFeed,
    check_checkpoint_roots,
    check_trusted_checkpoint,
    consistency_problems,
    crossing_node_problems,
    mth,
    signed_checkpoints,
)
from lineage_ledger.ledger.verification.merge import Merge
from lineage_ledger.ledger.verification.report import Problem, VerifyReport
from lineage_ledger.ledger.verification.rollups import RollupCheck
from lineage_ledger.ledger.verification.setup import LedgerSetup, read_setup
from lineage_ledger.ledger.verification.since import verify_since
from lineage_ledger.ledger.verification.subject_map import SubjectMap, check_stored_map
from lineage_ledger.ledger.verification.verdicts import Verdicts
from lineage_ledger.ledger.verification.workers import chunk_ranges, chunk_results, frozen_heap, start_method
from lineage_ledger.store import open_store

__all__ = ["Problem", "VerifyReport", "verify_ledger", "verify_since"]

# Also reachable here under their former names. The driver looks _chunks and _start_method up in this
# module when it runs, so replacing them here (as tests do, to cut a small log into many chunks or to
# spawn workers) changes how it splits the work.
_chunks = chunk_ranges
_start_method = start_method
_frozen_heap = frozen_heap
_mth = mth
_TreeFeed = TreeFeed
_SubjectMap = SubjectMap

_MIN_CHUNK: Final = 8_192
"""Entries per chunk at least."""
_MIN_SPAWNED: Final = 50_000
"""Entries a log needs before spawned workers pay for themselves (each costs a fresh interpreter and its
imports, a fraction of a second); a forked worker starts in milliseconds."""
_CHUNKS_PER_WORKER: Final = 8
"""Chunks aim at size / (workers * this): enough to balance the workers and to overlap the coordinator."""
_MAX_CHUNK: Final = 65_536
"""Entries per chunk at most (unless one block is longer): a chunk's result holds its token events."""


def verify_ledger(
    url: str,
    *,
    verifier: NoteVerifier | None = None,
    trusted_checkpoint: str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Verify everything in the ledger at ``url``; see the module docstring for what is checked.

    ``verifier`` is the log's public key from outside the database. Without it the copy stored in the
    database is used, and the report says so (``key_source``): such a run proves internal consistency only,
    since whoever can rewrite the database can also replace that copy.
    """
    started = time.perf_counter()
    report = VerifyReport(url=url)
    setup = read_setup(url, verifier, report)
    if setup is None:
        return report
    signed, found = signed_checkpoints(setup.checkpoints, setup.log_keys.signing_key, setup.origin, setup.size)
    report.problems.extend(found)
    cut_sizes = [cp.size for cp in signed]
    trusted = None
    if trusted_checkpoint is not None:
        keys, origin, size = setup.log_keys, setup.origin, setup.size
        trusted = check_trusted_checkpoint(trusted_checkpoint, keys.keys, keys.signing_key, origin, size, report)
        if trusted is not None:
            cut_sizes.append(trusted.size)
    merge, scan = _check_entries(url, setup, cut_sizes, workers, progress, report)
    _check_after_entries(url, setup, merge, scan, signed, trusted, report)
    report.problems.sort(key=lambda p: (p.index is None, p.index or 0))
    report.seconds = time.perf_counter() - started
    return report


def _check_entries(
    url: str,
    setup: LedgerSetup,
    cut_sizes: list[int],
    workers: int | None,
    progress: Callable[[int, int], None] | None,
    report: VerifyReport,
) -> tuple[Merge, Scan | None]:
    """Every entry, in chunks of whole blocks, checked by workers and folded here in log order."""
    size = setup.size
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    method = _start_method() if n_workers > 1 else None
    target = min(_MAX_CHUNK, max(_MIN_CHUNK, size // (n_workers * _CHUNKS_PER_WORKER) + 1))
    if method == "spawn" and size < _MIN_SPAWNED:
        target = size  # one chunk, verified here
    chunks = _chunks(size, [r.index for r in setup.seal_rows], target)
    context = get_context(method) if method is not None and len(chunks) > 1 else None
    merge = Merge(
        report,
        Verdicts(setup.policy, local_tokens(setup.meta)),
        Derived("links", "lineage link", 3, setup.links_below),
        Derived("subject_index", "subject index", 1, setup.subjects_below),
    )
    scan = None
    check = IndexCheck(setup.links_below, setup.subjects_below, os.urandom(32), setup.rollups_end)
    if setup.links_below is not None or setup.subjects_below is not None:
        scan = Scan(url, [a for a, _ in chunks], check)
    if setup.rollups_end is not None:
        merge.rollups = RollupCheck(check.key)
    done = 0
    for res in chunk_results(url, chunks, cut_sizes, setup.keyring, n_workers, context, scan, check):
        merge.absorb(res)
        done += res.end - res.start
        if progress:
            progress(done, size)
    report.envelopes = len(merge.envelopes)
    report.verdicts = merge.verdicts.judged
    report.chains_checked = True
    report.problems.extend(merge.verdicts.problems)
    report.problems.extend(merge.chains.problems())
    report.blocks = merge.next_number
    return merge, scan


def _check_after_entries(
    url: str,
    setup: LedgerSetup,
    merge: Merge,
    scan: Scan | None,
    signed: list[Checkpoint],
    trusted: Checkpoint | None,
    report: VerifyReport,
) -> None:
    """What needs every entry checked first: the tree nodes above the chunks, the derived indexes and stored
    rows (once the entries they derive from are sound), the checkpoints' roots, their consistency and the
    commitments the log key signed beside the log."""
    size = setup.size
    store = open_store(url, readonly=True)
    try:
        if merge.contiguous and not report.problems:
            report.problems.extend(crossing_node_problems(store, merge.crossing))
        if merge.tree.end != size:
            report.problems.append(
                Problem("missing", f"only {merge.tree.end} of {size} entries could be read", merge.tree.end)
            )
        if not report.problems:
            scanned = None if scan is None else scan.result  # set once every chunk came back
            revoked = merge.verdicts.revoked
            report.problems.extend(derived_problems(store, merge.links, merge.index, scanned, revoked, size))
            check_stored_map(store, setup.seal_rows, report)
            check_stored_rows(store, merge.envelopes, report)
            if merge.rollups is not None:
                report.problems.extend(merge.rollups.problems(store))
        check_checkpoint_roots(signed, trusted, merge.roots, report)
        if report.ok:
            report.problems.extend(consistency_problems(store, signed, trusted))
        if report.ok:  # what the log key signed beside the log: promises, the chain of checkpoints
            seal_indices = [row.index for row in setup.seal_rows]
            signing_key = setup.log_keys.signing_key
            for found in commitment_problems(store, signing_key, setup.origin, size, seal_indices, setup.checkpoints):
                report.problems.append(Problem(*found))
    finally:
        store.close()
