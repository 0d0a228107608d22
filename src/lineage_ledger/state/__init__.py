"""Derived token state outside the ledger (a cache, never the source of truth) and the introspection seam.

``RedisTokenState`` needs the ``[redis]`` extra only when constructed; importing this package never imports
the driver.
"""

from __future__ import annotations

from lineage_ledger.state.introspection import EmbeddedIntrospector, Introspector, RedisFollower, open_introspector
from lineage_ledger.state.redis_state import RedisTokenState

__all__ = ["EmbeddedIntrospector", "Introspector", "RedisFollower", "RedisTokenState", "open_introspector"]
