"""Sealed events: an event whose personal fields the ledger encrypted at ingest, byte by byte.

The ledger stores, in place of the producer's event, the same canonical JSON object with the personal payload
fields removed and one top-level field added::

    "personal": {"alg": "AES-256-GCM", "ct": "<base64: 12-byte nonce || ciphertext || 16-byte tag>",
                 "fields": ["ip", "user_agent", "user_id"], "kid": "<32 hex: the subject key's id>",
                 "signed": "<64 hex: leaf hash SHA-256(0x00 || event bytes the producer signed)>",
                 "subject": "<64 hex: the data subject's keyed fingerprint>", ["transport": true,] "v": 1}

The plaintext is the canonical JSON object of the removed fields (name -> value, as they were in the
payload). The associated data binds the ciphertext to its entry: ``AAD = "lineage-ledger/personal/v1" LF
origin LF chain subject LF event id`` (UTF-8), so a ciphertext moved to another entry, subject or log fails
to decrypt. Putting the removed fields back into ``payload`` and taking canonical bytes again gives the
producer's bytes exactly; their leaf hash is ``signed``, the leaf at the event's position in its signed batch.

Pure: no I/O. Keys are passed in; where they live is privacy.keystore's business.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lineage_ledger.core.encoding import canonical_bytes, decode_json
from lineage_ledger.errors import InputError, LedgerError

__all__ = [
    "ALGORITHM",
    "DEFAULT_PERSONAL_FIELDS",
    "ERASED",
    "SEALED_FIELD",
    "SEALED_MARKER",
    "Personal",
    "associated_data",
    "claims_personal",
    "open_personal",
    "personal_of",
    "seal_event",
    "subject_fingerprint",
    "unseal_event",
]

ALGORITHM: Final = "AES-256-GCM"
SEALED_FIELD: Final = "personal"
DEFAULT_PERSONAL_FIELDS: Final = ("ip", "user_agent", "user_id")
"""Payload fields encrypted by default (``lineage init --personal-data FIELDS`` names others)."""
ERASED: Final = "erased"
"""What a query shows in place of a personal field whose subject key was destroyed."""
_AAD_LABEL: Final = b"lineage-ledger/personal/v1"
SEALED_MARKER: Final = b'"personal":{'
"""Bytes every sealed event holds (and a received event must not)."""
_MARKER: Final = b'"personal":{"alg":'


class Personal(msgspec.Struct, frozen=True, kw_only=True):
    """The ``personal`` field of a sealed event (see the module docstring)."""

    alg: str
    ct: str
    fields: tuple[str, ...]
    kid: str
    signed: str
    subject: str
    v: int
    transport: bool = False
    """True when the producer signed its fields sealed to the ledger's ingest key (core.transport_seal), so
    ``signed`` is the leaf of that form, which the ledger does not keep."""


class _Holder(msgspec.Struct):
    personal: Personal | None = None


class _Claim(msgspec.Struct):
    personal: msgspec.Raw | None = None


_HOLDER = msgspec.json.Decoder(_Holder)
_CLAIM = msgspec.json.Decoder(_Claim)
_SORTED = msgspec.json.Encoder(order="sorted").encode


def subject_fingerprint(secret: bytes, name: str) -> str:
    """The keyed fingerprint of a data subject (``user:<user id>``): HMAC-SHA256 under the ledger's subject
    secret, hex. The indexes and the log hold this, never the name."""
    return hmac.new(secret, name.encode("utf-8"), hashlib.sha256).hexdigest()


def associated_data(origin: str, subject: str, event_id: str) -> bytes:
    """The AEAD associated data of a sealed event: its log, chain subject and event id."""
    return b"\n".join((_AAD_LABEL, origin.encode(), subject.encode(), event_id.encode()))


def claims_personal(event: bytes) -> bool:
    """Whether event bytes have a top-level ``personal`` field (the name the ledger's sealing uses)."""
    if SEALED_MARKER not in event:
        return False
    try:
        return _CLAIM.decode(event).personal is not None
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False


def personal_of(event: bytes) -> Personal | None:
    """The ``personal`` field of stored event bytes, or None for an event that was not sealed."""
    if _MARKER not in event:
        return None
    try:
        return _HOLDER.decode(event).personal
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def seal_event(
    raw: bytes,
    fields: Iterable[str],
    *,
    key: AESGCM,
    kid: str,
    subject_fp: str,
    aad: bytes,
    signed_leaf: bytes,
    transport: bool = False,
) -> tuple[bytes, Personal] | None:
    """The sealed form of canonical event bytes ``raw`` and its ``personal`` field: the payload fields named
    in ``fields`` that it has are encrypted under ``key`` (the subject key's AEAD); None when it has none of
    them (the event is stored as it came)."""
    obj = decode_json(raw)
    # canonical bytes of values read from canonical bytes: msgspec's sorted encoding is RFC 8785's unless a
    # key sorts differently by UTF-16 code units, which needs characters outside ASCII (encoding.py)
    encode = _SORTED if raw.isascii() else canonical_bytes
    payload = obj.get("payload")
    if type(payload) is not dict:
        return None
    names = sorted(name for name in set(fields) if name in payload)
    if not names:
        return None
    if SEALED_FIELD in obj:
        raise InputError("event.personal", "is reserved for the ledger's sealed personal fields")
    plain = encode({name: payload.pop(name) for name in names})
    nonce = secrets.token_bytes(12)
    ct = nonce + key.encrypt(nonce, plain, aad)
    personal = Personal(
        alg=ALGORITHM,
        ct=base64.b64encode(ct).decode("ascii"),
        fields=tuple(names),
        kid=kid,
        signed=signed_leaf.hex(),
        subject=subject_fp,
        v=1,
        transport=transport,
    )
    obj[SEALED_FIELD] = {
        "alg": personal.alg,
        "ct": personal.ct,
        "fields": names,
        "kid": kid,
        "signed": personal.signed,
        "subject": subject_fp,
        "v": 1,
    }
    if transport:
        obj[SEALED_FIELD]["transport"] = True
    return encode(obj), personal


def open_personal(personal: Personal, key: bytes, aad: bytes) -> dict[str, Any]:
    """The personal fields of a sealed event, decrypted. LedgerError if the key or the associated data
    is not the one they were sealed with (or the ciphertext was altered)."""
    if personal.alg != ALGORITHM or personal.v != 1:
        raise LedgerError(f"unknown sealing {personal.alg} v{personal.v}")
    try:
        ct = base64.b64decode(personal.ct, validate=True)
        plain = AESGCM(key).decrypt(ct[:12], ct[12:], aad)
    except (InvalidTag, ValueError) as e:
        raise LedgerError("the personal fields do not decrypt under this key and entry") from e
    fields = decode_json(plain)
    if type(fields) is not dict or sorted(fields) != sorted(personal.fields):
        raise LedgerError("the decrypted personal fields are not the ones the entry names")
    return fields


def unseal_event(event: bytes, fields: dict[str, Any] | None) -> dict[str, Any]:
    """The event object of stored bytes with its personal fields back in the payload: their values when
    ``fields`` is given, else the text ERASED in each (the subject key is destroyed). The ``personal``
    field is dropped. An event that was not sealed comes back as it is."""
    obj = decode_json(event)
    if type(obj) is not dict:
        raise InputError("event", "not a JSON object")
    personal = obj.pop(SEALED_FIELD, None)
    if type(personal) is not dict:
        return obj
    payload = obj.setdefault("payload", {})
    for name in personal.get("fields", ()):
        payload[name] = fields[name] if fields is not None else ERASED
    return obj
