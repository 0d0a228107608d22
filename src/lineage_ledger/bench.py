"""``lineage bench``: full-path ingest, full verification and a raw-SQLite floor, measured in one run.

Ingest is measured twice on the same envelopes: pipelined (``ingest_events_per_s``: each batch's commit
overlaps the next batch's checks and sequencing, as ``lineage ingest`` and the Kafka consumer run) and one
``Ledger.append`` after another (``ingest_unpipelined_events_per_s``).

The floor writes the very rows the ledger wrote (same schema, same indexes, same batch size, same
durability setting) through the store's own write (multi-row INSERTs, the fastest way we found to put rows
into SQLite from Python, and the subject index in sorted runs, as for the ledger) plus one SHA-256 each,
so ``ingest_to_floor`` says how much of
the machine's storage speed the ledger's checks, chains and tree leave over; comparing within one run keeps
the ratio meaningful on a shared, noisy machine.
"""

from __future__ import annotations

import hashlib
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.note import parse_verifier_key
from lineage_ledger.ledger.pipeline import Done, Pipeline
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.privacy.personal import personal_data_meta
from lineage_ledger.store.base import BatchWrite
from lineage_ledger.store.sqlite import SQLiteStore

__all__ = ["BENCH_KEY_ID", "BENCH_PRODUCER", "iter_envelopes", "make_envelopes", "run_bench"]

BENCH_PRODUCER = "bench-gateway"
BENCH_KEY_ID = "bench-gateway-1"


def make_envelopes(events: int, signer: Ed25519Signer, *, batch: int = 1000, start_ns: int) -> list[bytes]:
    """Signed envelopes holding ``events`` token events: each token is ISSUED, then USED four times."""
    return list(iter_envelopes(events, signer, batch=batch, start_ns=start_ns))


def iter_envelopes(
    events: int, signer: Ed25519Signer, *, batch: int = 1000, start_ns: int, first: int = 0
) -> Iterator[bytes]:
    """make_envelopes as a stream, for runs too long to hold in memory; ``first`` offsets the event numbers."""
    pending: list[bytes] = []
    secret = b"bench-fingerprint-secret"
    for i in range(first, first + events):
        tok, step = divmod(i, 5)
        at = start_ns + i * 1000
        body: dict[str, Any] = {
            "event_id": f"{(at // 1_000_000) & 0xFFFFFFFFFFFF:012x}"[:8]
            + f"-{(at // 1_000_000) & 0xFFFF:04x}-7{i & 0xFFF:03x}-8{(i >> 12) & 0xFFF:03x}-{i:012x}",
            "event_type": "ISSUED" if step == 0 else "USED",
            "kind": "token",
            "occurred_at": format_reading(at, 0),
            "payload": {
                "client_id": "web",
                "ip": "10.1.2.3",
                "outcome": "ALLOW",
                "policy_version": "v7",
                "resource": f"/v1/orders/{i % 997}",
                "user_id": f"user-{tok % 5000:05d}",
            },
            "schema_version": 1,
            "token_id": token_fingerprint(secret, f"raw-{tok}"),
        }
        if step == 0:
            body["payload"] = {
                "client_id": "web",
                "scopes": ["read", "write"],
                "user_id": f"user-{tok % 5000:05d}",
            }
        pending.append(canonical_bytes(body))
        if len(pending) == batch:
            yield seal_batch(pending, producer=BENCH_PRODUCER, key_id=BENCH_KEY_ID, signer=signer)
            pending = []
    if pending:
        yield seal_batch(pending, producer=BENCH_PRODUCER, key_id=BENCH_KEY_ID, signer=signer)


def _all_appended(landed: list[Done[None]]) -> None:
    for done in landed:
        for outcome in done.outcomes:
            if isinstance(outcome, Exception):
                raise outcome


def _rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(own / 1024, 1)


def run_bench(
    events: int = 200_000,
    *,
    workdir: str | None = None,
    synchronous: str = "full",
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
    personal_data: bool = False,
) -> dict[str, Any]:
    """Run the three measurements and return the figures (see the module docstring); with ``personal_data``,
    also the cost per event of sealing personal fields: the same envelopes ingested, pipelined, with sealing
    off and on in turns, best of three each (``sealed_cost_per_event`` = on / off)."""
    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="lineage-bench-") as tmp:
        log = Ed25519Signer.generate("bench.lineage-ledger.local/log")
        producer = Ed25519Signer.generate(BENCH_PRODUCER)
        say(f"signing {events} events into envelopes of 1000")
        envelopes = make_envelopes(events, producer, start_ns=time.time_ns() - 3_600_000_000_000)
        settings = LedgerSettings(block_seconds=3600.0, freeze_gc_at_seal=True)  # as lineage ingest runs
        say("ingest, one append after another: check, sequence, integrate, commit")
        plain = Ledger.create(f"{tmp}/plain.db?synchronous={synchronous}", log, settings=settings)
        plain.register_key(BENCH_PRODUCER, BENCH_KEY_ID, producer.public_key)
        t0 = time.perf_counter()
        for env in envelopes:
            plain.append(env)
        plain.seal()
        plain_s = time.perf_counter() - t0
        plain.close()

        say("ingest, pipelined as lineage ingest does: each commit overlaps the next batch's work")
        url = f"{tmp}/bench.db?synchronous={synchronous}"
        ledger = Ledger.create(url, log, settings=settings)
        ledger.register_key(BENCH_PRODUCER, BENCH_KEY_ID, producer.public_key)
        t0 = time.perf_counter()
        with Pipeline[None](ledger) as pipe:
            for env in envelopes:
                _all_appended(pipe.submit([ledger.check(env)], tag=None))
            _all_appended(pipe.drain())
        ledger.seal()
        ingest_s = time.perf_counter() - t0
        rows = list(ledger.store.entries(0, ledger.size))
        ledger.close()
        sealed = _sealed_cost(tmp, synchronous, log, producer, envelopes, say) if personal_data else None

        say("floor: the same rows through the store's write alone, and one SHA-256 each")
        floor_store = SQLiteStore(f"{tmp}/floor.db", synchronous=synchronous)
        t0 = time.perf_counter()
        sha256 = hashlib.sha256
        for i in range(0, len(rows), 1000):
            chunk = rows[i : i + 1000]
            for r in chunk:
                sha256(b"\x00" + r.body).digest()
            floor_store.write(BatchWrite(entries=chunk))
        floor_s = time.perf_counter() - t0
        floor_store.close()
        del rows

        say("verify: every hash, column, chain, block, node and checkpoint")
        report = verify_ledger(url, verifier=parse_verifier_key(ledger.verifier.__str__()), workers=workers)
        if not report.ok:
            raise RuntimeError(f"benchmark ledger failed verification: {report.problems[:3]}")
        size = report.size
        ingest_rate = events / ingest_s
        floor_rate = size / floor_s
        personal: dict[str, Any] = {}
        if sealed is not None:
            personal = {
                "ingest_not_sealed_best_seconds": round(sealed[0], 3),
                "ingest_sealed_best_seconds": round(sealed[1], 3),
                "ingest_sealed_events_per_s": round(events / sealed[1]),
                "sealed_cost_per_event": round(sealed[1] / sealed[0], 3),
                "sealed_cpu_cost_per_event": round(sealed[3] / sealed[2], 3),
            }
        return personal | {
            "events": events,
            "entries": size,
            "synchronous": synchronous,
            "cpus": os.cpu_count(),
            "ingest_seconds": round(ingest_s, 3),
            "ingest_events_per_s": round(ingest_rate),
            "ingest_unpipelined_events_per_s": round(events / plain_s),
            "verify_seconds": round(report.seconds, 3),
            "verify_events_per_s": round(size / report.seconds),
            "floor_seconds": round(floor_s, 3),
            "floor_events_per_s": round(floor_rate),
            "ingest_to_floor": round(ingest_rate / floor_rate, 3),
            "peak_rss_mb": _rss_mb(),
            "db_bytes_per_entry": round(Path(f"{tmp}/bench.db").stat().st_size / size, 1),
        }


def _sealed_cost(
    tmp: str,
    synchronous: str,
    log: Ed25519Signer,
    producer: Ed25519Signer,
    envelopes: list[bytes],
    say: Callable[[str], None],
    rounds: int = 3,
) -> tuple[float, float, float, float]:
    """The best of ``rounds`` pipelined ingests of ``envelopes`` with personal fields off and on, taken in
    turns (a shared machine's noise then hits both alike): (seconds off, seconds on, CPU seconds off, CPU
    seconds on). The process's CPU time counts every thread of the write path and no wait, so it varies
    less than the wall clock when other work shares the machine."""
    off: list[float] = []
    on: list[float] = []
    cpu_off: list[float] = []
    cpu_on: list[float] = []
    for n in range(rounds):
        for sealing, times, cpu in ((False, off, cpu_off), (True, on, cpu_on)):
            say(f"ingest, pipelined, personal fields {'sealed' if sealing else 'not sealed'} ({n + 1}/{rounds})")
            url = f"{tmp}/personal-{n}-{int(sealing)}.db?synchronous={synchronous}"
            meta = personal_data_meta(url) if sealing else None
            ledger = Ledger.create(url, log, settings=LedgerSettings(block_seconds=3600.0), meta=meta)
            ledger.register_key(BENCH_PRODUCER, BENCH_KEY_ID, producer.public_key)
            t0, c0 = time.perf_counter(), time.process_time()
            with Pipeline[None](ledger) as pipe:
                for env in envelopes:
                    _all_appended(pipe.submit([ledger.check(env)], tag=None))
                _all_appended(pipe.drain())
            ledger.seal()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            ledger.close()
    return min(off), min(on), min(cpu_off), min(cpu_on)
