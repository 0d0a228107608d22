"""Hot token state in Redis: each token's lifecycle state, its last N events, and the revocation set.

Redis is never the source of truth. Everything here is derived from committed ledger entries by ``observe``
(a ``Ledger.add_listener`` callback) and can be thrown away: ``rebuild(store)`` recreates it from the ledger
and gives the same answers. States follow ``core.lifecycle`` exactly, as ``lifecycle.replay`` derives them from
the recorded verdicts, so they equal ``Ledger.token_state``.

Keys, all under ``prefix`` (nothing else in the Redis database is read or deleted):

    <prefix>applied           log index of the last entry applied (absent: none)
    <prefix>token:<id>        hash {state, issued_ns, expires_ns, parent}
    <prefix>events:<id>       list of the token's last N events, oldest first, as compact JSON records
    <prefix>revoked           sorted set: revoked token ids, scored by the index of their REVOKED entry

``parent`` (the token it was refreshed, rotated or exchanged from) is what ``is_active`` follows for the
revocation cascade; a state written without it (by an older version) does not cascade until ``rebuild``.

Token ids are the ledger's fingerprints; no raw token ever reaches this module. This is the only module that
imports the ``redis`` driver (the ``[redis]`` extra).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from lineage_ledger.core import lifecycle
from lineage_ledger.core.entry import read_event_entry
from lineage_ledger.core.lifecycle import NEVER_SEEN, LifecyclePolicy, TokenState
from lineage_ledger.core.model import TokenEvent, read_event
from lineage_ledger.errors import StoreError
from lineage_ledger.store.base import EntryRow, Store

if TYPE_CHECKING:
    import redis

__all__ = ["RedisTokenState"]

_SUBJECT_PREFIX: Final = "token:"
_REBUILD_CHUNK: Final = 5_000
_DELETE_CHUNK: Final = 500
_WATCH_ATTEMPTS: Final = 20
_GLOB_SPECIAL: Final = re.compile(r"([*?\[\]\\])")
_FIELDS: Final = ["state", "issued_ns", "expires_ns", "parent"]


class _Record(msgspec.Struct, frozen=True):
    """What ``recent`` keeps of one event: enough to see what happened to a token lately."""

    index: int
    event_type: str
    occurred_at: str
    verdict: str
    resource: str | None = None


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(_Record)


class RedisTokenState:
    """Token states, recent events and the revocation set, kept in Redis from the ledger's committed entries.

    Safe to share between threads (the driver pools connections). ``observe`` is idempotent: entries at or
    below ``applied_index()`` are ignored, so replaying old batches changes nothing. Every Redis failure is
    raised as StoreError.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "lineage:",
        last_events: int = 20,
        policy: LifecyclePolicy | None = None,
    ) -> None:
        if last_events < 1:
            raise ValueError("last_events must be at least 1")
        try:
            import redis
        except ModuleNotFoundError as e:
            raise StoreError("the Redis token state needs the redis driver: pip install 'lineage-ledger[redis]'") from e
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._watch_error: type[BaseException] = redis.WatchError
        self._redis: redis.Redis = redis.Redis.from_url(url)
        self.prefix = prefix
        self.last_events = last_events
        self.policy = policy or LifecyclePolicy()
        self._applied_key = prefix + "applied"
        self._revoked_key = prefix + "revoked"

    # -- keys -------------------------------------------------------------------------------------------

    def _token_key(self, token_id: str) -> str:
        return f"{self.prefix}token:{token_id}"

    def _events_key(self, token_id: str) -> str:
        return f"{self.prefix}events:{token_id}"

    # -- writes -----------------------------------------------------------------------------------------

    def observe(self, rows: Sequence[EntryRow]) -> None:
        """Apply committed entries (in log order, as ``Ledger.add_listener`` delivers them) in one transaction.

        Entries at or below ``applied_index()`` are skipped. StoreError, with nothing applied, if the entries
        do not continue the applied log (a gap: Redis lost state or missed a batch; use ``catch_up`` or
        ``rebuild``).
        """
        if not rows:
            return
        try:
            self._observe(rows)
        except self._errors as e:
            raise StoreError(f"Redis token state: {e}") from e

    def _observe(self, rows: Sequence[EntryRow]) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(_WATCH_ATTEMPTS):
                try:
                    # a concurrent writer moves the applied index, which makes this EXEC fail and retry
                    pipe.watch(self._applied_key)  # type: ignore[no-untyped-call]  # untyped in redis-py
                    applied = _to_int(pipe.get(self._applied_key), -1)
                    fresh = [r for r in rows if r.index > applied]
                    if not fresh:
                        pipe.unwatch()
                        return
                    if fresh[0].index != applied + 1:
                        pipe.unwatch()
                        raise StoreError(
                            f"Redis token state is at entry {applied} but was given entry {fresh[0].index}; "
                            "catch up or rebuild it from the ledger"
                        )
                    pipe.multi()
                    self._stage(pipe, fresh)
                    pipe.set(self._applied_key, fresh[-1].index)
                    pipe.execute()
                    return
                except self._watch_error:
                    continue
        raise StoreError(f"Redis token state: gave up after {_WATCH_ATTEMPTS} concurrent updates")

    def _stage(self, pipe: redis.client.Pipeline, rows: Sequence[EntryRow]) -> None:
        """Queue every update ``rows`` make on ``pipe`` (in MULTI mode)."""
        events: list[tuple[EntryRow, TokenEvent]] = []
        for row in rows:
            if not row.subject.startswith(_SUBJECT_PREFIX):
                continue
            entry = read_event_entry(row.body)
            if entry is None:
                continue
            event = read_event(bytes(entry.event))
            if isinstance(event, TokenEvent):
                events.append((row, event))
        if not events:
            return
        wanted: set[str] = set()
        for row, event in events:
            wanted.add(event.token_id)
            parent = event.payload.parent_token_id
            if parent is not None and event.event_type == "ROTATED" and row.verdict == "ok":
                wanted.add(parent)
        states = self._states(sorted(wanted))
        changed: set[str] = set()
        records: dict[str, list[bytes]] = {}
        revoked: dict[str, int] = {}
        policy = self.policy
        for row, event in events:
            tid = event.token_id
            current = states[tid]

            def own_state(t: str, tid: str = tid, current: TokenState = current) -> TokenState:
                return current if t == tid else NEVER_SEEN

            _, changes = lifecycle.apply(event, own_state, policy)
            new = changes.get(tid, current)
            if new != current:
                states[tid] = new
                changed.add(tid)
                if new.state == lifecycle.REVOKED:
                    revoked.setdefault(tid, row.index)
            parent = event.payload.parent_token_id
            if parent is not None and event.event_type == "ROTATED" and row.verdict == "ok":
                p = states[parent]
                states[parent] = p.becoming(lifecycle.ROTATED)
                changed.add(parent)
            record = _Record(row.index, event.event_type, event.occurred_at, row.verdict, event.payload.resource)
            records.setdefault(tid, []).append(_ENCODER.encode(record))
        for tid in sorted(changed):
            st = states[tid]
            pipe.hset(
                self._token_key(tid),
                mapping={
                    "state": st.state,
                    "issued_ns": st.issued_ns,
                    "expires_ns": st.expires_ns,
                    "parent": st.parent,
                },
            )
        for tid, encoded in records.items():
            key = self._events_key(tid)
            pipe.rpush(key, *encoded[-self.last_events :])
            pipe.ltrim(key, -self.last_events, -1)
        if revoked:
            pipe.zadd(self._revoked_key, revoked, nx=True)

    def _states(self, token_ids: Sequence[str]) -> dict[str, TokenState]:
        reader = self._redis.pipeline(transaction=False)
        for tid in token_ids:
            reader.hmget(self._token_key(tid), _FIELDS)
        return {tid: _state(fields) for tid, fields in zip(token_ids, reader.execute(), strict=True)}

    def catch_up(self, store: Store, chunk: int = _REBUILD_CHUNK) -> int:
        """Apply the store's entries after ``applied_index()``; rebuild instead if Redis is ahead of the store.

        Returns the number of entries read.
        """
        size = store.size()
        start = self.applied_index() + 1
        if start > size:
            return self.rebuild(store, chunk)
        return self._feed(store.entries(start, size), chunk)

    def rebuild(self, store: Store, chunk: int = _REBUILD_CHUNK) -> int:
        """Delete every key under this prefix, then derive the state again from every entry of ``store``.

        Returns the number of entries read. Other keys in the Redis database are left alone.
        """
        self.clear()
        return self._feed(store.entries(0, store.size()), chunk)

    def _feed(self, entries: Iterable[EntryRow], chunk: int) -> int:
        read = 0
        it = iter(entries)
        while batch := list(itertools.islice(it, chunk)):
            self.observe(batch)
            read += len(batch)
        return read

    def clear(self) -> None:
        """Delete every key under this prefix (SCAN and DEL, never FLUSHDB)."""
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self.prefix) + "*"
        try:
            doomed: list[bytes] = []
            for key in self._redis.scan_iter(match=pattern, count=1_000):
                doomed.append(key)
                if len(doomed) >= _DELETE_CHUNK:
                    self._redis.delete(*doomed)
                    doomed.clear()
            if doomed:
                self._redis.delete(*doomed)
        except self._errors as e:
            raise StoreError(f"Redis token state: {e}") from e

    # -- reads ------------------------------------------------------------------------------------------

    def applied_index(self) -> int:
        """Log index of the last entry applied, -1 if none."""
        try:
            return _to_int(self._redis.get(self._applied_key), -1)
        except self._errors as e:
            raise StoreError(f"Redis token state: {e}") from e

    def token_state(self, token_id: str) -> TokenState:
        """The token's lifecycle state as of ``applied_index()`` (NEVER_SEEN for a token never seen)."""
        tid = token_id.removeprefix(_SUBJECT_PREFIX)
        try:
            return _state(self._redis.hmget(self._token_key(tid), _FIELDS))
        except self._errors as e:
            raise StoreError(f"Redis token state: {e}") from e

    def is_active(self, token_id: str, now_ns: int) -> bool:
        """RFC 7662 "active" at ``now_ns``: issued or activated, and not revoked, rotated away or expired, nor
        derived from a revoked token when the lifecycle policy cascades revocations."""
        state, _ = lifecycle.effective_state(
            token_id.removeprefix(_SUBJECT_PREFIX), self.token_state, self.policy, now_ns
        )
        return state.active_at(now_ns)

    def is_revoked(self, token_id: str) -> bool:
        """True if the token is in the revocation set."""
        return self.revoked_at(token_id) is not None

    def revoked_at(self, token_id: str) -> int | None:
        """The log index of the token's REVOKED entry, or None if it was never revoked."""
        try:
            score = self._redis.zscore(self._revoked_key, token_id.removeprefix(_SUBJECT_PREFIX))
        except self._errors as e:
            raise StoreError(f"Redis token state: {e}") from e
        return None if score is None else int(score)

    def recent(self, token_id: str) -> list[dict[str, Any]]:
        """The token's last ``last_events`` events, oldest first: index, event_type, occurred_at, verdict and
        resource (None unless the event named one)."""
        try:
            raw = self._redis.lrange(self._events_key(token_id.removeprefix(_SUBJECT_PREFIX)), 0, -1)
        except self._errors as e:
            raise StoreError(f"Redis token state: {e}") from e
        return [msgspec.structs.asdict(_DECODER.decode(item)) for item in raw]

    def close(self) -> None:
        """Release the connections."""
        self._redis.close()


def _to_int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state(fields: Sequence[Any]) -> TokenState:
    state, issued, expires, parent = fields
    if state is None:
        return NEVER_SEEN
    return TokenState(_text(state), int(issued), int(expires), "" if parent is None else _text(parent))
