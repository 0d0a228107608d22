"""Kafka end to end: produce to a topic, consume into a sharded ledger, in one run; 1, 2 and 4 shards.

    python benchmarks/bench_kafka.py --events 100000 --shards 1 2 4 --backend sqlite postgres
    python benchmarks/bench_kafka.py --events 50000 --shards 2 --rate 5000     # latency at a fixed rate

Starts its own single-node Kafka (KRaft, the jars scripts/install-kafka.sh fetches) and, for the postgres
backend, its own durable PostgreSQL server (the fixtures the tests use). For each backend and shard count it
creates a 4-partition topic and a sharded ledger (root + shards; PostgreSQL: one database per shard, as the
writer role), starts one consumer process per shard (``LedgerConsumer`` on its partition group, as
``lineage consume --shard n`` does), then publishes pre-signed, pre-encoded Avro messages (one envelope per
partition per 1,000-event batch, as the emitter's Kafka transport sends them) as fast as the producer can,
or paced at ``--rate`` events/s. Producer signing and Avro encoding are done before the clock starts: this
measures the ledger side of the pipe.

Figures per run: ``events_per_s`` = events / (last shard commit - first produce); ``p50_ms``/``p99_ms`` =
per message, the commit time minus the message's Kafka timestamp (set when it was produced). At full speed
that latency is mostly queueing (the topic fills faster than the shards drain it); a paced run below
capacity shows the pipe's own latency. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from lineage_ledger.bench import BENCH_KEY_ID, BENCH_PRODUCER, iter_envelopes
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.envelope import open_envelope, seal_batch
from lineage_ledger.core.model import read_subject
from lineage_ledger.core.routing import partition_for, subject_key
from lineage_ledger.kafka.avro import V1, encode_envelope
from lineage_ledger.ledger.shards import ShardedLedger, ShardLayout, shard_url
from lineage_ledger.ledger.writer import Ledger, LedgerSettings

try:
    from tests.services import create_ledger_database, running_postgres
    from tests.services_kafka import KafkaCluster, running_kafka
except ModuleNotFoundError:  # run as a script: the repository root is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.services import create_ledger_database, running_postgres
    from tests.services_kafka import KafkaCluster, running_kafka

PARTITIONS = 4
WARMUP_MESSAGES = 8
"""The first two 1,000-event batches (as 4 messages each) warm the pipe up before the clock starts."""
LOG_SEED = bytes(range(7, 39))
PRODUCER_SEED = bytes(range(9, 41))
SETTINGS = LedgerSettings(block_size=10_000, block_seconds=2.0)


def _messages(events: int) -> list[tuple[bytes, int, int]]:
    """(Avro message, partition, event count): each 1,000-event batch split and re-sealed per partition."""
    producer = Ed25519Signer(BENCH_PRODUCER, PRODUCER_SEED)
    out: list[tuple[bytes, int, int]] = []
    for envelope in iter_envelopes(events, producer, start_ns=time.time_ns() - 3_600_000_000_000):
        groups: dict[int, list[bytes]] = {}
        for event in open_envelope(envelope).events:
            raw = bytes(event)
            groups.setdefault(partition_for(subject_key(read_subject(raw)[0]), PARTITIONS), []).append(raw)
        for partition, group in groups.items():
            sealed = seal_batch(group, producer=BENCH_PRODUCER, key_id=BENCH_KEY_ID, signer=producer)
            out.append((encode_envelope(sealed, V1), partition, len(group)))
    return out


def produce(producer: Any, topic: str, value: bytes, partition: int) -> None:
    """Publish one message, waiting for room when the producer's queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)


def _consume_shard(
    url: str, bootstrap: str, topic: str, partitions: list[int], warm: int, expected: int, ready: Any, warmed: Any
) -> Any:
    """One shard's consumer process: returns (events, first commit, last commit, latencies in ms) of the timed
    part, after its first ``warm`` events (the warm-up: connections, caches) are in."""
    from lineage_ledger.kafka.consumer import ConsumeStats, LedgerConsumer

    ledger = Ledger.open(url, Ed25519Signer("bench.lineage-ledger/kafka", LOG_SEED), settings=SETTINGS)
    stop = __import__("threading").Event()
    skip: list[int] = []

    def check(stats: ConsumeStats) -> None:
        if not skip and stats.events >= warm:
            skip.append(len(stats.latencies_ms))
            warmed.set()
        if stats.events >= warm + expected:
            stop.set()

    with LedgerConsumer(ledger, bootstrap, topic, partitions=partitions, measure=True) as consumer:
        ready.set()
        stats = consumer.run(stop=stop, idle_timeout=120.0, on_commit=check)
    ledger.seal()
    ledger.close()
    return stats.events - warm, time.time(), stats.latencies_ms[skip[0] if skip else 0 :]


def _ledger_urls(backend: str, shards: int, admin: str | None, tmp: Path) -> str:
    """Create the databases (PostgreSQL) and return the root URL the writer uses."""
    if backend == "sqlite":
        return str(tmp / f"root-{shards}-{uuid.uuid4().hex[:6]}.db")
    assert admin is not None
    name = f"bench_{uuid.uuid4().hex[:8]}"
    root = create_ledger_database(admin, name)
    for n in range(shards):
        create_ledger_database(admin, f"{name}_shard_{n}")
    return root.writer_url


def _run(
    cluster: KafkaCluster, backend: str, shards: int, messages: list[tuple[bytes, int, int]], rate: float, url: str
) -> dict[str, Any]:
    from confluent_kafka import Producer

    topic = f"bench-{backend}-{shards}-{uuid.uuid4().hex[:6]}"
    cluster.create_topic(topic, partitions=PARTITIONS, replication_factor=1)
    log = Ed25519Signer("bench.lineage-ledger/kafka", LOG_SEED)
    sharded = ShardedLedger.create(url, log, shards=shards, partitions=PARTITIONS, settings=SETTINGS)
    sharded.register_key(BENCH_PRODUCER, BENCH_KEY_ID, Ed25519Signer(BENCH_PRODUCER, PRODUCER_SEED).public_key)
    layout: ShardLayout = sharded.layout
    sharded.close()
    warmup, timed = messages[:WARMUP_MESSAGES], messages[WARMUP_MESSAGES:]
    warm = [sum(n for _, p, n in warmup if p % shards == s) for s in range(shards)]
    expected = [sum(n for _, p, n in timed if p % shards == s) for s in range(shards)]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        readies = [manager.Event() for _ in range(shards)]
        warmeds = [manager.Event() for _ in range(shards)]
        with ctx.Pool(shards) as pool:
            results = [
                pool.apply_async(
                    _consume_shard,
                    (
                        shard_url(url, s),
                        cluster.bootstrap,
                        topic,
                        layout.partitions_of(s),
                        warm[s],
                        expected[s],
                        readies[s],
                        warmeds[s],
                    ),
                )
                for s in range(shards)
            ]
            for ready in readies:
                if not ready.wait(120):
                    raise RuntimeError("a shard consumer did not start")
            producer = Producer(
                {"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
            )
            for value, partition, _ in warmup:
                producer.produce(topic, value=value, partition=partition)
            producer.flush(120)
            for warmed in warmeds:
                if not warmed.wait(120):
                    raise RuntimeError("a shard consumer did not take the warm-up batch")
            total = sum(n for _, _, n in timed)
            started = time.time()
            sent = 0
            for value, partition, count in timed:
                if rate:
                    ahead = sent / rate - (time.time() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                produce(producer, topic, value, partition)
                producer.poll(0)
                sent += count
            producer.flush(120)
            produced = time.time() - started
            outcomes = [r.get(timeout=600) for r in results]
    events = sum(o[0] for o in outcomes)
    finished = max(o[1] for o in outcomes)
    latencies = sorted(x for o in outcomes for x in o[2])
    in_order = outcomes[0][2]
    slowest = sorted(range(len(in_order)), key=lambda i: -in_order[i])[:3]
    collect_root = ShardedLedger.open(url, log, settings=SETTINGS)
    root_checkpoint = collect_root.seal()
    collect_root.close()
    return {
        "backend": backend,
        "shards": shards,
        "events": events,
        "expected": total,
        "rate_target": rate or None,
        "produce_s": round(produced, 2),
        "seconds": round(finished - started, 2),
        "events_per_s": round(events / (finished - started)),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p90_ms": round(latencies[int(len(latencies) * 0.9) - 1], 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1) if latencies else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "slowest_of_shard_0": [(i, round(in_order[i])) for i in slowest],
        "messages": len(latencies),
        "root_size": root_checkpoint.size if root_checkpoint else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--rate", type=float, default=0.0, help="events/s to publish at (0: as fast as possible)")
    args = parser.parse_args()
    for s in args.shards:
        if PARTITIONS % s:
            parser.error(f"--shards must divide the topic's {PARTITIONS} partitions")
    messages = _messages(args.events)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp, running_kafka() as cluster:
        admin_cm = running_postgres() if "postgres" in args.backend else None
        admin = admin_cm.__enter__() if admin_cm is not None else None
        try:
            for backend in args.backend:
                for shards in args.shards:
                    url = _ledger_urls(backend, shards, admin, Path(tmp))
                    runs.append(_run(cluster, backend, shards, messages, args.rate, url))
                    print(json.dumps(runs[-1]), file=sys.stderr)
        finally:
            if admin_cm is not None:
                admin_cm.__exit__(None, None, None)
    print(json.dumps({"cores": os.cpu_count(), "events": args.events, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
