"""The state of the log at a cut, read from the store and authenticated by a trusted checkpoint, so that
``verification.since`` can check the entries after the cut without reading those before it.

The cut is a block boundary at or before the trusted checkpoint's size. What the entries after it are
checked against comes from the entries before it, each piece tied to the trusted root:

* the tree: the compact range of the leaves before the cut, read from the stored nodes; with the leaves
  from the cut to the trusted size it must give the trusted root (checked by the driver);
* the seal that ends the block before the cut: its bytes, with an inclusion proof under the trusted root.
  Its header starts the header chain of the new blocks, its ``subjects_root`` is the subject map at the cut;
* each subject's chain head at the cut (``CutMap``): looked up in the stored subject map under that root,
  every node checked against the hash its parent names, so the head, count and index are the ones the
  trusted root commits to;
* a token's lifecycle state at the cut (``CutVerdicts``): replayed from its own entries, which must chain
  from 64 zeros to the head the map names and be exactly as many as the map counts, and from the entries of
  its children (refreshes and rotations) that the store finds by their parent column. Those children are
  checked one by one (leaf hash, parent named in their bytes), but that none is missing rests on the full
  verification that covered the range before the cut.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from lineage_ledger.core import smt
from lineage_ledger.core.entry import ZERO_HASH, EventEntry, SealEntry, decode_entry, header_hash
from lineage_ledger.core.lifecycle import NEVER_SEEN, LifecyclePolicy, TokenState, replay
from lineage_ledger.core.merkle import (
    TILE_STRIDE,
    CompactRange,
    TiledNodeReader,
    inclusion_proof,
    verify_inclusion,
)
from lineage_ledger.core.model import Event, TokenEvent, read_event
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.completeness import MapReader, encode_node
from lineage_ledger.ledger.verification.chains import Chains
from lineage_ledger.ledger.verification.entries import map_key
from lineage_ledger.ledger.verification.report import MAX_PROBLEMS, Problem
from lineage_ledger.ledger.verification.verdicts import Verdicts, read_events
from lineage_ledger.store.base import EntryRow

__all__ = ["Cut", "CutChains", "CutMap", "CutVerdicts", "prefix_range", "read_cut"]

_sha256 = hashlib.sha256
_MAP_CACHE: Final = 1 << 20
"""Subject-map nodes kept in memory: every node the new blocks create is read again by the next block."""


@dataclass(frozen=True, slots=True)
class Cut:
    """The log at the cut: entries before ``index`` are taken as the trusted checkpoint vouches for them."""

    index: int
    seal_leaf: bytes
    """Leaf hash of the seal at ``index - 1`` (zeros when the cut is at 0)."""
    next_block: int
    prev_header: bytes
    map_root: bytes


def prefix_range(store: Any, end: int) -> CompactRange:
    """The compact range of leaves [0, end), from the stored tree nodes (StoreError if some are missing)."""
    reader = TiledNodeReader(store.nodes, stride=TILE_STRIDE)
    hashes = [reader(level, index) for level, index in CompactRange.decompose(0, end)]
    return CompactRange.from_hashes(0, end, hashes)


def read_cut(store: Any, index: int, trusted_size: int, trusted_root: bytes) -> Cut:
    """The cut at ``index`` (a block boundary at or before ``trusted_size``), its seal proven to be in the
    tree of the trusted checkpoint; LedgerError naming what does not hold."""
    if index == 0:
        return Cut(0, ZERO_HASH, 0, ZERO_HASH, smt.EMPTY)
    row = store.entry(index - 1)
    seal = decode_entry(row.body)
    if not isinstance(seal, SealEntry):
        raise LedgerError(f"entry {index - 1}, where the checked range starts, is not a seal")
    leaf = _sha256(b"\x00" + row.body).digest()
    reader = TiledNodeReader(store.nodes, stride=TILE_STRIDE)
    verify_inclusion(leaf, index - 1, trusted_size, inclusion_proof(index - 1, trusted_size, reader), trusted_root)
    header = seal.block
    return Cut(index, leaf, header.number + 1, header_hash(header), bytes.fromhex(header.subjects_root))


class CutMap:
    """The subject map from the cut on: chain heads at the cut looked up under its root (each node checked),
    then each new block's changes applied with core.smt.update on the stored nodes, so every node a new
    block's map is made of comes from the store or from this process's own hashing."""

    def __init__(self, store: Any, root: bytes) -> None:
        self.reader = MapReader(store, cache_size=_MAP_CACHE)
        self.store = store
        self.root = root
        self.cut_root = root
        self.heads: dict[bytes, smt.SubjectHead | None] = {}
        """Map key -> the subject's head in the map at the cut (None: no entries before the cut)."""
        self.current: dict[bytes, smt.SubjectHead] = {}
        """Map key -> head of every subject changed since the cut (as of the last block applied)."""
        self.created: list[tuple[int, bytes, dict[bytes, smt.Node]]] = []
        """(seal index, root, nodes the block's update created), for the stored-map check."""

    def at_cut(self, keys: Iterable[bytes]) -> None:
        """Look up the heads at the cut of ``keys`` not yet looked up (one store query per tree level)."""
        wanted = [k for k in keys if k not in self.heads]
        if not wanted:
            return
        self.reader.prefetch(self.cut_root, wanted)
        for key in wanted:
            self.heads[key] = _head_at(self.reader, self.cut_root, key)

    def advance(self, touched: dict[bytes, tuple[bytes, int, int]], seal_index: int = -1) -> str:
        """Set the heads of the subjects a block touched (map key -> (last leaf, entries in the block, last
        index)); the root after the block, in hex. Counts carry on from the heads at the cut."""
        if not touched:
            return self.root.hex()
        self.at_cut(touched)
        changes: dict[bytes, smt.SubjectHead] = {}
        current = self.current
        for key, (head, added, index) in touched.items():
            before = current.get(key) or self.heads[key]
            count = (before.count if before is not None else 0) + added
            changes[key] = current[key] = smt.SubjectHead(head, count, index)
        self.reader.prefetch(self.root, changes)
        self.root, nodes = smt.update(self.root, changes, self.reader, checked_reader=True)
        self.reader.add(nodes)
        self.created.append((seal_index, self.root, nodes))
        return self.root.hex()

    def stored_problems(self) -> list[Problem]:
        """The map nodes the new blocks created, for every seal whose root is stored: each must be stored and
        hash to its name (the writer stores a block's nodes after its seal, root last: an unstored root is
        the writer's debt, not a problem)."""
        problems: list[Problem] = []
        for seal_index, root, nodes in self.created:
            if root == smt.EMPTY or self.store.map_node(root) is None:
                continue
            stored = self.store.map_nodes(list(nodes))
            for digest, node in nodes.items():
                data = stored.get(digest)
                if data != encode_node(node) and len(problems) < MAX_PROBLEMS:
                    why = "is missing" if data is None else "is not the node the block's entries give"
                    problems.append(Problem("map_node", f"subject-map node {digest.hex()} {why}", seal_index))
        return problems


def _head_at(read: MapReader, root: bytes, key: bytes) -> smt.SubjectHead | None:
    """smt.lookup on nodes ``read`` has checked against their hashes as it loaded them: the path from a
    checked root is then the one the root commits to, and each node is not hashed again here."""
    path = int.from_bytes(key, "big")
    node_hash = root
    depth = 0
    while node_hash != smt.EMPTY and depth <= smt.KEY_BITS:
        node = read(node_hash)
        if isinstance(node, smt.Leaf):
            return node.value if node.key == key else None
        node_hash = node.right if (path >> (smt.KEY_BITS - 1 - depth)) & 1 else node.left
        depth += 1
    return None


class CutChains(Chains):
    """Chains whose heads before the new range are the heads at the cut: from the subject map for subjects,
    the cut's seal for the chain of seals."""

    def __init__(self, cut_map: CutMap, blocks_subject: str, seal_leaf: bytes) -> None:
        super().__init__()
        self.cut_map = cut_map
        self.heads[blocks_subject] = seal_leaf

    def absorb(
        self, first_links: dict[Any, tuple[int, Any]], last_links: dict[Any, Any], breaks: list[tuple[int, Any]]
    ) -> None:
        """Chains.absorb, with the head at the cut of each subject not seen since the cut looked up first."""
        new = [s for s in first_links if s not in self.heads]
        keys = {s: map_key(s) for s in new}
        self.cut_map.at_cut(keys.values())
        for subject, key in keys.items():
            head = self.cut_map.heads[key]
            self.heads[subject] = ZERO_HASH if head is None else head.head
        super().absorb(first_links, last_links, breaks)


class _StatesAtCut(dict[str, TokenState]):
    """Token states, each loaded (by ``load``) the first time it is asked for."""

    def __init__(self, load: Callable[[list[str]], dict[str, TokenState]]) -> None:
        super().__init__()
        self.load = load

    def get(self, token_id: str, default: Any = None) -> Any:  # the Verdicts loop calls states.get(tid, never)
        found = dict.get(self, token_id)
        if found is None:
            self.update(self.load([token_id]))
            found = dict.get(self, token_id, default)
        return found


class CutVerdicts(Verdicts):
    """Verdicts judged from each token's state at the cut. The states of a chunk's tokens (and their
    parents) are read in one go before its events are judged; see the module docstring for what vouches
    for them."""

    def __init__(
        self, policy: LifecyclePolicy, local: Callable[[str], bool] | None, store: Any, cut: Cut, cut_map: CutMap
    ) -> None:
        super().__init__(policy, local)
        self.store = store
        self.cut = cut
        self.cut_map = cut_map
        self.states = _StatesAtCut(self.load)
        self.history_problems: list[Problem] = []
        self.index_rows: dict[str, list[int]] = {}
        """Token subject -> the indices at or after the cut that the store's subject lookup returned."""

    def absorb(self, indices: Sequence[int], said: Sequence[str], events: bytes, sizes: Sequence[int]) -> None:
        read = read_events(events, sizes)
        wanted: set[str] = set()
        for event in read:
            if type(event) is TokenEvent:
                wanted.add(event.token_id)
                if event.payload.parent_token_id:
                    wanted.add(event.payload.parent_token_id)
        missing = [t for t in wanted if not dict.__contains__(self.states, t)]
        if missing:
            self.states.update(self.load(missing))
        self.judge(indices, said, read)

    def load(self, token_ids: list[str]) -> dict[str, TokenState]:
        """The states at the cut of ``token_ids`` (NEVER_SEEN for a token with no entry before it)."""
        subjects = {"token:" + t: t for t in token_ids}
        self.cut_map.at_cut(smt.key_of(s) for s in subjects)
        own: dict[str, list[EntryRow]] = {s: [] for s in subjects}
        for row in self.store.subject_entries(list(subjects)):
            if row.index < self.cut.index:
                own[row.subject].append(row)
            else:
                self.index_rows.setdefault(row.subject, []).append(row.index)
        children: dict[str, list[EntryRow]] = {}
        for row in self.store.children_of_many(list(subjects)):
            if row.index < self.cut.index and row.parent in own:
                children.setdefault(row.parent, []).append(row)
        states: dict[str, TokenState] = {}
        for subject, token_id in subjects.items():
            head = self.cut_map.heads[smt.key_of(subject)]
            rows = own[subject]
            if head is None and not rows:
                states[token_id] = NEVER_SEEN
                continue
            history = self._history(subject, rows, head, children.get(subject, []))
            states[token_id] = NEVER_SEEN if history is None else replay(token_id, history, self.policy)
        return states

    def _history(
        self, subject: str, rows: list[EntryRow], head: smt.SubjectHead | None, children: list[EntryRow]
    ) -> list[tuple[TokenEvent, str]] | None:
        """The token events of ``rows`` (the subject's entries before the cut) and its ``children``'s, in log
        order, once the rows chain to ``head``; None (and a problem) when they do not."""
        prev = ZERO_HASH
        events: list[tuple[int, TokenEvent, str]] = []
        for row in rows:
            leaf = _sha256(b"\x00" + row.body).digest()
            entry = _event_entry(row.body)
            if entry is None or bytes.fromhex(entry.prev) != prev:
                self._bad_history(subject, row.index, "does not chain")
                return None
            prev = leaf
            event = _token_event(bytes(entry.event))
            if event is not None:
                events.append((row.index, event, entry.verdict))
        last = rows[-1].index if rows else -1
        if head is None or head.head != prev or head.count != len(rows) or head.index != last:
            self._bad_history(subject, last, "is not the chain the subject map names at the cut")
            return None
        for row in children:
            entry = _event_entry(row.body)
            event = None if entry is None else _token_event(bytes(entry.event))
            if event is None or _sha256(b"\x00" + row.body).digest() != row.leaf:
                self._bad_history(subject, row.index, "has a child entry that does not check")
                return None
            if "token:" + (event.payload.parent_token_id or "") == subject:
                events.append((row.index, event, entry.verdict if entry else ""))
        events.sort(key=lambda item: item[0])
        return [(event, verdict) for _, event, verdict in events]

    def _bad_history(self, subject: str, index: int, why: str) -> None:
        if len(self.history_problems) < MAX_PROBLEMS:
            self.history_problems.append(
                Problem("chain", f"{subject}: its history before the checked range {why}", max(index, 0))
            )


def _event_entry(body: bytes) -> EventEntry | None:
    try:
        entry = decode_entry(body)
    except LedgerError:
        return None
    return entry if isinstance(entry, EventEntry) else None


def _token_event(data: bytes) -> TokenEvent | None:
    try:
        event: Event = read_event(data)
    except LedgerError:
        return None
    return event if type(event) is TokenEvent else None
