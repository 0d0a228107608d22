"""The archive tier on an existing ledger: bytes per entry in the files, the archive run's rate, and the
latency of token timelines answered from the archive.

    lineage demo                                     # the demo workload: lineage-demo/demo.db
    python benchmarks/bench_archive.py --ledger lineage-demo/demo.db

Copies the (SQLite) ledger and its log key to a temporary directory, archives every sealed block there
(the whole run: read, encode, write, read back and check against the log, record, delete the hot rows),
then asks for the timelines of ``--queries`` archived tokens picked at random. The original is not touched.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from lineage_ledger.archive.location import ArchiveLocation
from lineage_ledger.archive.writer import archive_ledger
from lineage_ledger.keys import load_signer
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", required=True, help="an SQLite ledger with its log key at <ledger>.key")
    parser.add_argument("--queries", type=int, default=200, help="timelines to time (default 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        url = str(Path(tmp) / "ledger.db")
        shutil.copyfile(args.ledger, url)
        began = time.perf_counter()
        with Ledger.open(url, load_signer(args.ledger + ".key")) as ledger:
            done = archive_ledger(ledger, ArchiveLocation(str(Path(tmp) / "archive")), ledger.now())
        seconds = time.perf_counter() - began
        entries, size = sum(f.entries for f in done), sum(f.bytes for f in done)
        store = open_store(url, readonly=True)
        try:
            keys = [k for k, *_ in store.archive_keys(["s:token:"], prefix=True)]
            tokens = random.Random(1).sample([k[len("s:token:") :] for k in keys], min(args.queries, len(keys)))
            lineage = Lineage(store)
            latency = []
            for token in tokens:
                start = time.perf_counter()
                lineage.timeline(token)
                latency.append(time.perf_counter() - start)
            tiers = store.take_report().names() if hasattr(store, "take_report") else ["hot"]
        finally:
            store.close()
    latency.sort()

    def pct(q: float) -> float:
        return round(latency[min(len(latency) - 1, int(q * len(latency)))] * 1000, 1)

    print(
        json.dumps(
            {
                "entries": entries,
                "files": len(done),
                "archive_bytes": size,
                "bytes_per_entry": round(size / entries, 1),
                "archive_entries_per_s": round(entries / seconds),
                "timelines": len(latency),
                "timeline_ms_p50": pct(0.5),
                "timeline_ms_p99": pct(0.99),
                "tiers": tiers,
            }
        )
    )


if __name__ == "__main__":
    main()
