"""Who may call what: the one authorisation table of the HTTP service and the dependency that enforces it.

Every endpoint except PUBLIC_ENDPOINTS needs ``Authorization: Bearer <API key>`` of a role ENDPOINT_ROLES
allows; a missing or unknown key is 401 with a Bearer challenge, a role not allowed is 403.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time, and their
# Depends(...) annotations name variables local to the functions that declare the routes.

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lineage_ledger.service.apikeys import APIKEY_ENDPOINTS
from lineage_ledger.service.auth import ApiKeyStore, Principal, Role
from lineage_ledger.service.problems import HttpProblem
from lineage_ledger.service.queries import QUERY_ENDPOINTS
from lineage_ledger.service.tiles import TILE_ENDPOINTS

__all__ = ["ENDPOINT_ROLES", "PUBLIC_ENDPOINTS", "guard", "route_extra"]

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
    # a person's decrypted events and their erasure (docs/privacy.md)
    "POST /v1/subjects/export": frozenset({"admin"}),
    "POST /v1/subjects/erase": frozenset({"admin"}),
}
"""Which roles may call which endpoint (PUBLIC_ENDPOINTS need no key). The one authorisation table."""


def guard(api_keys: ApiKeyStore, endpoint: str) -> Callable[..., Awaitable[Principal]]:
    """The FastAPI dependency of ``endpoint``: the caller's Principal if its API key is valid and its role is
    one ENDPOINT_ROLES allows there, else a 401 (with a Bearer challenge) or 403 problem."""
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
        principal = api_keys.authenticate(credentials.credentials)
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


def route_extra(endpoint: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI extras of ``endpoint``'s route: the roles that may call it (``x-roles``) and ``extra``."""
    return {"x-roles": sorted(ENDPOINT_ROLES[endpoint]), **(extra or {})}
