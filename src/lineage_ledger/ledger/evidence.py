"""Evidence bundles: everything needed to check a token's (or asset's) history offline, in one file.

A bundle holds the subject's entries as stored bytes, an RFC 9162 inclusion proof for each, the seal entry
of the checkpoint with its own inclusion proof, the subject-map proof (membership with head and count, or
non-membership) under that seal's ``subjects_root``, the signed checkpoint, the log's verifier key and the
producer keys that signed the events' envelopes, each proven by its own key entries in the log (with each
envelope's statement, signature and the event's path in its batch). When the log key was rotated before the
checkpoint, ``log_key_rotations`` holds every rotation entry in the checkpoint's tree with its inclusion
proof, so the checkpoint is checked from the log's original key (``log_key``) along the chain of rotations
(core.log_key). ``lineage_ledger.offline`` checks it with nothing but ``cryptography``.

Format (canonical JSON, ``"format": "lineage-ledger-evidence/1"``)::

    {"checkpoint": note, "entries": [{"entry": text, "index": n, "inclusion": [hex], "batch": {...}}],
     "format": ..., "log_key": "<note verifier key>", ["log_key_rotations": [{"entry", "index", "inclusion"}],]
     "map_proof": {...}, "producer_keys": {key_id: {...}},
     "seal": {"entry": text, "index": n, "inclusion": [hex]}, "subject": "token:<id>",
     ["timestamp": base64(DER RFC 3161 TimeStampToken of the checkpoint, docs/timestamps.md),] "tree_size": n}
"""

from __future__ import annotations

import base64
from typing import Any, Final

from lineage_ledger.core import smt
from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.entry import EventEntry, KeyEntry, SealEntry, decode_entry
from lineage_ledger.core.merkle import TiledNodeReader, inclusion_proof, root_of
from lineage_ledger.core.model import TOKEN_ID_FORM, is_token_id
from lineage_ledger.errors import InputError, NotFoundError
from lineage_ledger.ledger.completeness import MapReader, unwritten_map
from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.ledger.log_keys import rotation_evidence
from lineage_ledger.store.base import Store

__all__ = ["EVIDENCE_FORMAT", "export_evidence", "subject_of_id"]

EVIDENCE_FORMAT: Final = "lineage-ledger-evidence/1"


def subject_of_id(identifier: str) -> str:
    """``token:<id>`` for a bare token id (64 hex, optionally region-prefixed), else the id as given.
    InputError for a token subject whose id is malformed: its bundle would prove the absence of nothing."""
    if identifier.startswith("token:"):
        if not is_token_id(identifier.removeprefix("token:")):
            raise InputError("subject", f"not a token id: expected {TOKEN_ID_FORM}")
        return identifier
    if identifier.startswith(("asset:", "policy:", "producer:")):
        return identifier
    if is_token_id(identifier):
        return "token:" + identifier
    raise InputError("subject", f"{identifier!r} is neither a token id nor a prefixed subject")


def _batch_path(store: Store, entry: EventEntry) -> dict[str, Any]:
    """The envelope statement, signature and the event's inclusion path within its batch."""
    env = store.envelope(bytes.fromhex(entry.envelope))
    leaves = [env.event_leaves[i : i + 32] for i in range(0, len(env.event_leaves), 32)]
    path = inclusion_proof(entry.position, len(leaves), lambda level, index: _batch_node(leaves, level, index))
    return {
        "payload": base64.b64encode(env.payload).decode(),
        "signature": base64.b64encode(env.signature).decode(),
        "key_id": env.key_id,
        "position": entry.position,
        "size": len(leaves),
        "path": [h.hex() for h in path],
    }


def _batch_node(leaves: list[bytes], level: int, index: int) -> bytes:
    width = 1 << level
    return root_of(leaves[index * width : (index + 1) * width])


def export_evidence(store: Store, identifier: str, *, size: int | None = None) -> bytes:
    """The evidence bundle of a subject as of the checkpoint of ``size`` (default: the latest).

    NotFoundError if there is no such checkpoint. A subject with no entries yields a bundle proving that
    (non-membership), which is evidence too.
    """
    subject = subject_of_id(identifier)
    checkpoints = store.checkpoints(size or 0)
    checkpoint = checkpoints[0] if size is not None and checkpoints and checkpoints[0].size == size else None
    if size is None:
        checkpoint = store.latest_checkpoint()
    if checkpoint is None:
        raise NotFoundError(f"no signed checkpoint{'' if size is None else f' of size {size}'}")
    tree_size = checkpoint.size
    seal_row = store.entry(tree_size - 1)
    seal = decode_entry(seal_row.body)
    if not isinstance(seal, SealEntry):
        raise NotFoundError(f"entry {tree_size - 1} is not the seal of checkpoint {tree_size}")
    reader = TiledNodeReader(store.nodes)
    map_root = bytes.fromhex(seal.block.subjects_root)
    map_read = MapReader(store)
    unwritten_map(store, seal_row.index, seal, map_read)  # the latest seal's nodes may still be being written
    proof = smt.prove(map_root, smt.key_of(subject), map_read)
    head = smt.lookup(map_root, smt.key_of(subject), map_read)
    rows = [r for r in store.subject_entries([subject]) if head is not None and r.index <= head.index]
    entries = []
    key_ids: set[str] = set()
    for row in rows:
        item: dict[str, Any] = {
            "index": row.index,
            "entry": row.body.decode("utf-8"),
            "inclusion": [h.hex() for h in inclusion_proof(row.index, tree_size, reader)],
        }
        entry = decode_entry(row.body)
        if isinstance(entry, EventEntry):
            item["batch"] = _batch_path(store, entry)
            key_ids.add(entry.key_id)
        entries.append(item)
    keyring = Keyring()
    key_entries: dict[str, list[dict[str, Any]]] = {}
    for row in store.subjects_with_prefix("producer:"):
        change = decode_entry(row.body)
        if row.index < tree_size and isinstance(change, KeyEntry):
            keyring.apply(change.change)
            key_entries.setdefault(change.change.key_id, []).append(
                {
                    "index": row.index,
                    "entry": row.body.decode("utf-8"),
                    "inclusion": [h.hex() for h in inclusion_proof(row.index, tree_size, reader)],
                }
            )
    producer_keys = {}
    for key_id in sorted(key_ids):
        key = keyring.get(key_id)
        producer_keys[key_id] = {
            "producer": key.producer,
            "public_key": key.public_key.hex(),
            "valid_from": key.valid_from,
            "valid_until": key.valid_until,
            "revoked_at": key.revoked_at,
            "entries": key_entries[key_id],
        }
    bundle = {
        "format": EVIDENCE_FORMAT,
        "subject": subject,
        "tree_size": tree_size,
        "checkpoint": checkpoint.note,
        "log_key": store.meta()["verifier_key"],
        "seal": {
            "index": seal_row.index,
            "entry": seal_row.body.decode("utf-8"),
            "inclusion": [h.hex() for h in inclusion_proof(seal_row.index, tree_size, reader)],
        },
        "map_proof": proof.to_json(),
        "entries": entries,
        "producer_keys": producer_keys,
    }
    rotations = rotation_evidence(store, tree_size, reader)
    if rotations:
        bundle["log_key_rotations"] = rotations
    timestamp = store.timestamp(tree_size)
    if timestamp is not None:
        bundle["timestamp"] = base64.b64encode(timestamp).decode("ascii")
    return canonical_bytes(bundle)
