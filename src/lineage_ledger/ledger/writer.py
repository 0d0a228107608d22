"""The write path: check envelopes, sequence events, integrate them into the tree, commit, seal, publish.

One Ledger instance is the single sequencer of its log. Per batch, each stage in its own module:

1. check (ledger.check): envelope structure, batch root, producer key (from the keyring the log itself
   records), the DSSE signature, and every event (model.decode_event);
2. sequence (ledger.sequence): log index, recorded_at (the ledger's HLC), prev (per-subject chain link),
   lifecycle verdict;
3. integrate (ledger.integrate): append leaf hashes to the compact range of the tree and of the current
   block (pure);
4. commit (here): one store transaction holds the entries, the envelope, new tree nodes, any seal, and a
   slice of the latest seal's lineage links and subject-map nodes (written after it, see publish.SealDebt);
5. publish (ledger.publish): a block that has reached its size or age gets a seal entry and a signed
   checkpoint.

In-memory state changes only after the store commits, so a failed write leaves the ledger as it was.
The exception is a Pipeline (ledger/pipeline.py), which sequences the next group of batches on top of the
state the group being committed will leave, and reloads the state from the store if that commit fails.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from lineage_ledger.core import lifecycle
from lineage_ledger.core.crypto import Signer
from lineage_ledger.core.entry import (
    ARCHIVE_SUBJECT,
    ZERO_HASH,
    ApiKeyChange,
    ArchiveChange,
    Erasure,
    EventEntry,
    KeyChange,
    KeyEntry,
    apikey_entry_bytes,
    apikey_subject,
    archive_entry_bytes,
    decode_entry,
    erasure_entry_bytes,
    erasure_subject,
    key_entry_bytes,
    log_key_entry_bytes,
    producer_subject,
    shard_entry_bytes,
    shard_subject,
)
from lineage_ledger.core.envelope import OpenedEnvelope
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
)
from lineage_ledger.core.model import Event
from lineage_ledger.core.note import NoteVerifier, verifier_key
from lineage_ledger.core.receipt import PromisedRange, Receipt, SignedPromise
from lineage_ledger.core.routing import local_tokens, shard_test
from lineage_ledger.core.sealed import personal_of
from lineage_ledger.errors import (
    ConflictError,
    InputError,
    KeyringError,
    LedgerError,
    NotFoundError,
    StoreError,
)
from lineage_ledger.ledger.check import MAX_NEW_EVENT_BYTES, CheckedBatch, check_batch
from lineage_ledger.ledger.completeness import encode_node
from lineage_ledger.ledger.integrate import integrate, stored_nodes
from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.ledger.links import Link
from lineage_ledger.ledger.log_keys import read_key_chain
from lineage_ledger.ledger.publish import OpenBlock, Seal, sign_promise
from lineage_ledger.ledger.sequence import Part, SubjectCache, SubjectHead, sequence, subjects_of
from lineage_ledger.privacy.personal import PersonalData
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

__all__ = [
    "MAX_NEW_EVENT_BYTES",
    "AppendResult",
    "CheckedBatch",
    "CommitStage",
    "Ledger",
    "LedgerSettings",
    "Receipt",
]

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


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of one append: a receipt per event in batch order, and the sealed tree size after it."""

    receipts: tuple[Receipt, ...]
    sealed_size: int

    def sealed(self, index: int) -> bool:
        """True if the entry at ``index`` is covered by a signed checkpoint; otherwise it is pending."""
        return index < self.sealed_size


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
        personal: PersonalData | None = None,
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
        self._cache = SubjectCache(lambda: self.settings.subject_cache)
        self._listeners: list[Callable[[list[EntryRow]], object]] = []
        self._clock_source = clock
        self._stale = False
        self._pipeline: CommitStage | None = None
        """The open pipeline, if any: writes made outside it first wait for what it has in flight."""
        self.personal = personal or PersonalData.open(store.url, self.origin, meta)
        """Seals personal fields at ingest (privacy.personal) on a ledger created with them; None otherwise."""
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
            if self.personal is not None:
                self.personal.close()

    def _pay_debt(self) -> None:
        """Write what the latest seal still owes (_SealDebt). A failure is logged, not raised: the debt
        follows from the entries, and the next writer to open the ledger derives it again."""
        debt = self._open.debt
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
        self._open = OpenBlock(store, self.size, self._monotonic())
        """The block being filled and what the latest seal still owes the store."""
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

    def now(self) -> str:
        """A fresh reading of the ledger's hybrid logical clock (what recorded_at would say now)."""
        return self._clock.now()

    def token_state(self, token_id: str) -> TokenState:
        """The lifecycle state the ledger derived for ``token_id`` from every event recorded so far."""
        subject = "token:" + token_id.removeprefix("token:")
        self._settle()
        self._cache.preload(self.store, {subject}, self.settings.lifecycle)
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
        return self._record(
            shard_subject(shard),
            lambda index, at, prev: shard_entry_bytes(
                index=index, recorded_at=at, prev=prev, shard=shard, checkpoint=note
            ),
        )

    def record_api_key_change(self, change: ApiKeyChange) -> int:
        """Record a change of an API key of the HTTP service as an ``apikey`` entry; returns its index.

        The caller (service.auth's key store) decides whether the change is allowed; the log keeps the record."""
        return self._record(
            apikey_subject(change.key_id),
            lambda index, at, prev: apikey_entry_bytes(index=index, recorded_at=at, prev=prev, change=change),
        )

    def record_erasure(self, erasure: Erasure) -> int:
        """Record a data subject's erasure as an ``erasure`` entry; returns its index. privacy.subjects
        decides what is erased; the log keeps the record."""
        return self._record(
            erasure_subject(erasure.fingerprint),
            lambda index, at, prev: erasure_entry_bytes(index=index, recorded_at=at, prev=prev, erasure=erasure),
        )

    def record_archive_change(self, change: ArchiveChange, rows: Callable[[int], BatchWrite] | None = None) -> int:
        """Record an ``archive`` entry (a retention policy, an archived range, an expiry: docs/archive.md);
        returns its index. ``rows(index)`` gives the archive tier's store rows that go in the same transaction
        (so the store lets archived entries go only once their record is committed)."""
        return self._record(
            ARCHIVE_SUBJECT,
            lambda index, at, prev: archive_entry_bytes(index=index, recorded_at=at, prev=prev, change=change),
            rows,
        )

    def _record(
        self,
        subject: str,
        body_of: Callable[[int, str, bytes], bytes],
        rows: Callable[[int], BatchWrite] | None = None,
    ) -> int:
        """Append one system entry to ``subject``'s chain and commit it; returns its index. ``body_of(index,
        recorded_at, prev)`` gives the entry's bytes; ``rows(index)`` store rows for the same transaction."""
        self._settle()
        self._fresh()
        head = self.store.subject_entries([subject])
        prev = head[-1].leaf if head else ZERO_HASH
        now = self._clock.now()
        index = self.size
        body = body_of(index, now, prev)
        row = EntryRow(index, subject, None, None, prev, leaf_hash(body), "ok", body)
        extra = rows(index) if rows is not None else BatchWrite()
        self._commit([row], [], extra, [], now, now, {subject: (row.leaf, len(head) + 1, index)})
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
        return check_batch(envelope, self.keyring, self._clock.now, self._shard, self.personal)

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
        parts = [Part(b.opened, b.events, list(range(len(b.events))), {}) for b in batches]
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
            if not isinstance(entry, EventEntry) or not _same_event(bytes(entry.event), opened.events[pos]):
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
        return self._sequence_many([Part(opened, events, positions, duplicates)], offsets)[0]

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
        parts = [Part(b.opened, b.events, list(range(len(b.events))), {}) for b in batches]
        deferred: list[BatchWrite] = []
        results = self._sequence_many(parts, offsets, deferred)
        return results, deferred[0]

    def _sequence_many(
        self, parts: Sequence[Part], offsets: Sequence[OffsetRow], deferred: list[BatchWrite] | None = None
    ) -> list[AppendResult]:
        """Sequence the given events of several checked batches, in order, and commit them in one transaction
        (or, given ``deferred``, put that transaction's write there and adopt the state without writing)."""
        self._fresh()
        subjects, latest = subjects_of(parts)
        self._cache.preload(self.store, subjects, self.settings.lifecycle)
        self._clock.observe(latest)
        readings = self._clock.reserve(sum(len(part.positions) for part in parts))
        done = sequence(parts, self._cache, readings, self.size, self.settings.lifecycle, self._local, self.personal)
        extra = BatchWrite(revocations=done.revocations, links=done.links, offsets=list(offsets))
        if self.personal is not None:
            try:
                self.personal.store_new_keys()  # durable before any entry sealed under them is
            except BaseException:
                self.personal.discard_new_keys()
                raise
        touched = {subj: (v.head, v.count, v.index) for subj, v in done.overlay.items() if v.count}
        promised = self._commit(
            done.rows, done.envelopes, extra, list(done.overlay.items()), readings[0], readings[-1], touched, deferred
        )
        return [
            AppendResult(tuple(_with_promise(receipts[p], promised) for p in range(len(part.events))), self.sealed_size)
            for part, receipts in zip(parts, done.receipts, strict=True)
        ]

    def _commit(
        self,
        rows: list[EntryRow],
        envelope_rows: list[EnvelopeRow],
        batch: BatchWrite,
        subject_updates: list[tuple[str, SubjectHead]],
        first_recorded: str,
        last_recorded: str,
        touched: dict[str, tuple[bytes, int, int]],
        deferred: list[BatchWrite] | None = None,
    ) -> PromisedRange:
        """Integrate ``rows`` into copies of the tree state, sign the promise about them, seal if due, write,
        then adopt the new state; returns the promise. Given ``deferred``, the write goes there instead (and
        the listeners hear of it when it lands)."""
        nodes, visit = stored_nodes()
        opened = self._open
        tree, block = integrate(self._tree, opened.tree, rows, visit)
        size = rows[-1].index + 1
        hlc_first = opened.hlc_first or first_recorded
        promised = sign_promise(
            self.origin, rows, tree.root(), last_recorded, self.settings.promise_seconds, self._signer
        )
        batch.promise = PromiseRow(rows[0].index, len(rows), promised.signed.to_bytes())
        batch.entries = rows
        batch.envelopes = envelope_rows
        batch.nodes = nodes
        links, batch.links = batch.links, []  # held until the seal (ledger.links)
        seal = None
        debt = opened.debt
        paid: tuple[int, int] | None = None
        block_len = size - opened.first
        if block_len >= self.settings.block_size or (self._monotonic() - opened.started >= self.settings.block_seconds):
            seal = self._seal(tree, block, size, hlc_first, last_recorded, visit, {**opened.touched, **touched})
            batch.entries = [*rows, seal.row]
            batch.checkpoint = seal.checkpoint
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
            self._cache.remember(subject, value)
        if debt is not None and paid is not None:
            debt.advance(paid)
        if seal is not None:
            self._adopt_seal(seal, [*opened.pending_links, *links])
        else:
            opened.touched.update(touched)
            opened.pending_links.extend(links)
            opened.tree = block
            opened.hlc_first = hlc_first
        if self._listeners and deferred is None:
            self._notify(batch.entries)
        return promised

    def _seal(
        self,
        tree: CompactRange,
        block: CompactRange,
        size: int,
        hlc_first: str,
        hlc_last: str,
        visit: Callable[[int, int, bytes], None],
        touched: dict[str, tuple[bytes, int, int]],
    ) -> Seal:
        return self._open.seal(
            tree,
            block,
            size,
            hlc_first,
            hlc_last,
            visit,
            touched,
            origin=self.origin,
            signer=self._signer,
            now=self._clock.now,
            sealed_size=self.sealed_size,
        )

    def _adopt_seal(self, seal: Seal, owed_links: list[Link] | None = None) -> None:
        """Adopt a committed seal. Given ``owed_links``, its links and map nodes are still to be written
        (publish.SealDebt); otherwise they were written with it."""
        self._open.adopt(seal, owed_links, self._monotonic())
        self.sealed_size = seal.checkpoint.size
        if self.settings.freeze_gc_at_seal:
            gc.collect(1)
            gc.freeze()

    def seal(self) -> CheckpointRow | None:
        """Seal the open block now (if it holds any entry) and return the new signed checkpoint. Unlike the
        seals appends make, this one writes the block's links and map nodes with it (and anything the previous
        seal still owed)."""
        self._settle()
        self._fresh()
        opened = self._open
        if self.size == opened.first:
            return None
        nodes, visit = stored_nodes()
        tree = self._tree.copy()
        last = decode_entry(self.store.entry(self.size - 1).body).recorded_at
        seal = self._seal(tree, opened.tree, self.size, opened.hlc_first or last, last, visit, opened.touched)
        batch = BatchWrite(
            entries=[seal.row],
            nodes=nodes,
            checkpoint=seal.checkpoint,
            map_nodes=[(h, encode_node(n)) for h, n in seal.map_nodes.items()],
            links=sorted(opened.pending_links),
        )
        if opened.debt is not None:
            opened.debt.slice(batch, len(opened.debt))
        self._write(batch)
        self._tree = tree
        self.size += 1
        self._adopt_seal(seal)
        if self._listeners:
            self._notify([seal.row])
        return seal.checkpoint

    def tick(self) -> CheckpointRow | None:
        """Seal if the open block is older than the configured age; call this periodically."""
        self._settle()
        opened = self._open
        if self.size > opened.first and self._monotonic() - opened.started >= self.settings.block_seconds:
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


def _same_event(stored: bytes, received: bytes) -> bool:
    """Whether a stored event is the received one: the same bytes, or sealed from them (core.sealed)."""
    if stored == received:
        return True
    personal = personal_of(stored)
    return personal is not None and personal.signed == leaf_hash(received).hex()
