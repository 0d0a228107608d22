"""HTTP ingest against in-process ingest, measured in one run (a benchmark script, not a test).

Both sides ingest the same signed envelopes (``lineage_ledger.bench.make_envelopes``: batches of 1,000 token
events) into a fresh ledger with the same settings and durability (``synchronous=FULL``):

* in process: ``Ledger.append`` in a loop;
* over HTTP: ``lineage serve`` as its own process on a loopback port, fed by ``--concurrency`` client threads
  (each with one keep-alive httpx connection) in this process, so the server's single writer always has the
  next batch waiting while it commits the current one.

The two take turns, a slice of the envelopes at a time (``--rounds``), so that a change in the load of a
shared machine during the run falls on both alike.

Prints one JSON object: both rates in events/s and their ratio (the issue's target is >= 0.5).

    .venv/bin/python benchmarks/bench_http.py --events 100000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from lineage_ledger.bench import BENCH_KEY_ID, BENCH_PRODUCER, make_envelopes
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.keys import load_signer, write_signer_key
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.service.auth import ApiKeyStore

LOG_NAME = "bench-http.lineage-ledger.local/log"
SETTINGS = LedgerSettings()  # blocks of 10,000 entries, as `lineage serve` uses by default


def create_ledger(path: Path, producer: Ed25519Signer) -> None:
    """A new ledger at ``path`` with its log key beside it (as `lineage init` leaves it) and the producer key."""
    log = Ed25519Signer.generate(LOG_NAME)
    write_signer_key(f"{path}.key", log)
    with Ledger.create(str(path), log, settings=SETTINGS) as ledger:
        ledger.register_key(BENCH_PRODUCER, BENCH_KEY_ID, producer.public_key)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(path: Path, port: int) -> subprocess.Popen[bytes]:
    """`lineage serve` on the ledger; returns once /healthz answers (or raises with the server's output)."""
    log = path.with_name("server.log")
    env = {k: v for k, v in os.environ.items() if k not in ("LINEAGE_LOG_KEY", "LINEAGE_TOKEN_SECRET")}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "lineage_ledger.cli.main", "serve", "--ledger", str(path), "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"lineage serve exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"lineage serve did not answer /healthz in time: {log.read_text()}")


class HttpFeeder:
    """``concurrency`` client threads, each with its own keep-alive connection, posting envelopes."""

    def __init__(self, port: int, api_key: str, concurrency: int) -> None:
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        base = f"http://127.0.0.1:{port}"
        self.clients = [httpx.Client(base_url=base, headers=headers, timeout=120.0) for _ in range(concurrency)]
        self.recorded = 0

    def post_all(self, envelopes: list[bytes]) -> float:
        """Seconds until every envelope is acknowledged; RuntimeError on any refusal."""
        feed: Iterator[bytes] = iter(envelopes)
        lock = threading.Lock()
        failures: list[str] = []

        def run(http: httpx.Client) -> None:
            while not failures:
                with lock:
                    envelope = next(feed, None)
                if envelope is None:
                    return
                response = http.post("/v1/batches", content=envelope)
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:300]}")
                    return
                fresh = sum(not r["duplicate"] for r in response.json()["receipts"])
                with lock:
                    self.recorded += fresh

        threads = [threading.Thread(target=run, args=(http,)) for http in self.clients]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        if failures:
            raise RuntimeError(f"HTTP ingest failed: {failures[0]}")
        return seconds

    def close(self) -> None:
        for http in self.clients:
            http.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2, help="HTTP client threads (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="alternations between the two (default 5)")
    parser.add_argument("--workdir", help="where the two ledgers go (default: a temporary directory)")
    args = parser.parse_args()

    producer = Ed25519Signer.generate(BENCH_PRODUCER)
    envelopes = make_envelopes(args.events, producer, batch=args.batch, start_ns=time.time_ns() - 3_600_000_000_000)
    per_round = -(-len(envelopes) // args.rounds)
    local_s = http_s = 0.0
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="lineage-bench-http-") as tmp:
        local_path, http_path = Path(tmp) / "in-process.db", Path(tmp) / "http.db"
        create_ledger(local_path, producer)
        create_ledger(http_path, producer)
        api_key = ApiKeyStore.load(f"{http_path}.apikeys.json").create("producer", BENCH_PRODUCER)[1]
        port = free_port()
        server = start_server(http_path, port)
        feeder = HttpFeeder(port, api_key, args.concurrency)
        try:
            with Ledger.open(str(local_path), load_signer(f"{local_path}.key"), settings=SETTINGS) as ledger:
                # Rounds alternate between the two, so a change in the machine's load hits both alike.
                for r in range(0, len(envelopes), per_round):
                    chunk = envelopes[r : r + per_round]
                    started = time.perf_counter()
                    for envelope in chunk:
                        ledger.append(envelope)
                    local_s += time.perf_counter() - started
                    http_s += feeder.post_all(chunk)
        finally:
            feeder.close()
            server.terminate()
            server.wait(timeout=30)
    if feeder.recorded != args.events:
        raise RuntimeError(f"the service recorded {feeder.recorded} new events, expected {args.events}")
    local_rate = args.events / local_s
    http_rate = args.events / http_s
    figures: dict[str, Any] = {
        "events": args.events,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "synchronous": "full",
        "in_process_events_per_s": round(local_rate),
        "http_events_per_s": round(http_rate),
        "http_to_in_process": round(http_rate / local_rate, 3),
        "in_process_seconds": round(local_s, 2),
        "http_seconds": round(http_s, 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
