"""The service's OpenAPI document says what it answers when it refuses: every error status an operation can
return, each an RFC 9457 problem (``application/problem+json``, the ``Problem`` schema below).

FastAPI documents only the success response and its own validation error, as ``application/json`` with a
shape the service never sends; :func:`document_problems` replaces those with the statuses of problems.py's
table, per operation: an authenticated GET may answer 401, 403, 404, 413, 422 and 503; an authenticated POST
also 400, 409 and 415, and a batch 421 (another shard's event). ``/healthz`` needs no key and refuses
only a body that is too large.
"""

from __future__ import annotations

from typing import Any, Final

from lineage_ledger.service.problems import PROBLEM_JSON

__all__ = ["PROBLEM_SCHEMA", "document_problems"]

PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "An RFC 9457 problem: what was refused and why; a refused request wrote nothing.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:lineage-ledger:problem:<slug>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": "the dotted path of the offending input, if one is at fault",
        },
        "error": {"type": "string", "description": "the OAuth error code (RFC 6749 5.2) of a token endpoint"},
    },
}

_WHY: Final = {
    400: "Malformed request: the body or form is not what the operation reads (the field names it)",
    401: "No API key, or not a valid one",
    403: "The API key's role may not call this, or the batch's producer or signing key is not allowed",
    404: "No such entry, checkpoint, token or key",
    409: "An id already holds different bytes, or the key is already revoked; nothing was written",
    413: "The body is larger than the service accepts",
    415: "The body's media type is not the one the operation reads",
    421: "An event belongs to another shard of a sharded ledger",
    422: "A parameter or value is invalid (the field names it)",
    503: "Busy, or the ledger's storage is full: retry after Retry-After seconds",
}
_GET: Final = (401, 403, 404, 413, 422, 503)
_POST: Final = (400, 401, 403, 404, 409, 413, 415, 422, 503)
_UNAUTHENTICATED: Final = (413,)
_FASTAPI_VALIDATION: Final = ("HTTPValidationError", "ValidationError")


def _problem(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _WHY[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status == 503:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
        }
    return response


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Add the problem responses to every operation of ``document`` (FastAPI's ``app.openapi()``), in
    place; returns it."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if "security" not in operation:
                statuses: tuple[int, ...] = _UNAUTHENTICATED
            elif method == "post":
                statuses = (*_POST, 421) if path == "/v1/batches" else _POST
            else:
                statuses = _GET
            for status in statuses:
                responses[str(status)] = _problem(status)
    return document
