"""Resident memory of the sequencer as the ledger grows (issue: flat from 1M to 5M entries).

Streams signed envelopes into a fresh SQLite ledger and samples the process's current RSS (not the peak)
after every million events, with the sizes of the database and of its write-ahead log on disk.
Usage: python benchmarks/memory_growth.py [--events 5000000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from lineage_ledger.bench import BENCH_KEY_ID, BENCH_PRODUCER, iter_envelopes
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.ledger.writer import Ledger, LedgerSettings


def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def file_mb(path: str) -> float:
    """A file's size in MiB (0 if it is not there)."""
    try:
        return round(os.path.getsize(path) / 2**20, 1)
    except FileNotFoundError:
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--step", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    log = Ed25519Signer.generate("memory.lineage-ledger.local/log")
    producer = Ed25519Signer.generate(BENCH_PRODUCER)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lineage-mem-") as tmp:
        ledger = Ledger.create(f"{tmp}/m.db?synchronous=normal", log, settings=LedgerSettings(block_seconds=3600))
        ledger.register_key(BENCH_PRODUCER, BENCH_KEY_ID, producer.public_key)
        samples = []
        started = time.perf_counter()
        start_ns = time.time_ns() - 10 * 3_600_000_000_000
        for first in range(0, args.events, args.step):
            for envelope in iter_envelopes(args.step, producer, start_ns=start_ns, first=first):
                ledger.append(envelope)
            samples.append(
                {
                    "events": first + args.step,
                    "rss_mb": rss_mb(),
                    "seconds": round(time.perf_counter() - started, 1),
                    "db_mb": file_mb(f"{tmp}/m.db"),
                    "wal_mb": file_mb(f"{tmp}/m.db-wal"),
                }
            )
            print(json.dumps(samples[-1]), flush=True)
        ledger.close()
    growth = samples[-1]["rss_mb"] - samples[0]["rss_mb"]
    print(json.dumps({"samples": samples, "rss_growth_mb_first_to_last": round(growth, 1)}))


if __name__ == "__main__":
    main()
