"""The ledger's privacy keys: the key-encryption key that wraps every subject key, the subject secret under
which user ids become fingerprints, and the X25519 ingest key producers seal personal fields to.

They live in one private file (mode 0600), by default ``<ledger>.privacy`` beside an embedded ledger, else
``$LINEAGE_PRIVACY_KEYS`` names it: a JSON object ``{"ingest_key": "<64 hex>", "kek": "<64 hex>",
"subject_secret": "<64 hex>", "v": 1}``. None is ever stored in the database. KeyWrapper is the seam where a
KMS or an HSM plugs in: wrapping and unwrapping are its only operations, so a deployment that keeps the
KEK in a KMS implements those two calls against it and the rest of the ledger does not change.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lineage_ledger.errors import KeyringError
from lineage_ledger.keys import read_private_file, write_private_file

__all__ = [
    "PRIVACY_KEYS_ENV_VAR",
    "KeyWrapper",
    "LocalKeyWrapper",
    "PrivacyKeys",
    "create_privacy_keys",
    "load_privacy_keys",
    "privacy_keys_path",
]

PRIVACY_KEYS_ENV_VAR: Final = "LINEAGE_PRIVACY_KEYS"
_SUFFIX: Final = ".privacy"


class KeyWrapper(Protocol):
    """Wraps and unwraps subject keys under a key-encryption key it never hands out."""

    def wrap(self, key: bytes, context: bytes) -> bytes:
        """``key`` encrypted and authenticated, bound to ``context``."""
        ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The key ``wrap`` was given; KeyringError if ``wrapped`` or ``context`` differ."""
        ...


class LocalKeyWrapper:
    """A KeyWrapper whose KEK is 32 bytes held in this process (AES-256-GCM, random 96-bit nonce)."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise KeyringError("the key-encryption key must be 32 bytes")
        self._aead = AESGCM(kek)

    def __repr__(self) -> str:
        return "LocalKeyWrapper(<kek>)"

    def wrap(self, key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:12], wrapped[12:], context)
        except (InvalidTag, ValueError) as e:
            raise KeyringError("a subject key does not unwrap under this key-encryption key") from e


@dataclass(frozen=True, slots=True)
class PrivacyKeys:
    """The wrapper of subject keys and the subject secret of one ledger."""

    wrapper: KeyWrapper
    subject_secret: bytes
    ingest_key: bytes | None = None
    """The X25519 private key producers seal personal fields to (core.transport_seal), if the file has one."""

    def __repr__(self) -> str:
        return "PrivacyKeys(<secret>)"


def privacy_keys_path(ledger_url: str) -> Path:
    """Where the privacy keys of the ledger at ``ledger_url`` are: ``$LINEAGE_PRIVACY_KEYS``, else beside
    an embedded ledger's file. KeyringError for a PostgreSQL ledger without the variable."""
    named = os.environ.get(PRIVACY_KEYS_ENV_VAR)
    if named:
        return Path(named)
    if ledger_url.startswith(("postgresql://", "postgres://")):
        raise KeyringError(f"set ${PRIVACY_KEYS_ENV_VAR} to the privacy key file of this PostgreSQL ledger")
    from lineage_ledger.store.sqlite import sqlite_path_from_url

    return Path(sqlite_path_from_url(ledger_url.split("?", 1)[0]) + _SUFFIX)


def create_privacy_keys(path: Path) -> None:
    """Write a new privacy key file (0600); KeyringError if one exists."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    ingest = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    body = {"ingest_key": ingest.hex(), "kek": secrets.token_hex(32), "subject_secret": secrets.token_hex(32), "v": 1}
    try:
        write_private_file(path, json.dumps(body, sort_keys=True).encode() + b"\n", overwrite=False)
    except FileExistsError:
        raise KeyringError(f"privacy key file {path} already exists; refusing to overwrite it") from None


def load_privacy_keys(path: Path) -> PrivacyKeys:
    """The privacy keys in ``path`` (KeyringError naming what is wrong)."""
    data = read_private_file(path, what="privacy key file", max_bytes=4096)
    try:
        body = json.loads(data)
        kek = bytes.fromhex(body["kek"])
        secret = bytes.fromhex(body["subject_secret"])
        ingest = bytes.fromhex(body["ingest_key"]) if "ingest_key" in body else None
    except (ValueError, KeyError, TypeError) as e:
        raise KeyringError(f"privacy key file {path} is malformed: {e}") from e
    if len(secret) < 32:
        raise KeyringError(f"privacy key file {path}: the subject secret must be 32 bytes")
    if ingest is not None and len(ingest) != 32:
        raise KeyringError(f"privacy key file {path}: the ingest key must be 32 bytes")
    return PrivacyKeys(LocalKeyWrapper(kek), secret, ingest)
