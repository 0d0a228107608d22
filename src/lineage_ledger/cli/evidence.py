"""``lineage evidence ...``: export a subject's evidence bundle, and check one offline (no database).

``verify`` needs the log's verifier key from a source the bundle does not control (``--key`` or
``$LINEAGE_TRUSTED_KEY``): a bundle checked against the key it carries itself proves nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from lineage_ledger.cli.options import output_options, subject_argument
from lineage_ledger.cli.query import instant_arg
from lineage_ledger.cli.render import counted, error_console, output_console, print_table
from lineage_ledger.cli.tiers import Tiers, tiers_of
from lineage_ledger.cli.timestamp import check_bundle_timestamp
from lineage_ledger.cli.witness import add_policy_arguments, load_witness_key
from lineage_ledger.errors import ExpiredError, InputError
from lineage_ledger.keys import load_verifier
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.ledger.evidence_set import export_evidence_set
from lineage_ledger.offline import TRUSTED_KEY_ENV_VAR, BundleReport, verify_bundle
from lineage_ledger.offline_set import is_evidence_set, verify_evidence_set
from lineage_ledger.store import open_store

__all__ = ["register"]

_out = output_console()
_err = error_console()


def _print_json(value: Any) -> None:
    print(json.dumps(value))


def _export(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    try:
        with tiers_of(store) as tiers:
            if args.family or args.blast_radius:
                kind = "family" if args.family else "blast-radius"
                bundle = export_evidence_set(store, args.token_id, kind, start=args.start, end=args.end, size=args.size)
            else:
                bundle = export_evidence(store, args.token_id, size=args.size)
    finally:
        store.close()
    if tiers.expired:  # the bundle would lack those entries: it would prove an incomplete history
        first = tiers.expired[0]
        raise ExpiredError(first.first, first.last, first.policy, first.record)
    summary = json.loads(bundle)
    if "bundles" in summary:  # an evidence set: a family or a blast radius
        if args.output == "-":
            sys.stdout.buffer.write(bundle)
            sys.stdout.buffer.flush()
            return 0
        Path(args.output).write_bytes(bundle)
        return _exported_set(args, summary, len(bundle), tiers)
    subject, size, count = summary["subject"], summary["tree_size"], len(summary["entries"])
    absent = (
        f"{subject} has no entries as of the checkpoint of size {size}: "
        "the bundle is a proof of absence, not of any history"
    )
    if args.output == "-":
        sys.stdout.buffer.write(bundle)
        sys.stdout.buffer.flush()
        if not count:
            _err.print(f"[yellow]note:[/] {escape(absent)}")
        return 0
    Path(args.output).write_bytes(bundle)
    if args.json:
        _print_json(
            {
                "file": args.output,
                "subject": subject,
                "tree_size": size,
                "entries": count,
                "proof_of_absence": not count,
                "bytes": len(bundle),
                **tiers.to_json(),
            }
        )
    elif count:
        _out.print(
            f"wrote the evidence of {escape(subject)} ({counted(count, 'entry', 'entries')}) against the "
            f"checkpoint of size {size} to {escape(args.output)}; {tiers.describe()}"
        )
    else:
        _out.print(f"wrote a proof of absence to {escape(args.output)}: {escape(absent)}")
    return 0


def _exported_set(args: argparse.Namespace, summary: dict[str, Any], size: int, tiers: Tiers) -> int:
    tokens = [b["subject"] for b in summary["bundles"]]
    entries = sum(len(b["entries"]) for b in summary["bundles"])
    scope = summary["scope"]
    if args.json:
        _print_json(
            {
                "file": args.output,
                "scope": scope,
                "tokens": tokens,
                "tree_size": summary["tree_size"],
                "entries": entries,
                "bytes": size,
                **tiers.to_json(),
            }
        )
    else:
        _out.print(
            f"wrote the evidence of the {scope['kind']} of {scope['token_id']} ({len(tokens)} tokens, {entries} "
            f"entries) against the checkpoint of size {summary['tree_size']} to {args.output}"
        )
    return 0


def _verify_set(data: bytes, key: str | None, as_json: bool) -> int:
    report = verify_evidence_set(data, log_key=key)
    if as_json:
        _print_json(report.to_json())
        return 0 if report.ok else 1
    scope = report.scope
    if report.ok:
        resources = sorted({u[3] for u in report.uses})
        _out.print(
            f"[green]OK[/] {escape(str(scope.get('kind')))} of {escape(str(scope.get('token_id')))}: "
            f"{len(report.members)} tokens, each with its complete history as of checkpoint size "
            f"{report.tree_size}; resources used: {escape(', '.join(resources) or 'none')}"
        )
        for parent, child, kind, index in report.edges:
            _out.print(f"  {parent} --{kind}@{index}--> {child}")
    else:
        _out.print(f"[red]FAILED[/] evidence set: {len(report.problems)} problems")
    for problem in report.problems:
        _out.print(f"  [red]problem:[/] {escape(problem)}")
    for warning in report.warnings:
        _err.print(f"[yellow]warning:[/] {escape(warning)}")
    return 0 if report.ok else 1


def _show(report: BundleReport) -> None:
    if report.ok:
        what = counted(report.count, "entry", "entries") if report.count else "no entries (proven absent)"
        _out.print(
            f"[green]OK[/] complete history of {escape(str(report.subject))} as of checkpoint "
            f"{escape(str(report.origin))} size "
            f"{report.tree_size}: {what}" + ("; [bold]REVOKED[/]" if report.revoked else "")
        )
    else:
        _out.print(f"[red]FAILED[/] {escape(str(report.subject))}: {counted(len(report.problems), 'problem')}")
    if report.events:
        table = Table(show_edge=False, pad_edge=False)
        for col in ("index", "occurred_at", "event", "verdict", "producer", "resource", "outcome"):
            table.add_column(col)
        for e in report.events:
            verdict = escape(e.verdict) if e.verdict == "ok" else f"[red]{escape(e.verdict)}[/]"
            plain = (e.occurred_at, e.event_type, e.producer, e.resource or "", e.outcome or "")
            occurred_at, event_type, producer, resource, outcome = (escape(cell) for cell in plain)
            table.add_row(str(e.index), occurred_at, event_type, verdict, producer, resource, outcome)
        print_table(_out, table)
    for problem in report.problems:
        _out.print(f"  [red]problem:[/] {escape(problem)}")
    for warning in report.warnings:
        _err.print(f"[yellow]warning:[/] {escape(warning)}")


def _trusted_key(args: argparse.Namespace) -> str:
    """The log's verifier key from --key, else $LINEAGE_TRUSTED_KEY (each a key string or a file holding one)."""
    given = args.key or os.environ.get(TRUSTED_KEY_ENV_VAR, "").strip()
    if not given:
        raise InputError(
            "--key",
            "no trusted log key: give --key KEY (the log's verifier key, which lineage checkpoint --verifier-key "
            f"prints, from a copy kept apart from the ledger) or set ${TRUSTED_KEY_ENV_VAR}; the key inside the "
            "bundle cannot vouch for the bundle",
        )
    return str(load_verifier(given))


def _verify(args: argparse.Namespace) -> int:
    key = _trusted_key(args)
    data = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    if is_evidence_set(data):
        if args.tsa_cert:
            raise InputError("tsa_cert", "an evidence set carries no timestamp; use lineage timestamp verify")
        return _verify_set(data, key, args.json)
    witness_keys = [str(load_witness_key(k)) for k in args.witness_key]
    report = verify_bundle(data, log_key=key, witness_keys=witness_keys, witness_quorum=args.witness_quorum)
    stamp = check_bundle_timestamp(data, args.tsa_cert) if args.tsa_cert else None
    if args.json:
        _print_json(report.to_json() | ({} if stamp is None else {"ok": report.ok and stamp["ok"], "timestamp": stamp}))
    else:
        _show(report)
        if stamp is not None:
            mark = (
                f"[green]OK[/] timestamped at {stamp['gen_time']}"
                if stamp["ok"]
                else f"[red]FAILED[/] {escape(stamp['problem'])}"
            )
            _out.print(f"{mark} (RFC 3161 timestamp of the checkpoint)")
    return 0 if report.ok and (stamp is None or stamp["ok"]) else 1


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage evidence export`` and ``lineage evidence verify`` to the CLI's subcommands."""
    e = sub.add_parser("evidence", parents=[common], help="self-contained evidence bundles, checked offline")
    es = e.add_subparsers(dest="evidence_command", required=True)

    p = es.add_parser("export", parents=[common], help="write a subject's evidence bundle to a file")
    p.add_argument(
        "token_id", type=subject_argument, help="a token id, or a prefixed subject (token:, asset:, policy:, producer:)"
    )
    p.add_argument("-o", "--output", required=True, help="the bundle file ('-' for standard output)")
    p.add_argument("--size", type=int, help="the checkpoint's tree size (default: the latest)")
    whole = p.add_mutually_exclusive_group()
    whole.add_argument("--family", action="store_true", help="every token of the token's family, in one file")
    whole.add_argument(
        "--blast-radius", action="store_true", help="the token and every token derived from it, in one file"
    )
    p.add_argument("--start", type=instant_arg("--start"), help="with --blast-radius: the window's start")
    p.add_argument("--end", type=instant_arg("--end"), help="with --blast-radius: the window's end")
    p.set_defaults(func=_export)

    p = es.add_parser("verify", parents=[output_options()], help="check a bundle offline, with no database")
    p.add_argument("file", help="the bundle file ('-' for standard input)")
    p.add_argument(
        "--key",
        help=f"the log's verifier key (note key string, or a file holding one); else ${TRUSTED_KEY_ENV_VAR}. "
        "Required: the key inside the bundle is not trusted",
    )
    add_policy_arguments(p)
    p.add_argument("--tsa-cert", help="also check the bundle's RFC 3161 timestamp against this TSA root (PEM)")
    p.set_defaults(func=_verify, ledger_default=None)  # reads no ledger, whatever the group was given
