"""PostgreSQL beside SQLite in one run: the same signed envelopes through Ledger.append on both stores.

    python benchmarks/bench_postgres.py --events 100000            # starts its own durable server

Both stores are durable: SQLite with synchronous=full, PostgreSQL with its defaults (fsync on,
synchronous_commit on) on a fresh server in a temporary directory (the fixture the tests use). The
ledger connects as the writer role of a provisioned database. Also measured on the very rows the ledger
wrote: the store-level floor for a batch of entries, with COPY (what PostgresStore does) and with
executemany in pipeline mode (the alternative), and full verification on both backends.

Prints one JSON object; with --rounds N each figure is the best of N rounds, taken in alternation so a
noisy neighbour hurts both backends alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from lineage_ledger.bench import BENCH_KEY_ID, BENCH_PRODUCER, make_envelopes
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.note import NoteVerifier, parse_verifier_key, verifier_key
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store.base import BatchWrite, EntryRow
from lineage_ledger.store.postgres import PostgresStore

try:
    from tests.services import create_ledger_database, running_postgres, sql
except ModuleNotFoundError:  # run as a script: the repository root is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.services import create_ledger_database, running_postgres, sql

_ENTRY_INSERT = "INSERT INTO entries (idx, subject, event_id, parent, prev, leaf, verdict, body) VALUES "


class _PipelinedStore(PostgresStore):
    """PostgresStore writing entries with executemany in pipeline mode instead of COPY (for comparison)."""

    def write(self, batch: BatchWrite) -> None:
        def body(cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
            with cur.connection.pipeline():
                cur.executemany(_ENTRY_INSERT + "(%s, %s, %s, %s, %s, %s, %s, %s)", batch.entries)

        self._transaction(body)


def _ingest(url: str, envelopes: list[bytes], log: Ed25519Signer, producer: Ed25519Signer) -> tuple[float, int]:
    """Seconds to append every envelope and seal, and the entries written."""
    with Ledger.create(url, log, settings=LedgerSettings(block_seconds=3600.0)) as ledger:
        ledger.register_key(BENCH_PRODUCER, BENCH_KEY_ID, producer.public_key)
        started = time.perf_counter()
        for envelope in envelopes:
            ledger.append(envelope)
        ledger.seal()
        return time.perf_counter() - started, ledger.size


def _floor(store: PostgresStore, rows: list[EntryRow], batch: int = 1000) -> float:
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        store.write(BatchWrite(entries=rows[i : i + batch]))
    return time.perf_counter() - started


def run(events: int, rounds: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Measure; see the module docstring."""
    log = Ed25519Signer.generate("bench.lineage-ledger.local/log")
    producer = Ed25519Signer.generate(BENCH_PRODUCER)
    say(f"signing {events} events into envelopes of 1000")
    envelopes = make_envelopes(events, producer, start_ns=time.time_ns() - 3_600_000_000_000)
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(seconds, best.get(name, float("inf")))

    with tempfile.TemporaryDirectory(prefix="lineage-bench-pg-") as tmp, running_postgres(durable=True) as admin:
        version = sql(admin, "SHOW server_version")[0][0]
        for n in range(rounds):
            sqlite_url = f"{tmp}/round{n}.db"
            say(f"round {n + 1}: SQLite ingest")
            seconds, size = _ingest(sqlite_url, envelopes, log, producer)
            keep("sqlite_ingest", seconds)
            say(f"round {n + 1}: PostgreSQL ingest")
            database = create_ledger_database(admin)
            seconds, pg_size = _ingest(database.writer_url, envelopes, log, producer)
            keep("postgres_ingest", seconds)
            if pg_size != size:
                raise RuntimeError(f"PostgreSQL wrote {pg_size} entries, SQLite {size}")

            say(f"round {n + 1}: verify both")
            for name, url in (("sqlite_verify", sqlite_url), ("postgres_verify", database.auditor_url)):
                report = verify_ledger(url, verifier=log_verifier(log), workers=os.cpu_count())
                if not report.ok:
                    raise RuntimeError(f"{name}: the ledger failed verification: {report.problems[:3]}")
                keep(name, report.seconds)

            say(f"round {n + 1}: store floor, COPY and pipelined executemany")
            reader = PostgresStore(database.auditor_url, readonly=True)
            rows = list(reader.entries(0, size))
            reader.close()
            for name, store_class in (("floor_copy", PostgresStore), ("floor_pipeline", _PipelinedStore)):
                floor = create_ledger_database(admin)
                store = store_class(floor.writer_url)
                keep(name, _floor(store, rows))
                store.close()
            Path(sqlite_url).unlink()

    def rate(name: str, count: int) -> int:
        return round(count / best[name])

    return {
        "events": events,
        "entries": size,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "server": version,
        "sqlite_ingest_events_per_s": rate("sqlite_ingest", events),
        "postgres_ingest_events_per_s": rate("postgres_ingest", events),
        "postgres_to_sqlite": round(best["sqlite_ingest"] / best["postgres_ingest"], 3),
        "sqlite_verify_entries_per_s": rate("sqlite_verify", size),
        "postgres_verify_entries_per_s": rate("postgres_verify", size),
        "postgres_floor_copy_rows_per_s": rate("floor_copy", size),
        "postgres_floor_pipeline_rows_per_s": rate("floor_pipeline", size),
    }


def log_verifier(signer: Ed25519Signer) -> NoteVerifier:
    """The note verifier of the log key."""
    return parse_verifier_key(verifier_key(signer.name, signer.public_key))


def main() -> None:
    """Parse arguments, run, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    print(json.dumps(run(args.events, args.rounds, say), indent=2))


if __name__ == "__main__":
    main()
