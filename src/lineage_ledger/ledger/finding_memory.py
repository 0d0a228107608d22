"""What the findings engine remembers between entries, bounded: per subject, per token family (session)
and per producer. State that falls out of an LRU is forgotten (ledger.findings says what that costs)."""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

__all__ = ["LRU", "MAX_CHILDREN", "ProducerMemo", "SessionMemo", "SubjectMemo", "network_of"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A map of at most ``capacity`` items that forgets the least recently used first."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Hold ``value`` under ``key``, forgetting the least recently used item past the capacity."""
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class SubjectMemo:
    """What the engine remembers of one subject."""

    root: str
    """The token family (session) the token belongs to; the subject itself for non-tokens."""
    max_ns: int = -1
    max_index: int = -1
    born_index: int | None = None
    ended_index: int | None = None
    """The entry that revoked, expired or rotated the token away."""
    parent: str | None = None
    """The token it was refreshed, rotated or exchanged from."""
    revoked: tuple[int, int] | None = None
    """(occurred ns, index) of its first valid REVOKED."""
    children: deque[tuple[int, int, str]] = field(default_factory=deque)
    """Recent refresh/rotation births from this token: (occurred ns, index, child token id)."""


@dataclass(slots=True)
class SessionMemo:
    """What the engine remembers of one token family (session): recent refreshes, the latest address."""

    refreshes: deque[tuple[int, int]] = field(default_factory=deque)
    ip: tuple[int, int, str, ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None
    """The latest address seen: (occurred ns, index, address, network)."""


@dataclass(slots=True)
class ProducerMemo:
    """What the engine remembers of one producer, for its heartbeat gap."""

    last_ns: int
    last_index: int | None
    reported: bool = False


MAX_CHILDREN: Final = 16
"""Recent children remembered per token, for the refresh replay rule."""


@functools.lru_cache(maxsize=65_536)
def network_of(
    address: str, ipv4_prefix: int, ipv6_prefix: int
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network of ``address`` (of the prefix length for its IP version); None for no IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
