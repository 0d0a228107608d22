"""RedisTokenState against a real redis-server: it gives the ledger's answers for every token, survives a flush
by rebuilding from the ledger, ignores replays, and never holds a raw token.

One ledger is built per module from the seeded workload (several producers, rotations, refreshes, planted
violations) plus a few tokens whose raw values look like JWTs, with the Redis state attached as a listener
from the first entry on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from lineage_ledger.core import lifecycle
from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.entry import read_event_entry
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.lifecycle import TokenState
from lineage_ledger.core.model import TokenEvent, read_event
from lineage_ledger.errors import StoreError
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.state import EmbeddedIntrospector, RedisFollower, RedisTokenState, open_introspector
from lineage_ledger.store.base import EntryRow, Store
from lineage_ledger.workload import PRODUCERS, batches, generate
from tests.conftest import make_log_signer, token_event

S = 1_000_000_000
SECRET = b"redis-state-test-secret!"
LAST_EVENTS = 4
PREFIX = "lineage-test:"
START_NS = time.time_ns() - 7_200 * S
JWT_RAW = tuple(
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9."
    f"eyJzdWIiOiJ1c2VyLXtpfSIsImp0aSI6IjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw{i}"
    ".c2lnbmF0dXJlLW9mLWEtdGVzdC10b2tlbi10aGF0LWlzLW5vdC1yZWFsLXNvLWl0LW11c3Qtc3RheS1vdXQtb2YtcmVkaXM"
    for i in range(7)
)


@dataclass(frozen=True, slots=True)
class Built:
    """The ledger (open, with the Redis state attached), its Redis state, and the raw tokens behind it."""

    ledger: Ledger
    state: RedisTokenState
    url: str
    raw_tokens: tuple[str, ...]
    expiry_ns: int


def _jwt_events(start: int) -> tuple[list[bytes], int]:
    """Events on JWT-like raw tokens: issue with MFA and expiry, use, rotate, refresh, revoke, use after revoke."""
    fp = [token_fingerprint(SECRET, raw) for raw in JWT_RAW]
    expiry = start + 3_600 * S
    exp = format_reading(expiry, 0)
    out = []
    for i in range(3):
        t = start + i * S
        out.append(token_event("ISSUED", fp[i], t, user_id=f"user-{i}", expires_at=exp))
        out.append(token_event("ACTIVATED", fp[i], t + 10 * S, mfa_at=format_reading(t + 5 * S, 0)))
        out.append(token_event("USED", fp[i], t + 20 * S, resource="/v1/orders", outcome="ALLOW"))
    t = start + 100 * S
    out.append(token_event("ROTATED", fp[3], t, parent_token_id=fp[0], expires_at=exp))
    out.append(token_event("REFRESHED", fp[4], t + S, parent_token_id=fp[1]))
    out.append(token_event("REVOKED", fp[2], t + 2 * S, reason="logout"))
    out.append(token_event("USED", fp[2], t + 3 * S, resource="/v1/cart", outcome="ALLOW"))  # after revoke
    out.append(token_event("ROTATED", fp[5], t + 4 * S, parent_token_id=fp[0]))  # parent already rotated away
    out.append(token_event("USED", fp[0], t + 5 * S, resource="/v1/profile", outcome="ALLOW"))  # after rotation
    out.append(token_event("REVOKED", fp[3], t + 6 * S, reason="admin"))
    out.append(token_event("REVOKED", fp[3], t + 7 * S, reason="admin again"))
    # refused rotations (child exists; parent revoked) must leave their parents as they were
    out.append(token_event("ROTATED", fp[4], t + 8 * S, parent_token_id=fp[1]))
    out.append(token_event("ROTATED", fp[6], t + 9 * S, parent_token_id=fp[2]))
    return out, expiry


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[Built]:
    """The module's ledger, built with RedisTokenState attached from its first entry."""
    redis.Redis.from_url(redis_server).flushall()
    state = RedisTokenState(redis_server, prefix=PREFIX, last_events=LAST_EVENTS)
    path: Path = tmp_path_factory.mktemp("redis-state") / "ledger.db"
    ledger = Ledger.create(str(path), make_log_signer(), settings=LedgerSettings(block_size=400, block_seconds=1e9))
    ledger.add_listener(state.observe)
    signers = {p: Ed25519Signer.generate(p) for p in PRODUCERS}
    key_ids = {p: f"{p}-1" for p in PRODUCERS}
    for p, s in signers.items():
        ledger.register_key(p, key_ids[p], s.public_key)
    workload = generate(260, seed=11, start_ns=START_NS, secret=SECRET)
    for envelope in batches(workload, signers, key_ids, max_batch=150):
        ledger.append(envelope)
    jwt_events, expiry = _jwt_events(START_NS + 3_000 * S)
    for i in range(0, len(jwt_events), 5):
        ledger.append(
            seal_batch(
                jwt_events[i : i + 5],
                producer="auth-server",
                key_id=key_ids["auth-server"],
                signer=signers["auth-server"],
            )
        )
    ledger.seal()
    assert workload.violations_planted > 0
    raw = (*JWT_RAW, *(f"raw-token-11-{n}" for n in range(260)), *(f"raw-token-11-{n}-r" for n in range(260)))
    try:
        yield Built(ledger, state, redis_server, raw, expiry)
    finally:
        state.close()
        ledger.close()


def _token_subjects(store: Store) -> list[str]:
    return sorted({row.subject for row in store.subjects_with_prefix("token:")})


def _token_rows(rows: list[EntryRow]) -> list[tuple[TokenEvent, str, EntryRow]]:
    out = []
    for row in rows:
        entry = read_event_entry(row.body)
        assert entry is not None
        event = read_event(bytes(entry.event))
        assert isinstance(event, TokenEvent)
        out.append((event, row.verdict, row))
    return out


def _replayed(store: Store, subject: str) -> TokenState:
    history = sorted(store.subject_entries([subject]) + store.children_of(subject), key=lambda r: r.index)
    return lifecycle.replay(subject[6:], [(e, v) for e, v, _ in _token_rows(history)], lifecycle.LifecyclePolicy())


def _assert_same_answers(b: Built) -> None:
    store, state = b.ledger.store, b.state
    subjects = _token_subjects(store)
    assert len(subjects) > 300
    revoked = store.revoked(subjects)
    assert revoked, "the workload revokes tokens"
    instants = [START_NS - 3_600 * S, START_NS + 600 * S, b.expiry_ns - 1, b.expiry_ns, time.time_ns()]
    states: set[str] = set()
    for subject in subjects:
        tid = subject[6:]
        expected = b.ledger.token_state(tid)
        assert state.token_state(tid) == expected == _replayed(store, subject), subject
        states.add(expected.state)
        for now in instants:
            assert state.is_active(tid, now) == b.ledger.is_active(tid, now), (subject, now)
        assert state.is_revoked(tid) == (subject in revoked)
        assert state.revoked_at(tid) == revoked.get(subject)
        own = _token_rows(store.subject_entries([subject]))[-LAST_EVENTS:]
        assert state.recent(tid) == [
            {
                "index": row.index,
                "event_type": event.event_type,
                "occurred_at": event.occurred_at,
                "verdict": verdict,
                "resource": event.payload.resource,
            }
            for event, verdict, row in own
        ]
    assert states >= {"ACTIVE", "ROTATED", "EXPIRED", "REVOKED"}
    never = token_fingerprint(SECRET, "never-issued")
    assert state.token_state(never) == lifecycle.NEVER_SEEN
    assert not state.is_active(never, time.time_ns())
    assert state.recent(never) == []
    assert state.applied_index() == b.ledger.size - 1


def _snapshot(url: str) -> dict[bytes, Any]:
    client = redis.Redis.from_url(url)
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(count=1_000):
        kind = client.type(key)
        if kind == b"string":
            out[key] = client.get(key)
        elif kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            raise AssertionError(f"unexpected Redis type {kind!r} at {key!r}")
    client.close()
    return out


def test_redis_state_equals_the_ledger_for_every_token(built: Built) -> None:
    _assert_same_answers(built)


def test_flushall_then_rebuild_gives_the_same_answers(built: Built) -> None:
    before = _snapshot(built.url)
    redis.Redis.from_url(built.url).flushall()
    assert built.state.token_state(_token_subjects(built.ledger.store)[0]) == lifecycle.NEVER_SEEN
    assert built.state.rebuild(built.ledger.store, chunk=333) == built.ledger.size
    assert _snapshot(built.url) == before
    _assert_same_answers(built)


def test_reobserving_old_rows_changes_nothing(built: Built) -> None:
    before = _snapshot(built.url)
    store = built.ledger.store
    built.state.observe(list(store.entries(0, store.size())))
    built.state.observe(list(store.entries(100, 200)))
    built.state.observe([])
    assert _snapshot(built.url) == before


def test_no_raw_token_in_any_key_or_value(built: Built) -> None:
    snapshot = _snapshot(built.url)
    blob = b"\n".join([*snapshot, *(repr(v).encode() for v in snapshot.values())])
    assert len(snapshot) > 300
    for raw in built.raw_tokens:
        assert raw.encode() not in blob
    assert b"eyJ" not in blob
    assert token_fingerprint(SECRET, JWT_RAW[0]).encode() in blob


def test_rebuild_deletes_only_its_own_prefix(built: Built) -> None:
    client = redis.Redis.from_url(built.url)
    client.set("other-app:key", b"kept")
    client.set("lineage-test*x", b"kept too")  # glob characters in a neighbour's key are not our prefix
    try:
        built.state.rebuild(built.ledger.store)
        assert client.get("other-app:key") == b"kept"
        assert client.get("lineage-test*x") == b"kept too"
    finally:
        client.delete("other-app:key", "lineage-test*x")
        client.close()
    _assert_same_answers(built)


def test_a_gap_is_refused_and_catch_up_fills_it(built: Built) -> None:
    store = built.ledger.store
    fresh = RedisTokenState(built.url, prefix="lineage-gap:", last_events=LAST_EVENTS)
    try:
        with pytest.raises(StoreError, match="catch up or rebuild"):
            fresh.observe(list(store.entries(10, 20)))
        assert fresh.applied_index() == -1
        fresh.observe(list(store.entries(0, 50)))
        assert fresh.catch_up(store) == store.size() - 50
        for subject in _token_subjects(store)[:50]:
            assert fresh.token_state(subject) == built.ledger.token_state(subject)
    finally:
        fresh.clear()
        fresh.close()


def test_introspectors_agree(built: Built, tmp_path: Path) -> None:
    embedded = EmbeddedIntrospector(built.ledger)
    now = time.time_ns()
    for subject in _token_subjects(built.ledger.store):
        assert embedded.is_active(subject, now) == built.state.is_active(subject, now)
        assert embedded.token_state(subject) == built.state.token_state(subject)
    with Ledger.create(str(tmp_path / "l.db"), make_log_signer()) as ledger:
        assert isinstance(open_introspector(ledger), EmbeddedIntrospector)
        producer = Ed25519Signer.generate("auth-server")
        ledger.register_key("auth-server", "k1", producer.public_key)
        fp = token_fingerprint(SECRET, JWT_RAW[0])
        t = START_NS
        events = [token_event("ISSUED", fp, t), token_event("REVOKED", fp, t + S, reason="logout")]
        ledger.append(seal_batch(events[:1], producer="auth-server", key_id="k1", signer=producer))
        hot = open_introspector(ledger, built.url, prefix="lineage-open:")
        assert isinstance(hot, RedisFollower)
        try:
            assert hot.is_active(fp, t + S // 2)  # caught up with what the ledger held before it was attached
            ledger.append(seal_batch(events[1:], producer="auth-server", key_id="k1", signer=producer))
            assert not hot.is_active(fp, t + 2 * S)  # and follows every later commit
            assert hot.state.is_revoked(fp)
        finally:
            hot.state.clear()
            hot.close()


def test_a_redis_that_missed_commits_never_answers_stale(built: Built, tmp_path: Path) -> None:
    import redis

    with Ledger.create(str(tmp_path / "follow.db"), make_log_signer()) as ledger:
        producer = Ed25519Signer.generate("auth-server")
        ledger.register_key("auth-server", "k1", producer.public_key)
        fp = token_fingerprint(SECRET, JWT_RAW[1])
        t = START_NS
        issued, revoked = token_event("ISSUED", fp, t), token_event("REVOKED", fp, t + S, reason="stolen")
        hot = open_introspector(ledger, built.url, prefix="lineage-follow:")
        assert isinstance(hot, RedisFollower)
        admin = redis.Redis.from_url(built.url)
        try:
            ledger.append(seal_batch([issued], producer="auth-server", key_id="k1", signer=producer))
            assert hot.is_active(fp, t + S // 2)
            # Redis starts refusing the follower (a password set by an operator, its connections dropped) ...
            admin.config_set("requirepass", "rotated-password")
            admin.client_kill_filter(_type="normal", skipme=True)
            # ... so the revocation is committed in the ledger but cannot reach Redis
            ledger.append(seal_batch([revoked], producer="auth-server", key_id="k1", signer=producer))
            assert hot.behind
            with pytest.raises(StoreError, match="behind the ledger"):
                hot.is_active(fp, t + 2 * S)  # not "active": the ledger says revoked
            admin.config_set("requirepass", "")
            assert not hot.is_active(fp, t + 2 * S)  # caught up from the ledger, then answered
            assert not hot.behind
            assert hot.state.applied_index() == ledger.size - 1
        finally:
            admin.config_set("requirepass", "")
            hot.state.clear()
            hot.close()
            admin.close()


def test_redis_introspection_follows_the_revocation_cascade(built: Built, tmp_path: Path) -> None:
    """A token refreshed from a revoked token is inactive in Redis too, and Redis keeps the parent link."""
    with Ledger.create(str(tmp_path / "cascade.db"), make_log_signer()) as ledger:
        producer = Ed25519Signer.generate("auth-server")
        ledger.register_key("auth-server", "k1", producer.public_key)
        parent, child, grandchild = (token_fingerprint(SECRET, f"cascade-{n}") for n in range(3))
        t = START_NS
        hot = open_introspector(ledger, built.url, prefix="lineage-cascade:")
        assert isinstance(hot, RedisFollower)
        try:
            events = [
                token_event("ISSUED", parent, t),
                token_event("REFRESHED", child, t + S, parent_token_id=parent),
                token_event("ROTATED", grandchild, t + 2 * S, parent_token_id=child),
            ]
            ledger.append(seal_batch(events, producer="auth-server", key_id="k1", signer=producer))
            assert hot.is_active(grandchild, t + 3 * S)
            assert hot.token_state(grandchild).parent == child
            revoke = token_event("REVOKED", parent, t + 4 * S)
            ledger.append(seal_batch([revoke], producer="auth-server", key_id="k1", signer=producer))
            assert not hot.is_active(child, t + 5 * S)
            assert not hot.is_active(grandchild, t + 5 * S)
            assert not hot.state.is_active(grandchild, t + 5 * S)
            assert not ledger.is_active(grandchild, t + 5 * S)
        finally:
            hot.state.clear()
            hot.close()
