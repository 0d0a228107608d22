"""The least any verifier of this log does per entry, in Python, on this machine: a floor for verification.

    python benchmarks/verify_floor.py --events 100000

Builds a ledger with ``lineage bench``'s workload, then, with 1 and 2 worker processes, reads every entry's
stored columns through sqlite3 (as ``verify`` must: it checks each derived column against the bytes), hashes
each entry twice (the leaf hash, and the event's own hash) and decodes its body once with msgspec. Nothing
else: no chain, tree, signature, verdict, subject map or column comparison. ``lineage verify`` does all of
that on top, so it cannot go faster than this figure, and a verification target above it needs more than
Python and these libraries on this machine. Beside it, in the same run, the real ``verify_ledger`` on the
same ledger. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from lineage_ledger.bench import BENCH_KEY_ID, BENCH_PRODUCER, iter_envelopes
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.note import parse_verifier_key
from lineage_ledger.ledger.pipeline import Pipeline
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger, LedgerSettings

_SELECT = (
    "SELECT idx, subject, event_id, parent, prev, leaf, verdict, body FROM entries "
    "WHERE idx >= ? AND idx < ? ORDER BY idx"
)


def _read_hash_decode(job: tuple[str, int, int]) -> int:
    path, lo, hi = job
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    decode = msgspec.json.Decoder().decode
    sha256 = hashlib.sha256
    count = 0
    for row in db.execute(_SELECT, (lo, hi)):
        body = row[7]
        sha256(b"\x00" + body).digest()
        sha256(body).digest()
        decode(body)
        count += 1
    db.close()
    return count


def _floor(path: str, size: int, processes: int) -> float:
    step = size // (processes * 8) + 1
    jobs = [(path, lo, min(lo + step, size)) for lo in range(0, size, step)]
    started = time.perf_counter()
    with mp.get_context("fork").Pool(processes) as pool:
        done = sum(pool.map(_read_hash_decode, jobs))
    seconds = time.perf_counter() - started
    if done != size:
        raise RuntimeError(f"read {done} entries of {size}")
    return done / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="each figure is the best of this many rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="verify-floor-") as tmp:
        path = str(Path(tmp) / "ledger.db")
        log = Ed25519Signer.generate("bench.lineage-ledger.local/log")
        producer = Ed25519Signer.generate(BENCH_PRODUCER)
        ledger = Ledger.create(path, log, settings=LedgerSettings(block_seconds=3600.0))
        ledger.register_key(BENCH_PRODUCER, BENCH_KEY_ID, producer.public_key)
        print(f"writing {args.events} events", file=sys.stderr)
        with Pipeline[None](ledger) as pipe:
            for envelope in iter_envelopes(args.events, producer, start_ns=time.time_ns() - 3_600_000_000_000):
                pipe.submit([ledger.check(envelope)], tag=None)
            pipe.drain()
        ledger.seal()
        size = ledger.size
        verifier = parse_verifier_key(str(ledger.verifier))
        ledger.close()
        best: dict[str, float] = {}

        def keep(name: str, rate: float) -> None:
            best[name] = max(best.get(name, 0.0), rate)

        for _ in range(args.rounds):  # alternated, so a noisy neighbour hurts each figure alike
            keep("floor_1_process", _floor(path, size, 1))
            keep("floor_2_processes", _floor(path, size, 2))
            keep("verify", size / verify_ledger(path, verifier=verifier).seconds)
    print(
        json.dumps(
            {
                "entries": size,
                "cpus": os.cpu_count(),
                "floor_1_process_entries_per_s": round(best["floor_1_process"]),
                "floor_2_processes_entries_per_s": round(best["floor_2_processes"]),
                "verify_entries_per_s": round(best["verify"]),
                "verify_to_floor": round(best["verify"] / best["floor_2_processes"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
