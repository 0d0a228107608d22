"""The operational routes, answered without an API key: liveness, readiness, the OpenAPI document and its
Swagger UI page. None of them tells anything about what the ledger holds.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from lineage_ledger.service.docs import add_docs_routes
from lineage_ledger.service.state import ServiceState

__all__ = ["add_operational_routes"]


def add_operational_routes(app: FastAPI, service: ServiceState) -> None:
    """Add /healthz, /readyz, /openapi.json and /docs (PUBLIC_ENDPOINTS: no API key)."""

    @app.get("/healthz", tags=["operations"], summary="Liveness (no authentication)")
    async def healthz() -> dict[str, str]:
        """The process is up and answering. Touches nothing else."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness (no authentication)")
    async def readyz() -> dict[str, bool]:
        """Ready when the writer thread and the read connection both answer; 503 when the writer is saturated.

        503 with Retry-After after a write found the disk full, until space returns. It answers without a
        key (for orchestrators' probes), so it says nothing about the log's contents.
        """
        service.storage.check()
        await service.writer.run(lambda: service.ledger.size)
        await run_in_threadpool(service.reads.size)
        return {"ready": True}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    add_docs_routes(app, title=app.title, openapi_url="/openapi.json")
