"""Emitter benchmarks: middleware overhead, emit() latency on the caller's thread, delivery latency.

Run: ``.venv/bin/python benchmarks/bench_emitter.py [--seconds 10] [--rate 10000] [--requests 20000]``.
Prints one JSON object. Everything runs in one process, in one run, on the same machine state:

* ``middleware_overhead_median_us``: a minimal ASGI app (one 200 response, empty body) called directly
  through the ASGI interface with a request carrying a bearer token, a user agent and a traceparent, with
  and without LineageASGIMiddleware, in alternating blocks; the difference of the medians. The middleware
  feeds a real Emitter (disk spool, SQLite ledger behind a LocalTransport), whose threads run meanwhile.
* ``emit_p99_us``: the duration of each emit() call on the caller's thread while events are emitted at
  ``--rate`` per second for ``--seconds`` seconds (pre-built TokenEvents, so only emit() is timed) and the
  spooler and sender deliver them in the same process.
* ``delivery_p99_ms``: for the same events, from just before emit() to the moment the ledger's append
  returned (committed durably: SQLite ``synchronous=FULL``; the spool is fsync'd on the way), through a
  LocalTransport into a SQLite ledger file in the same process.

For context, in the same run: the same measurement at half the rate; at the full rate through a transport
that checks each envelope and acknowledges without storing (a ledger elsewhere with capacity to spare:
the emitter's own figures); through ``lineage serve`` over loopback HTTP; through a sharded ledger of two
shards, each served by its own ``lineage serve --shard n``, with the emitter's ShardedHttpTransport; and
``ledger_alone_events_per_s``, the SQLite ledger's own ingest rate for these events without any emitter,
which bounds what any producer in its process can deliver.

Each delivery run also reports the CPU it took per event: ``client_cpu_us_per_event`` (this process: the
load generator, the emitter, and the ledger when it is in process), ``server_cpu_us_per_event`` (the
lineage serve processes) and ``machine_busy`` (the share of all cores busy, whatever ran them).
``load_generator_cpu_us_per_event`` is the open loop alone, around an emit() that does nothing: the
benchmark's own part of the client's figure (it sleeps until each event is due, 10,000 times a second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import uuid_utils

from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.envelope import open_envelope, seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.model import TokenEvent, TokenPayload, encode_event
from lineage_ledger.emitter import (
    Emitter,
    HttpTransport,
    LineageASGIMiddleware,
    LocalTransport,
    ShardedHttpTransport,
    Transport,
)
from lineage_ledger.keys import write_signer_key
from lineage_ledger.ledger.shards import ShardedLedger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings, Receipt
from lineage_ledger.service.auth import ApiKeyStore

PRODUCER = "bench-emitter"
KEY_ID = "bench-emitter-1"
SECRET = b"bench-emitter-fingerprint-secret"


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


class TimedTransport:
    """Wraps a transport and notes when each event's batch was acknowledged."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.acked: dict[str, int] = {}

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        receipts = self.inner.send(envelope)
        now = time.perf_counter_ns()
        for r in receipts:
            self.acked.setdefault(r.event_id, now)
        return receipts

    def close(self) -> None:
        self.inner.close()


class TimedShardedTransport(TimedTransport):
    """TimedTransport for ShardedHttpTransport: the emitter must see route/send_groups to split batches."""

    def __init__(self, inner: ShardedHttpTransport) -> None:
        super().__init__(inner)
        self.sharded = inner

    def route(self, events: Sequence[bytes]) -> list[list[int]]:
        return self.sharded.route(events)

    def send_groups(self, envelopes: Sequence[bytes], groups: Sequence[Sequence[bytes]]) -> Sequence[Receipt]:
        receipts = self.sharded.send_groups(envelopes, groups)
        now = time.perf_counter_ns()
        for r in receipts:
            self.acked.setdefault(r.event_id, now)
        return receipts


class _Head(msgspec.Struct):
    event_id: str


class ElsewhereTransport:
    """Opens and checks each envelope like a ledger would, then acknowledges without storing anything.

    It stands for a ledger in another process with capacity to spare, so the figures measured through it
    are the emitter's own: queue, encoding, spool, batching, signing.
    """

    def __init__(self) -> None:
        self._head = msgspec.json.Decoder(_Head)
        self._index = 0

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        opened = open_envelope(envelope)
        receipts = [
            Receipt(self._head.decode(e).event_id, self._index + k, "ok", False) for k, e in enumerate(opened.events)
        ]
        self._index += len(receipts)
        return receipts

    def close(self) -> None:
        pass


LINGER_MS = 10.0
"""How long the sender waits to fill a batch (the Emitter's default); --linger-ms changes it."""


def _setup(directory: Path) -> tuple[Ledger, Ed25519Signer]:
    log = Ed25519Signer.generate("bench.lineage-ledger.local/log")
    # synchronous=FULL, the default; a latency-sensitive service embedding the ledger freezes the collector
    # at seals, as lineage serve does (LedgerSettings.freeze_gc_at_seal)
    ledger = Ledger.create(str(directory / "ledger.db"), log, settings=LedgerSettings(freeze_gc_at_seal=True))
    producer = Ed25519Signer.generate(PRODUCER)
    ledger.register_key(PRODUCER, KEY_ID, producer.public_key)
    return ledger, producer


# -- middleware overhead ---------------------------------------------------------------------------------


async def _minimal_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def _scope(n: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/v1/orders/{n % 1000}",
        "raw_path": f"/v1/orders/{n % 1000}".encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("203.0.113.7", 50123),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"api.example"),
            (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) bench"),
            (b"accept", b"application/json"),
            (b"authorization", f"Bearer opaque-token-{n % 5000:05d}-abcdefghijklmnop".encode()),
            (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            (b"accept-encoding", b"gzip"),
        ],
    }


async def _time_block(app: Any, scopes: list[dict[str, Any]]) -> list[float]:
    out: list[float] = []
    clock = time.perf_counter_ns
    for scope in scopes:
        t0 = clock()
        await app(scope, _receive, _send)
        out.append((clock() - t0) / 1000.0)
    return out


def bench_middleware(directory: Path, requests: int, rounds: int = 20) -> dict[str, float]:
    ledger, producer = _setup(directory)
    emitter = Emitter(PRODUCER, KEY_ID, producer, LocalTransport(ledger), spool_dir=directory / "mw-spool")
    wrapped = LineageASGIMiddleware(_minimal_app, emitter, SECRET)
    per_round = max(requests // rounds, 1)
    scopes = [_scope(n) for n in range(per_round)]
    with_mw: list[float] = []
    without: list[float] = []

    async def run() -> None:
        await _time_block(wrapped, scopes[:200])  # warm-up
        await _time_block(_minimal_app, scopes[:200])
        for _ in range(rounds):
            without.extend(await _time_block(_minimal_app, scopes))
            with_mw.extend(await _time_block(wrapped, scopes))

    asyncio.run(run())
    emitter.flush(60)
    emitter.close()
    ledger.close()
    w, wo = statistics.median(with_mw), statistics.median(without)
    return {
        "middleware_with_median_us": round(w, 2),
        "middleware_without_median_us": round(wo, 2),
        "middleware_overhead_median_us": round(w - wo, 2),
        "middleware_with_p99_us": round(_percentile(with_mw, 0.99), 2),
        "middleware_requests_each": float(len(with_mw)),
    }


# -- emit() and delivery at a fixed rate ------------------------------------------------------------------


def _events(count: int) -> list[TokenEvent]:
    start = time.time_ns()
    tokens = [token_fingerprint(SECRET, f"raw-{i}") for i in range(1000)]
    return [
        TokenEvent(
            event_id=str(uuid_utils.uuid7()),
            event_type="ISSUED" if i < 1000 else "USED",
            token_id=tokens[i % 1000],
            occurred_at=format_reading(start + i * 1000, 0),
            schema_version=1,
            payload=TokenPayload(
                resource=f"/v1/orders/{i % 997}",
                outcome="ALLOW",
                ip="203.0.113.7",
                user_agent="Mozilla/5.0 bench",
                trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            ),
        )
        for i in range(count)
    ]


@contextlib.contextmanager
def _served_ledger(directory: Path, shards: int = 0) -> Iterator[tuple[list[str], str, Ed25519Signer, list[int]]]:
    """A durable SQLite ledger served by real ``lineage serve`` processes on loopback: one, or with ``shards``
    a sharded ledger (partitions = shards) with one ``lineage serve --shard n`` per shard. Yields (the
    servers' URLs, shard 0 first; a producer API key; the producer's signer; the servers' process ids)."""
    log = Ed25519Signer.generate("bench.lineage-ledger.local/log")
    root = directory / "ledger.db"
    write_signer_key(directory / "ledger.db.key", log)
    producer = Ed25519Signer.generate(PRODUCER)
    if shards:
        sharded = ShardedLedger.create(str(root), log, shards=shards, partitions=shards)
        for ledger in sharded.shards:
            ledger.register_key(PRODUCER, KEY_ID, producer.public_key)
        sharded.close()
    else:
        ledger = Ledger.create(str(root), log)
        ledger.register_key(PRODUCER, KEY_ID, producer.public_key)
        ledger.close()
    _, api_key = ApiKeyStore(directory / "ledger.db.apikeys.json").create("producer", PRODUCER)
    env = {k: v for k, v in os.environ.items() if k not in ("LINEAGE_LOG_KEY", "LINEAGE_TOKEN_SECRET")}
    servers: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for n in range(max(shards, 1)):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            command = [str(Path(sys.executable).parent / "lineage"), "serve", "--ledger", str(root)]
            command += ["--port", str(port), *(["--shard", str(n)] if shards else [])]
            servers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
            urls.append(f"http://127.0.0.1:{port}")
        for server, url in zip(servers, urls, strict=True):
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("lineage serve did not start")
                time.sleep(0.05)
        yield urls, api_key, producer, [server.pid for server in servers]
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=20)


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (Linux /proc/stat); iowait counts as idle."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def bench_delivery(
    directory: Path,
    seconds: float,
    rate: int,
    *,
    ledger_in_process: bool = True,
    http: bool = False,
    shards: int = 0,
) -> dict[str, Any]:
    if http:
        with _served_ledger(directory, shards) as (urls, api_key, producer, pids):
            timed = (
                TimedShardedTransport(ShardedHttpTransport(urls, shards, api_key))
                if shards
                else TimedTransport(HttpTransport(urls[0], api_key=api_key))
            )
            return _deliver(timed, producer, directory, seconds, rate, server_pids=pids)
    ledger, producer = _setup(directory)
    try:
        transport = TimedTransport(LocalTransport(ledger) if ledger_in_process else ElsewhereTransport())
        return _deliver(transport, producer, directory, seconds, rate)
    finally:
        ledger.close()


def _deliver(
    transport: TimedTransport,
    producer: Ed25519Signer,
    directory: Path,
    seconds: float,
    rate: int,
    *,
    server_pids: Sequence[int] = (),
) -> dict[str, Any]:
    emitter = Emitter(PRODUCER, KEY_ID, producer, transport, spool_dir=directory / "spool", linger_ms=LINGER_MS)
    count = int(seconds * rate)
    events = _events(count)
    machine_before = _machine_ticks()
    servers_before = sum(_process_cpu_s(pid) for pid in server_pids)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    client_before = usage.ru_utime + usage.ru_stime
    emitted_at, emit_us, emit_seconds = _open_loop(emitter.emit, events, rate)
    delivered = emitter.flush(120)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = usage.ru_utime + usage.ru_stime - client_before
    servers_cpu = sum(_process_cpu_s(pid) for pid in server_pids) - servers_before
    busy, total = (after - before for after, before in zip(_machine_ticks(), machine_before, strict=True))
    metrics = emitter.metrics()
    emitter.close()
    acked = transport.acked
    latencies = [(acked[e.event_id] - emitted_at[k]) / 1e6 for k, e in enumerate(events) if e.event_id in acked]
    window = 5 * rate  # events emitted in 5 s: a p99 that climbs window by window is load the ledger cannot sustain
    by_window = [round(_percentile(latencies[i : i + window], 0.99), 1) for i in range(0, len(latencies), window)]
    return {
        "events": float(count),
        "achieved_rate_per_s": round(count / emit_seconds),
        "emit_p50_us": round(_percentile(emit_us, 0.50), 2),
        "emit_p99_us": round(_percentile(emit_us, 0.99), 2),
        "emit_p999_us": round(_percentile(emit_us, 0.999), 2),
        "emit_max_us": round(max(emit_us), 1),
        "delivery_p50_ms": round(_percentile(latencies, 0.50), 2),
        "delivery_p99_ms": round(_percentile(latencies, 0.99), 2),
        "delivery_max_ms": round(max(latencies), 2),
        "delivered_all": float(delivered and metrics["sent"] == count),
        "delivery_p99_ms_per_5s": by_window,
        # CPU over the run and the flush, per event: this process (the load generator's loop, the emitter, and
        # an in-process ledger), the lineage serve processes, and the share of all cores busy
        "client_cpu_us_per_event": round(client_cpu / count * 1e6, 1),
        "server_cpu_us_per_event": round(servers_cpu / count * 1e6, 1),
        "machine_busy": round(busy / max(total, 1), 2),
    }


def _open_loop(emit: Callable[[Any], None], events: Sequence[Any], rate: int) -> tuple[list[int], list[float], float]:
    """Emit ``events`` at ``rate`` per second, open loop: emit whatever the schedule says is due, then sleep
    until the next one is. Returns when each emit() began (perf_counter ns), how long each took (us), and
    the seconds the whole took."""
    count = len(events)
    emitted_at = [0] * count
    emit_us = [0.0] * count
    clock = time.perf_counter_ns
    started = clock()
    i = 0
    while i < count:
        due = min(count, (clock() - started) * rate // 1_000_000_000 + 1)
        while i < due:
            t0 = clock()
            emit(events[i])
            t1 = clock()
            emitted_at[i] = t0
            emit_us[i] = (t1 - t0) / 1000.0
            i += 1
        wait = started + i * 1_000_000_000 // rate - clock()
        if wait > 0:
            time.sleep(wait / 1e9)
    return emitted_at, emit_us, (clock() - started) / 1e9


def bench_load_generator(seconds: float, rate: int) -> dict[str, float]:
    """CPU per event of _deliver's open loop alone (the same loop around an emit() that does nothing): the
    share of client_cpu_us_per_event that is the benchmark's, not the emitter's."""
    events = _events(int(seconds * rate))

    def emit(event: object) -> None:
        return None

    usage = resource.getrusage(resource.RUSAGE_SELF)
    before = usage.ru_utime + usage.ru_stime
    _open_loop(emit, events, rate)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before
    return {"load_generator_cpu_us_per_event": round(cpu / len(events) * 1e6, 1)}


def bench_ledger_alone(directory: Path, count: int = 20_000) -> dict[str, float]:
    """The SQLite ledger's own ingest rate for the same events in batches of 1,000 (no emitter)."""
    ledger, producer = _setup(directory)
    bodies = [encode_event(e) for e in _events(count)]
    envelopes = [
        seal_batch(bodies[i : i + 1000], producer=PRODUCER, key_id=KEY_ID, signer=producer)
        for i in range(0, count, 1000)
    ]
    started = time.perf_counter()
    for envelope in envelopes:
        ledger.append(envelope)
    elapsed = time.perf_counter() - started
    ledger.close()
    return {"ledger_alone_events_per_s": round(count / elapsed)}


def _section(figures: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: figures[k] for k in keys}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the fixed-rate run")
    parser.add_argument("--rate", type=int, default=10_000, help="events per second")
    parser.add_argument("--requests", type=int, default=40_000, help="ASGI requests with and without middleware")
    parser.add_argument("--linger-ms", type=float, default=10.0, help="the emitter's batching delay")
    args = parser.parse_args(argv)
    global LINGER_MS  # noqa: PLW0603 - one run-wide setting of a script
    LINGER_MS = args.linger_ms
    with tempfile.TemporaryDirectory(prefix="bench-emitter-") as tmp:
        root = Path(tmp)
        for name in ("mw", "delivery", "half", "elsewhere", "alone", "http", "http-shards"):
            (root / name).mkdir()
        figures: dict[str, Any] = {}
        figures.update(bench_middleware(root / "mw", args.requests))
        figures.update(bench_delivery(root / "delivery", args.seconds, args.rate))
        half = bench_delivery(root / "half", args.seconds, args.rate // 2)
        elsewhere = bench_delivery(root / "elsewhere", args.seconds, args.rate, ledger_in_process=False)
        served = bench_delivery(root / "http", args.seconds, args.rate, http=True)
        sharded = bench_delivery(root / "http-shards", args.seconds, args.rate, http=True, shards=2)
        figures.update(bench_ledger_alone(root / "alone"))
        figures.update(bench_load_generator(min(args.seconds, 5.0), args.rate))
    keys = (
        "achieved_rate_per_s",
        "emit_p99_us",
        "delivery_p50_ms",
        "delivery_p99_ms",
        "delivery_max_ms",
        "delivery_p99_ms_per_5s",
        "client_cpu_us_per_event",
        "server_cpu_us_per_event",
        "machine_busy",
    )
    for name in ("client_cpu_us_per_event", "machine_busy"):
        figures[f"delivery_{name}"] = figures.pop(name)
    figures.pop("server_cpu_us_per_event")
    figures[f"sqlite_ledger_in_process_at_{args.rate // 2}_per_s"] = _section(half, keys)
    figures[f"ledger_elsewhere_at_{args.rate}_per_s"] = _section(elsewhere, keys)
    figures[f"lineage_serve_over_http_at_{args.rate}_per_s"] = _section(served, keys)
    figures[f"two_shards_two_lineage_serve_over_http_at_{args.rate}_per_s"] = _section(sharded, keys)
    figures["targets"] = {
        "middleware_overhead_median_us": 20,
        "emit_p99_us": 10,
        "delivery_p99_ms": 100,
    }
    figures["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "threads": threading.active_count()}
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
