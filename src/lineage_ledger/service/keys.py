"""The producer signing key routes: list, register and revoke; each change is a ledger entry, and history a
revoked key signed keeps verifying.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time, and their
# Depends(...) annotations name variables local to the functions that declare the routes.

from functools import partial
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI

from lineage_ledger.core.entry import KEY_ID_PATTERN, PRODUCER_PATTERN
from lineage_ledger.core.hlc import HLC_PATTERN
from lineage_ledger.errors import InputError
from lineage_ledger.ledger.keyring import ProducerKey
from lineage_ledger.service.access import guard, route_extra
from lineage_ledger.service.auth import Principal
from lineage_ledger.service.bodies import KeyRegistration, KeyRevocation, check_pattern
from lineage_ledger.service.state import SERVICE_PRODUCER, ServiceState

__all__ = ["add_key_routes"]


def _key_json(key: ProducerKey) -> dict[str, Any]:
    return {
        "producer": key.producer,
        "key_id": key.key_id,
        "public_key": key.public_key.hex(),
        "valid_from": key.valid_from,
        "valid_until": key.valid_until,
        "revoked_at": key.revoked_at,
    }


def add_key_routes(app: FastAPI, service: ServiceState) -> None:
    """Add ``GET /v1/keys``, ``POST /v1/keys`` and ``POST /v1/keys/{key_id}/revoke``."""
    endpoint_list = "GET /v1/keys"

    @app.get("/v1/keys", tags=["keys"], summary="Producer signing keys", openapi_extra=route_extra(endpoint_list))
    def list_keys(_: Annotated[Principal, Depends(guard(service.api_keys, endpoint_list))]) -> list[dict[str, Any]]:
        """Every producer key the log records, in registration order, with its window and revocation time."""
        return [_key_json(k) for k in service.keyring().producer_keys()]

    endpoint_register = "POST /v1/keys"

    @app.post(
        "/v1/keys",
        tags=["keys"],
        summary="Register a producer signing key",
        status_code=201,
        openapi_extra=route_extra(endpoint_register),
    )
    async def register_key(
        key: KeyRegistration, _: Annotated[Principal, Depends(guard(service.api_keys, endpoint_register))]
    ) -> dict[str, Any]:
        """Record the key as a ledger entry; it signs from ``valid_from`` (default now). 409 if the id exists."""
        check_pattern(PRODUCER_PATTERN, key.producer, "producer")
        check_pattern(KEY_ID_PATTERN, key.key_id, "key_id")
        check_pattern(r"^[0-9a-f]{64}\Z", key.public_key, "public_key")
        check_pattern(HLC_PATTERN, key.valid_from, "valid_from")
        check_pattern(HLC_PATTERN, key.valid_until, "valid_until")
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
        openapi_extra=route_extra(endpoint_revoke),
    )
    async def revoke_key(
        key_id: str,
        _: Annotated[Principal, Depends(guard(service.api_keys, endpoint_revoke))],
        body: Annotated[KeyRevocation | None, Body()] = None,
    ) -> dict[str, Any]:
        """Record that the key signs nothing from ``at`` (default now), as a ledger entry. History it signed
        keeps verifying. 404 for an unknown key, 409 if already revoked."""
        at = body.at if body else None
        check_pattern(HLC_PATTERN, at, "at")
        index, revoked = await service.writer.run(partial(service.revoke_key, key_id, at))
        return {"index": index, **_key_json(revoked)}
