"""The floor of Kafka into PostgreSQL on this machine: the least work any ledger must do per event, timed.

    python benchmarks/kafka_pg_floor.py --events 200000 --consumers 1 2

The issue asks for 50,000 events/s end to end through Kafka into PostgreSQL. This measures what is left
when everything a ledger adds is taken away: the same Avro messages ``bench_kafka.py`` publishes (4
partitions, one single-object encoded batch envelope per partition per 1,000 events) are published first,
then ``--consumers`` processes, each on its share of the partitions, poll them, turn each message back into
the canonical JSON events the ledger hashes (``kafka.avro.decode_envelope``, then the envelope's events),
take one SHA-256 per event, and COPY one row per event (index, leaf hash, bytes) into a PostgreSQL table,
committing every 1,000 events. No signature check, no sequencing, chains, lifecycle, Merkle tree, subject
map or indexes: the full path does all of this and those on top. The broker, the database server and the
consumers share the machine, as they do in ``bench_kafka.py``. The server runs with fsync off (as in
``bench_kafka.py``), which only raises the floor. Producing is not timed either (the topic is full before
the clock starts), which raises it too.

Prints one JSON object: events/s per consumer count, from the start signal to the last commit, and how
busy the whole machine's CPUs were meanwhile (1.0: both cores fully used, so any work a ledger adds per
event comes out of the same cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

try:
    from bench_kafka import PARTITIONS, _messages, produce
    from tests.services import running_postgres, sql
    from tests.services_kafka import running_kafka
except ModuleNotFoundError:  # run as a script: the repository root is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_kafka import PARTITIONS, _messages, produce
    from tests.services import running_postgres, sql
    from tests.services_kafka import running_kafka

COMMIT_EVERY = 1000


def _cpu_times() -> tuple[int, int]:
    """(all, idle) jiffies of the whole machine since boot, from /proc/stat (idle counts iowait too)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def _consume(
    bootstrap: str, topic: str, partitions: list[int], expected: int, url: str, table: str, go: Any
) -> tuple[int, float, float]:
    """One consumer process: (events stored, first poll, last commit), both wall-clock seconds."""
    import psycopg
    from confluent_kafka import Consumer, TopicPartition

    from lineage_ledger.core.envelope import open_envelope
    from lineage_ledger.kafka.avro import decode_envelope

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"floor-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    sha256 = hashlib.sha256
    done = 0
    index = 0
    rows: list[tuple[int, bytes, bytes]] = []
    with psycopg.connect(url) as conn:

        def store(rows: list[tuple[int, bytes, bytes]]) -> int:
            with conn.cursor() as cur, cur.copy(f"COPY {table} (idx, leaf, body) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            return len(rows)

        go.wait()
        started = time.time()
        while done < expected:
            for message in consumer.consume(num_messages=64, timeout=1.0):
                value = message.value()
                if message.error() or value is None:
                    raise RuntimeError(f"no message: {message.error()}")
                for event in open_envelope(decode_envelope(value)).events:
                    body = bytes(event)
                    rows.append((index, sha256(b"\x00" + body).digest(), body))
                    index += 1
                if len(rows) >= COMMIT_EVERY:
                    done += store(rows)
                    rows = []
            if rows and done + len(rows) >= expected:
                done += store(rows)
                rows = []
        finished = time.time()
    consumer.close()
    return done, started, finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    messages = _messages(args.events)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kafka-pg-floor-"), running_kafka() as cluster, running_postgres() as pg:
        from confluent_kafka import Producer

        for consumers in args.consumers:
            topic = f"floor-{consumers}-{uuid.uuid4().hex[:6]}"
            cluster.create_topic(topic, partitions=PARTITIONS, replication_factor=1)
            producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
            for value, partition, _ in messages:
                produce(producer, topic, value, partition)
            producer.flush(120)
            tables = []
            for c in range(consumers):
                table = f"floor_{consumers}_{c}"
                sql(pg, f"CREATE TABLE {table} (idx bigint PRIMARY KEY, leaf bytea NOT NULL, body bytea NOT NULL)")
                tables.append(table)
            shares = [[p for p in range(PARTITIONS) if p % consumers == c] for c in range(consumers)]
            expected = [sum(n for _, p, n in messages if p in share) for share in shares]
            ctx = mp.get_context("spawn")
            with ctx.Manager() as manager:
                go = manager.Event()
                with ctx.Pool(consumers) as pool:
                    results = [
                        pool.apply_async(
                            _consume, (cluster.bootstrap, topic, shares[c], expected[c], pg, tables[c], go)
                        )
                        for c in range(consumers)
                    ]
                    time.sleep(3)  # connections up, partitions assigned
                    before = _cpu_times()
                    go.set()
                    outcomes = [r.get(timeout=900) for r in results]
                    after = _cpu_times()
            events = sum(o[0] for o in outcomes)
            seconds = max(o[2] for o in outcomes) - min(o[1] for o in outcomes)
            stored = sum(int(sql(pg, f"SELECT count(*) FROM {t}")[0][0]) for t in tables)  # noqa: S608 - our names
            runs.append(
                {
                    "consumers": consumers,
                    "events": events,
                    "stored": stored,
                    "seconds": round(seconds, 2),
                    "events_per_s": round(events / seconds),
                    "machine_busy": round(1 - (after[1] - before[1]) / max(after[0] - before[0], 1), 2),
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr)
    print(json.dumps({"cores": os.cpu_count(), "events": args.events, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
