"""One chunk of the log, checked in a worker process: the entries [start, end), which begin at a block
boundary, read once. Everything that needs only the chunk is checked here (entry hashes and columns,
blocks, tree nodes, the envelopes the chunk's events name, the chain links inside the chunk); what needs
the whole log is handed back as compact summaries (ChunkResult) for the coordinator to fold in log order."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from lineage_ledger.core.entry import ZERO_HASH, SealEntry, header_hash
from lineage_ledger.core.merkle import TILE_STRIDE
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.ledger.links import Link
from lineage_ledger.ledger.verification.blocks import BlockSpan, Seal, block_problems, seal_column_problem
from lineage_ledger.ledger.verification.chains import MAX_CHAIN_BREAKS
from lineage_ledger.ledger.verification.derived import IndexCheck, multiset
from lineage_ledger.ledger.verification.entries import (
    LEAN,
    LeanEventEntry,
    entry_links,
    envelope_problem,
    event_bytes,
    event_column_problem,
    event_in_envelope,
    map_key,
    own_column_problem,
    subject_and_parent,
)
from lineage_ledger.ledger.verification.log import TreeFeed, chunk_node_problems
from lineage_ledger.ledger.verification.report import MAX_PROBLEMS, Problem
from lineage_ledger.ledger.verification.rollups import DayScan, Rollup
from lineage_ledger.store import open_store

__all__ = ["ChunkResult", "verify_chunk"]

_FLUSH_LEAVES: Final = 16 * 256
"""Inside a long block, the chunk's tree takes its pending leaves every this many entries."""
_sha256 = hashlib.sha256


@dataclass(slots=True)
class ChunkResult:
    """What a chunk hands back to the coordinator: its problems and the summaries of what it read."""

    start: int
    end: int
    hashes: tuple[bytes, ...]
    cuts: dict[int, tuple[bytes, ...]]
    seals: list[Seal]
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
    """The multiset hash (derived.Derived) of the lineage links the chunk's events give, of entries below the index
    from which the store may not hold them yet ..."""
    links_above: list[Link]
    """... and those links at or above it; the same for the (subject, index) pairs of the chunk's entries
    and the subject index:"""
    index_sum: int
    index_above: list[tuple[str, int]]
    day_starts: list[tuple[int, int]]
    """(day, index of its first entry in the chunk) of each day the chunk's entries up to the rollups' end
    were recorded on (ledger.rollups) ..."""
    rollups: list[tuple[int, str, Rollup]]
    """... and (day, token subject, rollup) of the token events below it."""


def verify_chunk(
    url: str, start: int, end: int, cut_sizes: Sequence[int], keyring: Keyring, check: IndexCheck | None
) -> ChunkResult:
    """Check entries [start, end), which begin at a block boundary; runs in a worker process. ``cut_sizes``
    are the tree sizes whose roots the coordinator needs (checkpoints), ``check`` says which derived indexes
    are checked (None: none)."""
    store = open_store(url, readonly=True)
    try:
        scan = _ChunkScan(store, start, cut_sizes, keyring)
        if check is not None and check.rollups_end is not None and start <= check.rollups_end:
            scan.days = DayScan(check.rollups_end)
        for row in store.entries(start, end):
            scan.entry(row)
        return scan.result(end, check)
    finally:
        store.close()


class _ChunkScan:
    """One pass over a chunk's entries, in log order: ``entry`` checks one row, ``result`` the rest."""

    __slots__ = (
        "block",
        "chain_breaks",
        "computed_nodes",
        "cuts",
        "cuts_ahead",
        "days",
        "envelope_cache",
        "envelope_digests",
        "envelope_problems",
        "envelopes_missing",
        "expected",
        "first_links",
        "keyring",
        "last_links",
        "links",
        "next_cut",
        "pairs",
        "position",
        "problems",
        "seals",
        "start",
        "store",
        "token_events",
        "token_indices",
        "token_sizes",
        "token_verdicts",
        "touched",
        "tree",
    )

    def __init__(self, store: Any, start: int, cut_sizes: Sequence[int], keyring: Keyring) -> None:
        self.store = store
        self.start = start
        self.keyring = keyring
        self.problems: list[Problem] = []
        self.envelope_problems: list[Problem] = []
        self.computed_nodes: dict[tuple[int, int], bytes] = {}
        self.tree = TreeFeed(start, self.visit)
        self.block = BlockSpan(start, [], "", "")
        """The open block; its ``hlc_last`` is the last recorded_at read (of any entry, for the clock check)."""
        self.cuts: dict[int, tuple[bytes, ...]] = {}
        self.cuts_ahead = sorted(c for c in set(cut_sizes) if c > start)
        self.next_cut = self.cuts_ahead.pop(0) if self.cuts_ahead else -1
        self.seals: list[Seal] = []
        self.touched: dict[Any, tuple[bytes, int, int]] = {}
        self.first_links: dict[Any, tuple[int, Any]] = {}
        self.last_links: dict[Any, Any] = {}
        self.chain_breaks: list[tuple[int, Any]] = []
        self.token_indices: list[int] = []
        self.token_verdicts: list[str] = []
        self.token_events: list[bytes] = []
        self.token_sizes: list[int] = []
        self.links: list[Link] = []
        self.pairs: list[tuple[str, int]] = []  # (subject column, index) of every entry: the subject index's rows
        # envelope digest (hex) -> (event leaves, producer, key id); the digests of envelopes not in the store
        self.envelope_cache: dict[str, tuple[bytes, str, str]] = {}
        self.envelopes_missing: set[str] = set()
        self.envelope_digests: list[tuple[bytes, int]] = []
        self.expected = start
        self.position = start  # leaves read so far: the end of the chunk's tree
        self.days: DayScan | None = None

    def visit(self, level: int, index: int, digest: bytes) -> None:
        if level % TILE_STRIDE == 0:
            self.computed_nodes[(level, index)] = digest

    def problem(self, found: Problem | None) -> None:
        if found is not None and len(self.problems) < MAX_PROBLEMS:
            self.problems.append(found)

    def entry(self, row: Sequence[Any]) -> None:
        """One stored entry: its place in the log, its leaf hash, its chain link, then what its bytes say."""
        idx, subject, event_id, parent, prev, leaf_col, verdict, body = row
        self.pairs.append((subject, idx))
        if idx != self.expected:
            self.problem(Problem("missing", f"entries {self.expected}..{idx - 1} are missing (deleted)", self.expected))
        self.expected = idx + 1
        if type(body) is not bytes:  # someone rewrote the column with another SQL type
            self.problem(Problem("entry_format", f"entry {idx}: stored bytes have the wrong type", idx))
            body = str(body).encode()
        leaf = _sha256(b"\x00" + body).digest()
        if leaf != leaf_col:
            self.problem(Problem("entry_hash", f"entry {idx}: stored leaf hash does not match its bytes", idx))
        self.leaf(leaf)
        # The chain, from the stored columns as the store keeps them: prev must be the leaf column of the
        # subject's previous entry (zeros for its first). Links into earlier chunks: chains.Chains.
        last = self.last_links.get(subject)
        if last is None:
            self.first_links[subject] = (idx, prev)
        elif prev != last and len(self.chain_breaks) < MAX_CHAIN_BREAKS:
            self.chain_breaks.append((idx, subject))
        self.last_links[subject] = ZERO_HASH if leaf_col is None else leaf_col
        try:
            entry = LEAN.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            self.problem(Problem("entry_format", f"entry {idx}: bytes are not an entry ({e})", idx))
            self.block.leaves.append(leaf)
            return
        if entry.index != idx:
            self.problem(
                Problem("position", f"entry {idx}: its bytes say index {entry.index} (moved or reordered)", idx)
            )
        if type(prev) is not bytes or entry.prev != prev.hex():
            self.problem(Problem("derived_column", f"entry {idx}: prev column differs from its bytes", idx))
        if self.days is not None:
            self.days.entry(idx, entry.recorded_at)
        block = self.block
        if not block.hlc_first:
            block.hlc_first = entry.recorded_at
        if entry.recorded_at < block.hlc_last:
            self.problem(Problem("clock", f"entry {idx}: recorded_at goes backwards", idx))
        if type(entry) is SealEntry:
            self.problem(seal_column_problem(entry, idx, subject, event_id, parent, verdict))
            self.seal(entry, idx)
            return
        block.hlc_last = entry.recorded_at
        block.leaves.append(leaf)
        seen = self.touched.get(subject)
        self.touched[subject] = (leaf, seen[1] + 1 if seen else 1, idx)
        if type(entry) is LeanEventEntry:
            self.event(entry, idx, body, (subject, event_id, parent, verdict))
        else:
            self.problem(own_column_problem(entry, idx, subject, event_id, parent, verdict))

    def leaf(self, leaf: bytes) -> None:
        """Feed the chunk's tree; keep the roots at the cut sizes."""
        self.tree.pending.append(leaf)
        self.position += 1
        if self.position == self.next_cut:
            self.cuts[self.position] = self.tree.hashes()
            self.next_cut = self.cuts_ahead.pop(0) if self.cuts_ahead else -1
        elif not self.position % _FLUSH_LEAVES:
            self.tree.flush(everything=False)  # inside a long block: keep the pending leaves bounded

    def event(self, entry: LeanEventEntry, idx: int, body: bytes, columns: tuple[Any, Any, Any, Any]) -> None:
        """An event entry: its derived columns, its lineage links, its token event for the verdicts, and the
        event against the envelope the producer signed."""
        derived = subject_and_parent(entry.event)
        self.problem(event_column_problem(entry, idx, derived, columns))
        raw = event_bytes(body)
        if raw is None:
            self.problem(Problem("entry_format", f"entry {idx}: bytes are not laid out as an event entry", idx))
            return
        entry_links(entry.event, idx, derived[0], self.links)
        if self.days is not None and entry.event.kind == "token":
            self.days.token_event(idx, derived[0], entry.event)
        subject, event_id = columns[0], columns[1]
        if event_id is not None and type(subject) is str and subject.startswith("token:"):
            # judged again by the coordinator, in log order; the envelope check below pins these bytes to the
            # event the producer signed
            self.token_indices.append(idx)
            self.token_verdicts.append(entry.verdict)
            self.token_events.append(raw)
            self.token_sizes.append(len(raw))
        env = self.envelope_cache.get(entry.envelope)
        if env is None:
            env = self.first_use(entry, idx)
        if env is None:
            self.problem(Problem("envelope", f"entry {idx}: its envelope {entry.envelope} is missing", idx))
        elif not event_in_envelope(env, entry, raw):
            self.problem(Problem("envelope", f"entry {idx}: event is not what its signed envelope holds", idx))

    def first_use(self, entry: LeanEventEntry, idx: int) -> tuple[bytes, str, str] | None:
        """An envelope first named in this chunk: read it and check it at this use (its first use in the log
        is the first in some chunk)."""
        hex_digest = entry.envelope
        if hex_digest in self.envelopes_missing:
            return None
        try:
            digest = bytes.fromhex(hex_digest)
            e_row = self.store.envelope(digest)
        except (LedgerError, ValueError):
            self.envelopes_missing.add(hex_digest)
            return None
        env = self.envelope_cache[hex_digest] = (e_row.event_leaves, e_row.producer, e_row.key_id)
        self.envelope_digests.append((digest, idx))
        why = envelope_problem(e_row, digest, entry.producer, entry.key_id, entry.recorded_at, self.keyring)
        if why is not None:
            self.envelope_problems.append(
                Problem("envelope", f"envelope {digest.hex()[:16]} (first entry {idx}): {why}", idx)
            )
        return env

    def seal(self, entry: SealEntry, idx: int) -> None:
        """A seal: the block it closes, and a new block after it."""
        h = entry.block
        block = self.block
        # a bad entry inside the block explains a wrong root
        inside = [p.index for p in self.problems if p.index is not None and p.index >= block.first]
        for found in block_problems(entry, idx, block, min(inside, default=None)):
            self.problem(found)
        keyed = {map_key(s): head for s, head in self.touched.items()}
        self.seals.append(Seal(idx, h.number, h.prev_header, header_hash(h), h.subjects_root, keyed))
        self.touched = {}
        self.block = BlockSpan(idx + 1, [], "", entry.recorded_at)
        self.tree.flush(everything=False)

    def result(self, end: int, check: IndexCheck | None) -> ChunkResult:
        """The chunk's result, once every row was read: a tail of missing entries, the tree nodes and the
        derived-index rows summed (see derived.multiset)."""
        if self.expected < end:
            self.problem(Problem("missing", f"entries {self.expected}..{end - 1} are missing (deleted)", self.expected))
        hashes = self.tree.hashes()
        link_sum, links_above = multiset(self.links, 3, None if check is None else check.links_below, check)
        index_sum, index_above = multiset(self.pairs, 1, None if check is None else check.subjects_below, check)
        # Stored nodes inside this chunk must equal the recomputed ones. Once an entry is known bad, the
        # nodes above it differ as a consequence, so only a chunk with sound entries is checked node by node.
        if not self.problems:
            for found in chunk_node_problems(self.store, self.start, self.expected, self.computed_nodes):
                self.problem(found)
        return ChunkResult(
            start=self.start,
            end=self.tree.range.end,
            hashes=hashes,
            cuts=self.cuts,
            seals=self.seals,
            problems=self.problems,
            envelope_problems=self.envelope_problems,
            envelopes=self.envelope_digests,
            first_links=self.first_links,
            last_links=self.last_links,
            chain_breaks=self.chain_breaks,
            token_indices=self.token_indices,
            token_verdicts=self.token_verdicts,
            token_events=b"[" + b",".join(self.token_events) + b"]",
            token_sizes=self.token_sizes,
            link_sum=link_sum,
            links_above=links_above,
            index_sum=index_sum,
            index_above=index_above,
            day_starts=[] if self.days is None else self.days.starts,
            rollups=[] if self.days is None else self.days.rollups(),
        )
