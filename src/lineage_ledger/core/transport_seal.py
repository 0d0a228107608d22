"""Personal fields sealed by the producer for the ledger, so that emitter spools and the HTTP request bodies
carry no personal value in the clear.

The emitter removes the personal payload fields of each event and adds one top-level field::

    "sealed_for_ledger": {"ct": "<base64: 12-byte nonce || ciphertext || tag>", "epk": "<base64: 32 bytes>",
                          "fields": ["ip", ...], "v": 1}

sealed to the ledger's X25519 ingest public key: an ephemeral X25519 key agreement, HKDF-SHA256 (salt = epk
|| ingest public key, info "lineage-ledger/ingest/v1") to an AES-256-GCM key; the plaintext is the
canonical JSON object of the removed fields; the associated data is the canonical bytes of the event
without ``sealed_for_ledger``, so the ciphertext cannot be moved to another event. The producer signs this
sealed form. The ledger opens it at ingest with its ingest private key, checks the plaintext event as any
other, seals the fields again under the data subject's key (core.sealed) and records the leaf of the
form the producer signed. Pure: no I/O.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lineage_ledger.core.encoding import canonical_bytes, decode_json
from lineage_ledger.errors import InputError

__all__ = ["TRANSPORT_FIELD", "TRANSPORT_MARKER", "ingest_public_key", "open_for_ledger", "seal_for_ledger"]

TRANSPORT_FIELD: Final = "sealed_for_ledger"
_INFO: Final = b"lineage-ledger/ingest/v1"
TRANSPORT_MARKER: Final = b'"sealed_for_ledger":{'


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _aead_key(shared: bytes, epk: bytes, recipient: bytes) -> AESGCM:
    okm = HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + recipient, info=_INFO).derive(shared)
    return AESGCM(okm)


def ingest_public_key(private_key: bytes) -> bytes:
    """The X25519 public key (32 bytes) producers seal to, of the ledger's ingest private key."""
    return _raw_public(X25519PrivateKey.from_private_bytes(private_key).public_key())


def seal_for_ledger(raw: bytes, fields: Iterable[str], public_key: bytes) -> bytes:
    """Canonical event bytes ``raw`` with the payload fields named in ``fields`` sealed to the ledger's ingest
    public key; ``raw`` unchanged when it has none of them."""
    obj = decode_json(raw)
    payload = obj.get("payload") if type(obj) is dict else None
    if type(payload) is not dict:
        return raw
    names = sorted(name for name in set(fields) if name in payload)
    if not names:
        return raw
    plain = canonical_bytes({name: payload.pop(name) for name in names})
    ephemeral = X25519PrivateKey.generate()
    epk = _raw_public(ephemeral.public_key())
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public_key))
    nonce = secrets.token_bytes(12)
    ct = nonce + _aead_key(shared, epk, public_key).encrypt(nonce, plain, canonical_bytes(obj))
    obj[TRANSPORT_FIELD] = {
        "ct": base64.b64encode(ct).decode("ascii"),
        "epk": base64.b64encode(epk).decode("ascii"),
        "fields": names,
        "v": 1,
    }
    return canonical_bytes(obj)


def open_for_ledger(raw: bytes, private_key: bytes | None, *, field: str = "event") -> bytes | None:
    """The producer's plaintext event of transport-sealed bytes ``raw`` (canonical), or None when ``raw``
    is not transport-sealed. InputError naming ``field`` when it is but does not open."""
    if TRANSPORT_MARKER not in raw:
        return None
    obj: Any = decode_json(raw, field=field)
    sealed = obj.pop(TRANSPORT_FIELD, None) if type(obj) is dict else None
    if type(sealed) is not dict:
        return None
    if private_key is None:
        raise InputError(f"{field}.{TRANSPORT_FIELD}", "this ledger has no ingest key to open sealed fields")
    try:
        epk = base64.b64decode(sealed["epk"], validate=True)
        ct = base64.b64decode(sealed["ct"], validate=True)
        me = X25519PrivateKey.from_private_bytes(private_key)
        aead = _aead_key(me.exchange(X25519PublicKey.from_public_bytes(epk)), epk, _raw_public(me.public_key()))
        fields = decode_json(aead.decrypt(ct[:12], ct[12:], canonical_bytes(obj)))
    except (KeyError, TypeError, ValueError, InvalidTag) as e:
        raise InputError(f"{field}.{TRANSPORT_FIELD}", "does not open under this ledger's ingest key") from e
    if type(fields) is not dict or sorted(fields) != sealed.get("fields"):
        raise InputError(f"{field}.{TRANSPORT_FIELD}", "the sealed fields are not the ones it names")
    payload = obj.setdefault("payload", {})
    if type(payload) is not dict or any(name in payload for name in fields):
        raise InputError(f"{field}.payload", "a sealed field is also in the clear")
    payload.update(fields)
    return canonical_bytes(obj)
