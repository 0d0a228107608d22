"""API keys over HTTP (admin role): list, create, rotate and revoke, each change recorded as a ledger entry.

The running service authenticates against the same store these routes change, so a revoked key is refused
on its very next request and a created or rotated one works at once. A raw key appears only in the answer
to the create or rotate request that made it (sent with ``Cache-Control: no-store``).
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time.

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any, Final, Protocol, TypeVar

from fastapi import Body, Depends, FastAPI, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from lineage_ledger.core.entry import API_KEY_ID_PATTERN, UTC_TIME_PATTERN
from lineage_ledger.service.auth import ROLES, ApiKeyStore, ChangeRecorder, Principal, utc_time

__all__ = ["APIKEY_ENDPOINTS", "ApiKeyRequest", "RotationRequest", "WriterRun", "add_apikey_routes"]

T = TypeVar("T")

APIKEY_ENDPOINTS: Final = (
    "GET /v1/apikeys",
    "POST /v1/apikeys",
    "POST /v1/apikeys/{key_id}/rotate",
    "POST /v1/apikeys/{key_id}/revoke",
)
"""The routes this module adds; the service's ENDPOINT_ROLES gives each the admin role."""

DEFAULT_GRACE_SECONDS: Final = 3600
"""How long a rotated key's replaced secret keeps working unless the request says otherwise."""

_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# pydantic checks patterns with Rust regex, where $ (without multi-line mode) matches only at the very end.
KeyId = Annotated[str, PathParam(pattern=API_KEY_ID_PATTERN.replace("\\Z", "$"), description="an API key's id")]


class ApiKeyRequest(BaseModel):
    """An API key to create."""

    model_config = ConfigDict(extra="forbid")
    role: str = Field(json_schema_extra={"enum": list(ROLES)})
    producer: str | None = None
    """The producer id a producer key may append for (producer keys only)."""
    expires_at: str | None = Field(default=None, pattern=UTC_TIME_PATTERN.replace("\\Z", "$"))
    """When the key stops working, UTC (``2027-01-31T12:00:00Z``); default never."""
    expires_in: int | None = Field(default=None, ge=1, le=10 * 366 * 86400)
    """... or in how many seconds from now."""


class RotationRequest(BaseModel):
    """How long the replaced secret keeps working."""

    model_config = ConfigDict(extra="forbid")
    grace_seconds: int = Field(default=DEFAULT_GRACE_SECONDS, ge=0, le=90 * 86400)


class WriterRun(Protocol):
    """Runs a call on the ledger's writer thread and awaits its result."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


def add_apikey_routes(
    app: FastAPI,
    keys: ApiKeyStore,
    run: WriterRun,
    record: ChangeRecorder,
    guard: Callable[[str], Callable[..., Awaitable[Principal]]],
    extra: Callable[[str], dict[str, Any]],
) -> None:
    """Add the API key routes. ``run`` runs a call on the ledger's writer thread, where ``record`` (the
    ledger's ``record_api_key_change``) may be called; ``guard`` is the role check."""
    ep = APIKEY_ENDPOINTS

    @app.get("/v1/apikeys", tags=["apikeys"], summary="API keys (never a secret)", openapi_extra=extra(ep[0]))
    def list_apikeys(_: Annotated[Principal, Depends(guard(ep[0]))]) -> list[dict[str, Any]]:
        """Every API key, revoked and expired ones too, with its state now."""
        now = keys.now()
        return [info.to_json(now) for info in keys.key_infos()]

    @app.post("/v1/apikeys", tags=["apikeys"], summary="Create an API key", status_code=201, openapi_extra=extra(ep[1]))
    async def create_apikey(
        request: ApiKeyRequest, response: Response, _: Annotated[Principal, Depends(guard(ep[1]))]
    ) -> dict[str, Any]:
        """Create a key, recorded as a ledger entry; the answer holds the key, shown this once."""
        expires_at = request.expires_at
        if request.expires_in is not None:
            expires_at = utc_time(time.time() + request.expires_in)
        create = partial(keys.create, request.role, request.producer, expires_at=expires_at, record=record)
        principal, raw = await run(create)
        response.headers.update(_NO_STORE)
        return {**keys.info(principal.key_id).to_json(keys.now()), "api_key": raw}

    @app.post(
        "/v1/apikeys/{key_id}/rotate",
        tags=["apikeys"],
        summary="Give an API key a new secret",
        openapi_extra=extra(ep[2]),
    )
    async def rotate_apikey(
        key_id: KeyId,
        response: Response,
        _: Annotated[Principal, Depends(guard(ep[2]))],
        body: Annotated[RotationRequest | None, Body()] = None,
    ) -> dict[str, Any]:
        """A new secret for the key, recorded as a ledger entry; the old one works for ``grace_seconds`` more
        (default one hour). 404 for an unknown key, 409 for a revoked or expired one."""
        grace = (body or RotationRequest()).grace_seconds
        info, raw = await run(partial(keys.rotate, key_id, grace_seconds=grace, record=record))
        response.headers.update(_NO_STORE)
        return {**info.to_json(keys.now()), "api_key": raw}

    @app.post("/v1/apikeys/{key_id}/revoke", tags=["apikeys"], summary="Revoke an API key", openapi_extra=extra(ep[3]))
    async def revoke_apikey(key_id: KeyId, _: Annotated[Principal, Depends(guard(ep[3]))]) -> dict[str, Any]:
        """Revoke the key, recorded as a ledger entry: its next request gets 401. 404 for an unknown key, 409
        if already revoked."""
        info = await run(partial(keys.revoke, key_id, record=record))
        return info.to_json(keys.now())
