"""The HTTP service: one FastAPI app in front of one Ledger.

What it guarantees:

* One writer. Every call into the Ledger (append, key changes, token state for introspection and
  revocation, tick, full verification) runs on one dedicated thread, in arrival order, so the ledger stays
  the single sequencer of its log. Reads of stored rows (entries, timelines, proofs, checkpoints, keys) use
  a separate read-only store connection and never wait for the writer. When more than
  ``max_pending_writes`` calls are queued the service answers 503 with Retry-After instead of queueing
  without bound.
* Time-based sealing. A background task calls ``Ledger.tick()`` every ``tick_seconds`` on the writer thread.
* Nothing can be changed or deleted through the API: there is no PUT, PATCH or DELETE route, and every POST
  only appends (batches, key changes, REVOKED events) or only reads (introspection, verification).
* Every endpoint except PUBLIC_ENDPOINTS (liveness, readiness, the OpenAPI document and its Swagger UI page)
  needs ``Authorization: Bearer <API key>``; ENDPOINT_ROLES is the one table of which roles may call what.
  A producer may append only batches whose signed statement names its own producer id.
* Errors are RFC 9457 problem details (see problems.py); a refused request has written nothing.
* Raw bearer tokens, which reach the service only in the form bodies of /v1/revoke and /v1/introspect, are
  turned into their HMAC fingerprint at once and are never stored or logged; the access log records the
  route template, never the requested path or query.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time, and their
# Depends(...) annotations name variables local to the functions that declare the routes.

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import parse_qsl

import msgspec
import uuid_utils
from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lineage_ledger.core.crypto import TOKEN_ID_PATTERN, Ed25519Signer, Signer
from lineage_ledger.core.encoding import MAX_SAFE_INTEGER, TOO_DEEP
from lineage_ledger.core.entry import KEY_ID_PATTERN, PRODUCER_PATTERN, EventEntry, KeyEntry, decode_entry
from lineage_ledger.core.envelope import open_envelope, seal_batch
from lineage_ledger.core.hlc import HLC_PATTERN, format_reading
from lineage_ledger.core.lifecycle import TokenState, effective_state
from lineage_ledger.core.merkle import TiledNodeReader, consistency_proof, inclusion_proof, leaf_hash
from lineage_ledger.core.model import TokenEvent, TokenPayload, encode_event
from lineage_ledger.errors import (
    ConflictError,
    InputError,
    KeyringError,
    LedgerError,
    NotFoundError,
    PushbackError,
    StorageFullError,
)
from lineage_ledger.ledger.keyring import Keyring, ProducerKey
from lineage_ledger.ledger.query import trace_token
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import AppendResult, CheckedBatch, Ledger
from lineage_ledger.service.apikeys import APIKEY_ENDPOINTS, add_apikey_routes
from lineage_ledger.service.auth import ApiKeyStore, Principal, Role
from lineage_ledger.service.docs import add_docs_routes
from lineage_ledger.service.openapi import document_problems
from lineage_ledger.service.problems import HttpProblem, ProblemType, problem_for, problem_response
from lineage_ledger.service.queries import QUERY_ENDPOINTS, add_query_routes
from lineage_ledger.service.receipts import receipts_body
from lineage_ledger.service.storage import DEFAULT_MIN_FREE_BYTES, StorageWatch
from lineage_ledger.service.tiles import TILE_ENDPOINTS, add_tile_routes
from lineage_ledger.state.introspection import Introspector
from lineage_ledger.store import open_store
from lineage_ledger.store.base import CheckpointRow, Store
from lineage_ledger.token_secrets import TokenSecrets, merged_state

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ENDPOINT_ROLES",
    "PUBLIC_ENDPOINTS",
    "SERVICE_PRODUCER",
    "call_on_writer",
    "create_app",
]

T = TypeVar("T")

DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
SERVICE_PRODUCER: Final = "lineage-service"
"""The producer id under which the service signs the REVOKED events of RFC 7009 revocations."""

PUBLIC_ENDPOINTS: Final = frozenset({"GET /healthz", "GET /readyz", "GET /openapi.json", "GET /docs"})
"""Answered without an API key: they tell nothing about what the ledger holds."""
ENDPOINT_ROLES: Final[Mapping[str, frozenset[Role]]] = {
    "POST /v1/batches": frozenset({"producer"}),
    "GET /v1/entries/{index}": frozenset({"auditor"}),
    "GET /v1/tokens/{token_id}/timeline": frozenset({"auditor"}),
    "GET /v1/proofs/inclusion": frozenset({"auditor"}),
    # producers watch the log's checkpoints for consistency (emitter.logwatch); neither reveals an entry
    "GET /v1/proofs/consistency": frozenset({"auditor", "producer"}),
    "GET /v1/checkpoints/latest": frozenset({"auditor", "producer"}),
    "GET /v1/checkpoints/{size}": frozenset({"auditor", "producer"}),
    "GET /v1/keys": frozenset({"admin", "auditor"}),
    "POST /v1/keys": frozenset({"admin"}),
    "POST /v1/keys/{key_id}/revoke": frozenset({"admin"}),
    "POST /v1/revoke": frozenset({"admin", "producer"}),
    "POST /v1/introspect": frozenset({"auditor", "producer"}),
    "POST /v1/verify": frozenset({"auditor"}),
    **dict.fromkeys(QUERY_ENDPOINTS, frozenset({"auditor"})),
    **dict.fromkeys(TILE_ENDPOINTS, frozenset({"auditor"})),  # anyone, with serve --public-log
    **dict.fromkeys(APIKEY_ENDPOINTS, frozenset({"admin"})),
}
"""Which roles may call which endpoint (PUBLIC_ENDPOINTS need no key). The one authorisation table."""

log = logging.getLogger("lineage_ledger.service")

_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM: Final = "application/x-www-form-urlencoded"
_TOKEN_TYPE_HINTS: Final = ("access_token", "refresh_token")
_MAX_FORM_FIELDS: Final = 8
_MAX_RAW_TOKEN: Final = 16 * 1024
# pydantic checks it with Rust regex, where $ (without multi-line mode) matches only at the very end.
_TOKEN_ID_RE: Final = f"^{TOKEN_ID_PATTERN}$"
_LOGGED_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# -- request and response bodies --------------------------------------------------------------------------


class KeyRegistration(BaseModel):
    """A producer signing key to register."""

    model_config = ConfigDict(extra="forbid")
    producer: str
    key_id: str
    public_key: str
    """The raw 32-byte Ed25519 public key, hex."""
    valid_from: str | None = None
    """HLC reading from which the key may sign (default: now)."""
    valid_until: str | None = None
    """HLC reading from which it may no longer sign (default: until revoked)."""


class KeyRevocation(BaseModel):
    """When a key stops signing (default: now)."""

    model_config = ConfigDict(extra="forbid")
    at: str | None = None


class VerifyRequest(BaseModel):
    """Optional input of a verification run."""

    model_config = ConfigDict(extra="forbid")
    trusted_checkpoint: str | None = None
    """A signed checkpoint saved earlier: the ledger must be an append-only extension of it."""


class ReceiptOut(BaseModel):
    """Where one event of a batch landed."""

    event_id: str
    index: int
    verdict: str
    duplicate: bool
    status: str
    """"sealed" once a signed checkpoint covers the entry, else "pending"."""
    leaf: str | None = None
    """The entry's RFC 9162 leaf hash (hex)."""
    path: list[str] | None = None
    """The leaf's audit path to the promise's ``leaves_root`` (docs/receipts.md)."""
    promise: int | None = None
    """Position in ``promises`` of the log key's signed promise covering the entry."""


class BatchResult(BaseModel):
    """The receipts of one batch, in batch order, the log key's signed promises they refer to, the log's
    size after it and its latest signed checkpoint."""

    receipts: list[ReceiptOut]
    promises: list[dict[str, Any]]
    size: int
    sealed_size: int
    checkpoint: str | None


# -- the single writer ------------------------------------------------------------------------------------


class _Writer:
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


class _Service:
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
        self.writer = _Writer(max_pending_writes)
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
        index = self.ledger.register_key(
            key.producer,
            key.key_id,
            bytes.fromhex(key.public_key),
            valid_from=key.valid_from,
            valid_until=key.valid_until,
        )
        return index, self.ledger.keyring.get(key.key_id)

    def revoke_key(self, key_id: str, at: str | None) -> tuple[int, ProducerKey]:
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
        latest = self.reads.latest_checkpoint()
        return latest.size if latest else 0

    def checkpoint_of_size(self, size: int, field: str) -> CheckpointRow:
        rows = self.reads.checkpoints(size)
        if not rows or rows[0].size != size:
            raise NotFoundError(f"{field}: no signed checkpoint of size {size}")
        return rows[0]

    def verify(self, trusted_checkpoint: str | None) -> dict[str, Any]:
        report = verify_ledger(
            self.ledger.store.url,
            verifier=self.ledger.log_verifier(),
            trusted_checkpoint=trusted_checkpoint,
            workers=self.verify_workers,
        )
        return report.to_json()


def call_on_writer(app: FastAPI, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the app's writer thread and return its result: the only safe way for code embedding the
    app to use its Ledger (seal it, read its state) while the app serves."""
    service: _Service = app.state.lineage
    return service.writer.call(fn)


# -- reading requests --------------------------------------------------------------------------------------


class _EnvelopeHead(msgspec.Struct):
    payload: str


class _StatementHead(msgspec.Struct):
    producer: str


_ENVELOPE_HEAD = msgspec.json.Decoder(_EnvelopeHead)
_STATEMENT_HEAD = msgspec.json.Decoder(_StatementHead)


def _claimed_producer(envelope: bytes) -> str:
    """The producer id the envelope's signed statement names (the writer re-reads and checks it all).

    Both readings decode the same ``payload`` field, and the writer accepts only a canonical statement
    (no duplicate keys), so the producer checked here is the producer the ledger records.
    """
    try:
        return _STATEMENT_HEAD.decode(base64.b64decode(_ENVELOPE_HEAD.decode(envelope).payload, validate=True)).producer
    except (msgspec.DecodeError, binascii.Error, ValueError, RecursionError):
        return open_envelope(envelope).statement.producer  # raises EnvelopeError naming the field


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _require_json(request: Request) -> None:
    media = _media_type(request)
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise HttpProblem(
            415, "unsupported-media-type", "Unsupported media type", "send the envelope as application/json"
        )


def _oauth_error(detail: str, field: str | None = None) -> HttpProblem:
    return HttpProblem(
        400, "invalid-request", "Invalid request", detail, field=field, extensions={"error": "invalid_request"}
    )


async def _form(request: Request, names: frozenset[str]) -> dict[str, str]:
    """The parameters of an RFC 6749-style form body: each at most once, nothing in the URL."""
    if request.url.query:
        raise _oauth_error("parameters belong in the form body, never in the URL")
    if _media_type(request) != _FORM:
        raise HttpProblem(415, "unsupported-media-type", "Unsupported media type", f"send the parameters as {_FORM}")
    try:
        pairs = parse_qsl(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=_MAX_FORM_FIELDS,
            errors="strict",
        )
    except ValueError:  # includes UnicodeDecodeError
        raise _oauth_error("the form body is not valid UTF-8 form data", "body") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise _oauth_error("a parameter appears more than once", name if name in names else None)
        form[name] = value
    return form


def _raw_token(form: dict[str, str]) -> str:
    token = form.get("token", "")
    if not token:
        raise _oauth_error("the token parameter is required", "token")
    if len(token) > _MAX_RAW_TOKEN:
        raise _oauth_error(f"the token is longer than {_MAX_RAW_TOKEN} characters", "token")
    return token


def _check_hint(form: dict[str, str], error: str) -> None:
    """A token_type_hint, if given (an empty one is omitted, RFC 6749 3.1), must be one of the enum."""
    hint = form.get("token_type_hint")
    if hint and hint not in _TOKEN_TYPE_HINTS:
        detail = f"token_type_hint must be one of {', '.join(_TOKEN_TYPE_HINTS)}"
        slug = error.replace("_", "-")
        raise HttpProblem(400, slug, "Invalid request", detail, field="token_type_hint", extensions={"error": error})


def _fingerprints(service: _Service, form: dict[str, str]) -> list[str]:
    """The token's ids under every version of the fingerprint secret, newest first."""
    region = form.get("region") or None
    try:
        return service.token_secret.candidates(_raw_token(form), region)
    except InputError as e:
        raise _oauth_error(e.reason, "region" if e.field == "region" else "token") from None


def _check(pattern: str, value: str | None, field: str) -> None:
    if value is not None and not re.match(pattern, value):
        raise InputError(field, f"must match {pattern}")


def _key_json(key: ProducerKey) -> dict[str, Any]:
    return {
        "producer": key.producer,
        "key_id": key.key_id,
        "public_key": key.public_key.hex(),
        "valid_from": key.valid_from,
        "valid_until": key.valid_until,
        "revoked_at": key.revoked_at,
    }


# -- ASGI middleware --------------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


class _BodyLimit:
    """413 for a body over ``max_bytes``, whether declared in Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _problem(self) -> Response:
        return HttpProblem(
            413, "body-too-large", "Request body too large", f"the body exceeds {self.max_bytes} bytes"
        ).response()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._problem()(scope, receive, send)
                return
        received = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app answers to a cut-off body is replaced by the 413 below
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._problem()(scope, receive, send)


class _AccessLog:
    """One log line per request: method, route template, status, duration and API key id.

    Never the requested path or query string, which could carry a raw token sent by mistake.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<no route>"
            method = scope["method"] if scope["method"] in _LOGGED_METHODS else "OTHER"
            principal = scope.get("state", {}).get("principal", "-")
            log.info(
                "%s %s %d %.1fms key=%s", method, template, status, (time.perf_counter() - started) * 1e3, principal
            )


# -- the app ----------------------------------------------------------------------------------------------


def _guard(service: _Service, endpoint: str) -> Callable[..., Awaitable[Principal]]:
    allowed = ENDPOINT_ROLES[endpoint]
    bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer llk_...")

    async def authorise(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal:
        challenge = 'Bearer realm="lineage-ledger"'
        if credentials is None:
            raise HttpProblem(
                401,
                "unauthenticated",
                "Authentication required",
                "send Authorization: Bearer <API key>",
                headers={"WWW-Authenticate": challenge},
            )
        principal = service.api_keys.authenticate(credentials.credentials)
        if principal is None:
            raise HttpProblem(
                401,
                "unauthenticated",
                "Authentication required",
                "the API key is not valid",
                headers={"WWW-Authenticate": challenge + ', error="invalid_token"'},
            )
        request.state.principal = principal.key_id
        if principal.role not in allowed:
            raise HttpProblem(
                403,
                "forbidden",
                "Role not allowed",
                f"the {principal.role} role may not call {endpoint}; allowed: {', '.join(sorted(allowed))}",
            )
        return principal

    return authorise


def _route_extra(endpoint: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"x-roles": sorted(ENDPOINT_ROLES[endpoint]), **(extra or {})}


def create_app(
    ledger: Ledger,
    *,
    api_keys: ApiKeyStore,
    token_secret: bytes | TokenSecrets,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    service_signer: Signer | None = None,
    clock: Callable[[], int] = time.time_ns,
    tick_seconds: float = 1.0,
    max_pending_writes: int = 64,
    verify_workers: int = 1,
    introspector: Introspector | None = None,
    public_log: bool = False,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
) -> FastAPI:
    """The HTTP service for ``ledger`` (which the caller keeps owning and closes after the app stops).

    ``api_keys`` decides who may call; ``token_secret`` is the HMAC secret of token fingerprints, or all its
    versions (RFC 7009 and 7662 requests carry raw tokens, looked up under every version). ``service_signer``
    signs the REVOKED events of revocations; it is registered as a key of producer ``lineage-service`` now,
    unless already registered (default: a fresh key per app). ``clock`` (ns since the epoch) stamps those
    events and judges token expiry. Bodies over ``max_body_bytes`` get 413. ``public_log`` serves the
    tlog-tiles read API (/checkpoint, /tile/...) to anyone, without an API key. ``introspector`` answers
    /v1/introspect off the writer thread (a RedisTokenState attached to ``ledger``, say); by default the
    ledger's own state answers, on the writer. After a write finds the disk full, ``/readyz`` answers 503
    until the database's filesystem has ``min_free_bytes`` free (service/storage.py).
    The app's lifespan runs the sealing tick; the ledger is only touched from
    the writer thread (see :func:`call_on_writer`).
    """
    # InputError now, not on the first request, for a short secret
    secrets = token_secret if isinstance(token_secret, TokenSecrets) else TokenSecrets.single(token_secret)
    service = _Service(
        ledger,
        api_keys,
        secrets,
        service_signer or Ed25519Signer.generate(SERVICE_PRODUCER),
        clock,
        max_pending_writes,
        verify_workers,
        tick_seconds,
        min_free_bytes,
    )
    service.introspector = introspector
    service.writer.call(service.register_service_key)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ticker = asyncio.create_task(_tick_forever(service))
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="Lineage Ledger",
        summary="A tamper-evident ledger of bearer-token lifecycle and data-provenance events",
        version="1",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.lineage = service
    _add_error_handlers(app)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(_AccessLog)
    _add_operational_routes(app, service)
    _add_write_routes(app, service)
    _add_read_routes(app, service)
    _add_key_routes(app, service)
    add_apikey_routes(
        app,
        service.api_keys,
        service.writer.run,
        service.ledger.record_api_key_change,
        lambda endpoint: _guard(service, endpoint),
        _route_extra,
    )
    _add_token_routes(app, service)
    guard = None if public_log else (lambda endpoint: _guard(service, endpoint))
    add_tile_routes(app, lambda: service.reads, guard, _route_extra)
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_problems(fastapi_openapi())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _tick_forever(service: _Service) -> None:
    while True:
        await asyncio.sleep(service.tick_seconds)
        try:
            await service.writer.run(service.ledger.tick)
        except StorageFullError as e:
            service.storage.failed(e)  # the next tick seals, once there is room
        except PushbackError:
            continue  # busy appending; a later append or tick seals
        except Exception:
            log.exception("the sealing tick failed")


def _add_error_handlers(app: FastAPI) -> None:
    async def ledger_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LedgerError)
        if isinstance(exc, StorageFullError):
            request.app.state.lineage.storage.failed(exc)
        response = problem_for(exc)
        if response.status_code >= 500 and not isinstance(exc, PushbackError):
            log.error("ledger error %s", type(exc).__name__, exc_info=exc)
        return response

    async def http_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpProblem)
        return exc.response()

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ())]
        field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else None)
        return problem_response(ProblemType(422, "invalid-input", "Invalid input"), str(first.get("msg")), field)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names the methods of one route; a path can have several
            routes = request.app.router.routes
            matching = [r for r in routes if r.matches(request.scope)[0] != Match.NONE]
            methods = {m for r in matching for m in getattr(r, "methods", None) or ()}
            headers = {**(headers or {}), "Allow": ", ".join(sorted(methods))}
        if isinstance(exc.__cause__, RecursionError):  # FastAPI's json.loads of a body gave up
            return problem_response(ProblemType(400, "malformed-body", "Malformed request body"), TOO_DEEP, "body")
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(ProblemType(exc.status_code, slug, str(exc.detail)), str(exc.detail), None, headers)

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.error("unexpected %s", type(exc).__name__, exc_info=exc)
        return problem_response(ProblemType(500, "internal", "Internal error"), "the service failed unexpectedly")

    app.add_exception_handler(LedgerError, ledger_error)
    app.add_exception_handler(HttpProblem, http_problem)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _add_operational_routes(app: FastAPI, service: _Service) -> None:
    @app.get("/healthz", tags=["operations"], summary="Liveness (no authentication)")
    async def healthz() -> dict[str, str]:
        """The process is up and answering. Touches nothing else."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness (no authentication)")
    async def readyz() -> dict[str, bool]:
        """Ready when the writer thread and the read connection both answer; 503 when the writer is saturated.

        503 with Retry-After after a write found the disk full, until space returns. It answers without a
        key (for orchestrators' probes), so it says nothing about the log's contents.
        """
        service.storage.check()
        await service.writer.run(lambda: service.ledger.size)
        await run_in_threadpool(service.reads.size)
        return {"ready": True}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    add_docs_routes(app, title=app.title, openapi_url="/openapi.json")


_ENVELOPE_SCHEMA: Final = {
    "type": "object",
    "required": ["payloadType", "payload", "signatures", "events"],
    "properties": {
        "payloadType": {"type": "string", "const": "application/vnd.lineage-ledger.batch.v1+json"},
        "payload": {"type": "string", "description": "base64 of the canonical batch statement"},
        "signatures": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}},
                "required": ["keyid", "sig"],
            },
        },
        "events": {"type": "array", "items": {"type": "object"}, "description": "canonical JSON events"},
    },
}


def _add_write_routes(app: FastAPI, service: _Service) -> None:
    endpoint = "POST /v1/batches"

    @app.post(
        "/v1/batches",
        tags=["ingest"],
        summary="Append a signed batch",
        response_model=BatchResult,
        openapi_extra=_route_extra(
            endpoint,
            {"requestBody": {"required": True, "content": {"application/json": {"schema": _ENVELOPE_SCHEMA}}}},
        ),
    )
    async def post_batch(
        request: Request, principal: Annotated[Principal, Depends(_guard(service, endpoint))]
    ) -> Response:
        """Check, sequence and durably commit one signed batch envelope (DSSE, see ARCHITECTURE.md).

        All or nothing. A retried batch (same event ids, same bytes) returns the original receipts with
        ``duplicate: true`` and writes nothing; an event id recorded with other bytes is 409 and nothing is
        written. The envelope's statement must name the caller's own producer id (else 403).
        """
        _require_json(request)
        envelope = await request.body()
        claimed = _claimed_producer(envelope)
        if claimed != principal.producer:
            raise HttpProblem(
                403,
                "wrong-producer",
                "Producer not allowed",
                f"this API key may append only for producer {principal.producer}",
                field="payload.producer",
            )
        result, size, sealed = await service.append_batch(envelope)
        body = {
            **receipts_body(result.receipts, sealed),
            "size": size,
            "sealed_size": sealed,
            "checkpoint": service.latest_note(sealed) if sealed else None,
        }
        return Response(msgspec.json.encode(body), media_type="application/json")


Index = Annotated[int, PathParam(ge=0, le=MAX_SAFE_INTEGER)]


def _add_read_routes(app: FastAPI, service: _Service) -> None:
    endpoint = "GET /v1/entries/{index}"

    @app.get("/v1/entries/{index}", tags=["read"], summary="One log entry", openapi_extra=_route_extra(endpoint))
    def get_entry(index: Index, _: Annotated[Principal, Depends(_guard(service, endpoint))]) -> dict[str, Any]:
        """The entry's canonical bytes (as a string), its leaf hash recomputed from them, whether a signed
        checkpoint covers it, and for events the signing key with its revocation time, if it was revoked later.
        """
        row = service.reads.entry(index)
        entry = decode_entry(row.body)
        out: dict[str, Any] = {
            "index": row.index,
            "type": type(entry).__struct_config__.tag,
            "entry": row.body.decode("utf-8"),
            "leaf_hash": leaf_hash(row.body).hex(),
            "status": "sealed" if row.index < service.sealed_size() else "pending",
        }
        if isinstance(entry, EventEntry):
            key = next((k for k in service.keyring().producer_keys() if k.key_id == entry.key_id), None)
            revoked_at = key.revoked_at if key else None
            out["signed_by"] = {
                "producer": entry.producer,
                "key_id": entry.key_id,
                "revoked_at": revoked_at,
                "revoked_later": revoked_at is not None and revoked_at > entry.recorded_at,
            }
        return out

    endpoint_tl = "GET /v1/tokens/{token_id}/timeline"

    @app.get(
        "/v1/tokens/{token_id}/timeline",
        tags=["read"],
        summary="A token's timeline",
        openapi_extra=_route_extra(endpoint_tl),
    )
    def get_timeline(
        token_id: Annotated[str, PathParam(pattern=_TOKEN_ID_RE, description="a token fingerprint, never a raw token")],
        _: Annotated[Principal, Depends(_guard(service, endpoint_tl))],
    ) -> dict[str, Any]:
        """Every recorded step of the token with verdicts and sealed/pending status, its chain check, its
        parents, children and the resources it touched (404 if the ledger holds no event of it)."""
        return trace_token(service.reads, token_id).to_json()

    endpoint_inc = "GET /v1/proofs/inclusion"

    @app.get(
        "/v1/proofs/inclusion", tags=["proofs"], summary="Inclusion proof", openapi_extra=_route_extra(endpoint_inc)
    )
    def get_inclusion(
        index: Annotated[int, Query(ge=0, le=MAX_SAFE_INTEGER)],
        _: Annotated[Principal, Depends(_guard(service, endpoint_inc))],
        size: Annotated[int | None, Query(ge=1, le=MAX_SAFE_INTEGER)] = None,
    ) -> dict[str, Any]:
        """RFC 9162 inclusion proof of entry ``index`` in the signed checkpoint of tree ``size`` (default:
        the latest), with the entry's bytes and that checkpoint, so the caller can check it offline."""
        if size is None:
            size = service.sealed_size()
            if size == 0:
                raise NotFoundError("no signed checkpoint yet")
        note = service.checkpoint_of_size(size, "size").note
        if index >= size:
            raise NotFoundError(f"entry {index} is not covered by the checkpoint of size {size}")
        row = service.reads.entry(index)
        path = inclusion_proof(index, size, TiledNodeReader(service.reads.nodes))
        return {
            "index": index,
            "tree_size": size,
            "entry": row.body.decode("utf-8"),
            "leaf_hash": leaf_hash(row.body).hex(),
            "inclusion_path": [h.hex() for h in path],
            "checkpoint": note,
        }

    endpoint_con = "GET /v1/proofs/consistency"

    @app.get(
        "/v1/proofs/consistency", tags=["proofs"], summary="Consistency proof", openapi_extra=_route_extra(endpoint_con)
    )
    def get_consistency(
        old: Annotated[int, Query(ge=1, le=MAX_SAFE_INTEGER)],
        new: Annotated[int, Query(ge=1, le=MAX_SAFE_INTEGER)],
        _: Annotated[Principal, Depends(_guard(service, endpoint_con))],
    ) -> dict[str, Any]:
        """RFC 9162 consistency proof between two signed checkpoints, with both checkpoints."""
        if old > new:
            raise InputError("old", f"must not exceed new ({new})")
        old_note = service.checkpoint_of_size(old, "old").note
        new_note = service.checkpoint_of_size(new, "new").note
        proof = consistency_proof(old, new, TiledNodeReader(service.reads.nodes))
        return {
            "old_size": old,
            "new_size": new,
            "proof": [h.hex() for h in proof],
            "old_checkpoint": old_note,
            "new_checkpoint": new_note,
        }

    endpoint_latest = "GET /v1/checkpoints/latest"

    @app.get(
        "/v1/checkpoints/latest",
        tags=["checkpoints"],
        summary="Latest signed checkpoint",
        openapi_extra=_route_extra(endpoint_latest),
    )
    def get_latest_checkpoint(_: Annotated[Principal, Depends(_guard(service, endpoint_latest))]) -> dict[str, Any]:
        """The latest C2SP signed checkpoint (404 before the first seal)."""
        row = service.reads.latest_checkpoint()
        if row is None:
            raise NotFoundError("no signed checkpoint yet")
        return {"size": row.size, "note": row.note}

    endpoint_size = "GET /v1/checkpoints/{size}"

    @app.get(
        "/v1/checkpoints/{size}",
        tags=["checkpoints"],
        summary="Signed checkpoint by tree size",
        openapi_extra=_route_extra(endpoint_size),
    )
    def get_checkpoint(size: Index, _: Annotated[Principal, Depends(_guard(service, endpoint_size))]) -> dict[str, Any]:
        """The signed checkpoint of exactly this tree size (404 if none was signed at that size)."""
        row = service.checkpoint_of_size(size, "size")
        return {"size": row.size, "note": row.note}

    endpoint_verify = "POST /v1/verify"

    @app.post(
        "/v1/verify", tags=["audit"], summary="Verify the whole ledger", openapi_extra=_route_extra(endpoint_verify)
    )
    async def post_verify(
        _: Annotated[Principal, Depends(_guard(service, endpoint_verify))],
        request: Annotated[VerifyRequest | None, Body()] = None,
    ) -> dict[str, Any]:
        """Run verify_ledger against the log's own verifier key and return its report (``ok`` false with the
        problems if anything fails to check).

        It runs on the writer thread, so appends wait until it is done and the report describes one state of
        the log (verification reads the store in many queries; a seal between two of them would otherwise
        look like truncation). One run at a time: 503 with Retry-After while one runs.
        """
        if service.verifying:
            raise PushbackError("a verification is already running", retry_after=5.0)
        service.verifying = True
        try:
            return await service.writer.run(partial(service.verify, request.trusted_checkpoint if request else None))
        finally:
            service.verifying = False


def _add_key_routes(app: FastAPI, service: _Service) -> None:
    add_query_routes(app, lambda: service.reads, lambda endpoint: _guard(service, endpoint), _route_extra)

    endpoint_list = "GET /v1/keys"

    @app.get("/v1/keys", tags=["keys"], summary="Producer signing keys", openapi_extra=_route_extra(endpoint_list))
    def list_keys(_: Annotated[Principal, Depends(_guard(service, endpoint_list))]) -> list[dict[str, Any]]:
        """Every producer key the log records, in registration order, with its window and revocation time."""
        return [_key_json(k) for k in service.keyring().producer_keys()]

    endpoint_register = "POST /v1/keys"

    @app.post(
        "/v1/keys",
        tags=["keys"],
        summary="Register a producer signing key",
        status_code=201,
        openapi_extra=_route_extra(endpoint_register),
    )
    async def register_key(
        key: KeyRegistration, _: Annotated[Principal, Depends(_guard(service, endpoint_register))]
    ) -> dict[str, Any]:
        """Record the key as a ledger entry; it signs from ``valid_from`` (default now). 409 if the id exists."""
        _check(PRODUCER_PATTERN, key.producer, "producer")
        _check(KEY_ID_PATTERN, key.key_id, "key_id")
        _check(r"^[0-9a-f]{64}\Z", key.public_key, "public_key")
        _check(HLC_PATTERN, key.valid_from, "valid_from")
        _check(HLC_PATTERN, key.valid_until, "valid_until")
        if key.producer == SERVICE_PRODUCER:
            raise InputError("producer", f"{SERVICE_PRODUCER} is the service's own producer id")
        if key.valid_until is not None and key.valid_from is not None and key.valid_until <= key.valid_from:
            raise InputError("valid_until", "must be after valid_from")
        index, registered = await service.writer.run(partial(service.register_key, key))
        return {"index": index, **_key_json(registered)}

    endpoint_revoke = "POST /v1/keys/{key_id}/revoke"

    @app.post(
        "/v1/keys/{key_id}/revoke",
        tags=["keys"],
        summary="Revoke a producer signing key",
        openapi_extra=_route_extra(endpoint_revoke),
    )
    async def revoke_key(
        key_id: str,
        _: Annotated[Principal, Depends(_guard(service, endpoint_revoke))],
        body: Annotated[KeyRevocation | None, Body()] = None,
    ) -> dict[str, Any]:
        """Record that the key signs nothing from ``at`` (default now), as a ledger entry. History it signed
        keeps verifying. 404 for an unknown key, 409 if already revoked."""
        at = body.at if body else None
        _check(HLC_PATTERN, at, "at")
        index, revoked = await service.writer.run(partial(service.revoke_key, key_id, at))
        return {"index": index, **_key_json(revoked)}


_FORM_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {
            _FORM: {
                "schema": {
                    "type": "object",
                    "required": ["token"],
                    "properties": {
                        "token": {"type": "string", "description": "the raw token (never stored or logged)"},
                        "token_type_hint": {"type": "string", "enum": list(_TOKEN_TYPE_HINTS)},
                        "region": {"type": "string", "description": "region prefix of the token's fingerprint"},
                    },
                }
            }
        },
    }
}
_TOKEN_FORM_FIELDS: Final = frozenset({"token", "token_type_hint", "region"})


def _add_token_routes(app: FastAPI, service: _Service) -> None:
    endpoint_revoke = "POST /v1/revoke"

    @app.post(
        "/v1/revoke",
        tags=["tokens"],
        summary="Revoke a token (RFC 7009)",
        response_class=Response,
        responses={200: {"description": "Revoked, or unknown to the ledger (RFC 7009 2.2): an empty body"}},
        openapi_extra=_route_extra(endpoint_revoke, _FORM_BODY),
    )
    async def revoke(
        request: Request, principal: Annotated[Principal, Depends(_guard(service, endpoint_revoke))]
    ) -> Response:
        """RFC 7009: record a REVOKED event for the token, signed by the service's own key; the writer adds
        the token to the revocation set in the same store transaction. 200 with an empty body whether or
        not the ledger knew the token (RFC 7009 section 2.2); an unknown or already revoked token writes
        nothing. ``token_type_hint`` is not needed (one fingerprint covers every token type), but a hint
        other than ``access_token`` or ``refresh_token`` names a type the ledger does not revoke: 400
        ``unsupported_token_type`` (RFC 7009 section 2.2.1).
        """
        form = await _form(request, _TOKEN_FORM_FIELDS)
        _check_hint(form, "unsupported_token_type")
        token_ids = _fingerprints(service, form)
        await service.writer.run(partial(service.revoke_token, token_ids, principal.key_id))
        return Response(status_code=200, headers=_NO_STORE)

    endpoint_introspect = "POST /v1/introspect"

    @app.post(
        "/v1/introspect",
        tags=["tokens"],
        summary="Introspect a token (RFC 7662)",
        openapi_extra=_route_extra(endpoint_introspect, _FORM_BODY),
    )
    async def introspect(
        request: Request, _: Annotated[Principal, Depends(_guard(service, endpoint_introspect))]
    ) -> JSONResponse:
        """RFC 7662: ``{"active": true, ...}`` while the ledger-derived state is issued or active, not
        expired, and (under a cascading lifecycle policy) no ancestor of the token was revoked, else only
        ``{"active": false}`` (also for a token the ledger never saw). The token is looked up under every
        version of the fingerprint secret. A ``token_type_hint`` other than ``access_token`` or
        ``refresh_token`` is 400 ``invalid_request``."""
        form = await _form(request, _TOKEN_FORM_FIELDS)
        _check_hint(form, "invalid_request")
        token_ids = _fingerprints(service, form)
        now, policy = service.clock(), service.ledger.settings.lifecycle
        own = service.introspector.token_state if service.introspector is not None else service.ledger.token_state

        def states() -> list[TokenState]:
            return [effective_state(token_id, own, policy, now)[0] for token_id in token_ids]

        if service.introspector is None:
            found = await service.writer.run(states)
        else:
            found = await run_in_threadpool(states)
        state = merged_state(found)
        token_id = token_ids[found.index(state)] if state in found else token_ids[0]
        if not state.active_at(now):
            return JSONResponse({"active": False}, headers=_NO_STORE)
        body: dict[str, Any] = {
            "active": True,
            "token_id": token_id,
            "lineage_state": state.state,
            "iat": state.issued_ns // 1_000_000_000,
        }
        if state.expires_ns:
            body["exp"] = state.expires_ns // 1_000_000_000
        return JSONResponse(body, headers=_NO_STORE)
