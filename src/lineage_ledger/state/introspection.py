"""Where RFC 7662 introspection reads token state: the ledger itself, or the hot state in Redis.

Both answer from the same lifecycle rules over the same committed entries, so they give the same answers;
Redis takes the reads off the ledger's single writer thread.
"""

from __future__ import annotations

from typing import Protocol

from lineage_ledger.core.lifecycle import TokenState
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.state.redis_state import RedisTokenState

__all__ = ["EmbeddedIntrospector", "Introspector", "open_introspector"]


class Introspector(Protocol):
    """Answers "is this token active?" from ledger-derived state. Token ids are fingerprints."""

    def token_state(self, token_id: str) -> TokenState:
        """The token's lifecycle state (NEVER_SEEN for a token never recorded)."""
        ...

    def is_active(self, token_id: str, now_ns: int) -> bool:
        """RFC 7662 "active" at ``now_ns``."""
        ...


class EmbeddedIntrospector:
    """Introspection from the ledger's own state. Not thread-safe: call it where the ledger is called."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def token_state(self, token_id: str) -> TokenState:
        """The ledger's state for the token (``Ledger.token_state``)."""
        return self.ledger.token_state(token_id)

    def is_active(self, token_id: str, now_ns: int) -> bool:
        """``Ledger.is_active`` at ``now_ns``."""
        return self.ledger.is_active(token_id, now_ns)


def open_introspector(ledger: Ledger, redis_url: str | None = None, *, prefix: str = "lineage:") -> Introspector:
    """The embedded introspector, or with ``redis_url`` a RedisTokenState brought up to date with the ledger
    and attached to it, so every later commit reaches Redis before ``append`` returns."""
    if redis_url is None:
        return EmbeddedIntrospector(ledger)
    state = RedisTokenState(redis_url, prefix=prefix, policy=ledger.settings.lifecycle)
    state.catch_up(ledger.store)
    ledger.add_listener(state.observe)
    return state
