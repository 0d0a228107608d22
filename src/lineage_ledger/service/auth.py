"""Who may call the HTTP service: API keys and their roles, and the token fingerprint secret on disk.

An API key is a random bearer credential, ``llk_<16 hex key id>_<43 base64url characters>``, shown once when
it is created or rotated. The service keeps only its SHA-256 (the key carries 256 random bits, so a plain hash
cannot be reversed or guessed) in a JSON file readable by its owner alone, by default ``<ledger>.apikeys.json``,
together with the key's role, for a producer the one producer id it may append for, its optional expiry, its
revocation, and after a rotation the hash of the replaced secret with the end of its grace period. Every
change is also recorded in the ledger as an ``apikey`` entry (core.entry.ApiKeyChange, never a secret):

* ``producer``: appends signed batches of its own producer id; revokes tokens; introspects tokens;
* ``auditor``: reads entries, timelines, proofs and checkpoints; lists keys; introspects; runs verification;
* ``admin``: registers and revokes producer signing keys; revokes tokens.

Nothing here holds a private key or a raw bearer token. This module does no HTTP: the app maps a principal's
role to the endpoints it may call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from lineage_ledger.core.crypto import MIN_FINGERPRINT_SECRET_SIZE
from lineage_ledger.core.entry import PRODUCER_PATTERN, UTC_TIME_PATTERN, ApiKeyChange
from lineage_ledger.errors import ConflictError, InputError, KeyringError, NotFoundError
from lineage_ledger.keys import read_private_file, write_private_file

__all__ = [
    "API_KEYS_SUFFIX",
    "ROLES",
    "TOKEN_SECRET_SUFFIX",
    "ApiKeyInfo",
    "ApiKeyStore",
    "ChangeRecorder",
    "Principal",
    "Role",
    "create_token_secret",
    "load_token_secret",
    "utc_time",
]

Role = Literal["admin", "auditor", "producer"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

API_KEYS_SUFFIX: Final = ".apikeys.json"
"""The API key file of an embedded ledger sits beside it: ``<ledger>.apikeys.json``."""
TOKEN_SECRET_SUFFIX: Final = ".secret"  # noqa: S105 - a file name suffix, not a secret
"""The token fingerprint secret of an embedded ledger sits beside it: ``<ledger>.secret``."""

_FORMAT: Final = "lineage-ledger-apikeys/2"
_FORMATS: Final = frozenset({"lineage-ledger-apikeys/1", _FORMAT})
"""Version 2 adds expiry, revocation and a replaced secret's grace period; version 1 files are read as keys
without them, and written as version 2 (which older readers refuse rather than accept revoked keys)."""
_UTC_RE: Final = re.compile(UTC_TIME_PATTERN)
_MAX_GRACE_SECONDS: Final = 90 * 86400
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
class ApiKeyInfo:
    """What may be shown about an API key: never its secret nor its hash. Times are UTC, to the second."""

    key_id: str
    role: Role
    producer: str | None
    created_at: str
    expires_at: str | None = None
    """When the key stops working (None: never)."""
    revoked_at: str | None = None
    previous_until: str | None = None
    """After a rotation: until when the replaced secret still works (the grace period)."""

    def state(self, now: str) -> str:
        """``revoked``, ``expired`` or ``active`` at ``now`` (a UTC time as this class writes them)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_json(self, now: str) -> dict[str, object]:
        """A plain dict with every field and the state at ``now``."""
        return {
            "key_id": self.key_id,
            "role": self.role,
            "producer": self.producer,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "previous_until": self.previous_until,
            "state": self.state(now),
        }


@dataclass(frozen=True, slots=True)
class _Record:
    info: ApiKeyInfo
    sha256: bytes
    previous_sha256: bytes | None = None

    @property
    def principal(self) -> Principal:
        return Principal(self.info.key_id, self.info.role, self.info.producer)


def utc_time(seconds: float) -> str:
    """``seconds`` since the epoch as the UTC time API keys record (``2027-01-31T12:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _check_role(role: str, producer: str | None) -> Role:
    if role not in ROLES:
        raise InputError("role", f"{role!r} is not one of {', '.join(ROLES)}")
    if role == "producer":
        if producer is None or not _PRODUCER_RE.match(producer):
            raise InputError("producer", f"a producer key needs a producer id matching {PRODUCER_PATTERN}")
    elif producer is not None:
        raise InputError("producer", f"only producer keys name a producer, not {role} keys")
    return role


def _optional_time(item: dict[str, object], name: str) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _UTC_RE.match(value):
        raise ValueError(f"{name} is not a UTC time")
    return value


ChangeRecorder = Callable[[ApiKeyChange], object]
"""Records an API key change in the ledger (``Ledger.record_api_key_change``); raising stops the change."""


class ApiKeyStore:
    """The API keys the service accepts, kept as SHA-256 hashes only.

    ``authenticate`` compares hashes in constant time and never needs the raw key after creation; a revoked
    or expired key, or a replaced secret past its grace period, is refused. A store bound to a file re-reads
    it when it changes, so a key created, rotated or revoked by another process is seen on the next request,
    without a restart. Each change method takes ``record``, called with the change before the store is
    written: if it raises, nothing changes. Thread-safe.
    """

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._stamp: tuple[int, int, int] | None = None
        if path is not None:
            self._reload()

    @classmethod
    def in_memory(cls, *, clock: Callable[[], float] = time.time) -> ApiKeyStore:
        """A store that keeps its hashes in memory only (tests, embedding)."""
        return cls(None, clock=clock)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> ApiKeyStore:
        """The store kept in the file at ``path`` (empty if it does not exist yet; created on first key).

        KeyringError if the file is not a regular file, is accessible to its group or others, or is malformed.
        """
        return cls(Path(path), clock=clock)

    def now(self) -> str:
        """The store's clock as a UTC time."""
        return utc_time(self._clock())

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
            if document.get("format") not in _FORMATS:
                raise ValueError(f"format is not {_FORMAT}")
            records = {}
            for item in document["keys"]:
                role = _check_role(item["role"], item.get("producer"))
                digest = bytes.fromhex(item["sha256"])
                previous = item.get("previous_sha256")
                previous_digest = None if previous is None else bytes.fromhex(previous)
                if (
                    len(digest) != hashlib.sha256().digest_size
                    or (previous_digest is not None and len(previous_digest) != hashlib.sha256().digest_size)
                    or not re.fullmatch(r"[0-9a-f]{16}", item["key_id"])
                ):
                    raise ValueError("malformed key record")
                info = ApiKeyInfo(
                    key_id=item["key_id"],
                    role=role,
                    producer=item.get("producer"),
                    created_at=str(item["created_at"]),
                    expires_at=_optional_time(item, "expires_at"),
                    revoked_at=_optional_time(item, "revoked_at"),
                    previous_until=_optional_time(item, "previous_until"),
                )
                records[info.key_id] = _Record(info, digest, previous_digest)
        except (ValueError, KeyError, TypeError, AttributeError, InputError) as e:
            raise KeyringError(f"API key file {name} is malformed: {e}") from e
        return records

    def _write(self, records: dict[str, _Record]) -> None:
        """Replace the file atomically with a new 0600 file; a crash leaves the old or the new file whole."""
        assert self.path is not None
        keys = []
        for r in records.values():
            item: dict[str, object] = {
                "key_id": r.info.key_id,
                "role": r.info.role,
                "producer": r.info.producer,
                "sha256": r.sha256.hex(),
                "created_at": r.info.created_at,
            }
            optional = {
                "expires_at": r.info.expires_at,
                "revoked_at": r.info.revoked_at,
                "previous_until": r.info.previous_until,
                "previous_sha256": None if r.previous_sha256 is None else r.previous_sha256.hex(),
            }
            item.update((name, value) for name, value in optional.items() if value is not None)
            keys.append(item)
        document = {"format": _FORMAT, "keys": keys}
        data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
        directory = self.path.absolute().parent
        directory.mkdir(parents=True, exist_ok=True)
        try:
            write_private_file(self.path, data, overwrite=True)
        except OSError as e:
            raise KeyringError(f"cannot write API key file {self.path}: {e.strerror}") from e

    def _change(self, key_id: str, update: Callable[[_Record | None], _Record]) -> _Record:
        """Under the lock, on the freshest records: build the new record, write it, adopt it."""
        with self._lock:
            if self.path is not None:
                self._reload()
            record = update(self._records.get(key_id))
            records = {**self._records, key_id: record}
            if self.path is not None:
                self._write(records)
                self._stamp = self._file_stamp()
            self._records = records
        return record

    # -- keys -------------------------------------------------------------------------------------------

    def create(
        self,
        role: str,
        producer: str | None = None,
        *,
        expires_at: str | None = None,
        record: ChangeRecorder | None = None,
    ) -> tuple[Principal, str]:
        """Create a key for ``role`` (and ``producer``), valid until ``expires_at`` (a UTC time; None: no
        expiry); return its principal and the raw key.

        The raw key is returned once and never kept: only its SHA-256 is stored (and written to the file,
        if the store has one, before this returns). InputError for an unknown role, a missing producer id,
        or an expiry that is malformed or not in the future.
        """
        checked = _check_role(role, producer)
        now = self.now()
        if expires_at is not None and (not _UTC_RE.match(expires_at) or expires_at <= now):
            raise InputError("expires_at", f"must be a UTC time like {now} after now")
        key_id = secrets.token_hex(8)
        raw = f"llk_{key_id}_{secrets.token_urlsafe(32)}"
        info = ApiKeyInfo(key_id, checked, producer, now, expires_at=expires_at)

        def update(known: _Record | None) -> _Record:
            if record is not None:
                record(
                    ApiKeyChange(action="create", key_id=key_id, role=checked, producer=producer, expires_at=expires_at)
                )
            return _Record(info, hashlib.sha256(raw.encode()).digest())

        return self._change(key_id, update).principal, raw

    def _known(self, key_id: str, known: _Record | None, what: str) -> _Record:
        if known is None:
            raise NotFoundError(f"no API key {key_id!r}")
        if known.info.revoked_at is not None:
            raise ConflictError(f"API key {key_id} was revoked at {known.info.revoked_at}; cannot {what} it")
        return known

    def revoke(self, key_id: str, *, record: ChangeRecorder | None = None) -> ApiKeyInfo:
        """Revoke the key: from now on every request with it (either secret) is refused. NotFoundError for an
        unknown key, ConflictError if it is already revoked."""

        def update(known: _Record | None) -> _Record:
            current = self._known(key_id, known, "revoke")
            info = current.info
            if record is not None:
                record(ApiKeyChange(action="revoke", key_id=key_id, role=info.role, producer=info.producer))
            return _Record(dataclasses.replace(info, revoked_at=self.now()), current.sha256, current.previous_sha256)

        return self._change(key_id, update).info

    def rotate(
        self, key_id: str, *, grace_seconds: float, record: ChangeRecorder | None = None
    ) -> tuple[ApiKeyInfo, str]:
        """Give the key a new secret and return it (once); the replaced secret keeps working for
        ``grace_seconds`` (0: not at all), a secret replaced before that stops now. Same key id, role and
        expiry. NotFoundError for an unknown key, ConflictError for a revoked or expired one."""
        if not 0 <= grace_seconds <= _MAX_GRACE_SECONDS:
            raise InputError("grace", f"must be 0 to {_MAX_GRACE_SECONDS} seconds")
        raw = f"llk_{key_id}_{secrets.token_urlsafe(32)}"

        def update(known: _Record | None) -> _Record:
            current = self._known(key_id, known, "rotate")
            info = current.info
            if info.state(self.now()) == "expired":
                raise ConflictError(f"API key {key_id} expired at {info.expires_at}; create a new one")
            until = utc_time(self._clock() + grace_seconds)
            if record is not None:
                record(
                    ApiKeyChange(
                        action="rotate",
                        key_id=key_id,
                        role=info.role,
                        producer=info.producer,
                        expires_at=info.expires_at,
                        previous_until=until,
                    )
                )
            rotated = dataclasses.replace(info, previous_until=until)
            return _Record(rotated, hashlib.sha256(raw.encode()).digest(), current.sha256)

        return self._change(key_id, update).info, raw

    def authenticate(self, presented: str) -> Principal | None:
        """The principal whose key this is, if it is active, or None. Takes the same time for unknown ids,
        wrong secrets and refused keys."""
        match = _KEY_RE.fullmatch(presented)
        digest = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
        with self._lock:
            if self.path is not None:
                self._reload()
            record = self._records.get(match.group(1)) if match else None
        now = self.now()
        current = record.sha256 if record is not None else _DUMMY_HASH
        previous = record.previous_sha256 if record is not None and record.previous_sha256 else _DUMMY_HASH
        current_ok = hmac.compare_digest(digest, current)
        previous_ok = hmac.compare_digest(digest, previous)
        if record is None or record.info.state(now) != "active":
            return None
        if current_ok or (previous_ok and record.info.previous_until is not None and now < record.info.previous_until):
            return record.principal
        return None

    def info(self, key_id: str) -> ApiKeyInfo:
        """What is known of the key (NotFoundError if there is no such key)."""
        with self._lock:
            if self.path is not None:
                self._reload()
            found = self._records.get(key_id)
        if found is None:
            raise NotFoundError(f"no API key {key_id!r}")
        return found.info

    def key_infos(self) -> list[ApiKeyInfo]:
        """Every key (revoked and expired ones too), in creation order; never a secret."""
        with self._lock:
            if self.path is not None:
                self._reload()
            return [r.info for r in self._records.values()]

    def principals(self) -> list[Principal]:
        """Every usable key's principal (never a secret), in creation order."""
        now = self.now()
        return [Principal(i.key_id, i.role, i.producer) for i in self.key_infos() if i.state(now) == "active"]


# -- the token fingerprint secret ------------------------------------------------------------------------


def load_token_secret(path: str | os.PathLike[str]) -> bytes:
    """The HMAC secret for token fingerprints from a file only its owner can access (surrounding whitespace
    stripped, as ``lineage fingerprint --secret-file`` reads it). KeyringError if the file is missing, too
    open, or the secret is shorter than 16 bytes."""
    name = os.fspath(path)
    data = read_private_file(name, what="token secret file", max_bytes=4096)
    secret = data.strip()
    if b"\n" in secret:
        raise KeyringError(
            f"token secret file {name} holds several versions; read it with token_secrets.load_token_secrets"
        )
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
