"""A data subject's export and erasure over HTTP (admin role; docs/privacy.md).

Both take the person in the request body, never in the URL, so no user id reaches an access log. Both run
on the ledger's writer thread: the erasure appends a signed entry, and the export reads the subject key
store the writer seals with.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time.

import json
from functools import partial
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from lineage_ledger.errors import InputError
from lineage_ledger.privacy.subjects import erase_subject, export_subject, subject_evidence, subject_name
from lineage_ledger.service.access import guard, route_extra
from lineage_ledger.service.auth import Principal
from lineage_ledger.service.state import ServiceState

__all__ = ["SUBJECT_ENDPOINTS", "ErasureRequest", "SubjectRequest", "add_subject_routes"]

SUBJECT_ENDPOINTS: Final = ("POST /v1/subjects/export", "POST /v1/subjects/erase")
"""The routes this module adds; the service's ENDPOINT_ROLES gives each the admin role."""
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class SubjectRequest(BaseModel):
    """Whose events: a user id, or a token:/asset: subject whose events had personal fields and no user id."""

    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(default=None, min_length=1, max_length=256)
    subject: str | None = Field(default=None, min_length=1, max_length=600)


class ErasureRequest(SubjectRequest):
    """A subject to erase, and why (signed into the log: never name the person)."""

    reason: str = Field(min_length=1, max_length=1024)


def add_subject_routes(app: FastAPI, service: ServiceState) -> None:
    """Add ``POST /v1/subjects/export`` and ``POST /v1/subjects/erase``."""
    export_ep, erase_ep = SUBJECT_ENDPOINTS

    def ledger_personal() -> Any:
        if service.ledger.personal is None:
            raise InputError("ledger", "this ledger seals no personal data (created without --personal-data)")
        return service.ledger.personal

    def do_export(name: str) -> dict[str, Any]:
        store = service.ledger.store
        export = export_subject(store, ledger_personal(), name)
        evidence = json.loads(subject_evidence(store, export)) if export.subjects else None
        return {
            "fingerprint": export.fingerprint,
            "events": export.events,
            "erasures": [r.to_json() for r in export.erasures],
            "evidence": evidence,
        }

    @app.post(
        "/v1/subjects/export",
        tags=["subjects"],
        summary="Every event about a person, decrypted, with evidence",
        openapi_extra=route_extra(export_ep),
    )
    async def post_export(
        body: SubjectRequest, _: Annotated[Principal, Depends(guard(service.api_keys, export_ep))]
    ) -> Any:
        """The person's events (personal fields decrypted), the erasure records, and an evidence set proving
        the events included and every chain they are in complete. 404 if the ledger holds nothing about them."""
        name = subject_name(body.user, body.subject)
        answer = await service.writer.run(partial(do_export, name))
        return JSONResponse(answer, headers=_NO_STORE)

    @app.post(
        "/v1/subjects/erase",
        tags=["subjects"],
        summary="Erase a person: destroy their keys, record a signed erasure",
        openapi_extra=route_extra(erase_ep),
    )
    async def post_erase(
        body: ErasureRequest, _: Annotated[Principal, Depends(guard(service.api_keys, erase_ep))]
    ) -> dict[str, Any]:
        """Destroy the person's subject keys and append the signed erasure entry (idempotent: a second call
        answers the first erasure with ``already_erased``). 404 if the ledger holds nothing about them."""
        name = subject_name(body.user, body.subject)
        ledger_personal()
        record = await service.writer.run(partial(erase_subject, service.ledger, name, body.reason))
        return record.to_json()
