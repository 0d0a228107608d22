"""``lineage findings scan``: run every findings rule over the log; print, write JSON lines, post to a webhook.

People see a summary first (how many findings of each severity and rule), then the findings at or above
``--min-severity`` (default medium: low findings are clock skew only). ``--backfill`` is for a log that
holds history imported after the fact: an event recorded long after it occurred is then expected, so the
late-delivery half of ``time.skew`` is off (a clock running ahead is still a finding).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from lineage_ledger.cli.render import counted, output_console, print_table
from lineage_ledger.core.instant import ACCEPTED_FORMS, parse_instant
from lineage_ledger.errors import InputError
from lineage_ledger.ledger.findings import (
    SEVERITIES,
    Finding,
    FindingsEngine,
    FindingSink,
    JsonLinesSink,
    RuleSet,
    Severity,
)
from lineage_ledger.ledger.shards import ShardLayout, layout_of, shard_url
from lineage_ledger.store import open_store
from lineage_ledger.webhook import WebhookSink

__all__ = ["register"]

_out = output_console()
_S = 1_000_000_000
_COLOURS = {"low": "dim", "medium": "yellow", "high": "red", "critical": "bold red"}


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity)


class _AtLeast:
    """Forwards findings at or above a severity to another sink."""

    def __init__(self, sink: FindingSink, severity: Severity) -> None:
        self.sink = sink
        self.floor = _rank(severity)

    def emit(self, findings: Sequence[Finding]) -> None:
        chosen = [f for f in findings if _rank(f.severity) >= self.floor]
        if chosen:
            self.sink.emit(chosen)

    def close(self) -> None:
        self.sink.close()


def _ns(seconds: float, field: str) -> int:
    if seconds < 0:
        raise InputError(field, "must not be negative")
    return int(seconds * _S)


def _now(text: str | None) -> str | int | None:
    if text is None:
        return None
    return parse_instant(text, field="--now").reading()


def _rules(args: argparse.Namespace) -> RuleSet:
    gaps: dict[str, int] = {}
    for item in args.heartbeat or []:
        producer, sep, seconds = item.partition("=")
        try:
            value = float(seconds)
        except ValueError:
            value = -1.0
        if not sep or not producer or value <= 0:
            raise InputError("--heartbeat", f"{item!r} is not PRODUCER=SECONDS with SECONDS > 0")
        gaps[producer] = _ns(value, "--heartbeat")
    return RuleSet(
        skew_tolerance_ns=_ns(args.skew_seconds, "--skew-seconds"),
        max_delay_ns=(
            _ns(args.max_delay_seconds, "--max-delay-seconds") if args.max_delay_seconds and not args.backfill else None
        ),
        refresh_replay_window_ns=_ns(args.replay_seconds, "--replay-seconds"),
        refresh_storm_count=args.storm_count,
        refresh_storm_window_ns=_ns(args.storm_seconds, "--storm-seconds"),
        ip_jump_window_ns=_ns(args.ip_jump_seconds, "--ip-jump-seconds"),
        heartbeat_gap_ns=gaps,
        default_heartbeat_gap_ns=_ns(args.heartbeat_seconds, "--heartbeat-seconds") if args.heartbeat_seconds else None,
        known_producers=frozenset(args.known_producer) if args.known_producer else None,
    )


def _table(findings: list[Finding]) -> None:
    table = Table(title=counted(len(findings), "finding"), show_edge=False, pad_edge=False)
    for col in ("severity", "rule", "subject", "indices", "detected_at", "message"):
        table.add_column(col)
    for f in findings:
        table.add_row(
            f"[{_COLOURS[f.severity]}]{f.severity}[/]",
            f.rule,
            f.subject,
            ",".join(map(str, f.indices)),
            f.detected_at,
            f.message,
        )
    print_table(_out, table)


def _summary(
    scanned: int,
    floor: str,
    by_severity: dict[str, int],
    by_rule: dict[str, int],
    below: int,
    backfill: bool,
    everything: list[Finding],
) -> None:
    """What a person reads first: totals by severity and by rule, and what was left out."""
    counts = ", ".join(f"{n} {s}" for s, n in reversed(by_severity.items()) if n) or "no findings"
    _out.print(f"scanned {counted(scanned, 'entry', 'entries')}: {counts} (at or above {floor})")
    for rule, n in sorted(by_rule.items(), key=lambda item: (-item[1], item[0])):
        _out.print(f"  {n:>6}  {rule}")
    if below:
        _out.print(f"  {below} more below {floor} not shown (--min-severity low shows them)")
    late = sum(1 for f in everything if f.rule == "time.skew" and "after it occurred" in f.message)
    if not backfill and late and late * 2 >= scanned:
        _out.print(
            f"  {late} events were recorded long after they occurred: if this log holds imported history, "
            "scan with --backfill"
        )


def _scan_sharded(args: argparse.Namespace, layout: ShardLayout, rules: RuleSet, now: str | int | None) -> int:
    """Every shard's own findings, and the lifecycle rules that span shards (ledger.sharded_lineage)."""
    from lineage_ledger.ledger.sharded_lineage import ShardedLineage

    if args.jsonl or args.webhook:
        raise InputError("--jsonl", "on a sharded ledger, scan each shard for sinks; the root scan prints only")
    floor: Severity = args.min_severity
    stores = [open_store(shard_url(args.ledger, n), readonly=True) for n in range(layout.shards)]
    try:
        found: list[tuple[Severity, dict[str, Any]]] = []
        for n, store in enumerate(stores):
            for finding in FindingsEngine(rules).scan(store, now=now):
                found.append((finding.severity, {"shard": n, **finding.to_json()}))
        for c in ShardedLineage(layout, stores).cross_shard_findings():
            found.append((rules.severity_of(c.rule), {"severity": rules.severity_of(c.rule), **c.to_json()}))
    finally:
        for store in stores:
            store.close()
    found = [(sev, f) for sev, f in found if _rank(sev) >= _rank(floor)]
    if args.json:
        print(json.dumps({"shards": layout.shards, "findings": [f for _, f in found]}))
    else:
        for sev, item in found:
            where = f"shard {item['shard']}" if "shard" in item else "across shards"
            _out.print(
                f"[{_COLOURS[sev]}]{sev:>8}[/] {item['rule']:<32} {item['subject']:<40} {where}: {item['message']}"
            )
        _out.print(f"{counted(len(found), 'finding')} over {counted(layout.shards, 'shard')}")
    if args.fail_on is not None and any(_rank(sev) >= _rank(args.fail_on) for sev, _ in found):
        return 1
    return 0


def _scan(args: argparse.Namespace) -> int:
    rules = _rules(args)
    now = _now(args.now)
    floor: Severity = args.min_severity
    sinks: list[FindingSink] = []
    store = open_store(args.ledger, readonly=True)
    layout = layout_of(store)
    if layout is not None:
        store.close()
        return _scan_sharded(args, layout, rules, now)
    try:
        if args.jsonl:
            sinks.append(_AtLeast(JsonLinesSink(args.jsonl), floor))
        if args.webhook:
            sinks.append(_AtLeast(WebhookSink(args.webhook, timeout=args.webhook_timeout), floor))
        engine = FindingsEngine(rules, sinks=sinks)
        everything = list(engine.scan(store, now=now))
        found = [f for f in everything if _rank(f.severity) >= _rank(floor)]
        scanned = engine.position
    finally:
        for sink in sinks:
            sink.close()
        store.close()
    by_rule: dict[str, int] = {}
    by_severity: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    for f in found:
        by_rule[f.rule] = by_rule.get(f.rule, 0) + 1
        by_severity[f.severity] += 1
    below = len(everything) - len(found)
    summary: dict[str, Any] = {
        "entries": scanned,
        "min_severity": floor,
        "by_rule": dict(sorted(by_rule.items())),
        "by_severity": by_severity,
        "below_min_severity": below,
    }
    if args.json:
        print(json.dumps({**summary, "findings": [f.to_json() for f in found]}))
    else:
        _summary(scanned, floor, by_severity, by_rule, below, args.backfill, everything)
        if found:
            _table(found)
    if args.fail_on is not None and any(_rank(f.severity) >= _rank(args.fail_on) for f in found):
        return 1
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage findings scan`` to the CLI's subcommands."""
    f = sub.add_parser("findings", parents=[common], help="anomalies and lifecycle violations in the log")
    fs = f.add_subparsers(dest="findings_command", required=True)
    p: argparse.ArgumentParser = fs.add_parser(
        "scan", parents=[common], help="run every rule over the whole log (exit 1 with --fail-on if one fires)"
    )
    p.add_argument("--jsonl", metavar="FILE", help="append each finding to FILE as a canonical JSON line")
    p.add_argument("--webhook", metavar="URL", help="POST the findings to URL in JSON batches")
    p.add_argument(
        "--webhook-timeout", type=float, default=5.0, metavar="SECONDS", help="seconds per webhook request (default 5)"
    )
    p.add_argument(
        "--min-severity", choices=SEVERITIES, default="medium", help="report only this severity and above (medium)"
    )
    p.add_argument(
        "--backfill",
        action="store_true",
        help="the log holds history imported after the fact: a late-recorded event is not clock skew",
    )
    p.add_argument("--fail-on", choices=SEVERITIES, help="exit 1 if a finding of this severity or above is found")
    p.add_argument("--skew-seconds", type=float, default=60.0, help="clock skew tolerance (default 60)")
    p.add_argument(
        "--max-delay-seconds", type=float, default=86_400.0, help="late-arrival limit, 0 for none (default 1 day)"
    )
    p.add_argument("--replay-seconds", type=float, default=600.0, help="window of two refreshes of one parent")
    p.add_argument("--storm-count", type=int, default=10, help="refreshes in one family that make a storm")
    p.add_argument("--storm-seconds", type=float, default=600.0, help="... within this many seconds")
    p.add_argument("--ip-jump-seconds", type=float, default=3600.0, help="session window of the IP jump rule")
    p.add_argument(
        "--heartbeat",
        action="append",
        metavar="PRODUCER=SECONDS",
        help="the longest silence of a producer that is not a gap (repeatable)",
    )
    p.add_argument("--heartbeat-seconds", type=float, help="the heartbeat gap of every other producer")
    p.add_argument(
        "--known-producer",
        action="append",
        metavar="PRODUCER",
        help="the producers that are known (repeatable; default: those with a key in the log)",
    )
    p.add_argument(
        "--now", help="when open heartbeat gaps are judged (default: the last entry); a time: " + ACCEPTED_FORMS
    )
    p.set_defaults(func=_scan)
