"""``lineage evidence ...``: export a subject's evidence bundle, and check one offline (no database)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lineage_ledger.cli.witness import add_policy_arguments, load_witness_key
from lineage_ledger.keys import load_verifier
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.offline import BundleReport, verify_bundle
from lineage_ledger.store import open_store

__all__ = ["register"]

_out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_json(value: Any) -> None:
    print(json.dumps(value))


def _export(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    try:
        bundle = export_evidence(store, args.token_id, size=args.size)
    finally:
        store.close()
    if args.output == "-":
        sys.stdout.buffer.write(bundle)
        sys.stdout.buffer.flush()
        return 0
    Path(args.output).write_bytes(bundle)
    summary = json.loads(bundle)
    if args.json:
        _print_json(
            {
                "file": args.output,
                "subject": summary["subject"],
                "tree_size": summary["tree_size"],
                "entries": len(summary["entries"]),
                "bytes": len(bundle),
            }
        )
    else:
        _out.print(
            f"wrote the evidence of {summary['subject']} ({len(summary['entries'])} entries) against the "
            f"checkpoint of size {summary['tree_size']} to {args.output}"
        )
    return 0


def _show(report: BundleReport) -> None:
    if report.ok:
        what = f"{report.count} entries" if report.count else "no entries (proven absent)"
        _out.print(
            f"[green]OK[/] complete history of {escape(str(report.subject))} as of checkpoint "
            f"{escape(str(report.origin))} size "
            f"{report.tree_size}: {what}" + ("; [bold]REVOKED[/]" if report.revoked else "")
        )
    else:
        _out.print(f"[red]FAILED[/] {escape(str(report.subject))}: {len(report.problems)} problems")
    if report.events:
        table = Table(show_edge=False, pad_edge=False)
        for col in ("index", "occurred_at", "event", "verdict", "producer", "resource", "outcome"):
            table.add_column(col)
        for e in report.events:
            verdict = escape(e.verdict) if e.verdict == "ok" else f"[red]{escape(e.verdict)}[/]"
            plain = (e.occurred_at, e.event_type, e.producer, e.resource or "", e.outcome or "")
            occurred_at, event_type, producer, resource, outcome = (escape(cell) for cell in plain)
            table.add_row(str(e.index), occurred_at, event_type, verdict, producer, resource, outcome)
        _out.print(table)
    for problem in report.problems:
        _out.print(f"  [red]problem:[/] {escape(problem)}")
    for warning in report.warnings:
        _err.print(f"[yellow]warning:[/] {escape(warning)}")


def _verify(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    key = str(load_verifier(args.key)) if args.key else None
    witness_keys = [str(load_witness_key(k)) for k in args.witness_key]
    report = verify_bundle(data, log_key=key, witness_keys=witness_keys, witness_quorum=args.witness_quorum)
    if args.json:
        _print_json(report.to_json())
    else:
        _show(report)
    return 0 if report.ok else 1


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage evidence export`` and ``lineage evidence verify`` to the CLI's subcommands."""
    e = sub.add_parser("evidence", parents=[common], help="self-contained evidence bundles, checked offline")
    es = e.add_subparsers(dest="evidence_command", required=True)

    p = es.add_parser("export", parents=[common], help="write a subject's evidence bundle to a file")
    p.add_argument("token_id", help="a token id, or a prefixed subject (token:, asset:, policy:)")
    p.add_argument("-o", "--output", required=True, help="the bundle file ('-' for standard output)")
    p.add_argument("--size", type=int, help="the checkpoint's tree size (default: the latest)")
    p.set_defaults(func=_export)

    p = es.add_parser("verify", parents=[common], help="check a bundle offline, with no database")
    p.add_argument("file", help="the bundle file ('-' for standard input)")
    p.add_argument("--key", help="the log's verifier key (note key string, or a file holding one)")
    add_policy_arguments(p)
    p.set_defaults(func=_verify)
