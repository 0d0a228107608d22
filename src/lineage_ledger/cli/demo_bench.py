"""``lineage demo`` builds, ingests, seals, verifies and traces a realistic workload in a fresh demo ledger;
``lineage bench`` measures ingest, verify and floor throughput in one run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lineage_ledger.cli._common import CommandError
from lineage_ledger.cli._common import ledger_file as _ledger_file
from lineage_ledger.cli.ledger_commands import add_personal_data_option, init_ledger, print_trace
from lineage_ledger.cli.options import ledger_options, output_options
from lineage_ledger.cli.render import error_console, output_console, print_json, progress
from lineage_ledger.cli.verify_commands import is_sharded, verify_sharded_ledger
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.query import trace_token
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.store import open_store

__all__ = ["DEMO_LEDGER", "DEMO_ORIGIN", "register"]

out = output_console()
err = error_console()


DEMO_ORIGIN = "demo.lineage-ledger.local/log"
DEMO_LEDGER = "./lineage-demo/demo.db"


def cmd_demo(args: argparse.Namespace) -> int:
    from lineage_ledger.workload import PRODUCERS, batches, generate

    started = time.perf_counter()
    path = _ledger_file(args.ledger)
    if path is not None and path.exists():
        _remove_demo(args.ledger, path)
    shown = args.ledger
    if "?" not in args.ledger and not args.ledger.startswith("postgres"):
        # Thousands of small multi-producer batches: commit each to the OS (safe if the process is killed)
        # rather than fsync each (safe on power loss), which is the default everywhere else.
        args.ledger += "?synchronous=normal"
    ledger = init_ledger(args)
    signers = {p: Ed25519Signer.generate(p) for p in PRODUCERS}
    key_ids = {p: f"{p}-2026-11" for p in PRODUCERS}
    for p, s in signers.items():
        ledger.register_key(p, key_ids[p], s.public_key)
    workload = generate(args.tokens, start_ns=time.time_ns() - 7_200_000_000_000)
    n = len(workload.events)
    violations = 0
    with ledger, progress(err, args.json, "demo ingest", n) as advance:
        done = 0
        for envelope in batches(workload, signers, key_ids):
            result = ledger.append(envelope)
            violations += sum(r.verdict != "ok" for r in result.receipts)
            done += len(result.receipts)
            advance(done)
        checkpoint = ledger.seal()
        size = ledger.size
        ingest_s = time.perf_counter() - started
        traces = [trace_token(ledger.store, t) for t in workload.traced]
    if is_sharded(args.ledger):
        return verify_sharded_ledger(args)
    with progress(err, args.json, "verify", None) as advance:
        report = verify_ledger(args.ledger, verifier=ledger.verifier, progress=advance)
    summary = {
        "ledger": shown,
        "tokens": len(workload.token_ids),
        "events": n,
        "entries": size,
        "violations_flagged": violations,
        "violations_planted": workload.violations_planted,
        "checkpoint": checkpoint.note if checkpoint else None,
        "verified": report.ok,
        "verify_problems": [p.message for p in report.problems[:5]],
        "ingest_seconds": round(ingest_s, 2),
        "verify_seconds": round(report.seconds, 2),
        "traced_tokens": [t.token_id for t in traces],
    }
    if args.json:
        print_json(out, {**summary, "traces": [t.to_json() for t in traces]})
        return 0 if report.ok else 1
    out.print(
        f"[bold]demo ledger[/] {shown}: {len(workload.token_ids)} tokens, {n} events from "
        f"{len(PRODUCERS)} producers -> {size} entries in {ingest_s:.1f} s"
    )
    out.print(f"lifecycle violations flagged: {violations} (including {workload.violations_planted} planted)")
    out.print(f"verification: {'[green]OK[/]' if report.ok else '[red]FAILED[/]'} in {report.seconds:.2f} s")
    if checkpoint:
        out.print("[bold]latest signed checkpoint[/]:")
        out.print(checkpoint.note, end="")
    for trace in traces:
        out.print()
        print_trace(trace)
    out.print()
    out.print(f'try: lineage verify --ledger {shown} --key "{ledger.verifier}"')
    return 0 if report.ok else 1


def _remove_demo(url: str, path: Path) -> None:
    """Replace an earlier demo ledger, and nothing else."""
    try:
        store = open_store(url, readonly=True)
        origin = store.meta().get("origin")
        store.close()
    except LedgerError:
        origin = None
    if origin != DEMO_ORIGIN:
        raise CommandError(f"{path} exists and is not a demo ledger; choose another --ledger")
    for suffix in ("", "-wal", "-shm", ".key", ".producer.key", ".subjects", ".subjects-wal", ".subjects-shm"):
        target = path.with_name(path.name + suffix)
        if target.exists():
            target.unlink()


def cmd_bench(args: argparse.Namespace) -> int:
    from lineage_ledger.bench import run_bench

    def say(msg: str) -> None:
        if not args.json:
            err.print(f"[dim]{msg}[/]")

    figures = run_bench(
        args.events, synchronous=args.synchronous, workers=args.workers, progress=say, personal_data=args.personal_data
    )
    if args.json:
        print_json(out, figures)
    else:
        for k, v in figures.items():
            out.print(f"{k:>22}: {v}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the commands of this module to the ``lineage`` parser."""
    output = output_options()
    p = sub.add_parser(
        "demo",
        parents=[ledger_options(DEMO_LEDGER), output],
        help="build, ingest, seal, verify and trace a realistic workload",
    )
    p.add_argument("--tokens", type=int, default=10_000, help="root tokens in the workload (default 10000)")
    add_personal_data_option(p)
    p.set_defaults(func=cmd_demo, origin=DEMO_ORIGIN, creates_ledger=True)

    p = sub.add_parser("bench", parents=[output], help="ingest, verify and floor throughput in one run")
    p.add_argument("--events", type=int, default=200_000, help="events to ingest (default 200000)")
    p.add_argument(
        "--synchronous", default="full", choices=["full", "normal"], help="SQLite's synchronous setting (default full)"
    )
    p.add_argument("--workers", type=int, default=None, help="verifying processes (default: all cores)")
    p.add_argument(
        "--personal-data",
        action="store_true",
        help="also ingest the same events into a ledger that seals personal fields (docs/privacy.md)",
    )
    p.set_defaults(func=cmd_bench)
