"""Erasing one person from a large ledger that seals personal fields (docs/privacy.md).

Run: ``.venv/bin/python benchmarks/bench_erasure.py [--events 300000] [--target-events 10000] [--dir DIR]``.
Prints one JSON object.

Builds a SQLite ledger created with personal data sealed (``synchronous=normal`` while building, as
``lineage demo`` does), ingesting ``--events`` token events through the pipelined write path in signed
batches of 1000: each token ISSUED then USED four times, every event naming its user id, IP address and
user agent. The first ``--target-events`` events belong to one person; the others to 50,000 other users.
The ledger is sealed, closed and opened again (a cold writer, as ``lineage subject erase`` is), then
``erase_subject`` is timed from the call to its return: marking the keys, counting the person's entries,
the signed erasure entry, destroying the keys and the seal that puts the erasure under a checkpoint.
``lineage verify`` of the whole ledger runs afterwards (not timed) and must pass.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from lineage_ledger.bench import BENCH_KEY_ID, BENCH_PRODUCER
from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.ledger.pipeline import Done, Pipeline
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.privacy.personal import personal_data_meta
from lineage_ledger.privacy.subjects import erase_subject

TARGET = "target.person@example.org"


def envelopes(events: int, target_events: int, signer: Ed25519Signer, start_ns: int) -> Iterator[bytes]:
    pending: list[bytes] = []
    for i in range(events):
        tok, step = divmod(i, 5)
        at = start_ns + i * 1000
        user = TARGET if i < target_events else f"user-{tok % 50_000:05d}"
        body: dict[str, Any] = {
            "event_id": f"{(at // 1_000_000) & 0xFFFFFFFF:08x}-{(at // 1_000_000) & 0xFFFF:04x}"
            + f"-7{i & 0xFFF:03x}-8{(i >> 12) & 0xFFF:03x}-{i:012x}",
            "event_type": "ISSUED" if step == 0 else "USED",
            "kind": "token",
            "occurred_at": format_reading(at, 0),
            "payload": {"client_id": "web", "ip": f"10.{tok % 256}.{(tok >> 8) % 256}.7", "user_id": user}
            | ({} if step == 0 else {"outcome": "ALLOW", "resource": f"/v1/orders/{i % 997}", "user_agent": "App/1"}),
            "schema_version": 1,
            "token_id": token_fingerprint(b"bench-erasure-secret", f"raw-{tok}"),
        }
        pending.append(canonical_bytes(body))
        if len(pending) == 1000:
            yield seal_batch(pending, producer=BENCH_PRODUCER, key_id=BENCH_KEY_ID, signer=signer)
            pending = []
    if pending:
        yield seal_batch(pending, producer=BENCH_PRODUCER, key_id=BENCH_KEY_ID, signer=signer)


def _check(landed: list[Done[None]]) -> None:
    for done in landed:
        for outcome in done.outcomes:
            if isinstance(outcome, Exception):
                raise outcome


def run(events: int, target_events: int, workdir: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="lineage-erasure-") as tmp:
        url = f"{tmp}/people.db?synchronous=normal"
        log = Ed25519Signer.generate("bench.lineage-ledger.local/erasure")
        producer = Ed25519Signer.generate(BENCH_PRODUCER)
        settings = LedgerSettings(block_seconds=3600.0)
        ledger = Ledger.create(url, log, settings=settings, meta=personal_data_meta(url))
        ledger.register_key(BENCH_PRODUCER, BENCH_KEY_ID, producer.public_key)
        t0 = time.perf_counter()
        with Pipeline[None](ledger) as pipe:
            for env in envelopes(events, target_events, producer, time.time_ns() - 3_600_000_000_000):
                _check(pipe.submit([ledger.check(env)], tag=None))
            _check(pipe.drain())
        ledger.seal()
        build_s = time.perf_counter() - t0
        size = ledger.size
        ledger.close()

        ledger = Ledger.open(url, log, settings=settings)
        t0 = time.perf_counter()
        record = erase_subject(ledger, "user:" + TARGET, "benchmark erasure")
        erase_s = time.perf_counter() - t0
        ledger.close()
        report = verify_ledger(url.split("?", maxsplit=1)[0], verifier=ledger.verifier)
        if not report.ok:
            raise RuntimeError(f"the ledger fails verification after the erasure: {report.problems[:3]}")
        return {
            "ledger_entries": size,
            "build_seconds": round(build_s, 1),
            "erased_entries": record.count,
            "erase_seconds": round(erase_s, 3),
            "verified_after": report.ok,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--target-events", type=int, default=10_000)
    parser.add_argument("--dir", default=None, help="where to build the ledger (default: the system's temp)")
    args = parser.parse_args()
    print(json.dumps(run(args.events, args.target_events, args.dir)))


if __name__ == "__main__":
    main()
