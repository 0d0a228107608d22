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

Each area has its module: operations.py (liveness, readiness, /openapi.json, /docs), batches.py (the write
route), reads.py (entries, timelines, proofs, checkpoints, verification), queries.py, keys.py, apikeys.py,
tokens.py (revocation, introspection), tiles.py; access.py holds the one authorisation table, state.py the
writer thread and what the routes share, middleware.py the middleware and the error handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, TypeVar

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from lineage_ledger.core.crypto import Ed25519Signer, Signer
from lineage_ledger.errors import PushbackError, StorageFullError
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.service.access import ENDPOINT_ROLES, PUBLIC_ENDPOINTS, guard, route_extra
from lineage_ledger.service.apikeys import add_apikey_routes
from lineage_ledger.service.auth import ApiKeyStore
from lineage_ledger.service.batches import add_batch_routes
from lineage_ledger.service.bodies import BatchResult, KeyRegistration, KeyRevocation, ReceiptOut, VerifyRequest
from lineage_ledger.service.keys import add_key_routes
from lineage_ledger.service.middleware import AccessLog, BodyLimit, add_error_handlers
from lineage_ledger.service.openapi import document_problems
from lineage_ledger.service.operations import add_operational_routes
from lineage_ledger.service.queries import add_query_routes
from lineage_ledger.service.reads import add_read_routes
from lineage_ledger.service.state import SERVICE_PRODUCER, ServiceState
from lineage_ledger.service.storage import DEFAULT_MIN_FREE_BYTES
from lineage_ledger.service.subjects import add_subject_routes
from lineage_ledger.service.tiles import add_tile_routes
from lineage_ledger.service.tokens import add_token_routes
from lineage_ledger.state.introspection import Introspector
from lineage_ledger.token_secrets import TokenSecrets

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ENDPOINT_ROLES",
    "PUBLIC_ENDPOINTS",
    "SERVICE_PRODUCER",
    "BatchResult",
    "KeyRegistration",
    "KeyRevocation",
    "ReceiptOut",
    "VerifyRequest",
    "call_on_writer",
    "create_app",
]

T = TypeVar("T")

DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024

log = logging.getLogger("lineage_ledger.service")


def call_on_writer(app: FastAPI, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the app's writer thread and return its result: the only safe way for code embedding the
    app to use its Ledger (seal it, read its state) while the app serves."""
    service: ServiceState = app.state.lineage
    return service.writer.call(fn)


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
    service = ServiceState(
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
    add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(AccessLog)
    add_operational_routes(app, service)
    add_batch_routes(app, service)
    add_read_routes(app, service)
    add_query_routes(app, lambda: service.reads, lambda endpoint: guard(service.api_keys, endpoint), route_extra)
    add_key_routes(app, service)
    add_apikey_routes(
        app,
        service.api_keys,
        service.writer.run,
        service.ledger.record_api_key_change,
        lambda endpoint: guard(service.api_keys, endpoint),
        route_extra,
    )
    add_token_routes(app, service)
    add_subject_routes(app, service)
    tile_guard = None if public_log else (lambda endpoint: guard(service.api_keys, endpoint))
    add_tile_routes(app, lambda: service.reads, tile_guard, route_extra)
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_problems(fastapi_openapi())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _tick_forever(service: ServiceState) -> None:
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
