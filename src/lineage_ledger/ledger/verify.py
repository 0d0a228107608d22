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
* once all of the above holds, the store's derived indexes, which no signature covers: the links table
  the lineage queries start from ("which tokens used this resource") must hold exactly the links the
  entries' events give, SQLite's subject index exactly the entries' (subject, index) pairs (_Derived), and
  the revocation set exactly the tokens the lifecycle rules revoked, each at the entry that revoked it. A
  row removed, changed or slipped in is reported, with the chunk of entries whose rows differ. And the
  stored subject map that completeness proofs are read from: every node under the newest stored map root
  present (_check_stored_map), and every stored node hashing to its name; every envelope row named by an
  entry, its first index that of the first entry naming it (ledger.stored_rows, docs/storage.md).

How the work is split. The log is cut into chunks of whole blocks. A worker process reads each chunk once and
does everything that needs only the chunk: hashes, columns, blocks, tree nodes, the envelopes the chunk refers
to (each checked at its first use in the chunk), the chain links inside the chunk. It hands back compact
summaries: the chunk's compact range, the first link and the last leaf of each subject it touched, the changes
each block makes to the subject map, the bytes of its token events with their recorded verdicts, and multiset
hashes of its lineage links and subject-index rows. The coordinator folds those in log order while the workers
go on with later chunks: the chain links across chunks, the subject map roots, the verdicts (the state machine
needs every earlier token event), the block header chain and the tree. So each entry is read once, and both
cores work from start to end. Workers are forked where that is safe (see _start_method), else spawned.

Memory grows with the number of subjects (chain heads, subject map, token states) and with the longest
block (a chunk's result holds its token events), not with the number of entries.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import os
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from typing import Any, Final

import msgspec

from lineage_ledger.core import lifecycle, smt
from lineage_ledger.core.crypto import BATCH_PAYLOAD_TYPE, pae
from lineage_ledger.core.encoding import decode_json
from lineage_ledger.core.entry import (
    BLOCKS_SUBJECT,
    ZERO_HASH,
    ApiKeyEntry,
    KeyEntry,
    LogKeyEntry,
    SealEntry,
    ShardEntry,
    decode_entry,
    header_hash,
    own_subject,
)
from lineage_ledger.core.envelope import BatchStatement, OpenedEnvelope, verify_batch_signature
from lineage_ledger.core.lifecycle import LifecyclePolicy, TokenState
from lineage_ledger.core.merkle import (
    TILE_STRIDE,
    CompactRange,
    TiledNodeReader,
    consistency_proof,
    verify_consistency,
)
from lineage_ledger.core.model import Event, TokenEvent, head_ok
from lineage_ledger.core.note import Checkpoint, NoteVerifier, open_note, parse_verifier_key
from lineage_ledger.core.routing import local_tokens
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger import stored_rows
from lineage_ledger.ledger.commitments import commitment_problems
from lineage_ledger.ledger.completeness import checked_node
from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.ledger.links import Link, data_links, stored_below, token_links
from lineage_ledger.ledger.log_keys import check_key_chain
from lineage_ledger.ledger.writer import FORMAT
from lineage_ledger.store import open_store
from lineage_ledger.store.base import EntryRow, EnvelopeRow

__all__ = ["Problem", "VerifyReport", "verify_ledger"]


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
            "map_nodes": self.map_nodes,
            "key_source": self.key_source,
            "trusted_size": self.trusted_size,
            "first_bad_index": self.first_bad_index,
            "problems": [
                {"kind": p.kind, "message": p.message, "index": p.index, "block": p.block} for p in self.problems
            ],
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.size / self.seconds) if self.seconds else None,
        }


class _LeanPayload(msgspec.Struct, gc=False):
    parent_token_id: str | None = None
    # what the lineage links are made of; untyped here, since a field of one kind of event may be an
    # unknown (free-form) field of another: _entry_links reads them as the typed event would
    resource: object = None
    user_id: object = None
    inputs: object = None


class _LeanEvent(msgspec.Struct, gc=False):
    kind: str
    event_id: str
    token_id: str | None = None
    asset_id: str | None = None
    policy_id: str | None = None
    event_type: str = ""
    occurred_at: str = ""
    payload: _LeanPayload | None = None


class _LeanEventEntry(msgspec.Struct, tag_field="type", tag="event", gc=False):
    """Just what verification compares, decoded without the write path's pattern checks (the bytes are
    already pinned by their hash, which is what is being verified). Not tracked by the garbage collector
    (these structs hold no references that could form a cycle), so decoding them triggers no collections."""

    envelope: str
    event: _LeanEvent
    index: int
    key_id: str
    position: int
    prev: str
    producer: str
    recorded_at: str
    verdict: str


_LEAN = msgspec.json.Decoder(_LeanEventEntry | SealEntry | KeyEntry | ShardEntry | ApiKeyEntry | LogKeyEntry)
# The coordinator reads token events as model.read_event does (same type, same checks), a chunk's at once.
_EVENTS = msgspec.json.Decoder(list[Event])
_EVENT = msgspec.json.Decoder(Event)
_EVENT_START: Final = len(b'{"envelope":"') + 64 + len(b'","event":')
_MAX_PROBLEMS: Final = 50
_MAX_CHAIN_BREAKS: Final = 10
_FLUSH_LEAVES: Final = 16 * 256
"""Inside a long block, the chunk's tree takes its pending leaves every this many entries."""
_MIN_CHUNK: Final = 8_192
"""Entries per chunk at least."""
_MIN_SPAWNED: Final = 50_000
"""Entries a log needs before spawned workers pay for themselves (each costs a fresh interpreter and its
imports, a fraction of a second); a forked worker starts in milliseconds."""
_CHUNKS_PER_WORKER: Final = 8
"""Chunks aim at size / (workers * this): enough to balance the workers and to overlap the coordinator."""
_MAX_CHUNK: Final = 65_536
"""Entries per chunk at most (unless one block is longer): a chunk's result holds its token events."""
_IN_FLIGHT_PER_WORKER: Final = 2
"""Chunks submitted ahead of the one the coordinator waits for, per worker."""


def _subject_and_parent(event: _LeanEvent) -> tuple[str, str | None]:
    if event.kind == "token":
        parent = event.payload.parent_token_id if event.payload else None
        return "token:" + str(event.token_id), ("token:" + parent if parent else None)
    if event.kind == "policy":
        return "policy:" + str(event.policy_id), None
    return "asset:" + str(event.asset_id), None


def _entry_links(event: _LeanEvent, index: int, subject: str, out: list[Link]) -> None:
    """ledger.links.event_links for a lean event (whose bytes decode_event accepted when they were recorded)."""
    p = event.payload
    if p is None:
        return
    if event.kind == "token":
        resource = p.resource if type(p.resource) is str else None
        user_id = p.user_id if type(p.user_id) is str else None
        token_links(event.event_type, event.occurred_at, resource, user_id, index, subject, out)
    elif event.kind == "data" and type(p.inputs) is list:
        inputs = [ref.get("asset_id") for ref in p.inputs if type(ref) is dict]
        data_links(event.occurred_at, [a for a in inputs if type(a) is str], index, subject, out)


def _map_key(subject: object) -> bytes:
    """The subject map key of a subject column; a column rewritten with another SQL type (already reported
    as a derived column that differs) still gets a key, so the map check goes on."""
    return smt.key_of(subject) if type(subject) is str else hashlib.sha256(repr(subject).encode()).digest()


# -- Merkle hashing in bulk --------------------------------------------------------------------------------

_sha256 = hashlib.sha256
_EMPTY_ROOT: Final = _sha256(b"").digest()
_TILE: Final = 1 << TILE_STRIDE


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH over leaf hashes, level by level: pairs from the left, an odd last node carried up
    unchanged. That is the same tree as the recursive definition (its left subtrees are the largest perfect
    ones), and a list comprehension per level costs a fraction of a Python-level push per leaf."""
    if not leaves:
        return _EMPTY_ROOT
    sha = _sha256
    nodes = leaves
    while len(nodes) > 1:
        pairs = iter(nodes)
        upper = [sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
        if len(nodes) & 1:
            upper.append(nodes[-1])
        nodes = upper
    return nodes[0]


class _TreeFeed:
    """The chunk's CompactRange, fed in bulk: each whole aligned tile of 256 leaves is hashed level by level
    and merged as one node; only leaves outside whole tiles go through CompactRange.append. ``visit`` hears
    of every node the range creates at levels 8, 16, ..., as when appending leaf by leaf (of the nodes below
    level 8 only those outside whole tiles)."""

    __slots__ = ("pending", "range", "visit")

    def __init__(self, begin: int, visit: Callable[[int, int, bytes], None]) -> None:
        self.range = CompactRange(begin)
        self.visit = visit
        self.pending: list[bytes] = []

    @property
    def end(self) -> int:
        return self.range.end + len(self.pending)

    def flush(self, *, everything: bool) -> None:
        """Merge the pending leaves: all of them, or (``everything`` False) only up to the last whole tile."""
        tree, leaves, visit = self.range, self.pending, self.visit
        at, count = 0, len(leaves)
        while at < count and tree.end % _TILE:
            tree.append(leaves[at], visit)
            at += 1
        while count - at >= _TILE:
            first = tree.end
            node = _mth(leaves[at : at + _TILE])
            visit(TILE_STRIDE, first >> TILE_STRIDE, node)
            tree.merge(CompactRange.from_hashes(first, first + _TILE, [node]), visit)
            at += _TILE
        if everything:
            for leaf in leaves[at:]:
                tree.append(leaf, visit)
            at = count
        del leaves[:at]

    def hashes(self) -> tuple[bytes, ...]:
        self.flush(everything=True)
        return self.range.hashes


# -- one chunk, in a worker --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Seal:
    index: int
    number: int
    prev_header: str
    header_hash: bytes
    subjects_root: str
    touched: dict[bytes, tuple[bytes, int, int]]
    """Map key of each subject with entries in the block: (last leaf, entries in the block, last index)."""


@dataclass(slots=True)
class _ChunkResult:
    start: int
    end: int
    hashes: tuple[bytes, ...]
    cuts: dict[int, tuple[bytes, ...]]
    seals: list[_Seal]
    problems: list[Problem]
    envelope_problems: list[Problem]
    envelopes: list[tuple[bytes, int]]
    """(digest, index of its first entry in the chunk) of the envelopes the chunk's events refer to."""
    first_links: dict[Any, tuple[int, Any]]
    """Subject column -> (index, prev column) of the subject's first entry in the chunk."""
    last_links: dict[Any, Any]
    """Subject column -> leaf column of the subject's last entry in the chunk."""
    chain_breaks: list[tuple[int, Any]]
    """(index, subject) of the first links broken inside the chunk."""
    token_indices: list[int]
    """The entries whose columns name a token event, in log order ..."""
    token_verdicts: list[str]
    """... the verdict each one's bytes record ..."""
    token_events: bytes
    """... and their event bytes, as one JSON array ..."""
    token_sizes: list[int]
    """... of elements this long (to read them one by one if the array as a whole does not decode)."""
    link_sum: int
    """The multiset hash (_Derived) of the lineage links the chunk's events give, of entries below the index
    from which the store may not hold them yet ..."""
    links_above: list[Link]
    """... and those links at or above it; the same for the (subject, index) pairs of the chunk's entries
    and the subject index:"""
    index_sum: int
    index_above: list[tuple[str, int]]


def _envelope_problem(
    env: EnvelopeRow, digest: bytes, producer: str, key_id: str, recorded: str, keyring: Keyring
) -> str | None:
    """Why an envelope fails its checks at a use by ``producer``/``key_id`` recorded at ``recorded``, or None."""
    try:
        statement = msgspec.convert(decode_json(env.payload), type=BatchStatement)
        if hashlib.sha256(pae(BATCH_PAYLOAD_TYPE, env.payload)).digest() != digest:
            raise LedgerError("envelope digest does not match its payload")
        blob = env.event_leaves
        if len(blob) % 32:
            raise LedgerError(f"the event leaves are {len(blob)} bytes, not a whole number of 32-byte hashes")
        leaves = [blob[i : i + 32] for i in range(0, len(blob), 32)]
        if statement.count != len(leaves) or _mth(leaves).hex() != statement.root:
            raise LedgerError("batch root or count does not match the signed statement")
        if statement.producer != producer or statement.key_id != key_id:
            raise LedgerError("producer or key id differs from the signed statement")
        key = keyring.get(key_id)
        if key.producer != producer or not key.usable_at(recorded):
            raise LedgerError(f"key {key_id} was not valid for {producer} at {recorded}")
        opened = OpenedEnvelope(statement, env.payload, env.signature, (), tuple(leaves), digest)
        verify_batch_signature(opened, key.public_key)
    except (LedgerError, msgspec.ValidationError) as e:
        return str(e)
    return None


def _verify_chunk(
    url: str, start: int, end: int, cut_sizes: Sequence[int], keyring: Keyring, check: _IndexCheck | None
) -> _ChunkResult:
    """Check entries [start, end), which begin at a block boundary; runs in a worker process."""
    store = open_store(url, readonly=True)
    problems: list[Problem] = []
    envelope_problems: list[Problem] = []
    computed_nodes: dict[tuple[int, int], bytes] = {}

    def visit(level: int, index: int, digest: bytes) -> None:
        if level % TILE_STRIDE == 0:
            computed_nodes[(level, index)] = digest

    def problem(kind: str, message: str, index: int | None = None, blk: int | None = None) -> None:
        if len(problems) < _MAX_PROBLEMS:
            problems.append(Problem(kind, message, index, blk))

    tree = _TreeFeed(start, visit)
    tree_leaves = tree.pending
    block_leaves: list[bytes] = []
    block_first = start
    block_hlc_first = ""
    last_recorded = ""
    cuts: dict[int, tuple[bytes, ...]] = {}
    cuts_ahead = sorted(c for c in set(cut_sizes) if c > start)
    next_cut = cuts_ahead.pop(0) if cuts_ahead else -1
    seals: list[_Seal] = []
    touched: dict[Any, tuple[bytes, int, int]] = {}
    first_links: dict[Any, tuple[int, Any]] = {}
    last_links: dict[Any, Any] = {}
    chain_breaks: list[tuple[int, Any]] = []
    token_indices: list[int] = []
    token_verdicts: list[str] = []
    token_events: list[bytes] = []
    token_sizes: list[int] = []
    links: list[Link] = []
    pairs: list[tuple[str, int]] = []  # (subject column, index) of every entry: the subject index's rows
    # envelope digest (hex) -> (event leaves, producer, key id); the digests of envelopes not in the store
    envelope_cache: dict[str, tuple[bytes, str, str]] = {}
    envelopes_missing: set[str] = set()
    envelope_digests: list[tuple[bytes, int]] = []

    def first_use(entry: _LeanEventEntry, idx: int) -> tuple[bytes, str, str] | None:
        """An envelope first named in this chunk: read it and check it at this use (its first use in the log
        is the first in some chunk)."""
        hex_digest = entry.envelope
        if hex_digest in envelopes_missing:
            return None
        try:
            digest = bytes.fromhex(hex_digest)
            e_row = store.envelope(digest)
        except (LedgerError, ValueError):
            envelopes_missing.add(hex_digest)
            return None
        env = envelope_cache[hex_digest] = (e_row.event_leaves, e_row.producer, e_row.key_id)
        envelope_digests.append((digest, idx))
        why = _envelope_problem(e_row, digest, entry.producer, entry.key_id, entry.recorded_at, keyring)
        if why is not None:
            envelope_problems.append(
                Problem("envelope", f"envelope {digest.hex()[:16]} (first entry {idx}): {why}", idx)
            )
        return env

    sha256 = _sha256
    decode = _LEAN.decode
    expected = start
    position = start  # leaves read so far: the end of the chunk's tree
    try:
        for row in store.entries(start, end):
            idx, subject, event_id, parent, prev, leaf_col, verdict, body = row
            pairs.append((subject, idx))
            if idx != expected:
                problem("missing", f"entries {expected}..{idx - 1} are missing (deleted)", expected)
            expected = idx + 1
            if type(body) is not bytes:  # someone rewrote the column with another SQL type
                problem("entry_format", f"entry {idx}: stored bytes have the wrong type", idx)
                body = str(body).encode()
            leaf = sha256(b"\x00" + body).digest()
            if leaf != leaf_col:
                problem("entry_hash", f"entry {idx}: stored leaf hash does not match its bytes", idx)
            tree_leaves.append(leaf)
            position += 1
            if position == next_cut:
                cuts[position] = tree.hashes()
                next_cut = cuts_ahead.pop(0) if cuts_ahead else -1
            elif not position % _FLUSH_LEAVES:
                tree.flush(everything=False)  # inside a long block: keep the pending leaves bounded
            # The chain, from the stored columns as the store keeps them: prev must be the leaf column of the
            # subject's previous entry (zeros for its first). Links into earlier chunks: see _Chains.
            last = last_links.get(subject)
            if last is None:
                first_links[subject] = (idx, prev)
            elif prev != last and len(chain_breaks) < _MAX_CHAIN_BREAKS:
                chain_breaks.append((idx, subject))
            last_links[subject] = ZERO_HASH if leaf_col is None else leaf_col
            try:
                entry = decode(body)
            except (msgspec.DecodeError, UnicodeDecodeError) as e:
                problem("entry_format", f"entry {idx}: bytes are not an entry ({e})", idx)
                block_leaves.append(leaf)
                continue
            if entry.index != idx:
                problem("position", f"entry {idx}: its bytes say index {entry.index} (moved or reordered)", idx)
            if type(prev) is not bytes or entry.prev != prev.hex():
                problem("derived_column", f"entry {idx}: prev column differs from its bytes", idx)
            if not block_hlc_first:
                block_hlc_first = entry.recorded_at
            if entry.recorded_at < last_recorded:
                problem("clock", f"entry {idx}: recorded_at goes backwards", idx)
            if type(entry) is _LeanEventEntry:
                last_recorded = entry.recorded_at
                block_leaves.append(leaf)
                seen = touched.get(subject)
                touched[subject] = (leaf, seen[1] + 1 if seen else 1, idx)
                subj, par = _subject_and_parent(entry.event)
                if subj != subject or par != parent or entry.event.event_id != event_id or entry.verdict != verdict:
                    problem("derived_column", f"entry {idx}: subject/event id/parent/verdict columns differ", idx)
                # The event's bytes sit between the fixed-width envelope field and the last ',"index":' (no
                # field after the event can contain that text).
                event_end = body.rfind(b',"index":')
                if not body.startswith(b'{"envelope":"') or event_end < _EVENT_START:
                    problem("entry_format", f"entry {idx}: bytes are not laid out as an event entry", idx)
                    continue
                raw = body[_EVENT_START:event_end]
                _entry_links(entry.event, idx, subj, links)
                if event_id is not None and type(subject) is str and subject.startswith("token:"):
                    # judged again by the coordinator, in log order; the envelope check below pins these
                    # bytes to the event the producer signed
                    token_indices.append(idx)
                    token_verdicts.append(entry.verdict)
                    token_events.append(raw)
                    token_sizes.append(len(raw))
                env = envelope_cache.get(entry.envelope)
                if env is None:
                    env = first_use(entry, idx)
                if env is None:
                    problem("envelope", f"entry {idx}: its envelope {entry.envelope} is missing", idx)
                    continue
                leaves, producer, key_id = env
                at = entry.position * 32
                if (
                    leaves[at : at + 32] != sha256(b"\x00" + raw).digest()
                    or producer != entry.producer
                    or key_id != entry.key_id
                ):
                    problem("envelope", f"entry {idx}: event is not what its signed envelope holds", idx)
            elif type(entry) is SealEntry:
                h = entry.block
                blk = h.number
                if subject != BLOCKS_SUBJECT or event_id is not None or parent is not None or verdict != "ok":
                    problem("derived_column", f"seal {idx}: derived columns differ from its bytes", idx, blk)
                if h.first != block_first or h.last != idx - 1:
                    problem(
                        "block",
                        f"block {blk}: covers {h.first}..{h.last}, expected {block_first}..{idx - 1}",
                        idx,
                        blk,
                    )
                if h.root != _mth(block_leaves).hex():
                    # a bad entry inside the block explains the root; otherwise the seal itself is wrong
                    inside = [p.index for p in problems if p.index is not None and p.index >= block_first]
                    problem("block", f"block {blk}: root does not match its entries", min(inside, default=idx), blk)
                if h.hlc_first != block_hlc_first or h.hlc_last != last_recorded:
                    problem("block", f"block {blk}: HLC range does not match its entries", idx, blk)
                keyed = {_map_key(s): head for s, head in touched.items()}
                seals.append(_Seal(idx, blk, h.prev_header, header_hash(h), h.subjects_root, keyed))
                touched = {}
                block_leaves = []
                block_first = idx + 1
                block_hlc_first = ""
                last_recorded = entry.recorded_at
                tree.flush(everything=False)
            else:
                block_leaves.append(leaf)
                last_recorded = entry.recorded_at
                seen = touched.get(subject)
                touched[subject] = (leaf, seen[1] + 1 if seen else 1, idx)
                what, own = own_subject(entry)
                if subject != own or event_id is not None or parent is not None or verdict != "ok":
                    problem("derived_column", f"{what} entry {idx}: derived columns differ from its bytes", idx)
        if expected < end:
            problem("missing", f"entries {expected}..{end - 1} are missing (deleted)", expected)
        hashes = tree.hashes()
        link_sum, links_above = _multiset(links, 3, None if check is None else check.links_below, check)
        index_sum, index_above = _multiset(pairs, 1, None if check is None else check.subjects_below, check)
        # Stored nodes inside this chunk must equal the recomputed ones. Once an entry is known bad, the
        # nodes above it differ as a consequence, so only a chunk with sound entries is checked node by node.
        levels = range(TILE_STRIDE, 64, TILE_STRIDE) if not problems else range(0)
        for level in levels:
            first = -(-start // (1 << level))
            last_node = expected // (1 << level)
            if first >= last_node:
                break
            try:
                stored = store.nodes(level, first, last_node - first)
            except LedgerError as e:
                problem("tree_node", f"stored tree nodes at level {level} are missing: {e}", first << level)
                continue
            for i, digest in enumerate(stored):
                if computed_nodes.get((level, first + i)) != digest:
                    problem("tree_node", f"stored tree node ({level}, {first + i}) is wrong", (first + i) << level)
                    break
    finally:
        store.close()
    return _ChunkResult(
        start=start,
        end=tree.range.end,
        hashes=hashes,
        cuts=cuts,
        seals=seals,
        problems=problems,
        envelope_problems=envelope_problems,
        envelopes=envelope_digests,
        first_links=first_links,
        last_links=last_links,
        chain_breaks=chain_breaks,
        token_indices=token_indices,
        token_verdicts=token_verdicts,
        token_events=b"[" + b",".join(token_events) + b"]",
        token_sizes=token_sizes,
        link_sum=link_sum,
        links_above=links_above,
        index_sum=index_sum,
        index_above=index_above,
    )


# -- the coordinator's share -------------------------------------------------------------------------------


class _Verdicts:
    """Judges every token event again, in log order, from the events the chunks read."""

    def __init__(self, policy: LifecyclePolicy, local: Callable[[str], bool] | None) -> None:
        self.policy = policy
        self.local = local
        self.states: dict[str, TokenState] = {}
        self.problems: list[Problem] = []
        self.judged = 0
        self.revoked: dict[str, int] = {}
        """Token subject -> index of the entry that revoked it, as the writer fills the revocation set."""

    def absorb(self, res: _ChunkResult) -> None:
        """Judge the chunk's token events."""
        states, policy, local, problems = self.states, self.policy, self.local, self.problems
        get = states.get
        never = lifecycle.NEVER_SEEN
        apply = lifecycle.apply

        def state_of(token_id: str) -> TokenState:
            return get(token_id, never)

        events: list[Event | None] = []
        with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError):
            events = list(_EVENTS.decode(res.token_events))
        if len(events) != len(res.token_sizes):
            # Some event is not one the event model accepts (or not even JSON): read them one by one, as
            # model.read_event would, and leave out those that fail.
            events = []
            at = 1
            for size in res.token_sizes:
                try:
                    events.append(_EVENT.decode(res.token_events[at : at + size]))
                except (msgspec.DecodeError, UnicodeDecodeError):
                    events.append(None)
                at += size + 1
        judged = 0
        for idx, said, event in zip(res.token_indices, res.token_verdicts, events, strict=True):
            if type(event) is not TokenEvent or not head_ok(event):
                continue  # not a token event after all, or bytes the event model rejects: not judged
            verdict, changes = apply(event, state_of, policy, local)
            if changes:
                states.update(changes)
                for tid, state in changes.items():
                    if state.state == "REVOKED":
                        self.revoked.setdefault("token:" + tid, idx)
            judged += 1
            if verdict != said and len(problems) < _MAX_PROBLEMS:
                problems.append(
                    Problem(
                        "verdict",
                        f"entry {idx}: records verdict {said!r}; the lifecycle rules give {verdict!r}",
                        idx,
                    )
                )
        self.judged += judged


class _Chains:
    """Joins the chunks' chain links: a subject's first entry in a chunk must link to its last leaf in the
    chunks before (zeros if none). Reports the first breaks in log order, as many as the store's own
    chain query reports."""

    def __init__(self) -> None:
        self.heads: dict[Any, Any] = {}
        self.breaks: list[tuple[int, Any]] = []

    def absorb(self, result: _ChunkResult) -> None:
        heads = self.heads
        for subject, (idx, prev) in result.first_links.items():
            if prev != heads.get(subject, ZERO_HASH):
                self.breaks.append((idx, subject))
        heads.update(result.last_links)
        self.breaks.extend(result.chain_breaks)

    def problems(self) -> list[Problem]:
        first = sorted(self.breaks, key=lambda br: br[0])[:_MAX_CHAIN_BREAKS]
        return [
            Problem("chain", f"entry {idx}: chain of {subject} is broken (prev does not link)", idx)
            for idx, subject in first
        ]


_MAP_LEAF: Final = smt.LEAF_PREFIX
_MAP_INTERIOR: Final = smt.INTERIOR_PREFIX
_MAP_TOP_BIT: Final = smt.KEY_BITS - 1


_MapLeaf = tuple[int, bytes]
"""A leaf of the verifier's subject map: (its key as an integer, its node hash)."""
_MapInterior = list[Any]
"""An interior node of the verifier's subject map: [left, right, node hash], children as _MapNode."""
_MapNode = _MapLeaf | _MapInterior | None
"""None for an empty subtree."""


class _SubjectMap:
    """The verifier's own copy of the subject map, rebuilt block by block from verified entries.

    The same tree as core.smt (see its module docstring for the format: compressed sparse Merkle tree, leaf
    SHA-256(0x10 || key || value hash), interior SHA-256(0x11 || left || right), EMPTY for no subtree), held
    as linked nodes that each update changes in place: this process computed every node itself, so unlike
    core.smt reading a store's nodes it need not look them up by hash and hash them again, and only the
    current tree is kept. A test holds the two implementations to the same roots.

    Memory grows with the number of subjects (a leaf and about one interior node each): verification trades
    memory for never trusting a stored map node.
    """

    def __init__(self) -> None:
        self.tree: _MapNode = None
        self.counts: dict[bytes, int] = {}

    @property
    def root(self) -> bytes:
        return smt.EMPTY if self.tree is None else self.tree[-1]

    def advance(self, touched: dict[bytes, tuple[bytes, int, int]]) -> str:
        """Set the heads of the subjects a block touched; the root after the block, in hex."""
        if not touched:
            return self.root.hex()
        counts = self.counts
        sha = _sha256
        empty = smt.EMPTY
        keys = sorted(touched)
        leaves: list[bytes] = []
        for key in keys:
            head, added, index = touched[key]
            count = counts.get(key, 0) + added
            counts[key] = count
            value = sha(head + count.to_bytes(8, "big") + index.to_bytes(8, "big")).digest()
            leaves.append(sha(_MAP_LEAF + key + value).digest())
        ints = [int.from_bytes(key, "big") for key in keys]

        def interior(left: _MapNode, right: _MapNode) -> bytes:
            return sha(
                _MAP_INTERIOR + (empty if left is None else left[-1]) + (empty if right is None else right[-1])
            ).digest()

        def build(lo: int, hi: int, depth: int, resident: _MapLeaf | None) -> _MapNode:
            """A subtree that held at most the leaf ``resident``, now also holding the new leaves [lo, hi)."""
            count = hi - lo
            if resident is None:
                if count == 1:
                    return (ints[lo], leaves[lo])
                if count == 0:
                    return None
            elif count == 0:
                return resident  # moved down unchanged
            # two or more leaves: split them at bit ``depth`` (the new ones share the bits above it)
            shift = _MAP_TOP_BIT - depth
            boundary = ((ints[lo] >> shift) | 1) << shift
            mid = bisect_left(ints, boundary, lo, hi)
            if resident is not None and resident[0] < boundary:
                left, right = build(lo, mid, depth + 1, resident), build(mid, hi, depth + 1, None)
            else:
                left, right = build(lo, mid, depth + 1, None), build(mid, hi, depth + 1, resident)
            return [left, right, interior(left, right)]

        def apply(node: _MapNode, depth: int, lo: int, hi: int) -> _MapNode:
            """``node``'s subtree with the new leaves [lo, hi) (not none) set in it."""
            if node is None:
                return build(lo, hi, depth, None)
            if type(node) is tuple:  # a leaf, alone in its subtree
                at = bisect_left(ints, node[0], lo, hi)
                if at < hi and ints[at] == node[0]:
                    return build(lo, hi, depth, None)  # its own value changes
                return build(lo, hi, depth, node)
            assert type(node) is list
            shift = _MAP_TOP_BIT - depth
            mid = bisect_left(ints, ((ints[lo] >> shift) | 1) << shift, lo, hi)
            if lo < mid:
                node[0] = apply(node[0], depth + 1, lo, mid)
            if mid < hi:
                node[1] = apply(node[1], depth + 1, mid, hi)
            node[2] = interior(node[0], node[1])
            return node

        self.tree = apply(self.tree, 0, 0, len(keys))
        return self.root.hex()


_HASH_MOD: Final = 1 << 256
_ROW_ENCODER: Final = msgspec.json.Encoder()

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _IndexCheck:
    """What the workers need to check the derived indexes: for the links and for the subject index, the
    index below which the store must hold every row (None: not checked), and this run's key for _row_hash."""

    links_below: int | None
    subjects_below: int | None
    key: bytes


def _row_hash(row: Sequence[object], key: bytes) -> int:
    """One row's term of a multiset hash: a keyed BLAKE2b of its JSON, with a key drawn afresh for each
    verification. A plain sum of public hashes is open to a generalized-birthday search (Wagner) for rows
    whose hashes add up to those of the rows removed; under a key the tamperer never saw there is nothing
    to search against."""
    return int.from_bytes(hashlib.blake2b(_ROW_ENCODER.encode(row), digest_size=32, key=key).digest(), "big")


def _multiset(rows: Sequence[Row], pos: int, below: int | None, check: _IndexCheck | None) -> tuple[int, list[Row]]:
    """The multiset hash of the distinct ``rows`` whose log index (at ``pos``) is below ``below``, and the
    rows at or above it (nothing when the table is not checked)."""
    if check is None or below is None:
        return 0, []
    key = check.key
    total = 0
    above: list[Row] = []
    for row in set(rows):  # a data event naming an input twice gives one link
        if row[pos] < below:
            total += _row_hash(row, key)
        else:
            above.append(row)
    return total % _HASH_MOD, above


@dataclass(slots=True)
class _Stored:
    """A derived table as _stored_indexes read it: per chunk, the multiset hash of its rows below the
    point; the rows at or above it; and the log's size once they were read (rows of entries appended
    while the verifier ran are not judged)."""

    sums: list[int]
    others: list[Row]
    size: int


class _Derived:
    """A table the store derives from the entries and the queries read, which no signature covers, against
    the rows the entries give: the links (lineage.py answers "which tokens used this resource" from them)
    and SQLite's subject index (timelines and every lookup by subject). A row removed would silently drop
    a token from an incident's answer.

    Below ``below`` (where the store must hold every row of those entries: ledger.links.stored_below, the
    subject index's mark) the stored rows of each chunk must be exactly the derived ones, compared as a
    multiset hash (the sum of each row's keyed hash, _row_hash, modulo 2**256), so memory does not grow
    with the log. At or above it the store may hold some of them (the writer writes them later), so each
    stored row there must be one of the derived rows, kept as a set (a block or two of links, up to two
    runs of the subject index).
    """

    def __init__(self, kind: str, what: str, pos: int, below: int | None) -> None:
        self.kind = kind
        self.what = what
        self.pos = pos
        self.below = below
        self.starts: list[int] = []
        self.sums: list[int] = []
        self.above: set[Row] = set()

    def add(self, start: int, total: int, above: list[Row]) -> None:
        """A chunk's rows, as _verify_chunk summed them (see _multiset)."""
        if self.below is None:
            return
        self.starts.append(start)
        self.sums.append(total)
        self.above.update(above)

    def check(self, stored: _Stored | None, size: int) -> list[Problem]:
        """Problems with the stored rows, as _stored_indexes read them for the same chunks."""
        below = self.below
        if below is None or stored is None or not self.starts:
            return []
        problems: list[Problem] = []
        for row in stored.others:
            idx = row[self.pos]
            if type(idx) is int and size <= idx < stored.size:
                continue  # an entry appended since the verification began: not judged
            if row not in self.above and len(problems) < _MAX_PROBLEMS:
                problems.append(
                    Problem(
                        self.kind,
                        f"a stored {self.what} row of entry {idx} is not one the entry gives (forged)",
                        idx if type(idx) is int and 0 <= idx < size else None,
                    )
                )
        for k, (derived, found) in enumerate(zip(self.sums, stored.sums, strict=True)):
            if derived != found and len(problems) < _MAX_PROBLEMS:
                start = self.starts[k]
                end = min(self.starts[k + 1] if k + 1 < len(self.starts) else size, below)
                problems.append(
                    Problem(
                        self.kind,
                        f"entries {start}..{end - 1}: the stored {self.what} rows are not those the entries give "
                        "(rows removed, added or changed)",
                        start,
                    )
                )
        return problems


@dataclass(slots=True)
class _Scan:
    """The stored side of the _Derived checks: each table read once, in a worker beside the chunks (or here
    after them)."""

    url: str
    starts: list[int]
    check: _IndexCheck
    result: tuple[_Stored | None, _Stored | None] | None = None


def _stored_indexes(url: str, starts: list[int], check: _IndexCheck) -> tuple[_Stored | None, _Stored | None]:
    """The links and the subject index as stored (None for a table not checked)."""
    store = open_store(url, readonly=True)
    try:
        links = index = None
        if check.links_below is not None:
            links = _stored(store.link_rows(), 3, check.links_below, starts, check.key)
        kept = store.subject_index_rows() if check.subjects_below is not None else None
        if check.subjects_below is not None and kept is not None:
            index = _stored(kept[1], 1, check.subjects_below, starts, check.key)
        size = store.size()  # after the rows: every entry they name that exists is below it
        return (
            None if links is None else _Stored(*links, size),
            None if index is None else _Stored(*index, size),
        )
    finally:
        store.close()


def _stored(rows: Iterator[Row], pos: int, below: int, starts: list[int], key: bytes) -> tuple[list[int], list[Row]]:
    """Per chunk, the multiset hash of the rows below ``below``; and the other rows."""
    sums = [0] * len(starts)
    others: list[Row] = []
    for row in rows:
        idx = row[pos]
        if type(idx) is int and 0 <= idx < below:
            sums[bisect_right(starts, idx) - 1] += _row_hash(row, key)
        else:
            others.append(row)
    return [total % _HASH_MOD for total in sums], others


def _revocation_problems(derived: dict[str, int], rows: list[tuple[str, int]], size: int, now: int) -> list[Problem]:
    """The stored revocation set against the one the token events give. ``size`` is the log the verifier
    read, ``now`` the log's size after the rows were read: rows of entries appended in between are not
    judged."""
    stored = {subject: idx for subject, idx in rows if not (type(idx) is int and size <= idx < now)}
    problems: list[Problem] = []
    for subject in sorted(derived.keys() | stored.keys(), key=lambda s: (derived.get(s, -1), str(s))):
        mine, theirs = derived.get(subject), stored.get(subject)
        if mine != theirs and len(problems) < _MAX_PROBLEMS:
            said = "does not hold it" if theirs is None else f"says entry {theirs}"
            gave = "no entry revokes it" if mine is None else f"entry {mine} revokes it"
            problems.append(Problem("revocations", f"{subject}: the revocation set {said}; {gave}", mine))
    return problems


class _Merge:
    """Folds the chunk results, in log order, into the whole log's checks."""

    def __init__(self, report: VerifyReport, verdicts: _Verdicts, links: _Derived, index: _Derived) -> None:
        self.report = report
        self.verdicts = verdicts
        self.links = links
        self.index = index
        self.chains = _Chains()
        self.tree = CompactRange()
        self.roots: dict[int, bytes] = {0: self.tree.root()}
        self.prev_header = ZERO_HASH
        self.next_number = 0
        self.subject_map = _SubjectMap()
        self.crossing: list[tuple[int, int, bytes]] = []
        self.contiguous = True
        self.envelopes: dict[bytes, int] = {}
        """Digest -> the index of the first entry naming the envelope."""

    def _visit(self, level: int, index: int, digest: bytes) -> None:
        if level % TILE_STRIDE == 0:
            self.crossing.append((level, index, digest))

    def absorb(self, res: _ChunkResult) -> None:
        report = self.report
        report.problems.extend(res.problems)
        report.problems.extend(res.envelope_problems)
        for digest, first in res.envelopes:
            self.envelopes.setdefault(digest, first)
        self.chains.absorb(res)
        self.verdicts.absorb(res)
        self.links.add(res.start, res.link_sum, res.links_above)
        self.index.add(res.start, res.index_sum, res.index_above)
        self.contiguous = self.contiguous and res.start == self.tree.end
        for cut, hashes in sorted(res.cuts.items()):
            if not self.contiguous:
                break
            partial = self.tree.copy()
            partial.merge(CompactRange.from_hashes(res.start, cut, hashes))
            self.roots[cut] = partial.root()
        for seal in res.seals:
            if seal.number != self.next_number or seal.prev_header != self.prev_header.hex():
                report.problems.append(
                    Problem(
                        "block",
                        f"block {seal.number}: header chain broken at seal {seal.index}",
                        seal.index,
                        seal.number,
                    )
                )
            if self.subject_map.advance(seal.touched) != seal.subjects_root:
                report.problems.append(
                    Problem(
                        "subject_map",
                        f"block {seal.number}: subjects_root is not the map of chain heads after the block",
                        seal.index,
                        seal.number,
                    )
                )
            self.prev_header = seal.header_hash
            self.next_number = seal.number + 1
        if self.contiguous:
            self.tree.merge(CompactRange.from_hashes(res.start, res.end, res.hashes), self._visit)


def _start_method() -> str:
    """How to start worker processes: fork where that is safe, spawn elsewhere.

    A forked worker starts in milliseconds and imports nothing; a spawned one pays for a fresh interpreter,
    this package and the caller's ``__main__`` (the CLI's, about 0.3 s each). Forking is safe on Linux when
    this process runs a single thread (a lock held by another thread would stay held in the child) and has
    no store connection of ours open (the caller closes it first); a threaded host, such as the HTTP
    service, gets spawn.
    """
    return "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """While forked workers run, keep the collector off the objects this process already holds.

    A forked worker shares this process's memory page by page until either side writes to a page. A full
    collection writes to every object it scans, so in this process (or in a worker, whose initializer
    freezes what it inherited) it would copy nearly every page of a large heap, such as the benchmark's.
    gc.freeze sets the existing objects aside until gc.unfreeze (CPython's advice for forking servers);
    objects made meanwhile are collected as usual. Only for fork, so only in a single-threaded process;
    left alone if something else froze objects already.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _chunk_results(
    url: str,
    chunks: list[tuple[int, int]],
    cut_sizes: list[int],
    keyring: Keyring,
    n_workers: int,
    context: BaseContext | None,
    scan: _Scan | None,
) -> Iterator[_ChunkResult]:
    """The chunks' results in log order: from a process pool (later chunks go on in the workers while the
    caller folds earlier results) or, without ``context``, computed here one after another. ``scan`` gets
    its result once the last chunk's is out."""

    def cuts_in(a: int, b: int) -> list[int]:
        return [c for c in cut_sizes if a < c <= b]

    if context is None:
        for a, b in chunks:
            yield _verify_chunk(url, a, b, cuts_in(a, b), keyring, scan.check if scan else None)
        if scan is not None:
            scan.result = _stored_indexes(scan.url, scan.starts, scan.check)
        return
    workers = min(n_workers, len(chunks))
    forked = context.get_start_method() == "fork"
    with (
        _frozen_heap() if forked else contextlib.nullcontext(),
        ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=gc.freeze if forked else None) as pool,
    ):
        # A window of chunks in flight: the workers never wait for work, and results the caller has not yet
        # folded stay few, so memory does not grow with the log.
        queue = iter(chunks)

        def submit(chunk: tuple[int, int]) -> Future[_ChunkResult]:
            a, b = chunk
            return pool.submit(_verify_chunk, url, a, b, cuts_in(a, b), keyring, scan.check if scan else None)

        ahead: deque[Future[_ChunkResult]] = deque(
            map(submit, itertools.islice(queue, _IN_FLIGHT_PER_WORKER * workers))
        )
        scanning = None if scan is None else pool.submit(_stored_indexes, scan.url, scan.starts, scan.check)
        try:
            while ahead:
                result = ahead.popleft().result()
                following = next(queue, None)
                if following is not None:
                    ahead.append(submit(following))
                yield result
            if scan is not None and scanning is not None:
                scan.result = scanning.result()
        finally:
            for fut in ahead:
                fut.cancel()
            if scanning is not None:
                scanning.cancel()


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


def _keyring(store: Any, report: VerifyReport) -> Keyring:
    """The producer keys, from the key entries in the log itself."""
    keyring = Keyring()
    for row in store.subjects_with_prefix("producer:"):
        try:
            entry = decode_entry(row.body)
            if not isinstance(entry, KeyEntry):
                raise LedgerError("not a key entry")
            keyring.apply(entry.change)
        except LedgerError as e:
            report.problems.append(Problem("key", f"key entry {row.index}: {e}", row.index))
    return keyring


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
        if missing := stored_rows.meta_problems(meta, FORMAT):
            report.problems.extend(Problem("meta", message, index) for message, index in missing)
            return report
        try:
            parse_verifier_key(meta.get("verifier_key", ""))
        except LedgerError as e:
            report.problems.append(Problem("meta", f"the verifier key copy in the database: {e}"))
            return report
        chain, chain_problems = check_key_chain(store, verifier)
        if verifier is None:
            verifier = chain.original
            report.key_source = "database copy (untrusted: pass --key to verify against a key you hold)"
        else:
            report.key_source = "given"
        report.problems.extend(
            Problem("meta" if index is None else "log_key", message, index) for index, message in chain_problems
        )
        # the key that must have signed a checkpoint of a given size: the chain's, when it starts from or
        # reaches the trusted key; otherwise that key alone (and the chain is reported above)
        in_chain = verifier in chain.verifiers()
        keys = chain.verifiers() if in_chain else [verifier]
        signing_key = chain.verifier_for if in_chain else (lambda _size, key=verifier: key)
        origin = meta["origin"]
        try:
            policy = LifecyclePolicy.from_text(meta["lifecycle"]) if "lifecycle" in meta else LifecyclePolicy()
        except LedgerError as e:
            report.problems.append(Problem("meta", f"the recorded lifecycle policy: {e}"))
            policy = LifecyclePolicy()
        size = store.size()
        report.size = size
        # the log is indexes 0 .. size-1; a row below 0 is outside it, so nothing else would look at it
        lowest = store.lowest_index()
        if lowest is not None and lowest < 0:
            report.problems.append(
                Problem("insertion", f"the store holds a row at index {lowest}, outside the log", lowest)
            )
        seal_rows = store.subject_entries([BLOCKS_SUBJECT])
        checkpoints = store.checkpoints()
        report.checkpoints = len(checkpoints)
        keyring = _keyring(store, report)
        links_below = _links_below(store, max((row.size for row in checkpoints), default=0))
        kept = store.subject_index_rows()
        subjects_below = None if kept is None else kept[0]
    finally:
        store.close()  # no connection of ours stays open across a fork

    cut_sizes: list[int] = []
    signed: list[Checkpoint] = []
    for row in checkpoints:
        try:
            text, _ = open_note(row.note, [signing_key(row.size)])
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
            text, signers = open_note(trusted_checkpoint, keys)
            claimed = Checkpoint.from_text(text)
            if signing_key(claimed.size) not in signers:
                expected = signing_key(claimed.size)
                raise LedgerError(f"it is not signed by {expected}, the log key of tree size {claimed.size}")
            trusted = claimed
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
    method = _start_method() if n_workers > 1 else None
    target = min(_MAX_CHUNK, max(_MIN_CHUNK, size // (n_workers * _CHUNKS_PER_WORKER) + 1))
    if method == "spawn" and size < _MIN_SPAWNED:
        target = size  # one chunk, verified here
    chunks = _chunks(size, [r.index for r in seal_rows], target)
    context = get_context(method) if method is not None and len(chunks) > 1 else None
    merge = _Merge(
        report,
        _Verdicts(policy, local_tokens(meta)),
        _Derived("links", "lineage link", 3, links_below),
        _Derived("subject_index", "subject index", 1, subjects_below),
    )
    done = 0
    scan = None
    if links_below is not None or subjects_below is not None:
        scan = _Scan(url, [a for a, _ in chunks], _IndexCheck(links_below, subjects_below, os.urandom(32)))
    for res in _chunk_results(url, chunks, cut_sizes, keyring, n_workers, context, scan):
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
    tree, roots = merge.tree, merge.roots

    store = open_store(url, readonly=True)
    try:
        if merge.contiguous and not report.problems:
            for level, index, digest in merge.crossing:
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
        if not report.problems:  # the derived indexes, once the entries they derive from are sound
            try:
                if scan is not None and scan.result is not None:  # set once every chunk came back
                    stored_links, stored_index = scan.result
                    report.problems.extend(merge.links.check(stored_links, size))
                    report.problems.extend(merge.index.check(stored_index, size))
                revocations = store.revocation_rows()
                report.problems.extend(_revocation_problems(merge.verdicts.revoked, revocations, size, store.size()))
            except LedgerError as e:
                report.problems.append(Problem("derived_index", f"cannot read the derived indexes: {e}"))
            _check_stored_map(store, seal_rows, report)
            _check_stored_rows(store, merge.envelopes, report)
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
        if report.ok:  # what the log key signed beside the log: promises, the chain of checkpoints
            seal_indices = [row.index for row in seal_rows]
            for found in commitment_problems(store, signing_key, origin, size, seal_indices, checkpoints):
                report.problems.append(Problem(*found))
    finally:
        store.close()
    report.problems.sort(key=lambda p: (p.index is None, p.index or 0))
    report.seconds = time.perf_counter() - started
    return report


_MAP_PROBLEMS_SHOWN: Final = 10


def _check_stored_map(store: Any, seal_rows: Sequence[EntryRow], report: VerifyReport) -> None:
    """The subject map the store serves completeness proofs from, under the newest seal whose map is stored.

    By now every seal's ``subjects_root`` is known to be the map of the chain heads (the verifier rebuilt
    it), so the stored map is right if every node reachable from that root is in the store and hashes to
    the name it is stored under: the hashes then chain the whole stored tree to the verified root. The
    writer stores a sealed block's nodes after its seal, root last, so the newest seal's root may not be
    stored yet; then the seal before it is the one checked. Older seals' trees share most of their nodes
    with it and are not walked (their roots are the marker that they were written whole).
    """
    for row in reversed(seal_rows):
        try:
            seal = decode_entry(row.body)
        except LedgerError:
            return  # the entry checks reported it
        if not isinstance(seal, SealEntry):
            return
        root = bytes.fromhex(seal.block.subjects_root)
        if root == smt.EMPTY:
            return
        try:
            if store.map_node(root) is None:
                continue  # not stored yet: the writer's debt for this seal
            problems: list[Problem] = []
            frontier = [root]
            while frontier:
                stored = store.map_nodes(frontier)
                below: list[bytes] = []
                for digest in frontier:
                    data = stored.get(digest)
                    if data is None:
                        problems.append(Problem("map_node", f"subject-map node {digest.hex()} is missing", row.index))
                        continue
                    report.map_nodes += 1
                    try:
                        node = checked_node(digest, data)
                    except LedgerError as e:  # malformed, or not hashing to its name
                        problems.append(Problem("map_node", f"subject-map node {digest.hex()}: {e}", row.index))
                        continue
                    if isinstance(node, smt.Interior):
                        below.extend(child for child in (node.left, node.right) if child != smt.EMPTY)
                frontier = below
        except LedgerError as e:
            report.problems.append(Problem("map_node", f"cannot read the subject map: {e}", row.index))
            return
        shown = problems[:_MAP_PROBLEMS_SHOWN]
        if len(problems) > len(shown):
            shown.append(Problem("map_node", f"... and {len(problems) - len(shown)} more", row.index))
        report.problems.extend(shown)
        return


def _check_stored_rows(store: Any, first_uses: dict[bytes, int], report: VerifyReport) -> None:
    """The envelope rows' first indexes and every stored subject-map node (ledger.stored_rows)."""
    try:
        found = stored_rows.envelope_row_problems(store.envelope_first_indexes(), first_uses)
        report.problems.extend(Problem("envelope", message, index) for message, index in found)
        found = stored_rows.map_node_row_problems(store.map_node_rows())
        report.problems.extend(Problem("map_node", message, index) for message, index in found)
    except LedgerError as e:
        report.problems.append(Problem("derived_index", f"cannot read the stored rows: {e}"))


def _links_below(store: Any, checkpoint_size: int) -> int | None:
    """ledger.links.stored_below for the latest checkpoint, or None when the store cannot say (its seal is
    unreadable: a problem the entry checks report)."""
    try:
        return stored_below(store, checkpoint_size)
    except (LedgerError, ValueError, msgspec.DecodeError):
        return None


def _first_index_hint(report: VerifyReport, size: int) -> int | None:
    bad = report.first_bad_index
    return bad if bad is not None and bad < size else max(0, size - 1)


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
