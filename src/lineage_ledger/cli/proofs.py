"""Answers of ``lineage prove --consistency`` and ``lineage checkpoint --list``, read from a store.

A consistency proof (RFC 9162 section 2.1.4) exists between any two tree sizes 0 < M <= N of the log, not
only between sizes that have a signed checkpoint: the proof and both roots come from the stored tree, and
the signed checkpoints of M and N are attached where they exist. A proof is worth what the roots it links
are worth: check it against a checkpoint you hold (``verify_consistency``), or against the attached signed
ones with the log's verifier key.
"""

from __future__ import annotations

from typing import Any

from lineage_ledger.core.merkle import TiledNodeReader, consistency_proof, range_root
from lineage_ledger.core.note import Checkpoint, open_note, parse_verifier_key
from lineage_ledger.errors import InputError
from lineage_ledger.store.base import Store

__all__ = ["checkpoint_list", "consistency_answer"]


def _signed(store: Store, size: int) -> str | None:
    rows = store.checkpoints(size)
    return rows[0].note if rows and rows[0].size == size else None


def consistency_answer(store: Store, old_size: int, new_size: int) -> dict[str, Any]:
    """The RFC 9162 consistency proof between tree sizes ``old_size`` and ``new_size`` with both roots and
    any signed checkpoints of those sizes. InputError (naming --consistency) unless
    0 < old_size <= new_size <= the log's size."""
    size = store.size()
    if not 0 < old_size <= new_size <= size:
        raise InputError("--consistency", f"need 0 < OLD <= NEW <= {size} (the log's size), got {old_size} {new_size}")
    reader = TiledNodeReader(store.nodes)
    return {
        "old_size": old_size,
        "new_size": new_size,
        "old_root": range_root(0, old_size, reader).hex(),
        "new_root": range_root(0, new_size, reader).hex(),
        "proof": [h.hex() for h in consistency_proof(old_size, new_size, reader)],
        "old_checkpoint": _signed(store, old_size),
        "new_checkpoint": _signed(store, new_size),
    }


def checkpoint_list(store: Store) -> list[dict[str, Any]]:
    """Every signed checkpoint, in size order: its size, root hash (hex) and note, each signature checked
    against the log's own key from the store (a note that fails is an error, never listed)."""
    verifier = parse_verifier_key(store.meta()["verifier_key"])
    out = []
    for row in store.checkpoints(0):
        text, _ = open_note(row.note, [verifier])
        checkpoint = Checkpoint.from_text(text)
        out.append({"size": row.size, "root": checkpoint.root_hash.hex(), "note": row.note})
    return out
