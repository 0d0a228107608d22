"""The witness's HTTP interface (C2SP tlog-witness), one Starlette app; needs the ``[server]`` extra.

Routes, under one prefix that serves as both the submission and the monitoring prefix:

* ``POST /add-checkpoint``: the body as the spec gives it; 200 with the cosignature line, or the status of
  the refusal (``_STATUS``, the one table of error classes to statuses); a 409 carries the witness's size in
  a ``text/x.tlog.size`` body.
* ``GET /<lowercase hex SHA-256 of the origin>/checkpoint``: the latest checkpoint cosigned for that log,
  with the log's signature and the cosignature (404 if none).

No request needs authentication: the log's signature on the checkpoint is what the witness checks.
"""

from __future__ import annotations

import logging
from typing import Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from lineage_ledger.errors import InputError, LedgerError, NotFoundError, SignatureError, VerificationError
from lineage_ledger.witness.witness import StaleSizeError, Witness

__all__ = ["MAX_REQUEST_BYTES", "create_witness_app"]

MAX_REQUEST_BYTES: Final = 64 * 1024
"""Largest add-checkpoint body read: 63 proof lines and a checkpoint with many signatures fit many times."""

_STATUS: Final[tuple[tuple[type[LedgerError], int], ...]] = (
    (StaleSizeError, 409),
    (NotFoundError, 404),
    (SignatureError, 403),
    (VerificationError, 422),
    (InputError, 400),
)
"""Error class -> HTTP status, first match wins (SignatureError is a VerificationError: it comes first)."""

_NOTE: Final = "text/plain; charset=utf-8"
log = logging.getLogger("lineage_ledger.witness")


async def _body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise InputError("body", f"larger than {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(e: LedgerError) -> Response:
    if isinstance(e, StaleSizeError):
        # exactly this Content-Type, as the spec says (a media_type would get "; charset=utf-8" appended)
        return Response(f"{e.size}\n", status_code=409, headers={"Content-Type": "text/x.tlog.size"})
    for cls, status in _STATUS:
        if isinstance(e, cls):
            return PlainTextResponse(f"{e}\n", status_code=status)
    log.error("add-checkpoint failed: %s: %s", type(e).__name__, e)
    return PlainTextResponse("the witness could not record the checkpoint\n", status_code=500)


def create_witness_app(witness: Witness) -> Starlette:
    """The witness's ASGI app. Requests are decided on worker threads; the state serialises them."""

    async def add_checkpoint(request: Request) -> Response:
        try:
            body = await _body(request)
            lines = await run_in_threadpool(witness.add_checkpoint, body)
        except LedgerError as e:
            return _refusal(e)
        return Response(lines, media_type=_NOTE)

    async def checkpoint(request: Request) -> Response:
        try:
            note = await run_in_threadpool(witness.latest, request.path_params["origin_hash"])
        except LedgerError as e:
            return _refusal(e)
        return Response(note, media_type=_NOTE)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{origin_hash:str}/checkpoint", checkpoint, methods=["GET"]),
        ]
    )
