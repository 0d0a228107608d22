"""Errors as RFC 9457 problem details: the one table from error class to HTTP status.

Every error response of the service is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and ``field`` (the dotted path of the offending input, or null). Library errors map as follows;
the first row whose class matches wins, so subclasses come before their bases:

======================  ======  ==================================================================
error                   status  why
======================  ======  ==================================================================
EnvelopeError           400     the batch as a whole is malformed (not JSON, wrong shape, bad base64,
                                root or count mismatch): the request itself is broken
InputError              422     well-formed, but a value is invalid (an event field, a proof size...)
KeyringError            403     the batch names a key that may not sign it now: unknown, revoked,
                                outside its window, or another producer's. The caller did authenticate
                                (401 is kept for a missing or wrong API key); the signer is refused.
SignatureError          403     the batch signature does not verify under the key it names: the same
                                refusal of the signer, not of the caller's API key
ConflictError           409     an id already holds different bytes; nothing was written
ExpiredError            410     the entries asked for expired under a retention policy (the detail names it)
NotFoundError           404     no such entry, checkpoint, token or key
StorageFullError        503     no space left for the write; ``Retry-After`` says when to retry
PushbackError           503     the writer queue is full; ``Retry-After`` says when to retry
RoutingError            421     an event belongs to another shard of a sharded ledger (``lineage serve
                                --shard n``): the producer routes with other settings (field names it)
any other LedgerError   500     a store or internal failure; the detail says nothing more
======================  ======  ==================================================================

Service-level refusals that are not library errors (401 no or bad API key, 403 role or producer not
allowed, 413 body too large, 415 wrong media type, 422 malformed parameters) are raised as
:class:`HttpProblem`. The service's own details never echo a request value, and the service log records
neither details nor request values, so a raw token sent by mistake never reaches a log line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from starlette.responses import Response

from lineage_ledger.errors import (
    ConflictError,
    EnvelopeError,
    ExpiredError,
    InputError,
    KeyringError,
    LedgerError,
    NotFoundError,
    PushbackError,
    RoutingError,
    SignatureError,
    StorageFullError,
    event_at,
)

__all__ = [
    "ERROR_TABLE",
    "PROBLEM_JSON",
    "HttpProblem",
    "ProblemType",
    "problem_for",
    "problem_response",
    "problem_type_uri",
]

PROBLEM_JSON: Final = "application/problem+json"
_TYPE_BASE: Final = "urn:lineage-ledger:problem:"


@dataclass(frozen=True, slots=True)
class ProblemType:
    """A kind of problem: its HTTP status, the slug that makes its ``type`` URI, and its fixed title."""

    status: int
    slug: str
    title: str


ERROR_TABLE: Final[tuple[tuple[type[LedgerError], ProblemType], ...]] = (
    (EnvelopeError, ProblemType(400, "malformed-envelope", "Malformed batch envelope")),
    (InputError, ProblemType(422, "invalid-input", "Invalid input")),
    (KeyringError, ProblemType(403, "key-not-accepted", "Signing key not accepted")),
    (SignatureError, ProblemType(403, "bad-signature", "Signature does not verify")),
    (ConflictError, ProblemType(409, "conflict", "Conflicting bytes for an existing id")),
    (ExpiredError, ProblemType(410, "expired", "Expired under the retention policy")),
    (NotFoundError, ProblemType(404, "not-found", "Not found")),
    (StorageFullError, ProblemType(503, "storage-full", "Ledger storage full")),
    (PushbackError, ProblemType(503, "busy", "Ledger busy")),
    (RoutingError, ProblemType(421, "misdirected", "Event belongs to another shard")),
    (LedgerError, ProblemType(500, "internal", "Internal error")),
)
"""The one mapping from library error class to problem type (see the module docstring)."""


def problem_type_uri(slug: str) -> str:
    """The ``type`` URI of the problem named ``slug``."""
    return _TYPE_BASE + slug


class HttpProblem(Exception):
    """A refusal by the service itself (authentication, authorisation, size, media type, parameters)."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = ProblemType(status, slug, title)
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})

    def response(self) -> Response:
        """This problem as an ``application/problem+json`` response."""
        return problem_response(self.kind, self.detail, self.field, self.headers, self.extensions)


def problem_response(
    kind: ProblemType,
    detail: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    """An RFC 9457 response: type, title, status, detail and field, plus any extension members."""
    body = {
        **(extensions or {}),
        "type": problem_type_uri(kind.slug),
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
        "field": field,
    }
    return Response(msgspec.json.encode(body), status_code=kind.status, headers=headers, media_type=PROBLEM_JSON)


def _kind_of(error: LedgerError) -> ProblemType:
    for cls, kind in ERROR_TABLE:
        if isinstance(error, cls):
            return kind
    raise AssertionError("ERROR_TABLE ends with LedgerError")  # pragma: no cover


def problem_for(error: LedgerError) -> Response:
    """The problem response for a library error, per ERROR_TABLE.

    InputError names its field; PushbackError sets ``Retry-After`` (whole seconds, at least 1); a 500 says
    only that something failed inside (the cause goes to the service log, not to the caller).
    """
    kind = _kind_of(error)
    headers: dict[str, str] = {}
    field = None
    detail = str(error)
    if isinstance(error, InputError):
        field, detail = error.field or None, error.reason
    elif isinstance(error, PushbackError):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    elif isinstance(error, RoutingError):
        at = event_at(detail)
        field = None if at is None else detail[: at[1]]
    elif kind.status == 500:
        detail = "the ledger failed to complete the request; nothing was acknowledged"
    return problem_response(kind, detail, field, headers)
