"""Where RFC 7662 introspection reads token state: the ledger itself, or the hot state in Redis.

Both answer from the same lifecycle rules over the same committed entries, so they give the same answers;
Redis takes the reads off the ledger's single writer thread. A Redis that missed a commit (a network blip,
a restart, a flush) is brought up to date from the ledger before it answers again, and while it cannot be,
introspection fails (an error, so resource servers deny) rather than answer from stale state: a token
revoked in the ledger must never come back active.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from lineage_ledger.core.lifecycle import TokenState
from lineage_ledger.errors import StoreError
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.state.redis_state import RedisTokenState
from lineage_ledger.store.base import EntryRow

__all__ = ["EmbeddedIntrospector", "Introspector", "RedisFollower", "open_introspector"]

_log = logging.getLogger(__name__)


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


class RedisFollower:
    """Keeps a RedisTokenState in step with a ledger and answers introspection from it.

    ``observe`` is the ledger's listener: it applies each commit; if Redis refuses (down, or it missed an
    earlier commit) it catches up from the ledger's store, and if that fails too it marks the state behind.
    Reads first bring a state that is behind up to date, and raise StoreError while they cannot.
    """

    def __init__(self, ledger: Ledger, state: RedisTokenState) -> None:
        self.state = state
        self._store = ledger.store
        self._lock = threading.Lock()
        self.behind = False
        """True while Redis lacks commits the ledger made."""

    def observe(self, rows: list[EntryRow]) -> None:
        """Apply committed entries (the ledger's listener); never raises."""
        with self._lock:
            try:
                if not self.behind:
                    self.state.observe(rows)
                    return
            except StoreError as e:
                _log.warning(
                    "Redis token state missed entries %d..%d (%s); catching up", rows[0].index, rows[-1].index, e
                )
            self._catch_up()

    def _catch_up(self) -> None:
        try:
            self.state.catch_up(self._store)
            self.behind = False
        except StoreError as e:
            if not self.behind:
                _log.error("Redis token state is behind the ledger and cannot catch up: %s", e)
            self.behind = True

    def _current(self) -> RedisTokenState:
        if self.behind:
            with self._lock:
                if self.behind:
                    self._catch_up()
            if self.behind:
                raise StoreError("Redis token state is behind the ledger and cannot catch up; not answering from it")
        return self.state

    def token_state(self, token_id: str) -> TokenState:
        """The token's state from Redis, once Redis holds every commit."""
        return self._current().token_state(token_id)

    def is_active(self, token_id: str, now_ns: int) -> bool:
        """RFC 7662 "active" at ``now_ns``, from Redis once it holds every commit."""
        return self._current().is_active(token_id, now_ns)

    def close(self) -> None:
        """Close the Redis connection."""
        self.state.close()


def open_introspector(ledger: Ledger, redis_url: str | None = None, *, prefix: str = "lineage:") -> Introspector:
    """The embedded introspector, or with ``redis_url`` a RedisFollower: Redis state brought up to date with
    the ledger and attached to it, so every later commit reaches Redis before ``append`` returns."""
    if redis_url is None:
        return EmbeddedIntrospector(ledger)
    state = RedisTokenState(redis_url, prefix=prefix, policy=ledger.settings.lifecycle)
    state.catch_up(ledger.store)
    follower = RedisFollower(ledger, state)
    ledger.add_listener(follower.observe)
    return follower
