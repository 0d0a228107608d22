"""Full verification of a ledger from its stored bytes, trusting nothing the store derived.

What is checked, and how a failure is reported (a Problem with the first bad index or block):

* every entry: its leaf hash recomputed from the stored bytes, and every derived column (index, subject,
  event id, parent, prev, verdict) against those bytes; a gap in the indices is a deletion;
* every envelope: its producer key (from the key entries in the log itself) was valid when the batch was
  recorded, its Ed25519 signature, its batch root over the events' leaf hashes, and that each event entry
  holds exactly the event bytes at its position;
* every per-subject hash chain (token, asset, policy, producer-key and seal chains);
* every block: its root over exactly its entries, its entry range and HLC range, and the chain of headers;
* every stored tree node against the tree recomputed from the leaves;
* every checkpoint: its signature under the log's verifier key, and its root against the root recomputed
  from the leaves at its size, which makes consecutive checkpoints consistent; a consistency proof built
  from the stored nodes is also checked for each consecutive pair;
* every lifecycle verdict: the token events are judged again, in log order, by the state machine under the
  policy recorded when the ledger was created, and each result must equal the verdict the entry records,
  so a sequencer that recorded "ok" for a use after revocation (or flagged an honest event) is caught;
* optionally, a checkpoint saved earlier: the ledger must be an append-only extension of it, so truncation
  and rollback are caught even when the attacker also removed the later checkpoints.

Work is split over processes by ranges of whole blocks; each returns a compact range that the coordinator
merges, so memory stays flat however long the log is.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any, Final

import msgspec

from lineage_ledger.core import lifecycle, smt
from lineage_ledger.core.crypto import BATCH_PAYLOAD_TYPE, pae
from lineage_ledger.core.encoding import decode_json
from lineage_ledger.core.entry import (
    BLOCKS_SUBJECT,
    ZERO_HASH,
    KeyEntry,
    SealEntry,
    ShardEntry,
    decode_entry,
    header_hash,
    producer_subject,
    read_event_entry,
    shard_subject,
)
from lineage_ledger.core.envelope import BatchStatement, OpenedEnvelope, verify_batch_signature
from lineage_ledger.core.lifecycle import LifecyclePolicy, TokenState
from lineage_ledger.core.merkle import (
    CompactRange,
    TiledNodeReader,
    consistency_proof,
    root_of,
    verify_consistency,
)
from lineage_ledger.core.model import TokenEvent, read_event
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note, parse_verifier_key
from lineage_ledger.core.routing import local_tokens
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.store import open_store

__all__ = ["Problem", "VerifyReport", "verify_ledger"]

TILE_STRIDE: Final = 8


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
    key_source: str = ""
    trusted_size: int | None = None
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.problems

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
            "key_source": self.key_source,
            "trusted_size": self.trusted_size,
            "first_bad_index": self.first_bad_index,
            "problems": [
                {"kind": p.kind, "message": p.message, "index": p.index, "block": p.block} for p in self.problems
            ],
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.size / self.seconds) if self.seconds else None,
        }


class _LeanPayload(msgspec.Struct):
    parent_token_id: str | None = None


class _LeanEvent(msgspec.Struct):
    kind: str
    event_id: str
    token_id: str | None = None
    asset_id: str | None = None
    policy_id: str | None = None
    payload: _LeanPayload | None = None


class _LeanEventEntry(msgspec.Struct, tag_field="type", tag="event"):
    """Just what verification compares, decoded without the write path's pattern checks (the bytes are
    already pinned by their hash, which is what is being verified)."""

    envelope: str
    event: _LeanEvent
    index: int
    key_id: str
    position: int
    prev: str
    producer: str
    recorded_at: str
    verdict: str


_LEAN = msgspec.json.Decoder(_LeanEventEntry | SealEntry | KeyEntry | ShardEntry)
_EVENT_START: Final = len(b'{"envelope":"') + 64 + len(b'","event":')
_MAX_PROBLEMS: Final = 50


def _subject_and_parent(event: _LeanEvent) -> tuple[str, str | None]:
    if event.kind == "token":
        parent = event.payload.parent_token_id if event.payload else None
        return "token:" + str(event.token_id), ("token:" + parent if parent else None)
    if event.kind == "policy":
        return "policy:" + str(event.policy_id), None
    return "asset:" + str(event.asset_id), None


@dataclass(slots=True)
class _Seal:
    index: int
    number: int
    prev_header: str
    header_hash: bytes
    subjects_root: str
    touched: dict[str, tuple[bytes, int, int]]
    """Subjects with entries in the block: (last leaf, entries in the block, last index)."""


@dataclass(slots=True)
class _ChunkResult:
    start: int
    end: int
    hashes: tuple[bytes, ...]
    cuts: dict[int, tuple[bytes, ...]]
    seals: list[_Seal]
    problems: list[Problem]
    envelope_refs: list[tuple[bytes, int, str, str, str]]


def _verify_chunk(url: str, start: int, end: int, cut_sizes: Sequence[int]) -> _ChunkResult:
    """Check entries [start, end), which begin at a block boundary; runs in a worker process."""
    store = open_store(url, readonly=True)
    problems: list[Problem] = []
    tree = CompactRange(start)
    block = CompactRange()
    block_first = start
    block_hlc_first = ""
    last_recorded = ""
    cuts: dict[int, tuple[bytes, ...]] = {}
    cut_set = set(cut_sizes)
    seals: list[_Seal] = []
    touched: dict[str, tuple[bytes, int, int]] = {}
    computed_nodes: dict[tuple[int, int], bytes] = {}
    # (envelope digest, index, producer, key_id, recorded_at) of the first event seen of each envelope
    refs: list[tuple[bytes, int, str, str, str]] = []
    envelope_cache: dict[str, tuple[bytes, str, str] | None] = {}

    def visit(level: int, index: int, digest: bytes) -> None:
        if level % TILE_STRIDE == 0:
            computed_nodes[(level, index)] = digest

    def problem(kind: str, message: str, index: int | None = None, blk: int | None = None) -> None:
        if len(problems) < _MAX_PROBLEMS:
            problems.append(Problem(kind, message, index, blk))

    sha256 = hashlib.sha256
    expected = start
    try:
        for row in store.entries(start, end):
            idx, subject, event_id, parent, prev, leaf_col, verdict, body = row
            if idx != expected:
                problem("missing", f"entries {expected}..{idx - 1} are missing (deleted)", expected)
                expected = idx
            expected += 1
            if type(body) is not bytes:  # someone rewrote the column with another SQL type
                problem("entry_format", f"entry {idx}: stored bytes have the wrong type", idx)
                body = str(body).encode()
            leaf = sha256(b"\x00" + body).digest()
            if leaf != leaf_col:
                problem("entry_hash", f"entry {idx}: stored leaf hash does not match its bytes", idx)
            tree.append(leaf, visit)
            try:
                entry = _LEAN.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as e:
                problem("entry_format", f"entry {idx}: bytes are not an entry ({e})", idx)
                block.append(leaf)
                continue
            if entry.index != idx:
                problem("position", f"entry {idx}: its bytes say index {entry.index} (moved or reordered)", idx)
            if entry.prev != prev.hex():
                problem("derived_column", f"entry {idx}: prev column differs from its bytes", idx)
            if not block_hlc_first:
                block_hlc_first = entry.recorded_at
            if entry.recorded_at < last_recorded:
                problem("clock", f"entry {idx}: recorded_at goes backwards", idx)
            if type(entry) is _LeanEventEntry:
                last_recorded = entry.recorded_at
                block.append(leaf)
                seen = touched.get(subject)
                touched[subject] = (leaf, seen[1] + 1 if seen else 1, idx)
                # The event's bytes sit between the fixed-width envelope field and the last ',"index":' (no
                # field after the event can contain that text).
                event_end = body.rfind(b',"index":')
                if not body.startswith(b'{"envelope":"') or event_end < _EVENT_START:
                    problem("entry_format", f"entry {idx}: bytes are not laid out as an event entry", idx)
                    continue
                raw = body[_EVENT_START:event_end]
                subj, par = _subject_and_parent(entry.event)
                if subj != subject or par != parent or entry.event.event_id != event_id or entry.verdict != verdict:
                    problem("derived_column", f"entry {idx}: subject/event id/parent/verdict columns differ", idx)
                hex_digest = entry.envelope
                if hex_digest not in envelope_cache:
                    try:
                        digest = bytes.fromhex(hex_digest)
                        e_row = store.envelope(digest)
                        envelope_cache[hex_digest] = (e_row.event_leaves, e_row.producer, e_row.key_id)
                        refs.append((digest, idx, entry.producer, entry.key_id, entry.recorded_at))
                    except (LedgerError, ValueError):
                        envelope_cache[hex_digest] = None
                env = envelope_cache[hex_digest]
                if env is None:
                    problem("envelope", f"entry {idx}: its envelope {entry.envelope} is missing", idx)
                    continue
                leaves, producer, key_id = env
                event_leaf = sha256(b"\x00" + raw).digest()
                pos = entry.position
                if (
                    leaves[pos * 32 : pos * 32 + 32] != event_leaf
                    or producer != entry.producer
                    or (key_id != entry.key_id)
                ):
                    problem("envelope", f"entry {idx}: event is not what its signed envelope holds", idx)
            elif type(entry) is SealEntry:
                h = entry.block
                blk = h.number
                if subject != BLOCKS_SUBJECT or event_id is not None or parent is not None:
                    problem("derived_column", f"seal {idx}: derived columns differ from its bytes", idx, blk)
                if h.first != block_first or h.last != idx - 1:
                    problem(
                        "block",
                        f"block {blk}: covers {h.first}..{h.last}, expected {block_first}..{idx - 1}",
                        idx,
                        blk,
                    )
                root = block.root()
                if h.root != root.hex():
                    # a bad entry inside the block explains the root; otherwise the seal itself is wrong
                    inside = [p.index for p in problems if p.index is not None and p.index >= block_first]
                    problem("block", f"block {blk}: root does not match its entries", min(inside, default=idx), blk)
                if h.hlc_first != block_hlc_first or h.hlc_last != last_recorded:
                    problem("block", f"block {blk}: HLC range does not match its entries", idx, blk)
                seals.append(_Seal(idx, blk, h.prev_header, header_hash(h), h.subjects_root, touched))
                touched = {}
                block = CompactRange()
                block_first = idx + 1
                block_hlc_first = ""
                last_recorded = entry.recorded_at
            else:
                block.append(leaf)
                last_recorded = entry.recorded_at
                seen = touched.get(subject)
                touched[subject] = (leaf, seen[1] + 1 if seen else 1, idx)
                if type(entry) is KeyEntry:
                    kind, own = "key", producer_subject(entry.change.producer)
                else:
                    assert type(entry) is ShardEntry
                    kind, own = "shard", shard_subject(entry.shard)
                if subject != own or event_id is not None:
                    problem("derived_column", f"{kind} entry {idx}: derived columns differ from its bytes", idx)
            if tree.end in cut_set:
                cuts[tree.end] = tree.hashes
        if expected < end:
            problem("missing", f"entries {expected}..{end - 1} are missing (deleted)", expected)
        # Stored nodes inside this chunk must equal the recomputed ones. Once an entry is known bad, the
        # nodes above it differ as a consequence, so only a chunk with sound entries is checked node by node.
        levels = range(TILE_STRIDE, 64, TILE_STRIDE) if not problems else range(0)
        for level in levels:
            first = -(-start // (1 << level))
            last = expected // (1 << level)
            if first >= last:
                break
            try:
                stored = store.nodes(level, first, last - first)
            except LedgerError as e:
                problem("tree_node", f"stored tree nodes at level {level} are missing: {e}", first << level)
                continue
            for i, digest in enumerate(stored):
                if computed_nodes.get((level, first + i)) != digest:
                    problem("tree_node", f"stored tree node ({level}, {first + i}) is wrong", (first + i) << level)
                    break
    finally:
        store.close()
    return _ChunkResult(start, tree.end, tree.hashes, cuts, seals, problems, refs)


def _check_verdicts(
    store: Any, size: int, policy: LifecyclePolicy, local: Callable[[str], bool] | None = None
) -> tuple[list[Problem], int]:
    """Judge every token event again in log order; the entries whose recorded verdict differs, and how many
    were judged. Reads the entries as stored (the chunk workers check that their bytes are the logged ones)."""
    states: dict[str, TokenState] = {}
    problems: list[Problem] = []
    judged = 0

    def state_of(token_id: str) -> TokenState:
        return states.get(token_id, lifecycle.NEVER_SEEN)

    for row in store.entries(0, size):
        if row.event_id is None or not row.subject.startswith("token:"):
            continue
        try:
            entry = read_event_entry(row.body)
            event = read_event(bytes(entry.event)) if entry is not None else None
        except LedgerError:
            continue  # not an event entry: the chunk checks report it
        if entry is None or type(event) is not TokenEvent:
            continue
        verdict, changes = lifecycle.apply(event, state_of, policy, local)
        states.update(changes)
        judged += 1
        if verdict != entry.verdict and len(problems) < _MAX_PROBLEMS:
            problems.append(
                Problem(
                    "verdict",
                    f"entry {row.index}: records verdict {entry.verdict!r}; the lifecycle rules give {verdict!r}",
                    row.index,
                )
            )
    return problems, judged


def _chunks(size: int, seal_indices: list[int], target: int) -> list[tuple[int, int]]:
    """Split [0, size) into ranges of about ``target`` entries that each start at a block boundary."""
    starts = [0] + [i + 1 for i in seal_indices if i + 1 < size]
    out: list[tuple[int, int]] = []
    begin = 0
    for s in starts[1:]:
        if s - begin >= target:
            out.append((begin, s))
            begin = s
    out.append((begin, size))
    return [c for c in out if c[0] < c[1]]


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
    store = open_store(url, readonly=True)
    try:
        meta = store.meta()
        if not meta:
            report.problems.append(Problem("meta", "the store holds no ledger"))
            return report
        stored_key = parse_verifier_key(meta["verifier_key"])
        if verifier is None:
            verifier = stored_key
            report.key_source = "database copy (untrusted: pass --key to verify against a key you hold)"
        else:
            report.key_source = "given"
            if verifier.public_key != stored_key.public_key:
                report.problems.append(
                    Problem("meta", "the verifier key copy in the database differs from the key given")
                )
        origin = meta["origin"]
        try:
            policy = LifecyclePolicy.from_text(meta["lifecycle"]) if "lifecycle" in meta else LifecyclePolicy()
        except LedgerError as e:
            report.problems.append(Problem("meta", f"the recorded lifecycle policy: {e}"))
            policy = LifecyclePolicy()
        size = store.size()
        report.size = size
        seal_rows = store.subject_entries([BLOCKS_SUBJECT])
        checkpoints = store.checkpoints()
        report.checkpoints = len(checkpoints)

        cut_sizes: list[int] = []
        signed: list[Checkpoint] = []
        for row in checkpoints:
            try:
                text, _ = open_note(row.note, [verifier])
                cp = Checkpoint.from_text(text)
            except LedgerError as e:
                report.problems.append(Problem("checkpoint", f"checkpoint {row.size}: {e}", None))
                continue
            if cp.size != row.size or cp.origin != origin:
                report.problems.append(Problem("checkpoint", f"checkpoint {row.size}: size or origin mismatch"))
                continue
            if cp.size > size:
                report.problems.append(
                    Problem(
                        "truncation",
                        f"a checkpoint signs {cp.size} entries but the log holds {size}: entries were removed",
                        size,
                    )
                )
                continue
            signed.append(cp)
            cut_sizes.append(cp.size)
        trusted: Checkpoint | None = None
        if trusted_checkpoint is not None:
            try:
                text, _ = open_note(trusted_checkpoint, [verifier])
                trusted = Checkpoint.from_text(text)
            except LedgerError as e:
                report.problems.append(Problem("trusted_checkpoint", f"the trusted checkpoint does not verify: {e}"))
            if trusted is not None:
                report.trusted_size = trusted.size
                if trusted.origin != origin:
                    report.problems.append(Problem("trusted_checkpoint", "the trusted checkpoint is of another log"))
                    trusted = None
                elif trusted.size > size:
                    report.problems.append(
                        Problem(
                            "truncation",
                            f"the trusted checkpoint has {trusted.size} entries, the ledger only {size}: "
                            "it was truncated or rolled back",
                            size,
                        )
                    )
                    trusted = None
                else:
                    cut_sizes.append(trusted.size)

        n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        target = max(50_000, size // (n_workers * 4) + 1)
        chunks = _chunks(size, [r.index for r in seal_rows], target)
        results: dict[int, _ChunkResult] = {}
        done = 0
        if n_workers == 1 or len(chunks) == 1:
            for a, b in chunks:
                results[a] = _verify_chunk(url, a, b, [c for c in cut_sizes if a < c <= b])
                done += b - a
                if progress:
                    progress(done, size)
        else:
            ctx = get_context("spawn")
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
                pending: dict[Future[_ChunkResult], tuple[int, int]] = {
                    pool.submit(_verify_chunk, url, a, b, [c for c in cut_sizes if a < c <= b]): (a, b)
                    for a, b in chunks
                }
                # while workers hash, this process checks what needs the whole log
                breaks = store.chain_breaks()
                verdict_problems, report.verdicts = _check_verdicts(store, size, policy, local_tokens(meta))
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        a, b = pending.pop(fut)
                        results[a] = fut.result()
                        done += b - a
                        if progress:
                            progress(done, size)
        envelope_problems = _check_envelopes(store, results)
        report.envelopes = len({ref[0] for res in results.values() for ref in res.envelope_refs})
        if n_workers == 1 or len(chunks) == 1:
            breaks = store.chain_breaks()
            verdict_problems, report.verdicts = _check_verdicts(store, size, policy, local_tokens(meta))
        report.chains_checked = True
        report.problems.extend(verdict_problems)
        for br in breaks:
            report.problems.append(
                Problem(
                    "chain",
                    f"entry {br.index}: chain of {br.subject} is broken (prev does not link)",
                    br.index,
                )
            )
        report.problems.extend(envelope_problems)

        # merge chunk results in order
        tree = CompactRange()
        roots: dict[int, bytes] = {0: tree.root()}
        prev_header = ZERO_HASH
        next_number = 0
        subject_map = _SubjectMap()
        crossing: list[tuple[int, int, bytes]] = []

        def visit(level: int, index: int, digest: bytes) -> None:
            if level % TILE_STRIDE == 0:
                crossing.append((level, index, digest))

        contiguous = True
        for a in sorted(results):
            res = results[a]
            report.problems.extend(res.problems)
            contiguous = contiguous and res.start == tree.end
            for cut, hashes in sorted(res.cuts.items()):
                if not contiguous:
                    break
                partial = tree.copy()
                partial.merge(CompactRange.from_hashes(res.start, cut, hashes))
                roots[cut] = partial.root()
            for seal in res.seals:
                if seal.number != next_number or seal.prev_header != prev_header.hex():
                    report.problems.append(
                        Problem(
                            "block",
                            f"block {seal.number}: header chain broken at seal {seal.index}",
                            seal.index,
                            seal.number,
                        )
                    )
                if subject_map.advance(seal.touched) != seal.subjects_root:
                    report.problems.append(
                        Problem(
                            "subject_map",
                            f"block {seal.number}: subjects_root is not the map of chain heads after the block",
                            seal.index,
                            seal.number,
                        )
                    )
                prev_header = seal.header_hash
                next_number = seal.number + 1
            if contiguous:
                tree.merge(CompactRange.from_hashes(res.start, res.end, res.hashes), visit)
        report.blocks = next_number
        if contiguous and not report.problems:
            for level, index, digest in crossing:
                try:
                    stored = store.nodes(level, index, 1)[0]
                except LedgerError:
                    stored = b""
                if stored != digest:
                    report.problems.append(
                        Problem("tree_node", f"stored tree node ({level}, {index}) is wrong", index << level)
                    )
        if tree.end != size:
            report.problems.append(Problem("missing", f"only {tree.end} of {size} entries could be read", tree.end))
        for cp in signed:
            if roots.get(cp.size) != cp.root_hash:
                report.problems.append(
                    Problem(
                        "checkpoint_root",
                        f"checkpoint {cp.size}: signed root does not match the entries (history rewritten)",
                        _first_index_hint(report, cp.size),
                    )
                )
        if trusted is not None and roots.get(trusted.size) != trusted.root_hash:
            report.problems.append(
                Problem(
                    "trusted_checkpoint",
                    f"the ledger is not an append-only extension of the trusted checkpoint at size {trusted.size}",
                    _first_index_hint(report, trusted.size),
                )
            )
        if report.ok:
            _check_consistency(store, signed, trusted, report)
    finally:
        store.close()
    report.problems.sort(key=lambda p: (p.index is None, p.index or 0))
    report.seconds = time.perf_counter() - started
    return report


class _SubjectMap:
    """The verifier's own copy of the subject map, rebuilt block by block from verified entries.

    Memory grows with the number of subjects (about 300 bytes each): verification trades memory for never
    trusting a stored map node.
    """

    def __init__(self) -> None:
        self.root = smt.EMPTY
        self.counts: dict[str, int] = {}
        self.nodes: dict[bytes, smt.Leaf | smt.Interior] = {}

    def advance(self, touched: dict[str, tuple[bytes, int, int]]) -> str:
        changes = {}
        for subject, (leaf, added, index) in touched.items():
            count = self.counts.get(subject, 0) + added
            self.counts[subject] = count
            changes[smt.key_of(subject)] = smt.SubjectHead(leaf, count, index)
        read: set[bytes] = set()

        def reader(digest: bytes) -> smt.Leaf | smt.Interior:
            read.add(digest)
            return self.nodes[digest]

        self.root, new = smt.update(self.root, changes, reader)
        # Nodes on the changed paths were replaced; drop those no new node refers to, so memory follows the
        # current map rather than every version of it.
        referenced = {self.root}
        for node in new.values():
            if isinstance(node, smt.Interior):
                referenced.update((node.left, node.right))
        for digest in read - referenced:
            del self.nodes[digest]
        self.nodes.update(new)
        return self.root.hex()


def _first_index_hint(report: VerifyReport, size: int) -> int | None:
    bad = report.first_bad_index
    return bad if bad is not None and bad < size else max(0, size - 1)


def _check_envelopes(store: Any, results: dict[int, _ChunkResult]) -> list[Problem]:
    """Signature, batch root and key validity of every envelope the entries refer to."""
    problems: list[Problem] = []
    keyring = Keyring()
    for row in store.subjects_with_prefix("producer:"):
        try:
            entry = decode_entry(row.body)
            if not isinstance(entry, KeyEntry):
                raise LedgerError("not a key entry")
            keyring.apply(entry.change)
        except LedgerError as e:
            problems.append(Problem("key", f"key entry {row.index}: {e}", row.index))
    first_use: dict[bytes, tuple[int, str, str, str]] = {}
    for res in results.values():
        for digest, idx, producer, key_id, recorded in res.envelope_refs:
            if digest not in first_use or idx < first_use[digest][0]:
                first_use[digest] = (idx, producer, key_id, recorded)
    for digest, (idx, producer, key_id, recorded) in sorted(first_use.items(), key=lambda kv: kv[1][0]):
        try:
            env = store.envelope(digest)
            statement = msgspec.convert(decode_json(env.payload), type=BatchStatement)
            if hashlib.sha256(pae(BATCH_PAYLOAD_TYPE, env.payload)).digest() != digest:
                raise LedgerError("envelope digest does not match its payload")
            leaves = [env.event_leaves[i : i + 32] for i in range(0, len(env.event_leaves), 32)]
            if statement.count != len(leaves) or root_of(leaves).hex() != statement.root:
                raise LedgerError("batch root or count does not match the signed statement")
            if statement.producer != producer or statement.key_id != key_id:
                raise LedgerError("producer or key id differs from the signed statement")
            key = keyring.get(key_id)
            if key.producer != producer or not key.usable_at(recorded):
                raise LedgerError(f"key {key_id} was not valid for {producer} at {recorded}")
            opened = OpenedEnvelope(statement, env.payload, env.signature, (), tuple(leaves), digest)
            verify_batch_signature(opened, key.public_key)
        except (LedgerError, msgspec.ValidationError) as e:
            problems.append(Problem("envelope", f"envelope {digest.hex()[:16]} (first entry {idx}): {e}", idx))
    return problems


def _check_consistency(store: Any, signed: list[Checkpoint], trusted: Checkpoint | None, report: VerifyReport) -> None:
    """Consistency proofs built from the stored nodes between consecutive checkpoints (and the trusted one)."""
    reader = TiledNodeReader(store.nodes, stride=TILE_STRIDE)
    pairs = list(itertools.pairwise(signed))
    if trusted is not None and signed:
        pairs.append((trusted, signed[-1]))
    for old, new in pairs:
        if old.size == 0 or old.size > new.size:
            continue
        try:
            proof = consistency_proof(old.size, new.size, reader)
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        except (LedgerError, ValueError) as e:
            report.problems.append(
                Problem("consistency", f"checkpoints {old.size} -> {new.size} are not consistent: {e}")
            )
