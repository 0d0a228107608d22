"""What the routes of the HTTP service share: the ledger behind its single writer thread, the read-only store
connection, the API keys, token secret and the service's own signing key.

Every Ledger call runs on the one writer thread, in arrival order; batches that arrive while it is busy are
committed together (group commit), each answered as if appended alone. More than ``max_pending_writes``
queued calls or batches is a PushbackError (503 with Retry-After).
"""

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import uuid_utils

from lineage_ledger.core.crypto import Signer
from lineage_ledger.core.entry import KeyEntry, decode_entry
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.model import TokenEvent, TokenPayload, encode_event
from lineage_ledger.errors import ConflictError, KeyringError, LedgerError, NotFoundError, PushbackError
from lineage_ledger.ledger.keyring import Keyring, ProducerKey
from lineage_ledger.ledger.verify import verify_ledger, verify_since
from lineage_ledger.ledger.writer import AppendResult, CheckedBatch, Ledger
from lineage_ledger.service.auth import ApiKeyStore
from lineage_ledger.service.bodies import KeyRegistration
from lineage_ledger.service.storage import StorageWatch
from lineage_ledger.state.introspection import Introspector
from lineage_ledger.store import open_store
from lineage_ledger.store.base import CheckpointRow, Store
from lineage_ledger.token_secrets import TokenSecrets, merged_state

__all__ = ["SERVICE_PRODUCER", "ServiceState", "WriterThread"]

T = TypeVar("T")

SERVICE_PRODUCER: Final = "lineage-service"
"""The producer id under which the service signs the REVOKED events of RFC 7009 revocations."""


class WriterThread:
    """One thread that runs every Ledger call, in submission order."""

    def __init__(self, max_pending: int) -> None:
        self._max_pending = max_pending
        self._pending = 0
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lineage-writer")
            return self._executor

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer thread; PushbackError if too many calls are already waiting."""
        if self._pending >= self._max_pending:
            raise PushbackError(f"{self._pending} ledger calls are already queued", retry_after=1.0)
        self._pending += 1  # only ever touched on the event loop's thread
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool(), fn)
        finally:
            self._pending -= 1

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer thread and wait for it (from any thread but the writer's)."""
        return self._pool().submit(fn).result()

    def close(self) -> None:
        """Finish queued calls and stop the thread (a later call starts a new one)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


class ServiceState:
    """What the routes share: the ledger behind its writer, the read connection, credentials."""

    def __init__(
        self,
        ledger: Ledger,
        api_keys: ApiKeyStore,
        token_secret: TokenSecrets,
        signer: Signer,
        clock: Callable[[], int],
        max_pending_writes: int,
        verify_workers: int,
        tick_seconds: float,
        min_free_bytes: int,
    ) -> None:
        self.ledger = ledger
        self.storage = StorageWatch(ledger.store.url, min_free_bytes)
        self.api_keys = api_keys
        self.token_secret = token_secret
        self.signer = signer
        self.key_id = f"{SERVICE_PRODUCER}-{leaf_hash(signer.public_key)[:4].hex()}"
        self.clock = clock
        self.writer = WriterThread(max_pending_writes)
        self.verify_workers = verify_workers
        self.tick_seconds = tick_seconds
        self.verifying = False  # only read and set on the event loop's thread
        self.introspector: Introspector | None = None
        self._reads: Store | None = None
        self._reads_lock = threading.Lock()
        self._latest: CheckpointRow | None = None
        self._max_batches = max_pending_writes
        self._waiting: list[tuple[bytes, asyncio.Future[tuple[AppendResult, int, int]]]] = []
        self._waiting_lock = threading.Lock()  # appended to on the event loop, taken on the writer thread
        self._draining = False  # only touched on the event loop's thread
        self._drainer: asyncio.Future[None] | None = None
        self._queued = 0
        """Batches accepted and not yet answered (waiting or being appended): at most max_pending_writes."""

    async def append_batch(self, envelope: bytes) -> tuple[AppendResult, int, int]:
        """Append a batch with group commit: the batches that arrive while the writer is busy wait together,
        and when its turn comes the writer checks them one by one and commits the accepted ones in one
        transaction (one fsync). Each request still gets its own result or error, as if appended alone."""
        if self._queued >= self._max_batches:
            raise PushbackError(f"{self._queued} batches are already queued for the ledger", retry_after=1.0)
        future: asyncio.Future[tuple[AppendResult, int, int]] = asyncio.get_running_loop().create_future()
        with self._waiting_lock:
            self._waiting.append((envelope, future))
        self._queued += 1
        if not self._draining:
            self._draining = True
            self._drainer = asyncio.ensure_future(self._drain())  # kept: a task nobody holds may be collected
        return await future

    async def _drain(self) -> None:
        """On the event loop: give the writer turns until no batch is waiting; answer each batch's request."""
        try:
            while True:
                with self._waiting_lock:
                    if not self._waiting:
                        break
                try:
                    answered = await self.writer.run(self._take_and_append)
                except Exception as e:  # the writer refused the turn (busy) or failed: fail what waits
                    with self._waiting_lock:
                        taken, self._waiting = self._waiting, []
                    answered = [(future, e) for _, future in taken]
                self._queued -= len(answered)
                for future, outcome in answered:
                    if future.done():  # the client went away
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._draining = False

    def _take_and_append(
        self,
    ) -> list[tuple[asyncio.Future[tuple[AppendResult, int, int]], tuple[AppendResult, int, int] | BaseException]]:
        """On the writer thread: take every batch waiting now and append them together."""
        with self._waiting_lock:
            taken, self._waiting = self._waiting, []
        outcomes: list[tuple[AppendResult, int, int] | BaseException]
        try:
            outcomes = list(self._append_together([envelope for envelope, _ in taken]))
        except Exception as e:  # a bug, not a refusal: every batch of this turn gets the error
            outcomes = [e] * len(taken)
        return [(future, outcome) for (_, future), outcome in zip(taken, outcomes, strict=True)]

    def _append_together(self, envelopes: list[bytes]) -> list[tuple[AppendResult, int, int] | LedgerError]:
        """On the writer thread: check each batch, then append the accepted ones as one group commit
        (``Ledger.append_together``); every batch gets its own result or error."""
        ledger = self.ledger
        outcomes: list[AppendResult | LedgerError | None] = [None] * len(envelopes)
        checked: list[tuple[int, CheckedBatch]] = []
        for i, envelope in enumerate(envelopes):
            try:
                checked.append((i, ledger.check(envelope)))
            except LedgerError as e:
                outcomes[i] = e
        try:
            appended = ledger.append_together([batch for _, batch in checked])
        except LedgerError as e:  # the one transaction failed for all of them; nothing was written
            appended = [e] * len(checked)
        for (i, _), result in zip(checked, appended, strict=True):
            outcomes[i] = result
        if any(not isinstance(result, LedgerError) for result in appended):
            self.storage.succeeded()
        size, sealed = ledger.size, ledger.sealed_size
        out: list[tuple[AppendResult, int, int] | LedgerError] = []
        for outcome in outcomes:
            assert outcome is not None
            out.append(outcome if isinstance(outcome, LedgerError) else (outcome, size, sealed))
        return out

    @property
    def reads(self) -> Store:
        """A read-only connection to the ledger's store (the writer's own store if it lives in memory)."""
        with self._reads_lock:
            if self._reads is None:
                url = self.ledger.store.url
                in_memory = url.split("?", 1)[0] in {":memory:", "sqlite:///:memory:"}
                self._reads = self.ledger.store if in_memory else open_store(url, readonly=True)
            return self._reads

    def close(self) -> None:
        """Stop the writer thread (after queued calls) and close the read connection."""
        self.writer.close()
        with self._reads_lock:
            if self._reads is not None and self._reads is not self.ledger.store:
                self._reads.close()
            self._reads = None

    # -- writer-thread jobs (each runs on the writer thread) ---------------------------------------------

    def register_service_key(self) -> None:
        """Register the service's own signing key unless the keyring already holds it, usable."""
        known = self.ledger.keyring.producer_keys()
        mine = next((k for k in known if k.key_id == self.key_id), None)
        if mine is None:
            self.ledger.register_key(SERVICE_PRODUCER, self.key_id, self.signer.public_key)
        elif mine.public_key != self.signer.public_key or mine.producer != SERVICE_PRODUCER:
            raise KeyringError(f"key id {self.key_id} is registered with another key")
        elif mine.revoked_at is not None:
            raise KeyringError(f"the service key {self.key_id} was revoked; start the service with a new key")

    def revoke_token(self, token_ids: list[str], requested_by: str) -> bool:
        """Append a REVOKED event for a token the ledger knows and has not revoked; True if one was written.
        ``token_ids`` are its ids under each secret version, newest first: the event goes to the newest one under
        which the token has a lifecycle state (was issued), so its chain continues.
        """
        known = [(i, s) for i in token_ids if (s := self.ledger.token_state(i)).state != "NONE"]
        if not known or merged_state([s for _, s in known]).state == "REVOKED":
            return False
        token_id = known[0][0]
        event = encode_event(
            TokenEvent(
                event_id=str(uuid_utils.uuid7()),
                event_type="REVOKED",
                token_id=token_id,
                occurred_at=format_reading(self.clock(), 0),
                schema_version=1,
                payload=TokenPayload(reason=f"RFC 7009 revocation requested with API key {requested_by}"),
            )
        )
        envelope = seal_batch([event], producer=SERVICE_PRODUCER, key_id=self.key_id, signer=self.signer)
        self.ledger.append(envelope)
        return True

    def register_key(self, key: KeyRegistration) -> tuple[int, ProducerKey]:
        """Record ``key`` as a ledger entry; its index and the key as the keyring now holds it."""
        index = self.ledger.register_key(
            key.producer,
            key.key_id,
            bytes.fromhex(key.public_key),
            valid_from=key.valid_from,
            valid_until=key.valid_until,
        )
        return index, self.ledger.keyring.get(key.key_id)

    def revoke_key(self, key_id: str, at: str | None) -> tuple[int, ProducerKey]:
        """Record the key's revocation from ``at`` (NotFoundError for an unknown key, ConflictError for the
        service's own); its index and the key as the keyring now holds it."""
        try:
            self.ledger.keyring.get(key_id)
        except KeyringError as e:
            raise NotFoundError(str(e)) from e
        if key_id == self.key_id:
            raise ConflictError("this is the service's own signing key; restart the service with a new key instead")
        index = self.ledger.revoke_key(key_id, at=at)
        return index, self.ledger.keyring.get(key_id)

    # -- reads -----------------------------------------------------------------------------------------

    def keyring(self) -> Keyring:
        """The producer keys as the stored log records them (the keyring is derived from key entries)."""
        changes = []
        for row in self.reads.subjects_with_prefix("producer:"):
            entry = decode_entry(row.body)
            if isinstance(entry, KeyEntry):
                changes.append(entry.change)
        return Keyring(changes)

    def latest_note(self, sealed_size: int) -> str | None:
        """The latest signed checkpoint for a batch answer: read again only when the sealed size moved."""
        latest = self._latest
        if latest is None or latest.size != sealed_size:
            latest = self._latest = self.reads.latest_checkpoint()
        return latest.note if latest is not None else None

    def sealed_size(self) -> int:
        """The tree size of the latest signed checkpoint (0 before the first seal)."""
        latest = self.reads.latest_checkpoint()
        return latest.size if latest else 0

    def checkpoint_of_size(self, size: int, field: str) -> CheckpointRow:
        """The signed checkpoint of exactly ``size``; NotFoundError naming ``field`` if none was signed."""
        rows = self.reads.checkpoints(size)
        if not rows or rows[0].size != size:
            raise NotFoundError(f"{field}: no signed checkpoint of size {size}")
        return rows[0]

    def verify(self, trusted_checkpoint: str | None, since: str | None = None) -> dict[str, Any]:
        """verify_ledger's report on the whole ledger against the log's own verifier key, as JSON; with
        ``since``, verify_since's on what was appended after that checkpoint."""
        if since is not None:
            url, key = self.ledger.store.url, self.ledger.log_verifier()
            return verify_since(url, since, verifier=key, workers=self.verify_workers).to_json()
        report = verify_ledger(
            self.ledger.store.url,
            verifier=self.ledger.log_verifier(),
            trusted_checkpoint=trusted_checkpoint,
            workers=self.verify_workers,
        )
        return report.to_json()
