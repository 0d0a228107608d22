"""Entry checks: one entry's stored bytes against its derived columns, and an event entry against the
signed envelope it names. The bytes are decoded into lean structs that hold just what is compared."""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from lineage_ledger.core import smt
from lineage_ledger.core.crypto import BATCH_PAYLOAD_TYPE, pae
from lineage_ledger.core.encoding import decode_json
from lineage_ledger.core.entry import (
    ApiKeyEntry,
    ArchiveEntry,
    ErasureEntry,
    KeyEntry,
    LogKeyEntry,
    SealEntry,
    ShardEntry,
    own_subject,
)
from lineage_ledger.core.envelope import BatchStatement, OpenedEnvelope, verify_batch_signature
from lineage_ledger.core.sealed import Personal
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.keyring import Keyring
from lineage_ledger.ledger.links import Link, data_links, sealed_links, token_links
from lineage_ledger.ledger.verification.log import mth
from lineage_ledger.ledger.verification.report import Problem
from lineage_ledger.store.base import EnvelopeRow

__all__ = [
    "LEAN",
    "LeanEvent",
    "LeanEventEntry",
    "entry_links",
    "envelope_problem",
    "event_bytes",
    "event_column_problem",
    "event_in_envelope",
    "map_key",
    "own_column_problem",
    "sealed_part",
    "subject_and_parent",
]


class LeanPayload(msgspec.Struct, gc=False):
    """The payload fields that derived columns and lineage links are made of."""

    parent_token_id: str | None = None
    # what the lineage links are made of; untyped here, since a field of one kind of event may be an
    # unknown (free-form) field of another: entry_links reads them as the typed event would
    resource: object = None
    user_id: object = None
    inputs: object = None
    outcome: object = None
    """Read for the daily rollups (ledger.rollups)."""


class LeanEvent(msgspec.Struct, gc=False):
    """The fields of a producer's event that verification compares."""

    kind: str
    event_id: str
    token_id: str | None = None
    asset_id: str | None = None
    policy_id: str | None = None
    event_type: str = ""
    occurred_at: str = ""
    payload: LeanPayload | None = None
    personal: object = None
    """The sealed personal fields (core.sealed), on a ledger that seals them; untyped here, since an event
    recorded elsewhere may hold a field of that name and another shape (``sealed_part`` reads it)."""


class LeanEventEntry(msgspec.Struct, tag_field="type", tag="event", gc=False):
    """Just what verification compares, decoded without the write path's pattern checks (the bytes are
    already pinned by their hash, which is what is being verified). Not tracked by the garbage collector
    (these structs hold no references that could form a cycle), so decoding them triggers no collections."""

    envelope: str
    event: LeanEvent
    index: int
    key_id: str
    position: int
    prev: str
    producer: str
    recorded_at: str
    verdict: str


LEAN = msgspec.json.Decoder(
    LeanEventEntry | SealEntry | KeyEntry | ShardEntry | ApiKeyEntry | LogKeyEntry | ErasureEntry | ArchiveEntry
)
"""Decodes an entry's bytes into the lean event entry or one of the other entries."""
_EVENT_START: Final = len(b'{"envelope":"') + 64 + len(b'","event":')
_sha256 = hashlib.sha256


def subject_and_parent(event: LeanEvent) -> tuple[str, str | None]:
    """The subject and parent columns an event gives (as the writer derives them)."""
    if event.kind == "token":
        parent = event.payload.parent_token_id if event.payload else None
        return "token:" + str(event.token_id), ("token:" + parent if parent else None)
    if event.kind == "policy":
        return "policy:" + str(event.policy_id), None
    return "asset:" + str(event.asset_id), None


def sealed_part(event: LeanEvent) -> Personal | None:
    """The event's sealed personal fields, or None (none, or a field of that name that is not them)."""
    if event.personal is None:
        return None
    try:
        return msgspec.convert(event.personal, type=Personal)
    except msgspec.ValidationError:
        return None


def entry_links(event: LeanEvent, index: int, subject: str, out: list[Link]) -> None:
    """ledger.links.event_links for a lean event (whose bytes decode_event accepted when they were recorded)."""
    sealed = sealed_part(event)
    if sealed is not None:
        sealed_links(event.event_type, event.occurred_at, sealed, index, subject, out)
    p = event.payload
    if p is None:
        return
    if event.kind == "token":
        resource = p.resource if type(p.resource) is str else None
        user_id = p.user_id if type(p.user_id) is str else None
        token_links(event.event_type, event.occurred_at, resource, user_id, index, subject, out)
    elif event.kind == "data" and type(p.inputs) is list:
        inputs = [ref.get("asset_id") for ref in p.inputs if type(ref) is dict]
        data_links(event.occurred_at, [a for a in inputs if type(a) is str], index, subject, out)


def map_key(subject: object) -> bytes:
    """The subject map key of a subject column; a column rewritten with another SQL type (already reported
    as a derived column that differs) still gets a key, so the map check goes on."""
    return smt.key_of(subject) if type(subject) is str else hashlib.sha256(repr(subject).encode()).digest()


def event_column_problem(
    entry: LeanEventEntry,
    idx: int,
    subject_parent: tuple[str, str | None],
    columns: tuple[object, object, object, object],
) -> Problem | None:
    """An event entry's stored subject, event id, parent and verdict ``columns`` against its bytes;
    ``subject_parent`` is what subject_and_parent gives for its event."""
    subj, par = subject_parent
    subject, event_id, parent, verdict = columns
    if subj != subject or par != parent or entry.event.event_id != event_id or entry.verdict != verdict:
        return Problem("derived_column", f"entry {idx}: subject/event id/parent/verdict columns differ", idx)
    return None


def own_column_problem(
    entry: KeyEntry | ShardEntry | ApiKeyEntry | LogKeyEntry | ErasureEntry | ArchiveEntry,
    idx: int,
    subject: object,
    event_id: object,
    parent: object,
    verdict: object,
) -> Problem | None:
    """The derived columns of an entry the ledger writes about itself (a key, shard, API key or log key
    entry): its own subject, no event id or parent, verdict "ok"."""
    what, own = own_subject(entry)
    if subject != own or event_id is not None or parent is not None or verdict != "ok":
        return Problem("derived_column", f"{what} entry {idx}: derived columns differ from its bytes", idx)
    return None


def event_bytes(body: bytes) -> bytes | None:
    """The producer's event bytes inside an event entry's bytes, or None when they are not laid out as an
    event entry. The event sits between the fixed-width envelope field and the last ',"index":' (no field
    after the event can contain that text)."""
    event_end = body.rfind(b',"index":')
    if not body.startswith(b'{"envelope":"') or event_end < _EVENT_START:
        return None
    return body[_EVENT_START:event_end]


def event_in_envelope(envelope: tuple[bytes, str, str], entry: LeanEventEntry, raw: bytes) -> bool:
    """Whether the event bytes ``raw`` are the leaf at the entry's position in its envelope, ``envelope``
    being (event leaves, producer, key id), and the entry names the envelope's producer and key."""
    leaves, producer, key_id = envelope
    at = entry.position * 32
    signed = leaves[at : at + 32]
    sealed = sealed_part(entry.event)
    return (
        # a sealed event: the ledger recorded the leaf of the plaintext the producer signed (docs/privacy.md)
        (signed == _sha256(b"\x00" + raw).digest() or (sealed is not None and signed.hex() == sealed.signed))
        and producer == entry.producer
        and key_id == entry.key_id
    )


def envelope_problem(
    env: EnvelopeRow, digest: bytes, producer: str, key_id: str, recorded: str, keyring: Keyring
) -> str | None:
    """Why an envelope fails its checks at a use by ``producer``/``key_id`` recorded at ``recorded``, or None."""
    try:
        statement = msgspec.convert(decode_json(env.payload), type=BatchStatement)
        if hashlib.sha256(pae(BATCH_PAYLOAD_TYPE, env.payload)).digest() != digest:
            raise LedgerError("envelope digest does not match its payload")
        blob = env.event_leaves
        if len(blob) % 32:
            raise LedgerError(f"the event leaves are {len(blob)} bytes, not a whole number of 32-byte hashes")
        leaves = [blob[i : i + 32] for i in range(0, len(blob), 32)]
        if statement.count != len(leaves) or mth(leaves).hex() != statement.root:
            raise LedgerError("batch root or count does not match the signed statement")
        if statement.producer != producer or statement.key_id != key_id:
            raise LedgerError("producer or key id differs from the signed statement")
        key = keyring.get(key_id)
        if key.producer != producer or not key.usable_at(recorded):
            raise LedgerError(f"key {key_id} was not valid for {producer} at {recorded}")
        opened = OpenedEnvelope(statement, env.payload, env.signature, (), tuple(leaves), digest)
        verify_batch_signature(opened, key.public_key)
    except (LedgerError, msgspec.ValidationError) as e:
        return str(e)
    return None
