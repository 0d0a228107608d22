"""The token routes: RFC 7009 revocation and RFC 7662 introspection. Raw tokens arrive only in their form
bodies, are turned into their HMAC fingerprints at once, and are never stored or logged.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time, and their
# Depends(...) annotations name variables local to the functions that declare the routes.

from functools import partial
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from lineage_ledger.core.lifecycle import TokenState, effective_state
from lineage_ledger.errors import InputError
from lineage_ledger.service.access import guard, route_extra
from lineage_ledger.service.auth import Principal
from lineage_ledger.service.bodies import media_type
from lineage_ledger.service.problems import HttpProblem
from lineage_ledger.service.state import ServiceState
from lineage_ledger.token_secrets import merged_state

__all__ = ["add_token_routes"]

_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM: Final = "application/x-www-form-urlencoded"
_TOKEN_TYPE_HINTS: Final = ("access_token", "refresh_token")
_MAX_FORM_FIELDS: Final = 8
_MAX_RAW_TOKEN: Final = 16 * 1024


def _oauth_error(detail: str, field: str | None = None) -> HttpProblem:
    return HttpProblem(
        400, "invalid-request", "Invalid request", detail, field=field, extensions={"error": "invalid_request"}
    )


async def _form(request: Request, names: frozenset[str]) -> dict[str, str]:
    """The parameters of an RFC 6749-style form body: each at most once, nothing in the URL."""
    if request.url.query:
        raise _oauth_error("parameters belong in the form body, never in the URL")
    if media_type(request) != _FORM:
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


def _fingerprints(service: ServiceState, form: dict[str, str]) -> list[str]:
    """The token's ids under every version of the fingerprint secret, newest first."""
    region = form.get("region") or None
    try:
        return service.token_secret.candidates(_raw_token(form), region)
    except InputError as e:
        raise _oauth_error(e.reason, "region" if e.field == "region" else "token") from None


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


def add_token_routes(app: FastAPI, service: ServiceState) -> None:
    """Add ``POST /v1/revoke`` (RFC 7009) and ``POST /v1/introspect`` (RFC 7662)."""
    endpoint_revoke = "POST /v1/revoke"

    @app.post(
        "/v1/revoke",
        tags=["tokens"],
        summary="Revoke a token (RFC 7009)",
        response_class=Response,
        responses={200: {"description": "Revoked, or unknown to the ledger (RFC 7009 2.2): an empty body"}},
        openapi_extra=route_extra(endpoint_revoke, _FORM_BODY),
    )
    async def revoke(
        request: Request, principal: Annotated[Principal, Depends(guard(service.api_keys, endpoint_revoke))]
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
        openapi_extra=route_extra(endpoint_introspect, _FORM_BODY),
    )
    async def introspect(
        request: Request, _: Annotated[Principal, Depends(guard(service.api_keys, endpoint_introspect))]
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
