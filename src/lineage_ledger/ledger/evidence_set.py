"""Evidence for a whole token family or blast radius in one file: one evidence bundle per token, together.

Format (canonical JSON)::

    {"format": "lineage-ledger-evidence-set/1",
     "scope": {"kind": "family" | "blast-radius", "token_id": id, "start": reading|null, "end": reading|null},
     "tree_size": n, "bundles": [<lineage-ledger-evidence/1 bundle>, ...]}

Every member is an ordinary bundle (ledger.evidence) against the same checkpoint, so each proves its
token's complete history; ``lineage_ledger.offline_set`` checks them all and that they form one family: every
member other than the scope's root was born from another member. What one file cannot prove is that no
other descendant exists (a child's birth is in the child's history, not its parent's): the set lists the
descendants the ledger knew at export.
"""

from __future__ import annotations

import json
from typing import Any, Final

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.errors import InputError, NotFoundError
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.ledger.lineage import Lineage, Time, instant_of
from lineage_ledger.store.base import Store

__all__ = ["EVIDENCE_SET_FORMAT", "export_evidence_set"]

EVIDENCE_SET_FORMAT: Final = "lineage-ledger-evidence-set/1"


def export_evidence_set(
    store: Store,
    token_id: str,
    kind: str,
    *,
    start: Time | None = None,
    end: Time | None = None,
    size: int | None = None,
) -> bytes:
    """The evidence of every token of ``token_id``'s family (``kind`` "family": from its root ancestor down)
    or blast radius ("blast-radius": the token and its descendants, with the window it was asked for), as of
    the checkpoint of ``size`` (default: the latest). NotFoundError for a token the ledger never saw."""
    lineage = Lineage(store)
    tid = token_id.removeprefix("token:")
    lineage.timeline(tid)  # NotFoundError for an unknown token
    if kind == "family":
        family = lineage.family(tid)
        scope: dict[str, Any] = {"kind": kind, "token_id": family.root, "start": None, "end": None}
    elif kind == "blast-radius":
        family = lineage.descendants(tid)
        lo = None if start is None else instant_of(start, "start").reading()
        hi = None if end is None else instant_of(end, "end").reading()
        scope = {"kind": kind, "token_id": tid, "start": lo, "end": hi}
    else:
        raise InputError("kind", f"{kind!r} is neither 'family' nor 'blast-radius'")
    checkpoint = store.latest_checkpoint() if size is None else next(iter(store.checkpoints(size)), None)
    if checkpoint is None or (size is not None and checkpoint.size != size):
        raise NotFoundError(f"no signed checkpoint{'' if size is None else f' of size {size}'}")
    bundles = [json.loads(export_evidence(store, t, size=checkpoint.size)) for t in family.tokens]
    return canonical_bytes(
        {"format": EVIDENCE_SET_FORMAT, "scope": scope, "tree_size": checkpoint.size, "bundles": bundles}
    )
