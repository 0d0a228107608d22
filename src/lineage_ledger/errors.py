"""Every error the library raises, under one root.

    LedgerError
    ├── InputError                  bad input; names the field and the reason; nothing was written
    │   ├── CanonicalFormError      bytes are valid JSON but not the canonical form
    │   └── EnvelopeError           a batch envelope is malformed or does not match its events
    ├── KeyringError                an unknown, revoked or out-of-window key; a key of another producer
    ├── VerificationError           something signed or hashed does not check out
    │   ├── SignatureError          a signature does not verify
    │   ├── RootMismatchError       a recomputed root differs (carries expected and calculated)
    │   ├── ProofError              an inclusion or consistency proof is malformed or wrong
    │   ├── ChainError              a per-subject hash chain is broken
    │   └── InconsistencyError      two checkpoints cannot both be views of one append-only log
    ├── StoreError                  the backing store failed or refused
    │   ├── ConflictError           an id already holds different bytes
    │   ├── LockedError             another process holds the ledger's writer lock
    │   ├── NotFoundError           no such entry, checkpoint or key
    │   │   └── ExpiredError        the entries asked for expired under a retention policy (names it)
    │   ├── SpoolFullError          an emitter's spool cannot take events (disk full): back-pressure
    │   └── StorageFullError        no space left for a write (also a PushbackError); nothing was written
    ├── RoutingError                an event reached a shard that does not hold its subject
    ├── TransportError              a remote ledger could not be reached
    └── PushbackError               the ledger is busy; retry after ``retry_after`` seconds

Foreign exceptions are wrapped at the boundary with ``raise ... from e``.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "CanonicalFormError",
    "ChainError",
    "ConflictError",
    "EnvelopeError",
    "ExpiredError",
    "InconsistencyError",
    "InputError",
    "KeyringError",
    "LedgerError",
    "LockedError",
    "NotFoundError",
    "ProofError",
    "PushbackError",
    "RootMismatchError",
    "RoutingError",
    "SignatureError",
    "SpoolFullError",
    "StorageFullError",
    "StoreError",
    "TransportError",
    "VerificationError",
    "event_at",
]

_EVENT_AT: Final = re.compile(r"^events\[([0-9]+)\]")


def event_at(text: str) -> tuple[int, int] | None:
    """For an error field or message about one event of a batch (``events[3].payload.ip``): the event's
    position in the batch and where the ``events[k]`` prefix ends; None if it names no event."""
    m = _EVENT_AT.match(text)
    return None if m is None else (int(m.group(1)), m.end())


class LedgerError(Exception):
    """Root of every error raised by lineage_ledger."""


class InputError(LedgerError, ValueError):
    """Input was rejected; ``field`` names what was wrong (a dotted path) and ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class CanonicalFormError(InputError):
    """The bytes parse as JSON but are not canonical (RFC 8785 within the integer-only domain)."""


class EnvelopeError(InputError):
    """A signed batch envelope is malformed or disagrees with the events it carries."""


class KeyringError(LedgerError):
    """A key is unknown, revoked, outside its validity window, or belongs to another producer."""


class VerificationError(LedgerError):
    """Something signed or hashed does not check out."""


class SignatureError(VerificationError):
    """A signature does not verify under the key it names."""


class RootMismatchError(VerificationError):
    """A recomputed Merkle root differs from the one expected."""

    def __init__(self, message: str, expected: bytes, calculated: bytes) -> None:
        super().__init__(f"{message}: expected {expected.hex()}, calculated {calculated.hex()}")
        self.expected = expected
        self.calculated = calculated


class ProofError(VerificationError):
    """An inclusion or consistency proof is malformed or does not lead to the root."""


class ChainError(VerificationError):
    """A per-subject hash chain does not link."""


class InconsistencyError(VerificationError):
    """Two checkpoints cannot both describe one append-only log."""


class StoreError(LedgerError):
    """The backing store failed or refused an operation."""


class ConflictError(StoreError):
    """An id (event id, key id) already holds different bytes; nothing was written."""


class LockedError(StoreError):
    """Another process (or another open store in this one) holds the ledger's writer lock; the message names
    the holder. Nothing was opened for writing."""


class NotFoundError(StoreError, LookupError):
    """No such entry, checkpoint, token or key."""


class ExpiredError(NotFoundError):
    """Entries ``first`` .. ``last`` were archived and then deleted past retention under the policy ``policy``,
    as the signed record at log index ``record`` says: they are gone by rule, not missing."""

    def __init__(self, first: int, last: int, policy: str, record: int) -> None:
        super().__init__(
            f"entries {first}..{last} expired under retention policy {policy!r} (recorded at index {record})"
        )
        self.first, self.last, self.policy, self.record = first, last, policy, record


class SpoolFullError(StoreError):
    """An emitter's spool refuses writes (its disk is full, over quota, or failing), so the emitter does not
    accept the event: the caller still holds it. Raised by ``Emitter.emit`` and ``Emitter.sync``."""


class RoutingError(LedgerError):
    """An event reached a shard of a sharded ledger that does not hold its subject (its producer partitions
    by another function than the ledger's); nothing was written."""


class TransportError(LedgerError):
    """A remote ledger could not be reached or answered nonsense."""


class PushbackError(LedgerError):
    """The ledger is overloaded; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageFullError(StoreError, PushbackError):
    """The store's disk (or database server) has no space left for a write; nothing was written. It is
    pushback: the same write can succeed once space returns, with no restart."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        PushbackError.__init__(self, message, retry_after)
