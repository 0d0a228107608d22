"""Producer signing keys, as the log itself records them.

Every key change is a ``key`` entry in the log, so the keyring is derived state: anyone replaying the log
rebuilds the same keyring and can re-check every envelope signature, with no trust in a side table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lineage_ledger.core.entry import KeyChange
from lineage_ledger.errors import ConflictError, KeyringError

__all__ = ["Keyring", "ProducerKey"]


@dataclass(frozen=True, slots=True)
class ProducerKey:
    """A producer's Ed25519 key and the window in which it may sign new batches."""

    producer: str
    key_id: str
    public_key: bytes
    valid_from: str
    valid_until: str | None = None
    revoked_at: str | None = None

    def usable_at(self, hlc: str) -> bool:
        """True if a batch received at ``hlc`` may be signed with this key."""
        if hlc < self.valid_from:
            return False
        if self.valid_until is not None and hlc >= self.valid_until:
            return False
        return self.revoked_at is None or hlc < self.revoked_at


class Keyring:
    """Keys by key id, built by replaying key-change entries in log order."""

    def __init__(self, changes: Iterable[KeyChange] = ()) -> None:
        self._keys: dict[str, ProducerKey] = {}
        for change in changes:
            self.apply(change)

    def copy(self) -> Keyring:
        """An independent keyring with the same keys (keys are immutable, so this is cheap)."""
        other = Keyring()
        other._keys = dict(self._keys)
        return other

    def apply(self, change: KeyChange) -> None:
        """Fold one key change in; ConflictError if it contradicts what is known."""
        known = self._keys.get(change.key_id)
        if change.action == "register":
            if change.revoked_at is not None:
                raise KeyringError(f"a registration of key {change.key_id!r} carries revoked_at")
            if known is not None:
                raise ConflictError(f"key id {change.key_id!r} is already registered")
            self._keys[change.key_id] = ProducerKey(
                producer=change.producer,
                key_id=change.key_id,
                public_key=bytes.fromhex(change.public_key),
                valid_from=change.valid_from,
                valid_until=change.valid_until,
            )
            return
        if known is None or known.producer != change.producer:
            raise KeyringError(f"cannot revoke unknown key {change.key_id!r} of producer {change.producer!r}")
        if known.revoked_at is not None:
            raise ConflictError(f"key {change.key_id!r} was already revoked at {known.revoked_at}")
        if change.revoked_at is None:
            raise KeyringError(f"a revocation of key {change.key_id!r} says not when (revoked_at is missing)")
        if bytes.fromhex(change.public_key) != known.public_key:
            raise KeyringError(f"a revocation of key {change.key_id!r} names another public key")
        self._keys[change.key_id] = ProducerKey(
            producer=known.producer,
            key_id=known.key_id,
            public_key=known.public_key,
            valid_from=known.valid_from,
            valid_until=known.valid_until,
            revoked_at=change.revoked_at,
        )

    def get(self, key_id: str) -> ProducerKey:
        """The key with this id (KeyringError if unknown)."""
        key = self._keys.get(key_id)
        if key is None:
            raise KeyringError(f"unknown key id {key_id!r}")
        return key

    def signing_key(self, key_id: str, producer: str, at: str) -> ProducerKey:
        """The key that may sign a batch of ``producer`` received at ``at``, or KeyringError saying why not."""
        key = self.get(key_id)
        if key.producer != producer:
            raise KeyringError(f"key {key_id!r} belongs to producer {key.producer!r}, not {producer!r}")
        if key.revoked_at is not None and at >= key.revoked_at:
            raise KeyringError(f"key {key_id!r} was revoked at {key.revoked_at}")
        if not key.usable_at(at):
            raise KeyringError(
                f"key {key_id!r} is valid from {key.valid_from} until {key.valid_until or 'revoked'}, not at {at}"
            )
        return key

    def producer_keys(self) -> list[ProducerKey]:
        """Every key, in registration order."""
        return list(self._keys.values())
