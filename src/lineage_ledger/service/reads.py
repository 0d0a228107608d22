"""The read routes: entries, token timelines, inclusion and consistency proofs, signed checkpoints, and a full
verification run (on the writer thread, so its report describes one state of the log).
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time, and their
# Depends(...) annotations name variables local to the functions that declare the routes.

from functools import partial
from typing import Annotated, Any, Final

from fastapi import Body, Depends, FastAPI, Query
from fastapi import Path as PathParam

from lineage_ledger.core.crypto import TOKEN_ID_PATTERN
from lineage_ledger.core.encoding import MAX_SAFE_INTEGER
from lineage_ledger.core.entry import EventEntry, decode_entry
from lineage_ledger.core.merkle import TiledNodeReader, consistency_proof, inclusion_proof, leaf_hash
from lineage_ledger.errors import InputError, NotFoundError, PushbackError
from lineage_ledger.ledger.query import trace_token
from lineage_ledger.service.access import guard, route_extra
from lineage_ledger.service.auth import Principal
from lineage_ledger.service.bodies import VerifyRequest
from lineage_ledger.service.state import ServiceState

__all__ = ["add_read_routes"]

# pydantic checks it with Rust regex, where $ (without multi-line mode) matches only at the very end.
_TOKEN_ID_RE: Final = f"^{TOKEN_ID_PATTERN}$"

Index = Annotated[int, PathParam(ge=0, le=MAX_SAFE_INTEGER)]


def add_read_routes(app: FastAPI, service: ServiceState) -> None:
    """Add the entry, timeline, proof, checkpoint and verification routes."""
    endpoint = "GET /v1/entries/{index}"

    @app.get("/v1/entries/{index}", tags=["read"], summary="One log entry", openapi_extra=route_extra(endpoint))
    def get_entry(index: Index, _: Annotated[Principal, Depends(guard(service.api_keys, endpoint))]) -> dict[str, Any]:
        """The entry's canonical bytes (as a string), its leaf hash recomputed from them, whether a signed
        checkpoint covers it, and for events the signing key with its revocation time, if it was revoked later.
        """
        row = service.reads.entry(index)
        entry = decode_entry(row.body)
        out: dict[str, Any] = {
            "index": row.index,
            "type": type(entry).__struct_config__.tag,
            "entry": row.body.decode("utf-8"),
            "leaf_hash": leaf_hash(row.body).hex(),
            "status": "sealed" if row.index < service.sealed_size() else "pending",
        }
        if isinstance(entry, EventEntry):
            key = next((k for k in service.keyring().producer_keys() if k.key_id == entry.key_id), None)
            revoked_at = key.revoked_at if key else None
            out["signed_by"] = {
                "producer": entry.producer,
                "key_id": entry.key_id,
                "revoked_at": revoked_at,
                "revoked_later": revoked_at is not None and revoked_at > entry.recorded_at,
            }
        return out

    endpoint_tl = "GET /v1/tokens/{token_id}/timeline"

    @app.get(
        "/v1/tokens/{token_id}/timeline",
        tags=["read"],
        summary="A token's timeline",
        openapi_extra=route_extra(endpoint_tl),
    )
    def get_timeline(
        token_id: Annotated[str, PathParam(pattern=_TOKEN_ID_RE, description="a token fingerprint, never a raw token")],
        _: Annotated[Principal, Depends(guard(service.api_keys, endpoint_tl))],
    ) -> dict[str, Any]:
        """Every recorded step of the token with verdicts and sealed/pending status, its chain check, its
        parents, children and the resources it touched (404 if the ledger holds no event of it)."""
        return trace_token(service.reads, token_id).to_json()

    endpoint_inc = "GET /v1/proofs/inclusion"

    @app.get(
        "/v1/proofs/inclusion", tags=["proofs"], summary="Inclusion proof", openapi_extra=route_extra(endpoint_inc)
    )
    def get_inclusion(
        index: Annotated[int, Query(ge=0, le=MAX_SAFE_INTEGER)],
        _: Annotated[Principal, Depends(guard(service.api_keys, endpoint_inc))],
        size: Annotated[int | None, Query(ge=1, le=MAX_SAFE_INTEGER)] = None,
    ) -> dict[str, Any]:
        """RFC 9162 inclusion proof of entry ``index`` in the signed checkpoint of tree ``size`` (default:
        the latest), with the entry's bytes and that checkpoint, so the caller can check it offline."""
        if size is None:
            size = service.sealed_size()
            if size == 0:
                raise NotFoundError("no signed checkpoint yet")
        note = service.checkpoint_of_size(size, "size").note
        if index >= size:
            raise NotFoundError(f"entry {index} is not covered by the checkpoint of size {size}")
        row = service.reads.entry(index)
        path = inclusion_proof(index, size, TiledNodeReader(service.reads.nodes))
        return {
            "index": index,
            "tree_size": size,
            "entry": row.body.decode("utf-8"),
            "leaf_hash": leaf_hash(row.body).hex(),
            "inclusion_path": [h.hex() for h in path],
            "checkpoint": note,
        }

    endpoint_con = "GET /v1/proofs/consistency"

    @app.get(
        "/v1/proofs/consistency", tags=["proofs"], summary="Consistency proof", openapi_extra=route_extra(endpoint_con)
    )
    def get_consistency(
        old: Annotated[int, Query(ge=1, le=MAX_SAFE_INTEGER)],
        new: Annotated[int, Query(ge=1, le=MAX_SAFE_INTEGER)],
        _: Annotated[Principal, Depends(guard(service.api_keys, endpoint_con))],
    ) -> dict[str, Any]:
        """RFC 9162 consistency proof between two signed checkpoints, with both checkpoints."""
        if old > new:
            raise InputError("old", f"must not exceed new ({new})")
        old_note = service.checkpoint_of_size(old, "old").note
        new_note = service.checkpoint_of_size(new, "new").note
        proof = consistency_proof(old, new, TiledNodeReader(service.reads.nodes))
        return {
            "old_size": old,
            "new_size": new,
            "proof": [h.hex() for h in proof],
            "old_checkpoint": old_note,
            "new_checkpoint": new_note,
        }

    endpoint_latest = "GET /v1/checkpoints/latest"

    @app.get(
        "/v1/checkpoints/latest",
        tags=["checkpoints"],
        summary="Latest signed checkpoint",
        openapi_extra=route_extra(endpoint_latest),
    )
    def get_latest_checkpoint(
        _: Annotated[Principal, Depends(guard(service.api_keys, endpoint_latest))],
    ) -> dict[str, Any]:
        """The latest C2SP signed checkpoint (404 before the first seal)."""
        row = service.reads.latest_checkpoint()
        if row is None:
            raise NotFoundError("no signed checkpoint yet")
        return {"size": row.size, "note": row.note}

    endpoint_size = "GET /v1/checkpoints/{size}"

    @app.get(
        "/v1/checkpoints/{size}",
        tags=["checkpoints"],
        summary="Signed checkpoint by tree size",
        openapi_extra=route_extra(endpoint_size),
    )
    def get_checkpoint(
        size: Index, _: Annotated[Principal, Depends(guard(service.api_keys, endpoint_size))]
    ) -> dict[str, Any]:
        """The signed checkpoint of exactly this tree size (404 if none was signed at that size)."""
        row = service.checkpoint_of_size(size, "size")
        return {"size": row.size, "note": row.note}

    endpoint_verify = "POST /v1/verify"

    @app.post(
        "/v1/verify", tags=["audit"], summary="Verify the whole ledger", openapi_extra=route_extra(endpoint_verify)
    )
    async def post_verify(
        _: Annotated[Principal, Depends(guard(service.api_keys, endpoint_verify))],
        request: Annotated[VerifyRequest | None, Body()] = None,
    ) -> dict[str, Any]:
        """Run verify_ledger against the log's own verifier key and return its report (``ok`` false with the
        problems if anything fails to check); with ``since``, verify_since: only what was appended after that
        checkpoint (422 naming ``since`` if the note cannot be used).

        It runs on the writer thread, so appends wait until it is done and the report describes one state of
        the log (verification reads the store in many queries; a seal between two of them would otherwise
        look like truncation). One run at a time: 503 with Retry-After while one runs.
        """
        if service.verifying:
            raise PushbackError("a verification is already running", retry_after=5.0)
        service.verifying = True
        try:
            if request is not None and request.since is not None and request.trusted_checkpoint is not None:
                raise InputError("since", "give since or trusted_checkpoint, not both")
            trusted, since = (request.trusted_checkpoint, request.since) if request else (None, None)
            return await service.writer.run(partial(service.verify, trusted, since))
        finally:
            service.verifying = False
