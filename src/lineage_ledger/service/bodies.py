"""What requests and answers of the HTTP service carry: the JSON bodies FastAPI checks, and the checks of a
request's media type and of fields against the ledger's patterns (a mismatch is 415 or 422 naming the field).
"""

import re
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict

from lineage_ledger.errors import InputError
from lineage_ledger.service.problems import HttpProblem

__all__ = [
    "BatchResult",
    "KeyRegistration",
    "KeyRevocation",
    "ReceiptOut",
    "VerifyRequest",
    "check_pattern",
    "media_type",
    "require_json",
]


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
    since: str | None = None
    """A signed checkpoint saved earlier: check only what was appended since it (``lineage verify --since``)."""


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


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters (empty if none was sent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_json(request: Request) -> None:
    """415 problem unless the request body is JSON (``application/json`` or ``application/...+json``)."""
    media = media_type(request)
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise HttpProblem(
            415, "unsupported-media-type", "Unsupported media type", "send the envelope as application/json"
        )


def check_pattern(pattern: str, value: str | None, field: str) -> None:
    """InputError naming ``field`` unless ``value`` (when given) matches ``pattern``."""
    if value is not None and not re.match(pattern, value):
        raise InputError(field, f"must match {pattern}")
