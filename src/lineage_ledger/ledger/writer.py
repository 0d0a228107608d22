"""The write path: check envelopes, sequence events, integrate them into the tree, commit, seal, publish.

One Ledger instance is the single sequencer of its log. Per batch:

1. check: envelope structure, batch root, producer key (from the keyring the log itself records), the
   DSSE signature, and every event (model.decode_event);
2. sequence: log index, recorded_at (the ledger's HLC), prev (per-subject chain link), lifecycle verdict;
3. integrate: append leaf hashes to the compact range of the tree and of the current block (pure);
4. commit: one store transaction holds the entries, the envelope, new tree nodes, any seal, and a slice of
   the latest seal's lineage links and subject-map nodes (written after it, see _SealDebt);
5. publish: a block that has reached its size or age gets a seal entry and a signed checkpoint.

In-memory state changes only after the store commits, so a failed write leaves the ledger as it was.
The exception is a Pipeline (ledger/pipeline.py), which sequences the next group of batches on top of the
state the group being committed will leave, and reloads the state from the store if that commit fails.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from lineage_ledger.core import lifecycle, smt
from lineage_ledger.core.crypto import Signer
from lineage_ledger.core.entry import (
    ARCHIVE_SUBJECT,
    BLOCKS_SUBJECT,
    ZERO_HASH,
    ApiKeyChange,
    ArchiveChange,
    BlockHeader,
    EventEntry,
    KeyChange,
    KeyEntry,
    SealEntry,
    apikey_entry_bytes,
    apikey_subject,
    archive_entry_bytes,
    decode_entry,
    event_entry_bytes,
    header_hash,
    key_entry_bytes,
    log_key_entry_bytes,
    producer_subject,
    seal_entry_bytes,
    shard_entry_bytes,
    shard_subject,
)
from lineage_ledger.core.envelope import OpenedEnvelope, open_envelope, verify_batch_signature
from lineage_ledger.core.hlc import HybridClock, parse_reading
from lineage_ledger.core.lifecycle import LifecyclePolicy, TokenState
from lineage_ledger.core.log_key import LOG_KEY_SUBJECT, sign_rotation
from lineage_ledger.core.merkle import (
    TILE_STRIDE,
    CompactRange,
    TiledNodeReader,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
)
from lineage_ledger.core.model import DataEvent, Event, PolicyEvent, TokenEvent, decode_event, subject_of
from lineage_ledger.core.note import Checkpoint, NoteVerifier, sign_note, verifier_key
from lineage_ledger.core.receipt import Promise, PromisedRange, Receipt, SignedPromise
from lineage_ledger.core.routing import local_tokens, shard_test
from lineage_ledger.core.tiles import MAX_BUNDLE_ENTRY_BYTES
from lineage_ledger.errors import (
    ConflictError,
    InputError,
    KeyringError,
    LedgerError,
    NotFoundError,
    RoutingError,
    StoreError,
)
from lineage_ledger.ledger.completeness import MapReader, block_heads, encode_node, map_changes, unwritten_map
from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.ledger.links import Link, entry_links, event_links
from lineage_ledger.ledger.log_keys import read_key_chain
from lineage_ledger.store import open_store
from lineage_ledger.store.base import (
    BatchWrite,
    CheckpointRow,
    EntryRow,
    EnvelopeRow,
    OffsetRow,
    PromiseRow,
    QuarantineRow,
    SchemaRow,
    Store,
)

__all__ = ["AppendResult", "CheckedBatch", "CommitStage", "Ledger", "LedgerSettings", "Receipt"]

_log = logging.getLogger(__name__)
FORMAT: Final = "lineage-ledger/1"


class CommitStage(Protocol):
    """What the ledger asks of the commit stage attached to it (ledger.pipeline.Pipeline)."""

    def settle(self) -> None:
        """Return once every write staged so far has landed (or been appended again)."""
        ...

    def close(self) -> None:
        """Let what is in flight land and stop; the stage detaches itself."""
        ...


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """How the sequencer seals blocks and judges lifecycles."""

    block_size: int = 10_000
    """A block is sealed at the first batch boundary at or after this many entries."""
    block_seconds: float = 5.0
    """... or once its first entry is this old (checked on append and by tick())."""
    lifecycle: LifecyclePolicy = field(default_factory=LifecyclePolicy)
    max_clock_offset_ns: int = 60_000_000_000
    """occurred_at readings further ahead than this are not merged into the ledger's clock."""
    subject_cache: int = 200_000
    """How many subjects' chain heads and token states stay in memory (bounded, so memory stays flat)."""
    promise_seconds: float = 60.0
    """The deadline each acknowledgement's signed promise names: its entries are covered by a signed
    checkpoint within this long of being recorded (the service seals every ``block_seconds``; keep this well
    above it). A producer holding a receipt past its deadline can ask for the checkpoint that covers it."""
    freeze_gc_at_seal: bool = False
    """After each seal, collect the young generations and move every object the process holds into the
    garbage collector's permanent generation (``gc.freeze``). The subject cache and the subject map's nodes
    are hundreds of thousands of long-lived objects; without this, each full collection walks all of them
    (pauses of 50 to 150 ms measured here, 19 in 300,000 events; 1 of 17 ms with it). Their memory is still
    freed when they are evicted (they hold no reference cycles); only cyclic garbage still uncollected at a
    seal would stay. Process-wide, so off for a ledger embedded in someone else's process and on in
    ``lineage serve`` and ``lineage consume``."""


MAX_NEW_EVENT_BYTES: Final = MAX_BUNDLE_ENTRY_BYTES - 1024
"""The largest event the ledger takes in: its entry (the event plus at most a few hundred bytes the ledger
asserts) must fit the uint16 length prefix of a tlog-tiles entry bundle."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of one append: a receipt per event in batch order, and the sealed tree size after it."""

    receipts: tuple[Receipt, ...]
    sealed_size: int

    def sealed(self, index: int) -> bool:
        """True if the entry at ``index`` is covered by a signed checkpoint; otherwise it is pending."""
        return index < self.sealed_size


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """A batch envelope whose structure, signature and events passed ``Ledger.check`` (not yet sequenced)."""

    opened: OpenedEnvelope
    events: list[Event]


@dataclass(frozen=True, slots=True)
class _Part:
    opened: OpenedEnvelope
    events: Sequence[Event]
    positions: list[int]
    duplicates: dict[int, Receipt]


class _SealDebt:
    """What the latest seal still owes the store: its block's lineage links and subject-map nodes.

    Written in the seal's own commit, they made it the slowest commit by far (a block's links land on a page
    per distinct key, and the nodes on a page per random hash): every event waiting behind it waited for
    all of them. So they are written a slice with each commit after the seal instead, sorted so a slice
    touches neighbouring pages, the map root last, and whatever is left goes with the next seal. A stored
    root therefore means the block's links and nodes are all stored; until it is, readers derive them from
    the block's entries (ledger.links, completeness.unwritten_map), and so does a writer opening the ledger.

    Sorting waits for the first slice (the seal's own append is the one every queued event waits for), and
    the slices are sized so the debt is paid over about half a block (``slice_for``).
    """

    __slots__ = ("link_pos", "links", "node_of", "node_pos", "nodes", "root", "sorted", "total")

    def __init__(self, links: list[Link], nodes: dict[bytes, smt.Leaf | smt.Interior], root: bytes) -> None:
        self.links = links
        self.node_of = nodes
        self.nodes: list[bytes] = []
        self.root = root
        self.sorted = False
        self.total = len(links) + len(nodes)
        self.link_pos = 0
        self.node_pos = 0

    def __len__(self) -> int:
        return self.total - self.link_pos - self.node_pos

    def slice_for(self, entries: int, block_size: int) -> int:
        """How many owed rows go with a commit of ``entries`` entries: enough to pay the whole debt over half a
        block's worth of entries, and at least DEBT_SLICE_MIN."""
        return max(DEBT_SLICE_MIN, -(-2 * self.total * entries // max(block_size, 1)))

    def slice(self, batch: BatchWrite, count: int) -> tuple[int, int]:
        """Put the next ``count`` owed rows (links first) into ``batch``; returns the positions to
        :meth:`advance` to once the batch is committed."""
        if not self.sorted:  # by kind and key only: that is what puts neighbouring rows on one page
            self.links.sort(key=_link_page)
            self.nodes = sorted(h for h in self.node_of if h != self.root)  # encoded a slice at a time
            if self.root in self.node_of:
                self.nodes.append(self.root)
            self.sorted = True
        links_end = min(len(self.links), self.link_pos + count)
        batch.links.extend(self.links[self.link_pos : links_end])
        count -= links_end - self.link_pos
        nodes_end = min(len(self.nodes), self.node_pos + max(count, 0))
        node_of = self.node_of
        batch.map_nodes.extend((h, encode_node(node_of[h])) for h in self.nodes[self.node_pos : nodes_end])
        return links_end, nodes_end

    def advance(self, to: tuple[int, int]) -> None:
        self.link_pos, self.node_pos = to


DEBT_SLICE_MIN: Final = 256
"""Owed rows (ledger._SealDebt) written with a commit after a seal: at least this many."""


def _link_page(link: Link) -> str:
    return link[0] + "\x00" + link[1]


@dataclass(slots=True)
class _Subject:
    head: bytes
    token: TokenState | None
    count: int = 0
    """Entries in the subject's chain so far."""
    index: int = -1
    """Log index of the head entry (-1 when the chain is empty)."""


class Ledger:
    """The single sequencer of one log on one store. Not thread-safe: serialise calls (the service does)."""

    def __init__(
        self,
        store: Store,
        signer: Signer,
        *,
        settings: LedgerSettings | None = None,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings or LedgerSettings()
        self._signer = signer
        self._monotonic = monotonic
        meta = store.meta()
        if not meta:
            raise NotFoundError(f"{store.url} holds no ledger; create it with Ledger.create")
        self.origin = meta["origin"]
        self.shard_root = "shards" in meta
        """True for the root log of a sharded ledger, which records shard checkpoints and never events."""
        self._local = local_tokens(meta)
        """In one shard of a sharded ledger: whether a token's events are in this shard (parents may not be)."""
        self._shard = shard_test(meta)
        """In one shard: its index and the shard of any subject (events of other shards are refused)."""
        if "lifecycle" in meta:  # fixed when the ledger was created: every verdict is judged by the same rules
            policy = LifecyclePolicy.from_text(meta["lifecycle"])
            if policy != self.settings.lifecycle:
                self.settings = dataclasses.replace(self.settings, lifecycle=policy)
        self.key_chain = read_key_chain(store)
        """The log's signing keys: the original one and each rotation (core.log_key)."""
        self.verifier = self.key_chain.current
        if self.verifier != NoteVerifier.from_public_key(signer.name, signer.public_key):
            retired = any(
                k.public_key == signer.public_key and k.name == signer.name for k in self.key_chain.verifiers()[:-1]
            )
            raise KeyringError(
                f"the signing key {signer.name!r} is not the current log key {self.verifier}"
                + (": it was retired by a log key rotation; use the new key" if retired else "")
            )
        self._cache: OrderedDict[str, _Subject] = OrderedDict()
        self._listeners: list[Callable[[list[EntryRow]], object]] = []
        self._clock_source = clock
        self._stale = False
        self._pipeline: CommitStage | None = None
        """The open pipeline, if any: writes made outside it first wait for what it has in flight."""
        self._load(clock)

    # -- construction -----------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        url: str,
        signer: Signer,
        *,
        origin: str | None = None,
        meta: Mapping[str, str] | None = None,
        **kwargs: object,
    ) -> Ledger:
        """Create a new ledger at ``url`` whose checkpoints ``signer`` signs; ConflictError if one exists.

        ``meta`` adds settings written once with the ledger (a sharded ledger's layout)."""
        store = open_store(url)
        try:
            settings = kwargs.get("settings")
            policy = settings.lifecycle if isinstance(settings, LedgerSettings) else LifecyclePolicy()
            store.initialise(
                {
                    **(meta or {}),
                    "lifecycle": policy.to_text(),
                    "format": FORMAT,
                    "origin": origin or signer.name,
                    "verifier_key": verifier_key(signer.name, signer.public_key),
                }
            )
        except BaseException:
            store.close()
            raise
        return cls(store, signer, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def open(cls, url: str, signer: Signer, **kwargs: object) -> Ledger:
        """Open an existing ledger at ``url`` for writing."""
        store = open_store(url)
        try:
            return cls(store, signer, **kwargs)  # type: ignore[arg-type]
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Close the store (after any open pipeline's writes land). Pending entries stay pending until the next
        seal."""
        try:
            if self._pipeline is not None:
                self._pipeline.close()
            self._pay_debt()
        finally:
            self.store.close()

    def _pay_debt(self) -> None:
        """Write what the latest seal still owes (_SealDebt). A failure is logged, not raised: the debt
        follows from the entries, and the next writer to open the ledger derives it again."""
        debt = self._debt
        if debt is None or not len(debt):
            return
        batch = BatchWrite()
        to = debt.slice(batch, len(debt))
        try:
            self.store.write(batch)
        except StoreError as e:
            _log.warning("could not write the latest seal's links and map nodes (the next writer will): %s", e)
            return
        debt.advance(to)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self, clock: Callable[[], int]) -> None:
        store = self.store
        self.size = store.size()
        self._reader = TiledNodeReader(store.nodes, stride=TILE_STRIDE)
        self._tree = CompactRange.from_hashes(
            0,
            self.size,
            [self._reader(level, index) for level, index in CompactRange.decompose(0, self.size)],
        )
        last_recorded = None
        if self.size:
            last_recorded = parse_reading(decode_entry(store.entry(self.size - 1).body).recorded_at)
        self._clock = HybridClock(clock, max_offset_ns=self.settings.max_clock_offset_ns, last=last_recorded)
        seals = store.subject_entries([BLOCKS_SUBJECT])
        self._seal_head = ZERO_HASH
        self._block_number = 0
        self._prev_header = ZERO_HASH
        self._block_first = 0
        self._map_root = smt.EMPTY
        self._map_reader = MapReader(store)
        self._debt: _SealDebt | None = None
        if seals:
            last = seals[-1]
            seal = decode_entry(last.body)
            assert isinstance(seal, SealEntry)
            self._seal_head = last.leaf
            self._block_number = seal.block.number + 1
            self._prev_header = header_hash(seal.block)
            self._block_first = seal.index + 1
            self._map_root = bytes.fromhex(seal.block.subjects_root)
            owed = unwritten_map(store, last.index, seal, self._map_reader)
            if owed:  # the writer stopped before the seal's links and map nodes were all written
                self._debt = _SealDebt(entry_links(store.entries(seal.block.first, last.index)), owed, self._map_root)
        # chain heads changed since the last seal, for the next seal's subject map
        self._touched: dict[str, tuple[bytes, int, int]] = block_heads(store, self._block_first, self.size)
        # the open block's links are written after its seal (ledger.links): until then they are derived
        self._pending_links: list[Link] = entry_links(store.entries(self._block_first, self.size))
        self._block = CompactRange()
        self._block.append_many(store.leaf_hashes(self._block_first, self.size - self._block_first))
        self._block_hlc_first = (
            decode_entry(store.entry(self._block_first).body).recorded_at if self.size > self._block_first else ""
        )
        self._block_started = self._monotonic()
        latest = store.latest_checkpoint()
        self.sealed_size = latest.size if latest else 0
        self.keyring = Keyring()
        self._key_heads: dict[str, bytes] = {}
        self._key_counts: dict[str, int] = {}
        for row in store.subjects_with_prefix("producer:"):
            entry = decode_entry(row.body)
            assert isinstance(entry, KeyEntry)
            self.keyring.apply(entry.change)
            self._key_heads[row.subject] = row.leaf
            self._key_counts[row.subject] = self._key_counts.get(row.subject, 0) + 1

    def _write(self, batch: BatchWrite) -> None:
        """store.write, remembering a failure whose outcome is unknown (the connection broke around COMMIT):
        the state in memory may then be behind the store, and is reloaded before the next write."""
        try:
            self.store.write(batch)
        except ConflictError:
            raise  # refused by a constraint: rolled back, nothing written
        except StoreError:
            self._stale = True
            raise

    def _settle(self) -> None:
        """Before a write outside the open pipeline (or a read that must see durable state): let the pipeline's
        writes land, so this one goes after them and sees their outcome."""
        if self._pipeline is not None:
            self._pipeline.settle()

    def _fresh(self) -> None:
        """Reload the state from the store if a write failed with an unknown outcome (see _write)."""
        if self._stale:
            self._cache.clear()
            self._load(self._clock_source)
            self._stale = False
            _log.warning("reloaded the ledger's state from %s after a failed write: size %d", self.store.url, self.size)

    def add_listener(self, listener: Callable[[list[EntryRow]], object]) -> None:
        """Call ``listener(rows)`` after every commit with the rows just made durable, in log order.

        For incremental consumers (findings rules, caches, exporters). A listener that raises is logged and
        does not affect the ledger: its rows are already committed.
        """
        self._listeners.append(listener)

    def landed(self, write: BatchWrite) -> None:
        """For a commit stage: ``write`` (from ``stage_together``) is durable; the listeners hear of its rows."""
        if self._listeners:
            self._notify(write.entries)

    def discard_staged(self) -> None:
        """For a commit stage: a staged write failed, so the state adopted for it and for every write staged
        after it is not the store's. The ledger reloads its state from the store before its next write."""
        self._stale = True

    def _notify(self, rows: list[EntryRow]) -> None:
        for listener in self._listeners:
            try:
                listener(rows)
            except Exception:
                _log.exception("ledger listener %r failed on entries %d..%d", listener, rows[0].index, rows[-1].index)

    # -- reads ------------------------------------------------------------------------------------------

    def node(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree (level, index) of the tree."""
        return self._reader(level, index)

    def root(self) -> bytes:
        """The RFC 9162 root over every entry, sealed or pending."""
        return self._tree.root()

    def checkpoint(self) -> CheckpointRow | None:
        """The latest signed checkpoint."""
        return self.store.latest_checkpoint()

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` (default: latest checkpoint)."""
        size = self.sealed_size if size is None else size
        if not 0 <= index < size <= self.size:
            raise NotFoundError(f"entry {index} is not in a tree of size {size} (log size {self.size})")
        return inclusion_proof(index, size, self._reader)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof between two tree sizes."""
        if not 0 <= old_size <= new_size <= self.size:
            raise InputError("size", f"need 0 <= old ({old_size}) <= new ({new_size}) <= {self.size}")
        return consistency_proof(old_size, new_size, self._reader)

    # -- subjects ---------------------------------------------------------------------------------------

    def _remember(self, subject: str, value: _Subject) -> None:
        cache = self._cache
        cache[subject] = value
        cache.move_to_end(subject)
        if len(cache) > self.settings.subject_cache:
            for _ in range(len(cache) // 10):
                cache.popitem(last=False)

    def _preload(self, subjects: set[str]) -> None:
        """Bring the chain heads (and token states) of ``subjects`` into the cache with one query."""
        cache = self._cache
        missing = [s for s in subjects if s not in cache]
        if not missing:
            return
        rows = self.store.subject_entries(missing)
        by_subject: dict[str, list[EntryRow]] = {}
        for row in rows:
            by_subject.setdefault(row.subject, []).append(row)
        # a token's state also depends on its children's ROTATED events: one query for all of them
        known_tokens = [s for s in missing if s in by_subject and s.startswith("token:")]
        children: dict[str, list[EntryRow]] = {}
        for row in self.store.children_of_many(known_tokens) if known_tokens else ():
            assert row.parent is not None
            children.setdefault(row.parent, []).append(row)
        for subject in missing:
            own = by_subject.get(subject)
            if not own:
                self._remember(subject, _Subject(ZERO_HASH, lifecycle.NEVER_SEEN if subject[0] == "t" else None))
                continue
            token = None
            if subject.startswith("token:"):
                history = sorted(own + children.get(subject, []), key=lambda r: r.index)
                token = lifecycle.replay(subject[6:], _token_events(history), self.settings.lifecycle)
            self._remember(subject, _Subject(own[-1].leaf, token, len(own), own[-1].index))

    def now(self) -> str:
        """A fresh reading of the ledger's hybrid logical clock (what recorded_at would say now)."""
        return self._clock.now()

    def token_state(self, token_id: str) -> TokenState:
        """The lifecycle state the ledger derived for ``token_id`` from every event recorded so far."""
        subject = "token:" + token_id.removeprefix("token:")
        self._settle()
        self._preload({subject})
        return self._cache[subject].token or lifecycle.NEVER_SEEN

    def is_active(self, token_id: str, now_ns: int) -> bool:
        """RFC 7662 "active" at ``now_ns`` (the caller's clock): issued or activated, and not revoked, rotated
        away or expired by then, nor derived from a revoked token when the lifecycle policy cascades
        revocations."""
        state, _ = lifecycle.effective_state(token_id, self.token_state, self.settings.lifecycle, now_ns)
        return state.active_at(now_ns)

    # -- producer keys ----------------------------------------------------------------------------------

    def register_key(
        self,
        producer: str,
        key_id: str,
        public_key: bytes,
        *,
        valid_from: str | None = None,
        valid_until: str | None = None,
    ) -> int:
        """Record a producer signing key as a ledger entry; returns its index. ConflictError if the id exists."""
        self._settle()
        self._fresh()
        now = self._clock.now()
        change = KeyChange(
            action="register",
            producer=producer,
            key_id=key_id,
            public_key=public_key.hex(),
            valid_from=valid_from or now,
            valid_until=valid_until,
        )
        return self._key_change(change, now)

    def revoke_key(self, key_id: str, *, at: str | None = None) -> int:
        """Record that ``key_id`` signs nothing from ``at`` (default now); history it signed stays valid."""
        self._settle()
        self._fresh()
        key = self.keyring.get(key_id)
        now = self._clock.now()
        change = KeyChange(
            action="revoke",
            producer=key.producer,
            key_id=key_id,
            public_key=key.public_key.hex(),
            valid_from=key.valid_from,
            valid_until=key.valid_until,
            revoked_at=at or now,
        )
        return self._key_change(change, now)

    def record_shard_checkpoint(self, shard: int, note: str) -> int:
        """Record a shard log's signed checkpoint in this (root) log as a ``shard`` entry; returns its index.

        The caller (ledger.shards) has checked the note; this writes it, chained per shard."""
        self._settle()
        self._fresh()
        subject = shard_subject(shard)
        head = self.store.subject_entries([subject])
        prev = head[-1].leaf if head else ZERO_HASH
        now = self._clock.now()
        index = self.size
        body = shard_entry_bytes(index=index, recorded_at=now, prev=prev, shard=shard, checkpoint=note)
        row = EntryRow(index, subject, None, None, prev, leaf_hash(body), "ok", body)
        self._commit([row], [], BatchWrite(), [], now, now, {subject: (row.leaf, len(head) + 1, index)})
        return index

    def record_api_key_change(self, change: ApiKeyChange) -> int:
        """Record a change of an API key of the HTTP service as an ``apikey`` entry; returns its index.

        The caller (service.auth's key store) decides whether the change is allowed; the log keeps the record."""
        self._settle()
        self._fresh()
        subject = apikey_subject(change.key_id)
        head = self.store.subject_entries([subject])
        prev = head[-1].leaf if head else ZERO_HASH
        now = self._clock.now()
        index = self.size
        body = apikey_entry_bytes(index=index, recorded_at=now, prev=prev, change=change)
        row = EntryRow(index, subject, None, None, prev, leaf_hash(body), "ok", body)
        self._commit([row], [], BatchWrite(), [], now, now, {subject: (row.leaf, len(head) + 1, index)})
        return index

    def record_archive_change(self, change: ArchiveChange, rows: Callable[[int], BatchWrite] | None = None) -> int:
        """Record an ``archive`` entry (a retention policy, an archived range, an expiry: docs/archive.md);
        returns its index. ``rows(index)`` gives the archive tier's store rows that go in the same transaction
        (so the store lets archived entries go only once their record is committed)."""
        self._settle()
        self._fresh()
        head = self.store.subject_entries([ARCHIVE_SUBJECT])
        prev = head[-1].leaf if head else ZERO_HASH
        now = self._clock.now()
        index = self.size
        body = archive_entry_bytes(index=index, recorded_at=now, prev=prev, change=change)
        row = EntryRow(index, ARCHIVE_SUBJECT, None, None, prev, leaf_hash(body), "ok", body)
        extra = rows(index) if rows is not None else BatchWrite()
        self._commit([row], [], extra, [], now, now, {ARCHIVE_SUBJECT: (row.leaf, len(head) + 1, index)})
        return index

    def rotate_log_key(self, new: Signer) -> int:
        """Hand the log over to the signing key ``new``; returns the index of the ``log_key`` entry.

        The current key and ``new`` both sign the rotation statement (core.log_key), which is appended and
        sealed at once: that checkpoint and every later one are signed by ``new``, and from then on this
        ledger opens only with ``new``. InputError if ``new`` is the current key."""
        self._settle()
        self._fresh()
        if self.shard_root or self._shard is not None:
            raise InputError("ledger", "a sharded ledger's shards share the root's log key: it cannot be rotated alone")
        index = self.size
        note = sign_rotation(self.origin, index, self._signer, new)
        chain = read_key_chain(self.store)
        chain.add(index, note)  # checks what was just signed before anything is written
        head = self.store.subject_entries([LOG_KEY_SUBJECT])
        prev = head[-1].leaf if head else ZERO_HASH
        now = self._clock.now()
        body = log_key_entry_bytes(index=index, recorded_at=now, prev=prev, rotation=note)
        row = EntryRow(index, LOG_KEY_SUBJECT, None, None, prev, leaf_hash(body), "ok", body)
        retired, self._signer = self._signer, new  # a seal in this very commit is already the new key's
        try:
            self._commit([row], [], BatchWrite(), [], now, now, {LOG_KEY_SUBJECT: (row.leaf, len(head) + 1, index)})
        except BaseException:
            self._signer = retired
            raise
        self.key_chain = chain
        self.verifier = chain.current
        self.seal()
        return index

    def _key_change(self, change: KeyChange, now: str) -> int:
        keyring = self.keyring.copy()
        keyring.apply(change)  # raises before anything is written
        subject = producer_subject(change.producer)
        index = self.size
        body = key_entry_bytes(
            index=index, recorded_at=now, prev=self._key_heads.get(subject, ZERO_HASH), change=change
        )
        row = EntryRow(index, subject, None, None, self._key_heads.get(subject, ZERO_HASH), leaf_hash(body), "ok", body)
        count = self._key_counts.get(subject, 0) + 1
        self._commit([row], [], BatchWrite(), [], now, now, {subject: (row.leaf, count, index)})
        self.keyring = keyring
        self._key_heads[subject] = row.leaf
        self._key_counts[subject] = count
        return index

    # -- the write path ---------------------------------------------------------------------------------

    def check(self, envelope: bytes) -> CheckedBatch:
        """The checks of ``append`` that need no sequencing: envelope structure, the producer's key valid now,
        the signature, every event's validity, no event id twice. Raises as ``append`` does; writes nothing."""
        self._fresh()
        if self.shard_root:
            raise InputError("ledger", f"{self.store.url} is the root log of a sharded ledger: events go to its shards")
        opened = open_envelope(envelope)
        stmt = opened.statement
        key = self.keyring.signing_key(stmt.key_id, stmt.producer, self._clock.now())
        verify_batch_signature(opened, key.public_key)
        events = [decode_event(raw, field=f"events[{i}]") for i, raw in enumerate(opened.events)]
        for i, raw in enumerate(opened.events):
            if len(raw) > MAX_NEW_EVENT_BYTES:
                raise InputError(
                    f"events[{i}]",
                    f"event is {len(raw)} bytes; the limit is {MAX_NEW_EVENT_BYTES}, so that its entry fits "
                    "a tlog-tiles entry bundle (65,535 bytes)",
                )
        if self._shard is not None:
            shard, home = self._shard
            for i, event in enumerate(events):
                subject = subject_of(event)
                if home(subject) != shard:
                    raise RoutingError(
                        f"events[{i}]: {subject} belongs to shard {home(subject)}, not to this shard {shard}: its "
                        "producer does not partition by Kafka's murmur2 of the token fingerprint; nothing was written"
                    )
        ids = [e.event_id for e in events]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            for i, eid in enumerate(ids):
                if eid in seen:
                    raise InputError(f"events[{i}].event_id", f"{eid} appears twice in the batch")
                seen.add(eid)
        return CheckedBatch(opened, events)

    def append(self, envelope: bytes, *, offsets: Sequence[OffsetRow] = ()) -> AppendResult:
        """Check, sequence, integrate and durably commit one signed batch.

        All or nothing: on any error nothing of the batch is written. A batch whose events are all already
        recorded with the same bytes returns the original receipts and writes no entry; an event id already
        recorded with different bytes raises ConflictError. ``offsets`` (transport positions the batch was
        read up to) are committed in the same transaction as the batch's rows, duplicates or not.
        """
        return self.append_checked(self.check(envelope), offsets=offsets)

    def append_many(self, batches: Sequence[CheckedBatch], *, offsets: Sequence[OffsetRow] = ()) -> list[AppendResult]:
        """Sequence several checked batches, in order, and commit them (and ``offsets``) in one transaction.

        For a transport that reads many small batches at once: one commit instead of one per batch. All or
        nothing; if any event id is already recorded (a retried batch) it raises ConflictError having written
        nothing, and the caller appends the batches one by one, which sorts out duplicates.
        """
        self._settle()
        if not batches:
            self.record_transport(offsets=offsets)
            return []
        parts = [_Part(b.opened, b.events, list(range(len(b.events))), {}) for b in batches]
        return self._sequence_many(parts, offsets)

    def append_together(
        self, batches: Sequence[CheckedBatch], offsets: Sequence[Sequence[OffsetRow]] | None = None
    ) -> list[AppendResult | LedgerError]:
        """Append checked batches (each with its own transport positions) as one group commit, answering each.

        All of them in one transaction when none repeats a recorded event id; otherwise (a retry among them)
        one transaction per batch, so duplicates come back as duplicates and a batch whose event id holds
        other bytes gets its ConflictError in its place while the others are written. A failure of the
        one-transaction attempt other than a conflict raises, having written nothing.
        """
        self._settle()
        positions = list(offsets) if offsets is not None else [() for _ in batches]
        if len(batches) > 1:
            try:
                return list(self.append_many(batches, offsets=[row for rows in positions for row in rows]))
            except ConflictError:
                pass
        out: list[AppendResult | LedgerError] = []
        for batch, rows in zip(batches, positions, strict=True):
            try:
                out.append(self.append_checked(batch, offsets=rows))
            except LedgerError as e:
                out.append(e)
        return out

    def append_checked(self, checked: CheckedBatch, *, offsets: Sequence[OffsetRow] = ()) -> AppendResult:
        """``append`` for a batch ``check`` accepted."""
        self._settle()
        opened, events = checked.opened, checked.events
        ids = [e.event_id for e in events]
        try:
            return self._sequence(opened, events, list(range(len(events))), {}, offsets)
        except ConflictError:
            known = self.store.events_by_id(ids)
            if not known:
                raise
        receipts: dict[int, Receipt] = {}
        promised: dict[int, PromisedRange | None] = {}
        for pos, event in enumerate(events):
            row = known.get(event.event_id)
            if row is None:
                continue
            entry = decode_entry(row.body)
            if not isinstance(entry, EventEntry) or bytes(entry.event) != opened.events[pos]:
                raise ConflictError(
                    f"events[{pos}].event_id: {event.event_id} is already recorded at index {row.index} "
                    "with different bytes; nothing was written"
                )
            receipts[pos] = Receipt(
                event.event_id, row.index, row.verdict, True, row.leaf, self._promised(row.index, promised)
            )
        fresh = [pos for pos in range(len(events)) if pos not in receipts]
        if not fresh:
            if offsets:
                self.store.write(BatchWrite(offsets=list(offsets)))
            return AppendResult(tuple(receipts[p] for p in range(len(events))), self.sealed_size)
        return self._sequence(opened, events, fresh, receipts, offsets)

    def _promised(self, index: int, known: dict[int, PromisedRange | None]) -> PromisedRange | None:
        """The stored promise covering entry ``index`` with its leaves (None for an entry recorded by a version
        that signed no promises); ``known`` holds the ones already read, by their first index."""
        for promised in known.values():
            if promised is not None and promised.promise.covers(index):
                return promised
        row = self.store.promise_covering(index)
        if row is None:
            return None
        got = PromisedRange(SignedPromise.from_json(row.promise), self.store.leaf_hashes(row.first, row.length))
        known[row.first] = got
        return got

    def record_transport(
        self,
        *,
        offsets: Sequence[OffsetRow] = (),
        quarantine: Sequence[QuarantineRow] = (),
        schemas: Sequence[SchemaRow] = (),
    ) -> None:
        """Commit transport bookkeeping that carries no entry, in one transaction: positions consumed past
        messages that held no batch, refused messages, and transport schemas to register."""
        self._settle()
        if offsets or quarantine or schemas:
            self.store.write(BatchWrite(offsets=list(offsets), quarantine=list(quarantine), schemas=list(schemas)))

    def _sequence(
        self,
        opened: OpenedEnvelope,
        events: Sequence[Event],
        positions: list[int],
        duplicates: dict[int, Receipt],
        offsets: Sequence[OffsetRow] = (),
    ) -> AppendResult:
        return self._sequence_many([_Part(opened, events, positions, duplicates)], offsets)[0]

    # -- the interface of a commit stage (ledger.pipeline) -----------------------------------------------

    def attach_stage(self, stage: CommitStage) -> None:
        """Make ``stage`` the ledger's one commit stage: writes made outside it first let it settle, and
        ``close`` closes it. LedgerError if another stage is attached."""
        if self._pipeline is not None:
            raise LedgerError("this ledger already has an open pipeline")
        self._pipeline = stage

    def detach_stage(self, stage: CommitStage) -> None:
        """Forget ``stage`` (once it has let everything in flight land)."""
        if self._pipeline is stage:
            self._pipeline = None

    def stage_together(
        self, batches: Sequence[CheckedBatch], offsets: Sequence[OffsetRow]
    ) -> tuple[list[AppendResult], BatchWrite]:
        """For a commit stage: sequence ``batches`` as append_many would and adopt the resulting state now,
        returning the results and the one write that makes them durable. The stage writes it and then calls
        ``landed`` with it; if the write fails it calls ``discard_staged`` before appending again."""
        parts = [_Part(b.opened, b.events, list(range(len(b.events))), {}) for b in batches]
        deferred: list[BatchWrite] = []
        results = self._sequence_many(parts, offsets, deferred)
        return results, deferred[0]

    def _sequence_many(
        self, parts: Sequence[_Part], offsets: Sequence[OffsetRow], deferred: list[BatchWrite] | None = None
    ) -> list[AppendResult]:
        """Sequence the given events of several checked batches, in order, and commit them in one transaction
        (or, given ``deferred``, put that transaction's write there and adopt the state without writing)."""
        self._fresh()
        subjects: set[str] = set()
        latest = ""
        for part in parts:
            for pos in part.positions:
                ev = part.events[pos]
                latest = max(latest, ev.occurred_at)
                if type(ev) is TokenEvent:
                    subjects.add("token:" + ev.token_id)
                    parent = ev.payload.parent_token_id
                    if parent is not None:
                        subjects.add("token:" + parent)
                elif type(ev) is DataEvent:
                    subjects.add("asset:" + ev.asset_id)
                else:
                    assert type(ev) is PolicyEvent
                    subjects.add("policy:" + ev.policy_id)
        self._preload(subjects)

        self._clock.observe(latest)
        readings = self._clock.reserve(sum(len(part.positions) for part in parts))
        cache = self._cache
        overlay: dict[str, _Subject] = {}
        policy = self.settings.lifecycle
        local = self._local

        def state_of(token_id: str) -> TokenState:
            subj = "token:" + token_id
            got = overlay.get(subj) or cache[subj]
            return got.token or lifecycle.NEVER_SEEN

        index = self.size
        k = 0
        rows: list[EntryRow] = []
        envelope_rows: list[EnvelopeRow] = []
        revocations: list[tuple[str, int]] = []
        links: list[Link] = []
        all_receipts: list[dict[int, Receipt]] = []
        for part in parts:
            opened, events = part.opened, part.events
            receipts = dict(part.duplicates)
            all_receipts.append(receipts)
            digest = opened.digest
            producer = opened.statement.producer
            key_id = opened.statement.key_id
            first = index
            for pos in part.positions:
                ev = events[pos]
                verdict = "ok"
                parent_subject = None
                if type(ev) is TokenEvent:
                    subject = "token:" + ev.token_id
                    verdict, changes = lifecycle.apply(ev, state_of, policy, local)
                    for tid, st in changes.items():
                        s = "token:" + tid
                        cur = overlay.get(s) or cache[s]
                        overlay[s] = _Subject(cur.head, st, cur.count, cur.index)
                        if st.state == "REVOKED":
                            revocations.append((s, index))
                    parent = ev.payload.parent_token_id
                    if parent is not None:
                        parent_subject = "token:" + parent
                    event_links(ev, index, subject, links)
                elif type(ev) is DataEvent:
                    subject = "asset:" + ev.asset_id
                    event_links(ev, index, subject, links)
                else:
                    assert type(ev) is PolicyEvent
                    subject = "policy:" + ev.policy_id
                cur = overlay.get(subject) or cache[subject]
                prev = cur.head
                body = event_entry_bytes(
                    index=index,
                    recorded_at=readings[k],
                    prev=prev,
                    producer=producer,
                    key_id=key_id,
                    envelope=digest,
                    position=pos,
                    verdict=verdict,
                    event=opened.events[pos],
                )
                leaf = leaf_hash(body)
                overlay[subject] = _Subject(leaf, cur.token, cur.count + 1, index)
                rows.append(EntryRow(index, subject, ev.event_id, parent_subject, prev, leaf, verdict, body))
                receipts[pos] = Receipt(ev.event_id, index, verdict, False, leaf)
                index += 1
                k += 1
            envelope_rows.append(
                EnvelopeRow(
                    digest, producer, key_id, opened.payload, opened.signature, b"".join(opened.event_leaves), first
                )
            )

        extra = BatchWrite(revocations=revocations, links=links, offsets=list(offsets))
        touched = {subj: (v.head, v.count, v.index) for subj, v in overlay.items() if v.count}
        promised = self._commit(
            rows, envelope_rows, extra, list(overlay.items()), readings[0], readings[-1], touched, deferred
        )
        return [
            AppendResult(tuple(_with_promise(receipts[p], promised) for p in range(len(part.events))), self.sealed_size)
            for part, receipts in zip(parts, all_receipts, strict=True)
        ]

    def _commit(
        self,
        rows: list[EntryRow],
        envelope_rows: list[EnvelopeRow],
        batch: BatchWrite,
        subject_updates: list[tuple[str, _Subject]],
        first_recorded: str,
        last_recorded: str,
        touched: dict[str, tuple[bytes, int, int]],
        deferred: list[BatchWrite] | None = None,
    ) -> PromisedRange:
        """Integrate ``rows`` into copies of the tree state, sign the promise about them, seal if due, write,
        then adopt the new state; returns the promise. Given ``deferred``, the write goes there instead (and
        the listeners hear of it when it lands)."""
        nodes: list[tuple[int, int, bytes]] = []

        def visit(level: int, index: int, digest: bytes) -> None:
            if level % TILE_STRIDE == 0:
                nodes.append((level, index, digest))

        tree = self._tree.copy()
        block = self._block.copy()
        for row in rows:
            tree.append(row.leaf, visit)
            block.append(row.leaf)
        size = rows[-1].index + 1
        hlc_first = self._block_hlc_first or first_recorded
        promised = self._promise(rows, tree.root(), last_recorded)
        batch.promise = PromiseRow(rows[0].index, len(rows), promised.signed.to_bytes())
        batch.entries = rows
        batch.envelopes = envelope_rows
        batch.nodes = nodes
        links, batch.links = batch.links, []  # held until the seal (ledger.links)
        seal = None
        debt = self._debt
        paid: tuple[int, int] | None = None
        block_len = size - self._block_first
        if block_len >= self.settings.block_size or (
            self._monotonic() - self._block_started >= self.settings.block_seconds
        ):
            seal = self._seal_rows(tree, block, size, hlc_first, last_recorded, visit, {**self._touched, **touched})
            batch.entries = [*rows, seal[0]]
            batch.checkpoint = seal[1]
            if debt is not None:  # the previous seal's remainder: all of it, so at most one block is owed
                paid = debt.slice(batch, len(debt))
        elif debt is not None and len(debt):
            paid = debt.slice(batch, debt.slice_for(len(rows), self.settings.block_size))
        if deferred is None:
            self._write(batch)
        else:
            deferred.append(batch)
        # adopt
        self._tree = tree
        self.size = batch.entries[-1].index + 1
        for subject, value in subject_updates:
            self._remember(subject, value)
        if debt is not None and paid is not None:
            debt.advance(paid)
        if seal is not None:
            self._adopt_seal(seal, [*self._pending_links, *links])
        else:
            self._touched.update(touched)
            self._pending_links.extend(links)
            self._block = block
            self._block_hlc_first = hlc_first
        if self._listeners and deferred is None:
            self._notify(batch.entries)
        return promised

    def _promise(self, rows: list[EntryRow], tree_root: bytes, last_recorded: str) -> PromisedRange:
        """The log key's signed promise that ``rows`` (the tree then having root ``tree_root``) will be
        covered by a signed checkpoint by ``promise_seconds`` after ``last_recorded``."""
        leaves = [row.leaf for row in rows]
        deadline_ns = int(last_recorded.split(".", 1)[0]) + int(self.settings.promise_seconds * 1e9)
        promise = Promise(
            log=self.origin,
            first=rows[0].index,
            count=len(rows),
            leaves_root=root_of(leaves),
            tree_root=tree_root,
            deadline=f"{deadline_ns:019d}.00000",
        )
        return PromisedRange.create(promise, leaves, self._signer)

    def _seal_rows(
        self,
        tree: CompactRange,
        block: CompactRange,
        size: int,
        hlc_first: str,
        hlc_last: str,
        visit: Callable[[int, int, bytes], None],
        touched: dict[str, tuple[bytes, int, int]],
    ) -> tuple[EntryRow, CheckpointRow, BlockHeader, dict[bytes, smt.Leaf | smt.Interior]]:
        changes = map_changes((subject, *head) for subject, head in touched.items())
        self._map_reader.prefetch(self._map_root, changes)
        map_root, map_nodes = smt.update(self._map_root, changes, self._map_reader, checked_reader=True)
        header = BlockHeader(
            number=self._block_number,
            first=self._block_first,
            last=size - 1,
            root=block.root().hex(),
            prev_header=self._prev_header.hex(),
            hlc_first=hlc_first,
            hlc_last=hlc_last,
            subjects_root=map_root.hex(),
        )
        recorded = self._clock.now()
        body = seal_entry_bytes(index=size, recorded_at=recorded, prev=self._seal_head, header=header)
        leaf = leaf_hash(body)
        tree.append(leaf, visit)
        if size + 1 <= self.sealed_size:
            raise LedgerError("refusing to sign a checkpoint that does not extend the last one")
        text = Checkpoint(origin=self.origin, size=size + 1, root_hash=tree.root(), extensions=()).to_text()
        note = sign_note(text, [self._signer])
        row = EntryRow(size, BLOCKS_SUBJECT, None, None, self._seal_head, leaf, "ok", body)
        return row, CheckpointRow(size + 1, note), header, map_nodes

    def _adopt_seal(
        self,
        seal: tuple[EntryRow, CheckpointRow, BlockHeader, dict[bytes, smt.Leaf | smt.Interior]],
        owed_links: list[Link] | None = None,
    ) -> None:
        """Adopt a committed seal. Given ``owed_links``, its links and map nodes are still to be written
        (_SealDebt); otherwise they were written with it."""
        row, checkpoint, header, map_nodes = seal
        self._map_root = bytes.fromhex(header.subjects_root)
        self._map_reader.release()  # the previous seal's debt was paid with this commit at the latest
        if owed_links is None:
            self._map_reader.add(map_nodes)
            self._debt = None
        else:
            self._map_reader.hold(map_nodes)
            self._debt = _SealDebt(owed_links, map_nodes, self._map_root)
        self._touched = {}
        self._pending_links = []
        self._seal_head = row.leaf
        self._prev_header = header_hash(header)
        self._block_number = header.number + 1
        self._block_first = row.index + 1
        self._block = CompactRange()
        self._block_hlc_first = ""
        self._block_started = self._monotonic()
        self.sealed_size = checkpoint.size
        if self.settings.freeze_gc_at_seal:
            gc.collect(1)
            gc.freeze()

    def seal(self) -> CheckpointRow | None:
        """Seal the open block now (if it holds any entry) and return the new signed checkpoint. Unlike the
        seals appends make, this one writes the block's links and map nodes with it (and anything the previous
        seal still owed)."""
        self._settle()
        self._fresh()
        if self.size == self._block_first:
            return None
        nodes: list[tuple[int, int, bytes]] = []

        def visit(level: int, index: int, digest: bytes) -> None:
            if level % TILE_STRIDE == 0:
                nodes.append((level, index, digest))

        tree = self._tree.copy()
        last = decode_entry(self.store.entry(self.size - 1).body).recorded_at
        seal = self._seal_rows(tree, self._block, self.size, self._block_hlc_first or last, last, visit, self._touched)
        batch = BatchWrite(
            entries=[seal[0]],
            nodes=nodes,
            checkpoint=seal[1],
            map_nodes=[(h, encode_node(n)) for h, n in seal[3].items()],
            links=sorted(self._pending_links),
        )
        if self._debt is not None:
            self._debt.slice(batch, len(self._debt))
        self._write(batch)
        self._tree = tree
        self.size += 1
        self._adopt_seal(seal)
        if self._listeners:
            self._notify([seal[0]])
        return seal[1]

    def tick(self) -> CheckpointRow | None:
        """Seal if the open block is older than the configured age; call this periodically."""
        self._settle()
        if self.size > self._block_first and self._monotonic() - self._block_started >= self.settings.block_seconds:
            return self.seal()
        return None

    def log_verifier(self) -> NoteVerifier:
        """The note verifier of this log's checkpoints (public; safe to hand out)."""
        return self.verifier


def _with_promise(receipt: Receipt, promised: PromisedRange) -> Receipt:
    """``receipt`` with the promise of the commit that wrote its entry (a duplicate keeps its own)."""
    if receipt.duplicate:
        return receipt
    return dataclasses.replace(receipt, promised=promised)


def _token_events(rows: list[EntryRow]) -> list[tuple[TokenEvent, str]]:
    out = []
    for row in rows:
        entry = decode_entry(row.body)
        if isinstance(entry, EventEntry):
            event = decode_event(bytes(entry.event))
            if isinstance(event, TokenEvent):
                out.append((event, row.verdict))
    return out
