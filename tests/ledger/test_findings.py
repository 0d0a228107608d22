"""Findings rules (ledger.findings): each fires on a crafted history and stays silent on a clean one;
incremental observation equals a full scan; the sinks deliver (the webhook to a real HTTP server).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lineage_ledger.core import lifecycle
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.entry import event_entry_bytes
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.errors import InputError, TransportError
from lineage_ledger.ledger.findings import (
    ALL_RULES,
    RULES,
    Finding,
    FindingsEngine,
    JsonLinesSink,
    LogSink,
    RuleSet,
    scan,
)
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store.base import EntryRow
from lineage_ledger.webhook import WebhookSink
from lineage_ledger.workload import PRODUCERS, batches, generate
from tests.conftest import token_event, token_id
from tests.ledger.test_lineage import T0, Book, S, at, hlc

MINUTE = 60 * S


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    b = Book(tmp_path / "findings.db")
    yield b
    b.close()


def tokens(*names: str) -> list[str]:
    return [token_id(f"findings-{name}") for name in names]


def findings(book: Book, rules: RuleSet | None = None, **kwargs: Any) -> list[Finding]:
    return list(scan(book.ledger.store, rules, **kwargs))


def of(found: list[Finding], rule: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(f.subject, f.indices) for f in found if f.rule == rule]


def clean_history(book: Book) -> None:
    """A lifecycle that breaks no rule: issue, use, refresh, use, revoke, expire, a data step."""
    t, child = tokens("clean", "clean-child")
    book.token("ISSUED", t, 0, ip="10.1.2.3", user_id="alice")
    book.token("USED", t, 5, resource="/a", outcome="ALLOW", ip="10.1.2.3", producer="svc-b")
    book.token("REFRESHED", child, 10, parent_token_id=t)
    book.token("USED", child, 15, resource="/b", outcome="ALLOW", ip="10.1.77.8", producer="svc-b")
    book.token("REVOKED", child, 20)
    book.token("EXPIRED", t, 25)
    book.data("CREATED", "wh.table", 26, output_hash="sha256:" + "ab" * 32)


def test_rule_tables() -> None:
    assert set(ALL_RULES) == set(lifecycle.RULES) | set(RULES)
    assert not set(RULES) & set(lifecycle.RULES)
    with pytest.raises(InputError):
        RuleSet(refresh_storm_count=1)
    with pytest.raises(InputError):
        RuleSet(severity={"time.skew": "urgent"})  # type: ignore[dict-item]
    assert RuleSet(severity={"time.skew": "high"}).severity_of("time.skew") == "high"
    assert RuleSet().severity_of("token.some_future_rule") == "medium"


def test_a_clean_history_raises_nothing(book: Book) -> None:
    clean_history(book)
    rules = RuleSet(
        refresh_storm_count=2,
        refresh_storm_window_ns=5 * S,  # the one refresh is no storm
        heartbeat_gap_ns={"svc-a": MINUTE, "svc-b": MINUTE},
        known_producers=frozenset({"svc-a", "svc-b"}),
    )
    assert findings(book, rules) == []
    assert findings(book) == []  # default thresholds, keyring-based known producers


# -- lifecycle verdicts -----------------------------------------------------------------------------------


def test_lifecycle_verdicts_become_findings_with_the_related_entry(book: Book) -> None:
    ghost, twice, revoked, expired, parent, c1, c2 = tokens("ghost", "twice", "rev", "exp", "par", "c1", "c2")
    use_without_issue = book.token("USED", ghost, 0, resource="/x", outcome="ALLOW")
    first_issue = book.token("ISSUED", twice, 1)
    reissue = book.token("ISSUED", twice, 2)
    book.token("ISSUED", revoked, 3)
    revocation = book.token("REVOKED", revoked, 4)
    after_revoke = book.token("USED", revoked, 5, resource="/y", outcome="ALLOW")
    book.token("ISSUED", expired, 6)
    expiry = book.token("EXPIRED", expired, 7)
    after_expiry = book.token("USED", expired, 8)
    book.token("ISSUED", parent, 9)
    rotation = book.token("ROTATED", c1, 10, parent_token_id=parent)
    refresh_after_rotation = book.token("REFRESHED", c2, 11, parent_token_id=parent)

    found = findings(book)
    verdicts = [f for f in found if f.rule in lifecycle.RULES]
    assert [(f.rule, f.subject, f.indices) for f in verdicts] == [
        ("token.use_without_issue", "token:" + ghost, (use_without_issue,)),
        ("token.reissued", "token:" + twice, (first_issue, reissue)),
        ("token.use_after_revoke", "token:" + revoked, (revocation, after_revoke)),
        ("token.use_after_expiry", "token:" + expired, (expiry, after_expiry)),
        ("token.refresh_after_rotation", "token:" + c2, (rotation, refresh_after_rotation)),
    ]
    assert [f.severity for f in verdicts] == ["high", "high", "critical", "high", "critical"]
    # the findings are the recorded verdicts, entry for entry
    rows = book.ledger.store.entries(0, book.ledger.size)
    assert {(r.verdict, r.index) for r in rows if r.verdict != "ok"} == {(f.rule, f.indices[-1]) for f in verdicts}
    # detected when the offending entry was recorded
    entry = json.loads(book.ledger.store.entry(after_revoke).body)
    assert next(f for f in verdicts if f.rule == "token.use_after_revoke").detected_at == entry["recorded_at"]


# -- two children of one refresh ----------------------------------------------------------------------------


def test_two_children_of_one_parent_are_a_replay(book: Book) -> None:
    parent, c1, c2 = tokens("replay-parent", "replay-c1", "replay-c2")
    book.token("ISSUED", parent, 0)
    first = book.token("REFRESHED", c1, 100, parent_token_id=parent)
    second = book.token("REFRESHED", c2, 130, parent_token_id=parent)
    found = findings(book, RuleSet(refresh_replay_window_ns=MINUTE))
    assert of(found, "token.refresh_replay") == [("token:" + parent, (first, second))]
    assert next(f.severity for f in found if f.rule == "token.refresh_replay") == "critical"
    # the state machine saw nothing wrong: both refreshes were accepted
    assert {book.ledger.store.entry(i).verdict for i in (first, second)} == {"ok"}


def test_a_refresh_chain_and_distant_refreshes_are_no_replay(book: Book) -> None:
    a, a1, a2, b, b1, b2 = tokens("chain", "chain-1", "chain-2", "far", "far-1", "far-2")
    book.token("ISSUED", a, 0)
    book.token("REFRESHED", a1, 100, parent_token_id=a)
    book.token("REFRESHED", a2, 110, parent_token_id=a1)
    book.token("ISSUED", b, 1)
    book.token("REFRESHED", b1, 200, parent_token_id=b)
    book.token("REFRESHED", b2, 261, parent_token_id=b)  # one second outside the window
    assert of(findings(book, RuleSet(refresh_replay_window_ns=MINUTE)), "token.refresh_replay") == []


# -- time -------------------------------------------------------------------------------------------------


def test_skew_lateness_and_going_backwards(book: Book) -> None:
    ahead, late, legacy, back = tokens("ahead", "late", "legacy", "back")
    rules = RuleSet(skew_tolerance_ns=MINUTE, max_delay_ns=3600 * S)
    # the producer's clock runs 10 minutes ahead: more than the ledger merges, so recorded_at stays behind
    early = book.token("ISSUED", ahead, 600, recorded=0)
    slow = book.token("ISSUED", late, 700, recorded=700 + 7200)  # delivered two hours late
    book.token("ORIGIN", legacy, 0, recorded=8000)  # backfilled: late by nature, exempt
    first = book.token("ISSUED", back, 9000, recorded=9000)
    backwards = book.token("USED", back, 8800, recorded=9001)  # 200 s before the token's ISSUED
    book.token("USED", back, 8990, recorded=9002)  # 10 s back: within the tolerance
    found = findings(book, rules)
    assert of(found, "time.skew") == [("token:" + ahead, (early,)), ("token:" + late, (slow,))]
    assert of(found, "time.out_of_order") == [("token:" + back, (first, backwards))]
    assert "ahead" in next(f.message for f in found if f.indices == (early,))


def test_times_within_tolerance_raise_nothing(book: Book) -> None:
    t = tokens("on-time")[0]
    book.token("ISSUED", t, 100, recorded=70)  # 30 s ahead: within 60 s
    book.token("USED", t, 200, recorded=3000)  # 47 minutes late: within an hour
    book.token("USED", t, 170, recorded=3001)  # 30 s backwards: within 60 s
    rules = RuleSet(skew_tolerance_ns=MINUTE, max_delay_ns=3600 * S)
    assert [f for f in findings(book, rules) if f.rule.startswith("time.")] == []


# -- producers --------------------------------------------------------------------------------------------


def test_unknown_producer_against_a_configured_set(book: Book) -> None:
    t = tokens("producers")[0]
    book.token("ISSUED", t, 0, producer="svc-a")
    used = book.token("USED", t, 1, producer="svc-b")
    found = findings(book, RuleSet(known_producers=frozenset({"svc-a"})))
    assert of(found, "producer.unknown") == [("token:" + t, (used,))]


def _legacy_row(index: int, producer: str, key_id: str, token: str) -> EntryRow:
    """An entry as an importer of legacy data might have written it (the writer itself would refuse)."""
    event = token_event("ORIGIN", token, at(50))
    body = event_entry_bytes(
        index=index,
        recorded_at=hlc(60),
        prev=bytes(32),
        producer=producer,
        key_id=key_id,
        envelope=hashlib.sha256(b"legacy").digest(),
        position=0,
        verdict="ok",
        event=event,
    )
    return EntryRow(index, "token:" + token, None, None, bytes(32), leaf_hash(body), "ok", body)


def test_unknown_producer_against_the_keyring_in_the_log(book: Book) -> None:
    t, legacy, borrowed = tokens("keyring", "legacy-import", "borrowed-key")
    book.token("ISSUED", t, 0, producer="svc-a")
    book.token("USED", t, 1, producer="svc-b")
    rows = list(book.ledger.store.entries(0, book.ledger.size))
    engine = FindingsEngine()
    assert [f for row in rows for f in engine.observe(row)] == []
    size = book.ledger.size
    unknown = engine.observe(_legacy_row(size, "legacy-importer", "legacy-1", legacy))
    assert [(f.rule, f.indices) for f in unknown] == [("producer.unknown", (size,))]
    stolen = engine.observe(_legacy_row(size + 1, "svc-b", "svc-a-1", borrowed))  # another producer's key
    assert [(f.rule, f.indices) for f in stolen] == [("producer.unknown", (size + 1,))]

    # a tail that starts after the key entries knows the keys only when it is handed the keyring
    events_only = rows[len(book.key_indices) :]
    blind = FindingsEngine()
    assert {f.rule for row in events_only for f in blind.observe(row)} == {"producer.unknown"}
    seeded = FindingsEngine(keys=book.ledger.keyring.producer_keys())
    assert [f for row in events_only for f in seeded.observe(row)] == []


def test_heartbeat_gaps_on_observe_and_at_the_end(book: Book) -> None:
    t, u = tokens("hb-a", "hb-b")
    rules = RuleSet(heartbeat_gap_ns={"svc-b": MINUTE, "svc-quiet": MINUTE})
    b0 = book.token("ISSUED", u, 0, producer="svc-b")
    book.token("ISSUED", t, 30, producer="svc-a")
    noticed = book.token("USED", t, 90, producer="svc-a")  # svc-b silent for 90 s: a gap
    b1 = book.token("USED", u, 100, producer="svc-b")  # back: the same gap is not reported twice
    book.token("USED", t, 150, producer="svc-a")  # svc-b silent for 50 s: no gap

    engine = FindingsEngine(rules)
    found = list(engine.scan(book.ledger.store))
    gaps = [f for f in found if f.rule == "producer.heartbeat_gap"]
    assert [(f.subject, f.indices) for f in gaps] == [
        ("producer:svc-b", (b0,)),
        ("producer:svc-quiet", ()),  # expected from the start, never heard from
    ]
    recorded = json.loads(book.ledger.store.entry(noticed).body)["recorded_at"]
    assert gaps[0].detected_at == recorded
    assert engine.finish() == []  # the log's own last entry closes no new gap
    late = engine.finish(at(300))
    assert [(f.subject, f.indices, f.detected_at) for f in late] == [("producer:svc-b", (b1,), hlc(300))]
    assert engine.finish(at(400)) == []  # reported once per silence


def test_regular_heartbeats_raise_nothing(book: Book) -> None:
    t = tokens("hb-regular")[0]
    book.token("ISSUED", t, 0, producer="svc-b")
    for k in range(1, 6):
        book.token("USED", t, 30 * k, producer="svc-b")
    rules = RuleSet(default_heartbeat_gap_ns=MINUTE)
    assert findings(book, rules, now=at(170)) == []
    assert [f.subject for f in findings(book, rules, now=at(211))] == ["producer:svc-b"]


# -- refresh storms and IP jumps --------------------------------------------------------------------------


def test_refresh_storm_in_one_family(book: Book) -> None:
    p, c1, c2, c3, c4 = tokens("storm", "storm-1", "storm-2", "storm-3", "storm-4")
    rules = RuleSet(refresh_storm_count=3, refresh_storm_window_ns=MINUTE)
    book.token("ISSUED", p, 0)
    r1 = book.token("REFRESHED", c1, 10, parent_token_id=p)
    r2 = book.token("ROTATED", c2, 20, parent_token_id=c1)
    r3 = book.token("REFRESHED", c3, 30, parent_token_id=c2)
    book.token("REFRESHED", c4, 40, parent_token_id=c3)  # a new count starts after a storm
    assert of(findings(book, rules), "token.refresh_storm") == [("token:" + p, (r1, r2, r3))]


def test_spaced_refreshes_are_no_storm(book: Book) -> None:
    p, c1, c2, c3 = tokens("calm", "calm-1", "calm-2", "calm-3")
    book.token("ISSUED", p, 0)
    book.token("REFRESHED", c1, 40, parent_token_id=p)
    book.token("REFRESHED", c2, 80, parent_token_id=c1)
    book.token("REFRESHED", c3, 120, parent_token_id=c2)
    rules = RuleSet(refresh_storm_count=3, refresh_storm_window_ns=MINUTE)
    assert of(findings(book, rules), "token.refresh_storm") == []


def test_ip_jumps_within_a_session_follow_the_family(book: Book) -> None:
    t, child = tokens("ip", "ip-child")
    rules = RuleSet(ip_jump_window_ns=600 * S)
    book.token("ISSUED", t, 0, ip="10.1.2.3")
    same_net = book.token("USED", t, 10, ip="10.1.200.7")  # same /16
    jump = book.token("USED", t, 20, ip="203.0.113.66")
    book.token("REFRESHED", child, 30, parent_token_id=t)
    back = book.token("USED", child, 40, ip="10.1.5.5")  # the child is the same session
    found = findings(book, rules)
    assert of(found, "session.ip_jump") == [("token:" + t, (same_net, jump)), ("token:" + child, (jump, back))]


def test_ip_changes_outside_the_window_or_prefix_raise_nothing(book: Book) -> None:
    t, v6, odd = tokens("ip-slow", "ip-v6", "ip-odd")
    book.token("ISSUED", t, 0, ip="10.2.0.1")
    book.token("USED", t, 700, ip="198.51.100.1")  # after the session window
    book.token("ISSUED", v6, 0, ip="2001:db8:1::1")
    book.token("USED", v6, 1, ip="2001:db8:1:ff::2")  # same /48
    book.token("ISSUED", odd, 0, ip="10.3.0.1")
    book.token("USED", odd, 1, ip="not-an-address")
    book.token("USED", odd, 2, ip="2001:db8:9::1")  # another family of address: not compared
    assert of(findings(book, RuleSet(ip_jump_window_ns=600 * S)), "session.ip_jump") == []


def test_disabled_rules_and_severity_overrides(book: Book) -> None:
    ghost = tokens("disabled")[0]
    book.token("USED", ghost, 0, ip="10.0.0.1")
    assert [f.rule for f in findings(book)] == ["token.use_without_issue"]
    assert findings(book, RuleSet(disabled=frozenset({"token.use_without_issue"}))) == []
    assert [f.severity for f in findings(book, RuleSet(severity={"token.use_without_issue": "low"}))] == ["low"]


# -- incremental == full scan, on the realistic workload ----------------------------------------------------


class TickingClock:
    def __init__(self, start: int, step: int) -> None:
        self.now, self.step = start, step

    def __call__(self) -> int:
        self.now += self.step
        return self.now


@pytest.fixture(scope="module")
def workload_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ledger, int]]:
    """The seeded workload (planted violations included), ingested in signed batches."""
    path = tmp_path_factory.mktemp("workload") / "workload.db"
    log = Ed25519Signer("workload.test/log", bytes(32))
    clock = TickingClock(T0 + 3 * 3600 * S, 50_000_000)  # 50 ms per reading: the ledger's time moves
    ledger = Ledger.create(str(path), log, settings=LedgerSettings(block_size=500, block_seconds=1e9), clock=clock)
    signers = {p: Ed25519Signer(p, hashlib.sha256(p.encode()).digest()) for p in PRODUCERS}
    for p, s in signers.items():
        ledger.register_key(p, f"{p}-1", s.public_key)
    work = generate(220, start_ns=T0)
    for envelope in batches(work, signers, {p: f"{p}-1" for p in PRODUCERS}, max_batch=150):
        ledger.append(envelope)
    ledger.seal()
    yield ledger, work.violations_planted
    ledger.close()


WORKLOAD_RULES = RuleSet(
    max_delay_ns=2 * 3600 * S,  # the ledger starts recording three hours after the first event
    default_heartbeat_gap_ns=4 * S,
    refresh_storm_count=2,
    refresh_storm_window_ns=3600 * S,
    ip_jump_window_ns=3600 * S,
)


def test_incremental_observation_equals_a_full_scan(workload_ledger: tuple[Ledger, int]) -> None:
    ledger, planted = workload_ledger
    store = ledger.store
    full = list(scan(store, WORKLOAD_RULES))

    engine = FindingsEngine(WORKLOAD_RULES)
    incremental = [f for row in store.entries(0, store.size()) for f in engine.observe(row)]
    incremental += engine.finish()
    assert incremental == full
    assert list(FindingsEngine(WORKLOAD_RULES).scan(store, chunk=97)) == full

    # a tail that catches up twice, with an overlap replayed, sees the same
    tail = FindingsEngine(WORKLOAD_RULES)
    half = store.size() // 2
    caught = [f for row in store.entries(0, half) for f in tail.observe(row)]
    caught += [f for row in store.entries(half - 10, half) for f in tail.observe(row)]  # already seen
    caught += list(tail.scan(store))
    assert caught == full

    # the planted violations are there, and every recorded verdict is a finding
    rules = {f.rule for f in full}
    assert {"token.use_after_revoke", "token.reissued", "session.ip_jump", "time.skew"} <= rules
    verdict_rows = [r for r in store.entries(0, store.size()) if r.verdict != "ok"]
    assert len(verdict_rows) == planted
    assert sorted((f.rule, f.indices[-1]) for f in full if f.rule in lifecycle.RULES) == sorted(
        (r.verdict, r.index) for r in verdict_rows
    )


def test_state_is_bounded(workload_ledger: tuple[Ledger, int]) -> None:
    ledger, _ = workload_ledger
    engine = FindingsEngine(RuleSet(cache_size=8))
    list(engine.scan(ledger.store))
    sizes = engine.tracked()
    assert sizes["subjects"] <= 8
    assert sizes["sessions"] <= 8
    assert sizes["producers"] == len(PRODUCERS)


# -- sinks ------------------------------------------------------------------------------------------------


def sample_findings() -> list[Finding]:
    return [
        Finding("token.use_after_revoke", "critical", "token:" + "a" * 64, (3, 7), "USED after REVOKED", hlc(1)),
        Finding("time.skew", "low", "token:" + "b" * 64, (8,), 'clock "ahead" ü', hlc(2)),
        Finding("producer.heartbeat_gap", "medium", "producer:svc-b", (), "silent", hlc(3)),
        Finding("session.ip_jump", "high", "token:" + "c" * 64, (9, 12), "jump", hlc(4)),
        Finding("token.refresh_replay", "critical", "token:" + "d" * 64, (13, 14), "replay", hlc(5)),
    ]


def test_json_lines_sink_writes_canonical_lines(tmp_path: Path) -> None:
    sample = sample_findings()
    path = tmp_path / "siem" / "findings.jsonl"
    path.parent.mkdir()
    with JsonLinesSink(path) as sink:
        sink.emit(sample[:2])
        sink.emit(sample[2:])
    lines = path.read_bytes().splitlines()
    assert lines == [canonical_bytes(f.to_json()) for f in sample]
    first = json.loads(lines[0])
    assert list(first) == sorted(first)
    assert first == {
        "detected_at": hlc(1),
        "indices": [3, 7],
        "message": "USED after REVOKED",
        "rule": "token.use_after_revoke",
        "severity": "critical",
        "subject": "token:" + "a" * 64,
    }
    with JsonLinesSink(str(path)) as again:  # appends
        again.emit(sample[:1])
    assert len(path.read_bytes().splitlines()) == len(sample) + 1

    binary, text = io.BytesIO(), io.StringIO()
    JsonLinesSink(binary).emit(sample)
    JsonLinesSink(text).emit(sample)
    assert binary.getvalue() == text.getvalue().encode() == b"".join(line + b"\n" for line in lines)


def test_log_sink_levels_follow_severity(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("lineage_ledger.findings.test")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        LogSink(logger).emit(sample_findings())
    assert [r.levelno for r in caplog.records] == [
        logging.CRITICAL,
        logging.INFO,
        logging.WARNING,
        logging.ERROR,
        logging.CRITICAL,
    ]
    assert "token.use_after_revoke" in caplog.records[0].getMessage()
    assert caplog.records[1].finding == sample_findings()[1].to_json()  # type: ignore[attr-defined]


class Receiver(BaseHTTPRequestHandler):
    """Records every POST; answers with the server's ``status``."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        server: Any = self.server
        server.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_receiver(status: int) -> Iterator[Any]:
    """A loopback HTTP server recording what is POSTed to it (``.received``) and answering ``status``."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.received = []
    server.status = status
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def receiver() -> Iterator[Any]:
    with serve_receiver(202) as server:
        yield server


def _url(server: Any, path: str = "/hooks/findings") -> str:
    host, port = server.server_address
    return f"http://{host}:{port}{path}"


def test_webhook_sink_posts_json_batches(receiver: Any) -> None:
    sample = sample_findings()
    with WebhookSink(_url(receiver), batch_size=2, headers={"x-siem": "lineage"}) as sink:
        sink.emit(sample)
    assert [(path, ctype) for path, ctype, _ in receiver.received] == [("/hooks/findings", "application/json")] * 3
    bodies = [body for _, _, body in receiver.received]
    assert bodies == [canonical_bytes({"findings": [f.to_json() for f in sample[i : i + 2]]}) for i in (0, 2, 4)]


def test_webhook_sink_failures_are_transport_errors(receiver: Any) -> None:
    receiver.status = 500
    with WebhookSink(_url(receiver, "/x?token=secret"), timeout=5) as sink, pytest.raises(TransportError) as err:
        sink.emit(sample_findings()[:1])
    assert "500" in str(err.value)
    assert "secret" not in str(err.value)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with WebhookSink(f"http://127.0.0.1:{closed_port}/", timeout=2) as sink, pytest.raises(TransportError):
        sink.emit(sample_findings()[:1])


def test_engine_delivers_to_every_sink_per_chunk(book: Book, receiver: Any, tmp_path: Path) -> None:
    ghosts = tokens("sink-1", "sink-2", "sink-3")
    for k, ghost in enumerate(ghosts):
        book.token("USED", ghost, k)
    jsonl = tmp_path / "out.jsonl"
    with JsonLinesSink(jsonl) as lines, WebhookSink(_url(receiver)) as hook:
        found = list(FindingsEngine(sinks=[lines, hook]).scan(book.ledger.store, chunk=1000))
    assert [f.rule for f in found] == ["token.use_without_issue"] * 3
    assert jsonl.read_bytes() == b"".join(canonical_bytes(f.to_json()) + b"\n" for f in found)
    assert len(receiver.received) == 1  # one chunk, one POST
    assert json.loads(receiver.received[0][2]) == {"findings": [f.to_json() for f in found]}


def test_rules_run_as_the_ledger_commits(tmp_path: Path) -> None:
    """A FindingsEngine attached with Ledger.add_listener sees every committed entry, seals included, in order,
    and finds exactly what a later full scan of the same ledger finds."""
    log = Ed25519Signer("workload.test/log", bytes(32))
    clock = TickingClock(T0 + 3 * 3600 * S, 50_000_000)
    ledger = Ledger.create(
        str(tmp_path / "live.db"), log, settings=LedgerSettings(block_size=500, block_seconds=1e9), clock=clock
    )
    live = FindingsEngine(WORKLOAD_RULES)
    seen: list[int] = []
    found: list[Any] = []

    def listener(rows: list[EntryRow]) -> None:
        seen.extend(r.index for r in rows)
        found.extend(live.observe_rows(rows))

    ledger.add_listener(listener)
    signers = {p: Ed25519Signer(p, hashlib.sha256(p.encode()).digest()) for p in PRODUCERS}
    for p, s in signers.items():
        ledger.register_key(p, f"{p}-1", s.public_key)
    for envelope in batches(generate(220, start_ns=T0), signers, {p: f"{p}-1" for p in PRODUCERS}, max_batch=150):
        ledger.append(envelope)
    ledger.seal()
    found += live.finish()
    assert seen == list(range(ledger.size))
    assert found == list(scan(ledger.store, WORKLOAD_RULES))
    assert any(f.rule == "token.use_after_revoke" for f in found)
    ledger.close()


def test_a_use_after_an_ancestors_revocation_is_a_finding(book: Book) -> None:
    """RFC 7009 section 2.1: revoking a refresh token ends the tokens issued from it, so a descendant used
    afterwards (its own verdict is "ok": the cascade is read-time) is flagged, citing the revocation."""
    root, child, grandchild, other = tokens("anc-root", "anc-child", "anc-grandchild", "anc-other")
    book.token("ISSUED", root, 0)
    book.token("REFRESHED", child, 1, parent_token_id=root)
    book.token("ROTATED", grandchild, 2, parent_token_id=child)
    book.token("USED", grandchild, 3, resource="/before", outcome="ALLOW")  # before the revocation: fine
    book.token("ISSUED", other, 3)
    revocation = book.token("REVOKED", root, 4)
    use = book.token("USED", grandchild, 5, resource="/after", outcome="ALLOW")
    exchange = book.token("ISSUED", tokens("anc-exchanged")[0], 6, parent_token_id=grandchild)
    book.token("USED", other, 7, resource="/unrelated", outcome="ALLOW")
    found = of(findings(book), "token.use_after_ancestor_revoke")
    assert found == [
        ("token:" + grandchild, (revocation, use)),
        ("token:" + tokens("anc-exchanged")[0], (revocation, exchange)),
    ]
    assert RuleSet().severity_of("token.use_after_ancestor_revoke") == "critical"
