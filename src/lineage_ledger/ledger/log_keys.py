"""A log's chain of checkpoint signing keys, as the log itself records it (core.log_key), read from a store.

The writer follows the chain to know which key signs now; verification follows it from a trusted key to know
which key must have signed each checkpoint; evidence bundles carry the rotations a checkpoint depends on.
"""

from __future__ import annotations

from typing import Any

from lineage_ledger.core.entry import LogKeyEntry, decode_entry
from lineage_ledger.core.log_key import LOG_KEY_SUBJECT, KeyChain
from lineage_ledger.core.merkle import TiledNodeReader, inclusion_proof
from lineage_ledger.core.note import NoteVerifier, parse_verifier_key
from lineage_ledger.errors import LedgerError
from lineage_ledger.store.base import Store

__all__ = ["check_key_chain", "read_key_chain", "rotation_evidence"]


def _rotations(store: Store) -> list[tuple[int, str]]:
    out = []
    for row in store.subject_entries([LOG_KEY_SUBJECT]):
        entry = decode_entry(row.body)
        if not isinstance(entry, LogKeyEntry) or entry.index != row.index:
            raise LedgerError(f"entry {row.index} of {LOG_KEY_SUBJECT} is not a log key rotation at its index")
        out.append((row.index, entry.rotation))
    return out


def read_key_chain(store: Store) -> KeyChain:
    """The chain of the ledger in ``store``, from its original key; raises at a rotation that does not check out
    (for instance one not signed by the key it retires)."""
    meta = store.meta()
    return KeyChain(parse_verifier_key(meta["verifier_key"]), meta["origin"], _rotations(store))


def check_key_chain(store: Store, trusted: NoteVerifier | None) -> tuple[KeyChain, list[tuple[int | None, str]]]:
    """For verification: the chain as far as it checks out, and what is wrong with it (index, message).

    ``trusted`` (a key from outside the database) must be the stored original key or a key the chain hands
    over to; without it the stored original key is used as it stands.
    """
    meta = store.meta()
    chain = KeyChain(parse_verifier_key(meta["verifier_key"]), meta["origin"])
    problems: list[tuple[int | None, str]] = []
    try:
        rotations = _rotations(store)
    except LedgerError as e:
        return chain, [(None, str(e))]
    for index, note in rotations:
        try:
            chain.add(index, note)
        except LedgerError as e:
            problems.append((index, str(e)))
            break
    if trusted is not None and trusted not in chain.verifiers():
        problems.append((None, f"the key given, {trusted}, is not one of this log's keys"))
    return chain, problems


def rotation_evidence(store: Store, tree_size: int, reader: TiledNodeReader) -> list[dict[str, Any]]:
    """The rotation entries among the first ``tree_size`` entries, each with its inclusion proof in that tree:
    what a verifier holding the log's original key needs to check a checkpoint signed by a later key."""
    out = []
    for row in store.subject_entries([LOG_KEY_SUBJECT]):
        if row.index < tree_size:
            out.append(
                {
                    "index": row.index,
                    "entry": row.body.decode("utf-8"),
                    "inclusion": [h.hex() for h in inclusion_proof(row.index, tree_size, reader)],
                }
            )
    return out
