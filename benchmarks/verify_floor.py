"""The least any verifier of this log does per entry, in Python, on this machine: a floor for verification.

    python benchmarks/verify_floor.py --events 100000
    python benchmarks/verify_floor.py --ledger big.db --key "$(lineage checkpoint --verifier-key --ledger big.db)"

Builds a ledger with ``lineage bench``'s workload, then, with 1 and 2 worker processes, reads every entry's
stored columns through sqlite3 (as ``verify`` must: it checks each derived column against the bytes), hashes
each entry twice (the leaf hash, and the event's own hash) and decodes its body once with msgspec. Nothing
else: no chain, tree, signature, verdict, subject map or column comparison. ``lineage verify`` does all of
that on top, so it cannot go faster than this figure, and a verification target above it needs more than
Python and these libraries on this machine. Beside it, in the same run, the real ``verify_ledger`` on the
same ledger. With ``--ledger`` it measures an existing SQLite ledger instead (say one of a million events
that ``lineage bench`` or the demo workload built), and ``--since-entries N`` also times ``verify --since``
from the signed checkpoint nearest to N entries before the end. Beside each rate, the CPU seconds of this
process and its workers: on a machine shared with other work, entries per CPU second compare better than
wall-clock rates. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import resource
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import msgspec

from lineage_ledger.bench import BENCH_KEY_ID, BENCH_PRODUCER, iter_envelopes
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.note import parse_verifier_key
from lineage_ledger.ledger.pipeline import Pipeline
from lineage_ledger.ledger.verify import verify_ledger, verify_since
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


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (the workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _existing(args: argparse.Namespace) -> None:
    """The floor, full verification and (with --since-entries) verify --since on the ledger at args.ledger."""
    path, verifier = args.ledger, parse_verifier_key(args.key)
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        size = db.execute("SELECT coalesce(max(idx), -1) + 1 FROM entries").fetchone()[0]
        notes = db.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
    figures: dict[str, object] = {"entries": size, "cpus": os.cpu_count()}
    rates: dict[str, float] = {}
    for name in ("floor_2_processes", "verify"):
        started, cpu = time.perf_counter(), _cpu_seconds()
        if name == "verify":
            report = verify_ledger(path, verifier=verifier, workers=2)
            if not report.ok:
                raise RuntimeError(f"verify failed: {report.problems[:3]}")
        else:
            _floor(path, size, 2)
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
        rates[name] = size / seconds
        figures[f"{name}_entries_per_s"] = round(size / seconds)
        figures[f"{name}_entries_per_cpu_s"] = round(size / cpu)
    figures["verify_to_floor"] = round(rates["verify"] / rates["floor_2_processes"], 3)
    if args.since_entries and notes:
        _, note = min(notes, key=lambda row: abs(size - row[0] - args.since_entries))
        started = time.perf_counter()
        report = verify_since(path, note, verifier=verifier, workers=2)
        if not report.ok:
            raise RuntimeError(f"verify --since failed: {report.problems[:3]}")
        figures["since_entries"] = report.checked
        figures["since_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(figures, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="each figure is the best of this many rounds")
    parser.add_argument("--ledger", help="measure this existing SQLite ledger instead of building one")
    parser.add_argument("--key", help="with --ledger: the log's verifier key")
    parser.add_argument("--since-entries", type=int, default=0, help="with --ledger: also time verify --since")
    args = parser.parse_args()
    if args.ledger:
        if not args.key:
            parser.error("--ledger needs --key")
        _existing(args)
        return
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
