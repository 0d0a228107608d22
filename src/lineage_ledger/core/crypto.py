"""Signing, verification and keyed fingerprints: the only code that touches key material in memory.

Pure: no file or network I/O. Private keys enter the process through ``lineage_ledger.keys`` (or a KMS
adapter) and live only inside a :class:`Signer`; everything else sees public keys and signatures.

- :class:`Signer` is the seam for a KMS or HSM: anything with a key ``name``, a raw 32-byte Ed25519
  ``public_key`` and a ``sign`` method can sign batches and checkpoints.
- DSSE v1 (github.com/secure-systems-lab/dsse, protocol.md) binds a signature to the payload type as well
  as the payload, so a batch signature can never be replayed as some other kind of document.
- :func:`token_fingerprint` turns a bearer token into the only form the ledger ever stores.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lineage_ledger.errors import InputError, SignatureError

__all__ = [
    "BATCH_PAYLOAD_TYPE",
    "ED25519_PUBLIC_KEY_SIZE",
    "ED25519_SEED_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "MIN_FINGERPRINT_SECRET_SIZE",
    "Ed25519Signer",
    "Signer",
    "dsse_sign",
    "dsse_verify",
    "pae",
    "token_fingerprint",
    "verify_ed25519",
]

ED25519_SEED_SIZE: Final = 32
ED25519_PUBLIC_KEY_SIZE: Final = 32
ED25519_SIGNATURE_SIZE: Final = 64

BATCH_PAYLOAD_TYPE: Final = "application/vnd.lineage-ledger.batch.v1+json"
"""DSSE payload type of a producer's signed batch (docs/formats.md, "Batch envelope")."""

MIN_FINGERPRINT_SECRET_SIZE: Final = 16
"""Shortest HMAC secret :func:`token_fingerprint` accepts, in bytes (128 bits)."""

MAX_SECRET_VERSION: Final = 9999
"""Highest version of the fingerprint secret a token id can name."""

TOKEN_ID_PATTERN: Final = r"(?:[a-z0-9-]{1,32}:)?[0-9a-f]{64}(?:\.v(?:[2-9]|[1-9][0-9]{1,3}))?"  # noqa: S105
"""A token id: ``[<region>:]<64 hex>`` under version 1 of the fingerprint secret (every id made before secrets
had versions), ``[<region>:]<64 hex>.v<n>`` under version n >= 2."""

_PUBLIC_KEY_CACHE_SIZE: Final = 1024
_REGION_PATTERN: Final = re.compile(r"[a-z0-9-]{1,32}")


class Signer(Protocol):
    """Something that holds a private Ed25519 key and signs with it.

    This is the only interface through which the project uses a private key, so a KMS or HSM plugs in by
    implementing it: ``sign`` must return a 64-byte RFC 8032 Ed25519 signature of ``message`` that verifies
    under ``public_key``.
    """

    @property
    def name(self) -> str:
        """The key's name, as it appears in signed-note signature lines and key strings."""
        ...

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        ...


class Ed25519Signer:
    """A :class:`Signer` holding an Ed25519 private key in process memory.

    The seed is not an attribute: only :meth:`private_seed` returns it, for writing a key file.
    """

    __slots__ = ("_name", "_private_key", "_public_key")

    def __init__(self, name: str, seed: bytes) -> None:
        if not isinstance(name, str) or not name:
            raise InputError("name", "a key name must be a non-empty string")
        if not isinstance(seed, bytes | bytearray) or len(seed) != ED25519_SEED_SIZE:
            raise InputError("seed", f"an Ed25519 seed must be {ED25519_SEED_SIZE} bytes")
        self._name = name
        self._private_key = Ed25519PrivateKey.from_private_bytes(bytes(seed))
        self._public_key = self._private_key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, name: str) -> Ed25519Signer:
        """Return a signer for a fresh key drawn from the operating system's CSPRNG."""
        return cls(name, secrets.token_bytes(ED25519_SEED_SIZE))

    @property
    def name(self) -> str:
        """The key's name."""
        return self._name

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public_key

    def sign(self, message: bytes) -> bytes:
        """Return the deterministic 64-byte Ed25519 signature of ``message``."""
        return self._private_key.sign(message)

    def private_seed(self) -> bytes:
        """Return the 32-byte private seed. Only key-file writing should ever call this."""
        return self._private_key.private_bytes_raw()

    def __repr__(self) -> str:
        return f"Ed25519Signer(name={self._name!r}, public_key={self._public_key.hex()})"


@functools.lru_cache(maxsize=_PUBLIC_KEY_CACHE_SIZE)
def _parsed_public_key(public_key: bytes) -> Ed25519PublicKey:
    # Verification runs once per ingested batch with a handful of producer keys, so parsing each key once
    # saves work on the hot path; the bound keeps a flood of distinct keys from growing memory.
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as e:
        raise InputError("public_key", "not a valid Ed25519 public key") from e


def verify_ed25519(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Return if ``signature`` is a valid Ed25519 signature of ``message`` under ``public_key``.

    Raises :class:`SignatureError` if it is not (including a signature of the wrong length), and
    :class:`InputError` if ``public_key`` is not 32 bytes.
    """
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise InputError("public_key", f"an Ed25519 public key must be {ED25519_PUBLIC_KEY_SIZE} bytes")
    if len(signature) != ED25519_SIGNATURE_SIZE:
        raise SignatureError(f"an Ed25519 signature must be {ED25519_SIGNATURE_SIZE} bytes, got {len(signature)}")
    key = _parsed_public_key(bytes(public_key))
    try:
        key.verify(bytes(signature), bytes(message))
    except InvalidSignature as e:
        raise SignatureError(f"Ed25519 signature does not verify under key {bytes(public_key).hex()}") from e


def pae(payload_type: str, payload: bytes) -> bytes:
    """Return the DSSE v1 pre-authentication encoding of ``payload`` with ``payload_type``.

    ``b"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, where ``type`` is the UTF-8 encoding of
    ``payload_type`` and LEN is the byte length in ASCII decimal. These are the bytes a DSSE signature covers.
    """
    if not isinstance(payload_type, str):
        raise InputError("payload_type", "must be a string")
    try:
        type_bytes = payload_type.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError("payload_type", "not encodable as UTF-8") from e
    body = bytes(payload)
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(body), body)


def dsse_sign(signer: Signer, payload_type: str, payload: bytes) -> bytes:
    """Return ``signer``'s signature over ``PAE(payload_type, payload)``."""
    return signer.sign(pae(payload_type, payload))


def dsse_verify(public_key: bytes, payload_type: str, payload: bytes, signature: bytes) -> None:
    """Return if ``signature`` covers exactly this ``payload_type`` and ``payload`` under ``public_key``.

    Raises :class:`SignatureError` otherwise. Checking that the payload type is one the caller expects is
    left to the caller, as DSSE prescribes.
    """
    verify_ed25519(public_key, signature, pae(payload_type, payload))


def token_fingerprint(secret: bytes, raw_token: str | bytes, region: str | None = None, *, version: int = 1) -> str:
    """Return the ledger's id for a bearer token: ``[<region>:]<lowercase hex HMAC-SHA256(secret, token)>``,
    followed by ``.v<version>`` when ``secret`` is version 2 or later of the fingerprint secret (so ids made
    before a rotation keep their form, and an id says which secret made it).

    The raw token is a bearer credential: whoever holds it can use it. Storing it, or an unkeyed hash that
    can be checked against guesses, would turn the ledger into a source of credentials. A keyed hash still
    lets the ledger correlate every event for one token, while anyone who steals the database can neither
    replay the tokens nor confirm a guessed token without also stealing the secret.

    ``raw_token`` as ``str`` is hashed as UTF-8. ``region`` must match ``[a-z0-9-]{1,32}``; ``secret`` must
    be at least 16 bytes. Errors name the offending field and never contain the token or the secret.
    """
    if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_FINGERPRINT_SECRET_SIZE:
        raise InputError("secret", f"must be at least {MIN_FINGERPRINT_SECRET_SIZE} bytes")
    if region is not None and (not isinstance(region, str) or not _REGION_PATTERN.fullmatch(region)):
        raise InputError("region", "must match [a-z0-9-]{1,32}")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_SECRET_VERSION:
        raise InputError("version", f"must be an integer from 1 to {MAX_SECRET_VERSION}")
    if isinstance(raw_token, str):
        try:
            token = raw_token.encode("utf-8")
        except UnicodeEncodeError:
            # Chaining would carry the token inside the UnicodeEncodeError.
            raise InputError("raw_token", "not encodable as UTF-8") from None
    elif isinstance(raw_token, bytes | bytearray):
        token = bytes(raw_token)
    else:
        raise InputError("raw_token", "must be str or bytes")
    if not token:
        raise InputError("raw_token", "must not be empty")
    digest = hmac.new(bytes(secret), token, hashlib.sha256).hexdigest()
    if version > 1:
        digest = f"{digest}.v{version}"
    return digest if region is None else f"{region}:{digest}"
