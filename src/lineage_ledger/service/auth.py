"""Who may call the HTTP service: API keys and their roles, and the token fingerprint secret on disk.

An API key is a random bearer credential, ``llk_<16 hex key id>_<43 base64url characters>``, shown once when
it is created. The service keeps only its SHA-256 (the key carries 256 random bits, so a plain hash cannot be
reversed or guessed) in a JSON file readable by its owner alone, by default ``<ledger>.apikeys.json``,
together with the key's role and, for a producer, the one producer id it may append for:

* ``producer``: appends signed batches of its own producer id; revokes tokens; introspects tokens;
* ``auditor``: reads entries, timelines, proofs and checkpoints; lists keys; introspects; runs verification;
* ``admin``: registers and revokes producer signing keys; revokes tokens.

Nothing here holds a private key or a raw bearer token. This module does no HTTP: the app maps a principal's
role to the endpoints it may call.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from lineage_ledger.core.crypto import MIN_FINGERPRINT_SECRET_SIZE
from lineage_ledger.core.entry import PRODUCER_PATTERN
from lineage_ledger.errors import InputError, KeyringError
from lineage_ledger.keys import read_private_file, write_private_file

__all__ = [
    "API_KEYS_SUFFIX",
    "ROLES",
    "TOKEN_SECRET_SUFFIX",
    "ApiKeyStore",
    "Principal",
    "Role",
    "create_token_secret",
    "load_token_secret",
]

Role = Literal["admin", "auditor", "producer"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

API_KEYS_SUFFIX: Final = ".apikeys.json"
"""The API key file of an embedded ledger sits beside it: ``<ledger>.apikeys.json``."""
TOKEN_SECRET_SUFFIX: Final = ".secret"  # noqa: S105 - a file name suffix, not a secret
"""The token fingerprint secret of an embedded ledger sits beside it: ``<ledger>.secret``."""

_FORMAT: Final = "lineage-ledger-apikeys/1"
_KEY_RE: Final = re.compile(r"llk_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
_PRODUCER_RE: Final = re.compile(PRODUCER_PATTERN)
_GROUP_OTHER_BITS: Final = 0o077
_MAX_FILE_SIZE: Final = 16 * 1024 * 1024
_DUMMY_HASH: Final = hashlib.sha256(b"no such key").digest()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the public id of its API key, its role, and (producers only) its producer id."""

    key_id: str
    role: Role
    producer: str | None = None


@dataclass(frozen=True, slots=True)
class _Record:
    principal: Principal
    sha256: bytes
    created_at: str


def _check_role(role: str, producer: str | None) -> Role:
    if role not in ROLES:
        raise InputError("role", f"{role!r} is not one of {', '.join(ROLES)}")
    if role == "producer":
        if producer is None or not _PRODUCER_RE.match(producer):
            raise InputError("producer", f"a producer key needs a producer id matching {PRODUCER_PATTERN}")
    elif producer is not None:
        raise InputError("producer", f"only producer keys name a producer, not {role} keys")
    return role


class ApiKeyStore:
    """The API keys the service accepts, kept as SHA-256 hashes only.

    ``authenticate`` compares hashes in constant time and never needs the raw key after creation. A store
    bound to a file re-reads it when it changes, so a key created with ``lineage apikey create`` while the
    service runs is accepted without a restart. Thread-safe.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._stamp: tuple[int, int, int] | None = None
        if path is not None:
            self._reload()

    @classmethod
    def in_memory(cls) -> ApiKeyStore:
        """A store that keeps its hashes in memory only (tests, embedding)."""
        return cls(None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ApiKeyStore:
        """The store kept in the file at ``path`` (empty if it does not exist yet; created on first key).

        KeyringError if the file is not a regular file, is accessible to its group or others, or is malformed.
        """
        return cls(Path(path))

    # -- file I/O ---------------------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload(self) -> None:
        assert self.path is not None
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._records = {} if stamp is None else self._read()
        self._stamp = stamp

    def _read(self) -> dict[str, _Record]:
        assert self.path is not None
        name = os.fspath(self.path)
        data = read_private_file(name, what="API key file", max_bytes=_MAX_FILE_SIZE, follow_symlinks=False)
        try:
            document = json.loads(data)
            if document.get("format") != _FORMAT:
                raise ValueError(f"format is not {_FORMAT}")
            records = {}
            for item in document["keys"]:
                role = _check_role(item["role"], item.get("producer"))
                digest = bytes.fromhex(item["sha256"])
                if len(digest) != hashlib.sha256().digest_size or not re.fullmatch(r"[0-9a-f]{16}", item["key_id"]):
                    raise ValueError("malformed key record")
                principal = Principal(item["key_id"], role, item.get("producer"))
                records[principal.key_id] = _Record(principal, digest, str(item["created_at"]))
        except (ValueError, KeyError, TypeError, AttributeError, InputError) as e:
            raise KeyringError(f"API key file {name} is malformed: {e}") from e
        return records

    def _write(self, records: dict[str, _Record]) -> None:
        """Replace the file atomically with a new 0600 file; a crash leaves the old or the new file whole."""
        assert self.path is not None
        document = {
            "format": _FORMAT,
            "keys": [
                {
                    "key_id": r.principal.key_id,
                    "role": r.principal.role,
                    "producer": r.principal.producer,
                    "sha256": r.sha256.hex(),
                    "created_at": r.created_at,
                }
                for r in records.values()
            ],
        }
        data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
        directory = self.path.absolute().parent
        directory.mkdir(parents=True, exist_ok=True)
        try:
            write_private_file(self.path, data, overwrite=True)
        except OSError as e:
            raise KeyringError(f"cannot write API key file {self.path}: {e.strerror}") from e

    # -- keys -------------------------------------------------------------------------------------------

    def create(self, role: str, producer: str | None = None) -> tuple[Principal, str]:
        """Create a key for ``role`` (and ``producer``); return its principal and the raw key.

        The raw key is returned once and never kept: only its SHA-256 is stored (and written to the file,
        if the store has one, before this returns). InputError for an unknown role or a missing producer id.
        """
        checked = _check_role(role, producer)
        key_id = secrets.token_hex(8)
        raw = f"llk_{key_id}_{secrets.token_urlsafe(32)}"
        record = _Record(
            Principal(key_id, checked, producer),
            hashlib.sha256(raw.encode()).digest(),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        with self._lock:
            if self.path is not None:
                self._reload()
                records = {**self._records, key_id: record}
                self._write(records)
                self._stamp = self._file_stamp()
                self._records = records
            else:
                self._records[key_id] = record
        return record.principal, raw

    def authenticate(self, presented: str) -> Principal | None:
        """The principal whose key this is, or None. Takes the same time for unknown ids and wrong secrets."""
        match = _KEY_RE.fullmatch(presented)
        digest = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
        with self._lock:
            if self.path is not None:
                self._reload()
            record = self._records.get(match.group(1)) if match else None
        expected = record.sha256 if record is not None else _DUMMY_HASH
        if hmac.compare_digest(digest, expected) and record is not None:
            return record.principal
        return None

    def principals(self) -> list[Principal]:
        """Every key's principal (never a secret), in creation order."""
        with self._lock:
            if self.path is not None:
                self._reload()
            return [r.principal for r in self._records.values()]


# -- the token fingerprint secret ------------------------------------------------------------------------


def load_token_secret(path: str | os.PathLike[str]) -> bytes:
    """The HMAC secret for token fingerprints from a file only its owner can access (surrounding whitespace
    stripped, as ``lineage fingerprint --secret-file`` reads it). KeyringError if the file is missing, too
    open, or the secret is shorter than 16 bytes."""
    name = os.fspath(path)
    data = read_private_file(name, what="token secret file", max_bytes=4096)
    secret = data.strip()
    if len(secret) < MIN_FINGERPRINT_SECRET_SIZE:
        raise KeyringError(f"token secret file {name} must hold {MIN_FINGERPRINT_SECRET_SIZE} to 4096 bytes")
    return secret


def create_token_secret(path: str | os.PathLike[str]) -> bytes:
    """Write a new random secret (64 hex characters) to a new 0600 file at ``path`` and return it.

    KeyringError if ``path`` already exists: a secret is never overwritten, since every token id recorded
    so far depends on it.
    """
    secret = secrets.token_hex(32).encode()
    try:
        write_private_file(path, secret + b"\n", overwrite=False)
    except FileExistsError:
        raise KeyringError(f"token secret file {os.fspath(path)} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise KeyringError(f"cannot create token secret file {os.fspath(path)}: {e.strerror}") from e
    return secret
