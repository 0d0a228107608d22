"""The SQLite ledger alone on the delivery workload, as it grows: cost per event and bytes on disk.

Appends pre-sealed envelopes of ``bench_emitter.py``'s events (1,000 tokens, each used over and over) one
after another to a fresh durable ledger and reports, for every ``--step`` entries, the wall time and the
appending thread's CPU time per event, the bytes the process wrote per event (``/proc/self/io``), and
the sizes of the database and its write-ahead log. Sealing the envelopes is done beforehand and not
timed. A cost per event that grows with the log, or a write-ahead log that grows past its bound, shows
here first (docs/write-path.md, "SQLite's write-ahead log").

Usage: python benchmarks/ledger_growth.py [--events 400000] [--batch 400] [--step 50000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_emitter
from memory_growth import file_mb

from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.model import encode_event


def _written_bytes() -> int:
    """Bytes this process has caused to be written to storage (Linux)."""
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["write_bytes"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=400, help="events per envelope (one commit each)")
    parser.add_argument("--step", type=int, default=50_000, help="report every this many entries")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ledger-growth-") as tmp:
        ledger, producer = bench_emitter._setup(Path(tmp))
        bodies = [encode_event(e) for e in bench_emitter._events(args.events)]
        envelopes = [
            seal_batch(
                bodies[i : i + args.batch],
                producer=bench_emitter.PRODUCER,
                key_id=bench_emitter.KEY_ID,
                signer=producer,
            )
            for i in range(0, args.events, args.batch)
        ]
        del bodies
        per_step = max(1, args.step // args.batch)
        db = Path(tmp) / "ledger.db"
        try:
            for first in range(0, len(envelopes), per_step):
                chunk = envelopes[first : first + per_step]
                count = min(args.events, (first + len(chunk)) * args.batch) - first * args.batch
                wrote, cpu, wall = _written_bytes(), time.thread_time(), time.perf_counter()
                for envelope in chunk:
                    ledger.append(envelope)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                print(
                    json.dumps(
                        {
                            "entries": ledger.size,
                            "wall_us_per_event": round(wall / count * 1e6, 1),
                            "cpu_us_per_event": round(cpu / count * 1e6, 1),
                            "written_kb_per_event": round((_written_bytes() - wrote) / count / 1024, 2),
                            "db_mb": file_mb(str(db)),
                            "wal_mb": file_mb(f"{db}-wal"),
                        }
                    ),
                    flush=True,
                )
        finally:
            ledger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
