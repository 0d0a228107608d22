"""The write route: ``POST /v1/batches`` appends one signed batch envelope (all or nothing) and answers its
receipts. A producer may append only batches whose signed statement names its own producer id.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time, and their
# Depends(...) annotations name variables local to the functions that declare the routes.

import base64
import binascii
from typing import Annotated, Final

import msgspec
from fastapi import Depends, FastAPI, Request
from starlette.responses import Response

from lineage_ledger.core.envelope import open_envelope
from lineage_ledger.service.access import guard, route_extra
from lineage_ledger.service.auth import Principal
from lineage_ledger.service.bodies import BatchResult, require_json
from lineage_ledger.service.problems import HttpProblem
from lineage_ledger.service.receipts import receipts_body
from lineage_ledger.service.state import ServiceState

__all__ = ["add_batch_routes"]


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


def add_batch_routes(app: FastAPI, service: ServiceState) -> None:
    """Add ``POST /v1/batches``."""
    endpoint = "POST /v1/batches"

    @app.post(
        "/v1/batches",
        tags=["ingest"],
        summary="Append a signed batch",
        response_model=BatchResult,
        openapi_extra=route_extra(
            endpoint,
            {"requestBody": {"required": True, "content": {"application/json": {"schema": _ENVELOPE_SCHEMA}}}},
        ),
    )
    async def post_batch(
        request: Request, principal: Annotated[Principal, Depends(guard(service.api_keys, endpoint))]
    ) -> Response:
        """Check, sequence and durably commit one signed batch envelope (DSSE, see ARCHITECTURE.md).

        All or nothing. A retried batch (same event ids, same bytes) returns the original receipts with
        ``duplicate: true`` and writes nothing; an event id recorded with other bytes is 409 and nothing is
        written. The envelope's statement must name the caller's own producer id (else 403).
        """
        require_json(request)
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
