"""ShardedHttpTransport: a sharded ledger served by one ``lineage serve`` per shard, and the emitter routing to
them. The end-to-end test runs real server processes on loopback; the error-mapping tests answer for the
shards with httpx.MockTransport (the contract of POST /v1/batches, as in test_transport.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from lineage_ledger.cli.main import API_KEY_ENV_VAR, TOKEN_SECRET_ENV_VAR, main
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.model import read_subject
from lineage_ledger.core.routing import shard_of
from lineage_ledger.emitter import Backoff, Emitter, ShardedHttpTransport
from lineage_ledger.emitter.spool import MemorySpool
from lineage_ledger.errors import ConflictError, InputError, PushbackError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, write_signer_key
from lineage_ledger.ledger.shards import shard_url
from lineage_ledger.service.auth import ApiKeyStore
from lineage_ledger.store import open_store
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_event, token_events, token_id
from tests.service.serving import free_port, wait_healthy

SHARDS = 2
PARTITIONS = 4


def _home(event: bytes) -> int:
    return shard_of(read_subject(event)[0], PARTITIONS, SHARDS)


@dataclass
class ShardServers:
    """A sharded ledger and one ``lineage serve --shard n`` process per shard, on loopback."""

    root: Path
    key: str
    logs: Path
    env: dict[str, str]
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def start(self, n: int) -> None:
        """Start shard n's server (again, on its port) and wait until it answers /healthz."""
        command = [str(Path(sys.executable).parent / "lineage"), "serve", "--ledger", str(self.root)]
        command += ["--shard", str(n), "--port", str(self.ports[n]), "--block-seconds", "0.5"]
        log = self.logs / f"serve-{n}.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=self.env)
        if n < len(self.processes):
            self.processes[n] = process
        else:
            self.processes.append(process)
        wait_healthy(self.urls[n], process, log)

    def kill(self, n: int) -> None:
        """SIGKILL shard n's server: no shutdown, whatever it was doing."""
        self.processes[n].kill()
        self.processes[n].wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def sharded_servers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[ShardServers]:
    """A sharded ledger made with the CLI (2 shards, 4 partitions), the producer's key registered in every
    shard, one producer API key (one key file serves every shard), and a ``lineage serve --shard n`` each."""
    root = tmp_path / "ledger.db"
    assert main(["init", "--ledger", str(root), "--shards", str(SHARDS), "--partitions", str(PARTITIONS)]) == 0
    public = make_producer_signer().public_key.hex()
    register = ["keys", "register", "--ledger", str(root), "--producer", PRODUCER, "--key-id", PRODUCER_KEY_ID]
    assert main([*register, "--public-key", public]) == 0
    capsys.readouterr()
    env = {k: v for k, v in os.environ.items() if k not in (DEFAULT_KEY_ENV_VAR, TOKEN_SECRET_ENV_VAR)}
    key = ApiKeyStore(Path(f"{root}.apikeys.json")).create("producer", PRODUCER)[1]
    servers = ShardServers(root, key, tmp_path, env, [free_port() for _ in range(SHARDS)])
    try:
        for n in range(SHARDS):
            servers.start(n)
        yield servers
    finally:
        servers.stop()


def _shard_events(root: Path, n: int) -> list[tuple[str, str]]:
    """(event id, subject) of every event entry of shard n, in log order."""
    store = open_store(shard_url(str(root), n), readonly=True)
    try:
        return [(row.event_id, row.subject) for row in store.entries(0, store.size()) if row.event_id is not None]
    finally:
        store.close()


def test_the_emitter_delivers_each_event_to_its_shard_over_http(
    sharded_servers: ShardServers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, urls, key = sharded_servers.root, sharded_servers.urls, sharded_servers.key
    events = token_events(600, tokens=40, label="sharded")
    expected = {n: {json.loads(e)["event_id"] for e in events if _home(e) == n} for n in range(SHARDS)}
    assert all(expected.values()), "the 40 tokens should land in both shards"
    transport = ShardedHttpTransport(urls, PARTITIONS, key)
    emitter = Emitter(PRODUCER, PRODUCER_KEY_ID, make_producer_signer(), transport, spool_dir=tmp_path / "spool")
    for event in events:
        emitter.emit(event)
    assert emitter.close(timeout=60)
    metrics = emitter.metrics()
    assert (metrics["sent"], metrics["dead_lettered"], metrics["dropped"]) == (600, 0, 0)

    for n in range(SHARDS):
        store = open_store(shard_url(str(root), n), readonly=True)
        try:
            held = [row.event_id for row in store.entries(0, store.size()) if row.event_id is not None]
        finally:
            store.close()
        assert len(held) == len(set(held)), f"shard {n} holds an event twice"
        assert set(held) == expected[n], f"shard {n} holds other events than its tokens'"

    # each token's events went to its shard in emit order, so every lifecycle verdict is "ok", and the
    # whole sharded ledger verifies once the root has recorded each shard's checkpoint
    for n in range(SHARDS):
        store = open_store(shard_url(str(root), n), readonly=True)
        try:
            verdicts = {row.verdict for row in store.entries(0, store.size()) if row.event_id is not None}
        finally:
            store.close()
        assert verdicts == {"ok"}
    capsys.readouterr()
    assert main(["shards", "collect", "--ledger", str(root)]) == 0
    assert main(["verify", "--ledger", str(root)]) == 0
    assert "OK" in capsys.readouterr().out


def test_a_shard_server_killed_and_restarted_mid_stream_loses_and_doubles_nothing(
    sharded_servers: ShardServers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = sharded_servers
    events = token_events(1500, tokens=60, label="shard-crash")
    transport = ShardedHttpTransport(servers.urls, PARTITIONS, servers.key, timeout=5.0)
    emitter = Emitter(
        PRODUCER,
        PRODUCER_KEY_ID,
        make_producer_signer(),
        transport,
        spool_dir=tmp_path / "spool",
        batch_size=50,
        linger_ms=5,
        backoff=Backoff(initial=0.05, maximum=0.5),
    )
    for event in events[:500]:
        emitter.emit(event)
    assert emitter.flush(60)  # both shards hold part of the ledger before the crash
    for event in events[500:1000]:
        emitter.emit(event)
    servers.kill(1)  # mid-stream: batches in flight to shard 1 fail, shard 0's halves commit
    for event in events[1000:1250]:
        emitter.emit(event)
    servers.start(1)
    for event in events[1250:]:
        emitter.emit(event)
    assert emitter.close(timeout=90)
    metrics = emitter.metrics()
    assert (metrics["sent"], metrics["dead_lettered"], metrics["dropped"]) == (1500, 0, 0)
    # the crash was felt: batches were retried, and shard 0 answered its re-sent halves as duplicates
    assert metrics["retried"] > 0
    assert metrics["duplicates"] > 0

    emitted_order = [json.loads(e)["event_id"] for e in events]
    for n in range(SHARDS):
        held = _shard_events(servers.root, n)
        ids = [event_id for event_id, _ in held]
        assert len(ids) == len(set(ids)), f"shard {n} holds an event twice"
        assert set(ids) == {json.loads(e)["event_id"] for e in events if _home(e) == n}
        # each token's events are in its shard in the order they were emitted
        by_subject: dict[str, list[str]] = {}
        for event_id, subject in held:
            by_subject.setdefault(subject, []).append(event_id)
        for subject, got in by_subject.items():
            assert got == sorted(got, key=emitted_order.index), f"shard {n}: {subject} out of emit order"
    capsys.readouterr()
    assert main(["shards", "collect", "--ledger", str(servers.root)]) == 0
    assert main(["verify", "--ledger", str(servers.root)]) == 0
    assert "OK root and 2 shards" in capsys.readouterr().out


def test_a_shard_server_refuses_an_event_of_another_shard_with_421_naming_it(
    sharded_servers: ShardServers,
) -> None:
    urls, key = sharded_servers.urls, sharded_servers.key
    by = _tokens_by_shard()
    now = time.time_ns()
    events = [token_event("ISSUED", by[0][0], now), token_event("ISSUED", by[1][0], now + 1)]
    envelope = seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    response = httpx.post(f"{urls[0]}/v1/batches", content=envelope, headers=headers, timeout=10.0)
    assert response.status_code == 421, response.text
    problem = response.json()
    assert problem["type"].endswith(":misdirected")
    assert problem["field"] == "events[1]"
    assert "shard 1" in problem["detail"]
    # nothing of the batch was written: its shard-0 event, sent alone, is new to the shard
    fine = seal_batch(events[:1], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    answer = httpx.post(f"{urls[0]}/v1/batches", content=fine, headers=headers, timeout=10.0)
    assert answer.status_code == 200, answer.text
    assert answer.json()["receipts"][0]["duplicate"] is False


def test_lineage_emit_sends_a_file_to_every_shard(
    sharded_servers: ShardServers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, urls, key = sharded_servers.root, sharded_servers.urls, sharded_servers.key
    monkeypatch.setenv(API_KEY_ENV_VAR, key)
    write_signer_key(tmp_path / "producer.key", make_producer_signer())
    events = token_events(120, tokens=12, label="cli-sharded")
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(events) + b"\n")
    command = ["emit", "--url", urls[0], "--url", urls[1], "--partitions", str(PARTITIONS), "--json"]
    command += ["--producer", PRODUCER, "--key", str(tmp_path / "producer.key"), "--key-id", PRODUCER_KEY_ID]
    capsys.readouterr()
    assert main([*command, str(tmp_path / "events.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["sent"], summary["delivered"]) == (120, True)
    for n in range(SHARDS):
        store = open_store(shard_url(str(root), n), readonly=True)
        try:
            held = {row.event_id for row in store.entries(0, store.size())}
        finally:
            store.close()
        assert {json.loads(e)["event_id"] for e in events if _home(e) == n} <= held


def test_settings_the_cli_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.db"
    assert main(["init", "--ledger", str(plain)]) == 0
    capsys.readouterr()
    assert main(["serve", "--ledger", str(plain), "--shard", "0"]) == 2
    assert "not the root of a sharded ledger" in capsys.readouterr().err
    root = tmp_path / "root.db"
    assert main(["init", "--ledger", str(root), "--shards", "2"]) == 0
    capsys.readouterr()
    assert main(["serve", "--ledger", str(root), "--shard", "2"]) == 2
    assert "has shards 0 to 1, not 2" in capsys.readouterr().err
    write_signer_key(tmp_path / "producer.key", make_producer_signer())
    one_url = ["emit", "--url", "http://127.0.0.1:9", "--partitions", "4", "--producer", PRODUCER]
    assert main([*one_url, "--key", str(tmp_path / "producer.key"), str(tmp_path / "none.jsonl")]) == 2
    assert "--partitions is for a sharded ledger" in capsys.readouterr().err


def _tokens_by_shard() -> dict[int, list[str]]:
    by: dict[int, list[str]] = {}
    for j in range(40):
        tid = token_id(f"route-{j}")
        by.setdefault(shard_of("token:" + tid, PARTITIONS, SHARDS), []).append(tid)
    assert len(by) == SHARDS
    return by


def _mocked(handlers: list[Callable[[httpx.Request], httpx.Response]]) -> ShardedHttpTransport:
    return ShardedHttpTransport(
        [f"https://shard-{n}.example/" for n in range(len(handlers))],
        PARTITIONS,
        "k-1",
        http_transports=[httpx.MockTransport(h) for h in handlers],
    )


def _receipts(request: httpx.Request) -> httpx.Response:
    events = json.loads(request.content)["events"]
    receipts = [
        {"event_id": e["event_id"], "index": i, "verdict": "ok", "duplicate": False} for i, e in enumerate(events)
    ]
    return httpx.Response(200, json={"receipts": receipts})


def _problem(status: int, detail: str, field: str | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"type": "urn:lineage-ledger:problem:x", "title": "x", "status": status, "detail": detail}
        body["field"] = field
        return httpx.Response(status, json=body, headers={"retry-after": "2"})

    return handler


def _mixed_batch() -> tuple[list[bytes], dict[int, list[int]]]:
    """Six events alternating between the two shards' tokens, and the batch positions each shard gets."""
    by = _tokens_by_shard()
    now = time.time_ns()
    events = [token_event("ISSUED", by[k % 2][k // 2], now + k) for k in range(6)]
    return events, {0: [0, 2, 4], 1: [1, 3, 5]}


def _sealed(events: list[bytes], groups: list[list[int]]) -> tuple[list[bytes], list[list[bytes]]]:
    """The envelopes and event groups the emitter would hand to send_groups."""
    signer = make_producer_signer()
    parts = [[events[i] for i in g] for g in groups]
    return [seal_batch(p, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer) for p in parts], parts


def test_route_groups_a_batch_by_shard_keeping_batch_order() -> None:
    events, positions = _mixed_batch()
    transport = _mocked([_receipts, _receipts])
    assert transport.route(events) == [positions[0], positions[1]]
    assert transport.route([events[1], events[3]]) == [[0, 1]]
    transport.close()


def test_a_refusal_names_the_event_by_its_position_in_the_batch() -> None:
    events, positions = _mixed_batch()
    # shard 1 refuses the second event of its envelope, which is the batch's event 3
    transport = _mocked([_receipts, _problem(422, "bad ip", "events[1].payload.ip")])
    with pytest.raises(InputError) as refused:
        transport.send_groups(*_sealed(events, transport.route(events)))
    assert refused.value.field == f"events[{positions[1][1]}].payload.ip"
    transport.close()


def test_a_retryable_failure_of_any_shard_wins_over_a_refusal() -> None:
    events, _ = _mixed_batch()
    transport = _mocked([_problem(503, "busy"), _problem(409, "events[0]: holds other bytes")])
    with pytest.raises(PushbackError) as pushed:
        transport.send_groups(*_sealed(events, transport.route(events)))
    assert pushed.value.retry_after == 2.0
    transport.close()


def test_a_conflict_names_the_batch_position_too() -> None:
    events, positions = _mixed_batch()
    transport = _mocked([_problem(409, "events[2].event_id: holds other bytes"), _receipts])
    with pytest.raises(ConflictError, match=rf"^events\[{positions[0][2]}\]\.event_id"):
        transport.send_groups(*_sealed(events, transport.route(events)))
    transport.close()


def test_the_emitter_dead_letters_exactly_the_event_a_shard_refused() -> None:
    events, positions = _mixed_batch()
    refused_id = json.loads(events[positions[1][2]])["event_id"]

    def shard_1(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["events"]
        for k, event in enumerate(sent):
            if event["event_id"] == refused_id:
                return _problem(422, "refused", f"events[{k}].payload")(request)
        return _receipts(request)

    emitter = Emitter(PRODUCER, PRODUCER_KEY_ID, make_producer_signer(), _mocked([_receipts, shard_1]))
    for event in events:
        emitter.emit(event)
    assert emitter.flush(30)
    spool = emitter.spool
    assert isinstance(spool, MemorySpool)
    assert [letter.event_id for letter in spool.dead_letters] == [refused_id]
    assert emitter.metrics()["sent"] == 5
    emitter.close()


def test_bad_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(InputError, match="urls"):
        ShardedHttpTransport([], 4)
    with pytest.raises(InputError, match="shards"):
        ShardedHttpTransport(["http://a", "http://b"], 3)
    with pytest.raises(InputError, match="api_key"):
        ShardedHttpTransport(["http://a", "http://b"], 4, ["k-1"])
