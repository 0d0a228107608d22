"""The receipts part of a ``POST /v1/batches`` answer: one receipt per event, and the signed promises they
refer to, each listed once (a batch's events usually share one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lineage_ledger.core.receipt import Receipt, SignedPromise

__all__ = ["receipts_body"]


def receipts_body(receipts: Sequence[Receipt], sealed_size: int) -> dict[str, Any]:
    """``{"receipts": [...], "promises": [...]}``: each receipt names its promise by position, with its leaf
    hash and audit path to the promise's ``leaves_root`` (docs/receipts.md)."""
    promises: list[dict[str, Any]] = []
    position: dict[SignedPromise, int] = {}
    out: list[dict[str, Any]] = []
    for r in receipts:
        item: dict[str, Any] = {
            "event_id": r.event_id,
            "index": r.index,
            "verdict": r.verdict,
            "duplicate": r.duplicate,
            "status": "sealed" if r.index < sealed_size else "pending",
        }
        if r.promised is not None:
            key = r.promised.signed
            if key not in position:
                position[key] = len(promises)
                promises.append(r.promised.signed.to_json())
            item["leaf"] = r.leaf.hex()
            item["path"] = [h.hex() for h in r.promised.path(r.index)]
            item["promise"] = position[key]
        out.append(item)
    return {"receipts": out, "promises": promises}
