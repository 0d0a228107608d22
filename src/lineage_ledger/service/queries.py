"""Lineage questions and evidence bundles over HTTP (auditor role): the same answers as `lineage query`.

Every answer carries ``evidence`` (the log indices it rests on); ``?proofs=true`` adds inclusion proofs of
those entries against the latest signed checkpoint.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Response
from fastapi import Path as PathParam

from lineage_ledger.core.model import TOKEN_ID_PATTERN
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.service.auth import Principal
from lineage_ledger.store.base import Store

__all__ = ["QUERY_ENDPOINTS", "add_query_routes"]

QUERY_ENDPOINTS = (
    "GET /v1/query/tokens/{token_id}/family",
    "GET /v1/query/tokens/{token_id}/blast-radius",
    "GET /v1/query/tokens/{token_id}/since-refresh",
    "GET /v1/query/tokens/{token_id}/policy",
    "GET /v1/query/tokens/{token_id}/state",
    "GET /v1/query/resources",
    "GET /v1/query/users/{user_id}/policy-changes",
    "GET /v1/query/policies",
    "GET /v1/query/assets/{asset_id}/{direction}",
    "GET /v1/evidence/{subject}",
)
"""The routes this module adds; the service's ENDPOINT_ROLES gives each the auditor role."""

_FINGERPRINT = f"^{TOKEN_ID_PATTERN}$"
TokenId = Annotated[str, PathParam(pattern=_FINGERPRINT, description="a token fingerprint, never a raw token")]
TimeParam = Annotated[str | None, Query(pattern=r"^[0-9]{1,19}(\.[0-9]{5})?$", description="HLC reading or ns")]
Proofs = Annotated[bool, Query(description="add inclusion proofs of the evidence")]


def add_query_routes(
    app: FastAPI,
    reads: Callable[[], Store],
    guard: Callable[[str], Callable[..., Awaitable[Principal]]],
    extra: Callable[[str], dict[str, Any]],
) -> None:
    """Add the query and evidence routes; ``reads()`` gives the read-only store, ``guard`` the role check."""

    def answer(result: Any, evidence: list[int], proofs: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"answer": result, "evidence": evidence}
        if proofs and evidence:
            out["proofs"] = Lineage(reads()).proofs(evidence)
        return out

    ep = QUERY_ENDPOINTS

    @app.get(
        "/v1/query/tokens/{token_id}/family", tags=["query"], summary="Token family DAG", openapi_extra=extra(ep[0])
    )
    def family(token_id: TokenId, _: Annotated[Principal, Depends(guard(ep[0]))], proofs: Proofs = False) -> Any:
        fam = Lineage(reads()).family(token_id)
        return answer(fam.to_json(), fam.evidence, proofs)

    @app.get(
        "/v1/query/tokens/{token_id}/blast-radius",
        tags=["query"],
        summary="Blast radius in a window",
        openapi_extra=extra(ep[1]),
    )
    def blast_radius(
        token_id: TokenId,
        _: Annotated[Principal, Depends(guard(ep[1]))],
        start: TimeParam = None,
        end: TimeParam = None,
        proofs: Proofs = False,
    ) -> Any:
        br = Lineage(reads()).blast_radius(token_id, start, end)
        return answer(br.to_json(), br.evidence, proofs)

    @app.get(
        "/v1/query/tokens/{token_id}/since-refresh",
        tags=["query"],
        summary="Resources used between the last refresh and the revocation",
        openapi_extra=extra(ep[2]),
    )
    def since_refresh(token_id: TokenId, _: Annotated[Principal, Depends(guard(ep[2]))], proofs: Proofs = False) -> Any:
        br = Lineage(reads()).since_last_refresh(token_id)
        return answer(br.to_json(), br.evidence, proofs)

    @app.get(
        "/v1/query/tokens/{token_id}/policy",
        tags=["query"],
        summary="Policies in force when the token was issued or used",
        openapi_extra=extra(ep[3]),
    )
    def token_policy(
        token_id: TokenId,
        _: Annotated[Principal, Depends(guard(ep[3]))],
        event: Annotated[str, Query(pattern=r"^[A-Z]{4,10}$")] = "ISSUED",
        proofs: Proofs = False,
    ) -> Any:
        rec, policies = Lineage(reads()).policy_for_token(token_id, event)
        result = {"at": rec.event.occurred_at, "policies": {k: v.to_json() for k, v in policies.items()}}
        return answer(result, [rec.index, *(p.index for p in policies.values())], proofs)

    @app.get(
        "/v1/query/tokens/{token_id}/state",
        tags=["query"],
        summary="Token state at an instant",
        openapi_extra=extra(ep[4]),
    )
    def state(
        token_id: TokenId,
        at: Annotated[str, Query(pattern=r"^[0-9]{1,19}(\.[0-9]{5})?$")],
        _: Annotated[Principal, Depends(guard(ep[4]))],
    ) -> Any:
        lineage = Lineage(reads())
        st = lineage.state_at(token_id, at)
        return answer(
            {"token_id": token_id, "at": at, "state": st.state}, [r.index for r in lineage.timeline(token_id)], False
        )

    @app.get(
        "/v1/query/resources",
        tags=["query"],
        summary="Tokens that used a resource in a window",
        openapi_extra=extra(ep[5]),
    )
    def resource(
        resource: Annotated[str, Query(min_length=1, max_length=4096)],
        _: Annotated[Principal, Depends(guard(ep[5]))],
        start: TimeParam = None,
        end: TimeParam = None,
        proofs: Proofs = False,
    ) -> Any:
        recs = Lineage(reads()).tokens_for_resource(resource, start, end)
        tokens = sorted({r.subject.removeprefix("token:") for r in recs})
        return answer(
            {"resource": resource, "tokens": tokens, "uses": [r.to_json() for r in recs]},
            [r.index for r in recs],
            proofs,
        )

    @app.get(
        "/v1/query/users/{user_id}/policy-changes",
        tags=["query"],
        summary="Policy changes during the lives of a user's tokens",
        openapi_extra=extra(ep[6]),
    )
    def user_policies(
        user_id: Annotated[str, PathParam(min_length=1, max_length=256)],
        _: Annotated[Principal, Depends(guard(ep[6]))],
        start: TimeParam = None,
        end: TimeParam = None,
        proofs: Proofs = False,
    ) -> Any:
        changes = Lineage(reads()).policy_changes_for_user(user_id, start, end)
        return answer(changes, [c["policy"]["index"] for c in changes], proofs)

    @app.get(
        "/v1/query/policies", tags=["query"], summary="Policies in force at an instant", openapi_extra=extra(ep[7])
    )
    def policies(
        at: Annotated[str, Query(pattern=r"^[0-9]{1,19}(\.[0-9]{5})?$")],
        _: Annotated[Principal, Depends(guard(ep[7]))],
        proofs: Proofs = False,
    ) -> Any:
        found = Lineage(reads()).policy_in_force(at)
        return answer({k: v.to_json() for k, v in found.items()}, [p.index for p in found.values()], proofs)

    @app.get(
        "/v1/query/assets/{asset_id}/{direction}",
        tags=["query"],
        summary="Data lineage of an asset",
        openapi_extra=extra(ep[8]),
    )
    def asset(
        asset_id: Annotated[str, PathParam(min_length=1, max_length=512)],
        direction: Annotated[str, PathParam(pattern=r"^(upstream|downstream)$")],
        _: Annotated[Principal, Depends(guard(ep[8]))],
        proofs: Proofs = False,
    ) -> Any:
        lineage = Lineage(reads())
        result = lineage.upstream(asset_id) if direction == "upstream" else lineage.downstream(asset_id)
        return answer(result.to_json(), result.evidence, proofs)

    @app.get(
        "/v1/evidence/{subject}",
        tags=["query"],
        summary="Evidence bundle (checked offline)",
        openapi_extra=extra(ep[9]),
    )
    def evidence(
        subject: Annotated[str, PathParam(min_length=1, max_length=600)],
        _: Annotated[Principal, Depends(guard(ep[9]))],
        size: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        return Response(export_evidence(reads(), subject, size=size), media_type="application/json")
