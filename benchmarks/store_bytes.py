"""Bytes per entry on disk, by table and index, of the demo workload in each SQLite store layout.

Builds the ``lineage demo`` workload (``--tokens`` root tokens, batches as the demo sends them) into a fresh
ledger per layout, with blocks closed by size only (``--block-size``), so both layouts hold the same entries,
blocks and subject-map nodes whatever the machine's speed, and prints SQLite's ``dbstat`` figures: the bytes
of every table and index divided by the number of entries.

Usage: python benchmarks/store_bytes.py [--tokens 10000] [--block-size 10000] [--layouts 1 2]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store import sqlite
from lineage_ledger.workload import PRODUCERS, batches, generate


def _build(path: Path, tokens: int, block_size: int) -> int:
    log = Ed25519Signer.generate("bytes.lineage-ledger.local/log")
    signers = {p: Ed25519Signer.generate(p) for p in PRODUCERS}
    key_ids = {p: f"{p}-1" for p in PRODUCERS}
    workload = generate(tokens, start_ns=1_763_000_000_000_000_000)
    settings = LedgerSettings(block_size=block_size, block_seconds=1e9)
    with Ledger.create(f"{path}?synchronous=off", log, settings=settings) as ledger:
        for producer, signer in signers.items():
            ledger.register_key(producer, key_ids[producer], signer.public_key)
        for envelope in batches(workload, signers, key_ids):
            ledger.append(envelope)
        ledger.seal()
        return ledger.size


def _per_entry(path: Path) -> dict[str, float]:
    with closing(sqlite3.connect(path)) as db:
        entries = db.execute("SELECT count(*) FROM entries").fetchone()[0]
        rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    sizes = {str(name): round(size / entries, 1) for name, size in rows if size / entries >= 0.5}
    return {"total": round(sum(size for _, size in rows) / entries, 1), **sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--block-size", type=int, default=10_000)
    parser.add_argument("--layouts", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    out = {}
    with tempfile.TemporaryDirectory(prefix="store-bytes-") as tmp:
        for layout in args.layouts:
            path = Path(tmp) / f"layout{layout}.db"
            started = time.perf_counter()
            created_with = sqlite.SCHEMA_VERSION
            setattr(sqlite, "SCHEMA_VERSION", layout)  # noqa: B010  # the layout new ledgers get (a Final)
            try:
                size = _build(path, args.tokens, args.block_size)
            finally:
                setattr(sqlite, "SCHEMA_VERSION", created_with)  # noqa: B010
            out[f"layout {layout}"] = {
                "entries": size,
                "seconds": round(time.perf_counter() - started, 1),
                "bytes_per_entry": _per_entry(path),
            }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
