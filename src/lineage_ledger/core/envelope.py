"""Signed batch envelopes: how producers hand events to the ledger.

Wire form (JSON), a DSSE v1 envelope with the events beside it::

    {"payloadType": "application/vnd.lineage-ledger.batch.v1+json",
     "payload": "<base64 of the batch statement>",
     "signatures": [{"keyid": "<key id>", "sig": "<base64 Ed25519 signature over PAE(type, payload)>"}],
     "events": [<event>, <event>, ...]}

The batch statement is canonical JSON ``{"count": n, "key_id": ..., "producer": ..., "root": "<hex>",
"v": 1}`` where ``root`` is the RFC 9162 Merkle root over the events' leaf hashes, in order. So one event is
attributable on its own: its bytes, its inclusion path in the batch, the statement and the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec
from msgspec import Meta, Raw, Struct

from lineage_ledger.core.crypto import BATCH_PAYLOAD_TYPE, Signer, dsse_verify, pae
from lineage_ledger.core.encoding import TOO_DEEP, canonical_bytes, decode_canonical
from lineage_ledger.core.entry import KEY_ID_PATTERN, PRODUCER_PATTERN
from lineage_ledger.core.merkle import leaf_hash, root_of
from lineage_ledger.errors import EnvelopeError, InputError

__all__ = [
    "MAX_BATCH_EVENTS",
    "BatchStatement",
    "OpenedEnvelope",
    "open_envelope",
    "seal_batch",
    "verify_batch_signature",
]

MAX_BATCH_EVENTS: Final = 10_000
_PRODUCER_RE = re.compile(PRODUCER_PATTERN)
_KEY_ID_RE = re.compile(KEY_ID_PATTERN)


class BatchStatement(Struct, frozen=True, kw_only=True):
    """What a producer signs for one batch."""

    count: Annotated[int, Meta(ge=1, le=MAX_BATCH_EVENTS)]
    key_id: Annotated[str, Meta(pattern=KEY_ID_PATTERN)]
    producer: Annotated[str, Meta(pattern=PRODUCER_PATTERN)]
    root: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
    v: Annotated[int, Meta(ge=1, le=1)]


class _Signature(Struct, frozen=True):
    keyid: str
    sig: str


class _Wire(Struct, frozen=True):
    payloadType: str
    payload: str
    signatures: list[_Signature]
    events: list[Raw]


_WIRE = msgspec.json.Decoder(_Wire)
_STATEMENT = msgspec.convert


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    """A structurally valid envelope whose events match its statement (signature not yet checked)."""

    statement: BatchStatement
    payload: bytes
    signature: bytes
    events: tuple[bytes, ...]
    event_leaves: tuple[bytes, ...]
    digest: bytes
    """SHA-256 of PAE(payloadType, payload): the envelope's identity and the message that was signed."""


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EnvelopeError(field, "not valid base64") from e


def open_envelope(data: bytes, *, max_events: int = MAX_BATCH_EVENTS) -> OpenedEnvelope:
    """Parse an envelope and check its events against the statement.

    Checks the structure, that the statement is canonical and well typed, that exactly one signature is
    present, that the event count matches, and that the Merkle root over the events' leaf hashes equals the
    signed root. Events themselves are validated by the caller (model.decode_event). EnvelopeError names
    the field.
    """
    try:
        wire = _WIRE.decode(data)
    except RecursionError:
        raise EnvelopeError("envelope", TOO_DEEP) from None
    except msgspec.ValidationError as e:
        raise EnvelopeError("envelope", str(e)) from e
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise EnvelopeError("envelope", f"not valid JSON ({e})") from e
    if wire.payloadType != BATCH_PAYLOAD_TYPE:
        raise EnvelopeError("payloadType", f"expected {BATCH_PAYLOAD_TYPE!r}")
    if len(wire.signatures) != 1:
        raise EnvelopeError("signatures", f"expected exactly one signature, got {len(wire.signatures)}")
    payload = _b64(wire.payload, "payload")
    try:
        statement = _STATEMENT(decode_canonical(payload, field="payload"), type=BatchStatement)
    except msgspec.ValidationError as e:
        raise EnvelopeError("payload", str(e)) from e
    except InputError as e:
        raise EnvelopeError(e.field, e.reason) from e
    sig = wire.signatures[0]
    if sig.keyid != statement.key_id:
        raise EnvelopeError("signatures[0].keyid", "does not match the statement's key_id")
    signature = _b64(sig.sig, "signatures[0].sig")
    if len(wire.events) > max_events:
        raise EnvelopeError("events", f"{len(wire.events)} events; the limit is {max_events}")
    if len(wire.events) != statement.count:
        raise EnvelopeError("events", f"{len(wire.events)} events but the statement says {statement.count}")
    events = tuple(bytes(raw) for raw in wire.events)
    leaves = tuple(leaf_hash(e) for e in events)
    if root_of(leaves).hex() != statement.root:
        raise EnvelopeError("payload.root", "the events' Merkle root does not match the signed root")
    return OpenedEnvelope(
        statement=statement,
        payload=payload,
        signature=signature,
        events=events,
        event_leaves=leaves,
        digest=hashlib.sha256(pae(BATCH_PAYLOAD_TYPE, payload)).digest(),
    )


def verify_batch_signature(envelope: OpenedEnvelope, public_key: bytes) -> None:
    """Raise SignatureError unless the envelope's signature verifies under ``public_key``."""
    dsse_verify(public_key, BATCH_PAYLOAD_TYPE, envelope.payload, envelope.signature)


def seal_batch(events: Sequence[bytes], *, producer: str, key_id: str, signer: Signer) -> bytes:
    """Sign a batch of canonical event bytes; return the envelope's JSON bytes.

    The events are placed in the envelope verbatim, so the ledger hashes exactly what was signed.
    """
    if not events:
        raise InputError("events", "a batch needs at least one event")
    if not _PRODUCER_RE.match(producer):
        raise InputError("producer", f"{producer!r} does not match {PRODUCER_PATTERN}")
    if not _KEY_ID_RE.match(key_id):
        raise InputError("key_id", f"{key_id!r} does not match {KEY_ID_PATTERN}")
    root = root_of([leaf_hash(e) for e in events])
    payload = canonical_bytes(
        {"count": len(events), "key_id": key_id, "producer": producer, "root": root.hex(), "v": 1}
    )
    signature = signer.sign(pae(BATCH_PAYLOAD_TYPE, payload))
    head = canonical_bytes(
        {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": BATCH_PAYLOAD_TYPE,
            "signatures": [{"keyid": key_id, "sig": base64.b64encode(signature).decode()}],
        }
    )
    return head[:-1] + b',"events":[' + b",".join(events) + b"]}"
