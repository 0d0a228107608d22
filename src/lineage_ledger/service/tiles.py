"""The C2SP tlog-tiles read API: ``GET /checkpoint``, ``GET /tile/<L>/<N>[.p/<W>]``, ``GET /tile/entries/<N>``.

Public (no API key) when the operator publishes the log (``lineage serve --public-log``), else for auditors
like every other read. Tiles and bundles never change once they exist, so they are cached for a year; the
checkpoint changes at every seal and is not cached.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any, Final

from fastapi import Depends, FastAPI, Request, Response

from lineage_ledger.core.tiles import parse_tile_path
from lineage_ledger.errors import NotFoundError
from lineage_ledger.ledger.tiles import read_tile
from lineage_ledger.store.base import Store

__all__ = ["TILE_ENDPOINTS", "add_tile_routes"]

TILE_ENDPOINTS: Final = ("GET /checkpoint", "GET /tile/{path}")
_IMMUTABLE: Final = {"Cache-Control": "public, max-age=31536000, immutable"}
_MUTABLE: Final = {"Cache-Control": "no-cache"}


def add_tile_routes(
    app: FastAPI,
    reads: Callable[[], Store],
    guard: Callable[[str], Callable[..., Any]] | None,
    route_extra: Callable[[str], dict[str, Any]],
) -> None:
    """Add the tile routes; ``guard(endpoint)`` is the authorisation dependency, None for a public log."""

    def allowed(endpoint: str) -> Any:
        return Depends(guard(endpoint)) if guard is not None else Depends(_anyone)

    # defaults, not Annotated[...]: annotations are strings here, resolved in the module's globals
    may_read_checkpoint = allowed(TILE_ENDPOINTS[0])
    may_read_tiles = allowed(TILE_ENDPOINTS[1])

    @app.get(
        "/checkpoint",
        tags=["tiles"],
        summary="The latest signed checkpoint, as C2SP tlog-checkpoint text",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
        openapi_extra=route_extra(TILE_ENDPOINTS[0]),
    )
    def get_checkpoint(_: object = may_read_checkpoint) -> Response:
        """The signed note of the latest checkpoint (404 before the first seal)."""
        row = reads().latest_checkpoint()
        if row is None:
            raise NotFoundError("no signed checkpoint yet")
        return Response(row.note, media_type="text/plain; charset=utf-8", headers=_MUTABLE)

    @app.get(
        "/tile/{path:path}",
        tags=["tiles"],
        summary="A Merkle tree tile or an entry bundle (C2SP tlog-tiles)",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
        openapi_extra=route_extra(TILE_ENDPOINTS[1]),
    )
    def get_tile(path: str, request: Request, _: object = may_read_tiles) -> Response:
        """A tile within the latest checkpoint's tree; 404 past it, 400/422 for a path the spec does not allow."""
        tile = parse_tile_path("tile/" + path)
        store = reads()
        row = store.latest_checkpoint()
        if row is None:
            raise NotFoundError("no signed checkpoint yet")
        data = read_tile(store, tile, row.size)
        headers = dict(_IMMUTABLE)
        if tile.level is None and "gzip" in request.headers.get("accept-encoding", ""):
            data = gzip.compress(data, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        return Response(data, media_type="application/octet-stream", headers=headers)


async def _anyone() -> object:
    return None
