"""The token fingerprint secret and its versions: the file that holds them, rotation, and lookups under each.

A secret file holds one secret per line, oldest first: line ``n`` is version ``n`` (surrounding whitespace
stripped), and the last line is the current version, the one new fingerprints use. A file of one line, as
every secret file was before secrets had versions, is version 1 alone, and version 1 ids keep their form
(``core.crypto.token_fingerprint``: ``.v<n>`` is appended from version 2 on). Rotating appends a line, so a
token's id under any earlier version can still be computed, and lookups by raw token try every version.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from lineage_ledger.core.crypto import MAX_SECRET_VERSION, MIN_FINGERPRINT_SECRET_SIZE, token_fingerprint
from lineage_ledger.core.lifecycle import NEVER_SEEN, NONE, TokenState
from lineage_ledger.errors import InputError, KeyringError
from lineage_ledger.keys import read_private_file

__all__ = ["TokenSecrets", "load_token_secrets", "merged_state", "rotate_token_secret"]

_MAX_FILE_SIZE: Final = 1024 * 1024
_PRIVATE_MODE: Final = 0o600
_TERMINAL: Final = ("REVOKED", "ROTATED", "EXPIRED")


@dataclass(frozen=True, slots=True)
class TokenSecrets:
    """Every version of the fingerprint secret, oldest first; the last is current. Never printed or logged."""

    versions: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.versions) <= MAX_SECRET_VERSION:
            raise InputError("secret", f"needs 1 to {MAX_SECRET_VERSION} versions")
        for secret in self.versions:
            if len(secret) < MIN_FINGERPRINT_SECRET_SIZE:
                raise InputError("secret", f"each version must be at least {MIN_FINGERPRINT_SECRET_SIZE} bytes")

    def __repr__(self) -> str:
        return f"TokenSecrets(<{len(self.versions)} versions>)"

    @classmethod
    def single(cls, secret: bytes) -> TokenSecrets:
        """A secret that has never been rotated (version 1)."""
        return cls((bytes(secret),))

    @property
    def current_version(self) -> int:
        """The version new fingerprints use."""
        return len(self.versions)

    def fingerprint(self, raw_token: str | bytes, region: str | None = None) -> str:
        """The token's id under the current version."""
        return token_fingerprint(self.versions[-1], raw_token, region, version=self.current_version)

    def candidates(self, raw_token: str | bytes, region: str | None = None) -> list[str]:
        """The token's id under every version, newest first: the ids its events may have been recorded under."""
        return [
            token_fingerprint(secret, raw_token, region, version=n)
            for n, secret in reversed(list(enumerate(self.versions, start=1)))
        ]


def merged_state(states: Sequence[TokenState]) -> TokenState:
    """One token's state from its states under several ids (one per secret version): a revocation, rotation or
    expiry under any id ends it; otherwise it is as active as its most recent issue says; else never seen."""
    seen = [s for s in states if s.state != NONE]
    for state in seen:
        if state.state in _TERMINAL:
            return state
    return max(seen, key=lambda s: s.issued_ns, default=NEVER_SEEN)


def _parse(data: bytes, name: str) -> TokenSecrets:
    lines = [line.strip() for line in data.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or any(not line for line in lines):
        raise KeyringError(f"token secret file {name} must hold one secret per line, with no empty line")
    try:
        return TokenSecrets(tuple(lines))
    except InputError as e:
        raise KeyringError(f"token secret file {name}: {e.reason}") from None


def load_token_secrets(path: str | os.PathLike[str]) -> TokenSecrets:
    """Every version in the secret file at ``path`` (only its owner may access it). KeyringError if it is
    missing, too open, empty, or holds a version shorter than 16 bytes."""
    name = os.fspath(path)
    return _parse(read_private_file(name, what="token secret file", max_bytes=_MAX_FILE_SIZE), name)


def rotate_token_secret(path: str | os.PathLike[str]) -> int:
    """Append a new random version (64 hex characters) to the secret file at ``path`` and return its number.

    The file is replaced atomically by a 0600 file holding every earlier version unchanged, so no id recorded
    so far stops being computable. KeyringError if the file cannot be read or written."""
    name = os.fspath(path)
    current = load_token_secrets(name)
    data = b"".join(secret + b"\n" for secret in current.versions) + secrets.token_hex(32).encode() + b"\n"
    _parse(data, name)  # the result must read back with one more version
    temporary = f"{name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(temporary, flags, _PRIVATE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, name)
    except OSError as e:
        raise KeyringError(f"cannot write token secret file {name}: {e.strerror}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return current.current_version + 1
