"""``lineage monitor``: follow a published log and alert on rollbacks, forks, bad tiles or entries, missing
witness cosignatures and stalls. Findings go out as JSON lines (stdout or a file), Prometheus metrics and
an optional webhook; with ``--once`` the exit status says whether anything was wrong."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from rich.console import Console

from lineage_ledger.cli.witness import add_policy_arguments, policy_from
from lineage_ledger.core.lifecycle import LifecyclePolicy
from lineage_ledger.errors import InputError, TransportError
from lineage_ledger.keys import load_verifier
from lineage_ledger.monitor import ALERTS, Monitor, MonitorFinding
from lineage_ledger.tile_client import TileClient

__all__ = ["register"]

_err = Console(stderr=True, highlight=False, soft_wrap=True)


class _Metrics:
    """The monitor's Prometheus metrics (the [metrics] extra)."""

    def __init__(self, log: str) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge
        except ImportError as e:  # pragma: no cover - part of dev installs
            raise TransportError("metrics need prometheus-client: pip install 'lineage-ledger[metrics]'") from e
        self.log = log
        self.registry = CollectorRegistry()
        self.alerts = Counter(
            "lineage_monitor_alerts", "Alerts raised, by kind", ["log", "kind"], registry=self.registry
        )
        for kind in ALERTS:
            self.alerts.labels(log, kind)
        self.size = Gauge(
            "lineage_monitor_verified_size", "Size of the last checkpoint verified", ["log"], registry=self.registry
        )
        self.growth = Gauge(
            "lineage_monitor_last_growth_timestamp_seconds",
            "When the verified size last grew (Unix time)",
            ["log"],
            registry=self.registry,
        )
        self.entries = Counter(
            "lineage_monitor_entries_checked", "Entries read and checked", ["log"], registry=self.registry
        )
        self.rounds = Counter("lineage_monitor_rounds", "Rounds run", ["log"], registry=self.registry)
        self.alerting = Gauge(
            "lineage_monitor_alerting", "1 if the latest round raised an alert, else 0", ["log"], registry=self.registry
        )

    def observe(self, monitor: Monitor, findings: Sequence[MonitorFinding], entries: int) -> None:
        self.rounds.labels(self.log).inc()
        self.entries.labels(self.log).inc(entries)
        for f in findings:
            if f.alert:
                self.alerts.labels(self.log, f.kind).inc()
            elif f.size is not None:
                self.size.labels(self.log).set(f.size)
        if monitor.state.last_growth is not None:
            self.growth.labels(self.log).set(monitor.state.last_growth)
        self.alerting.labels(self.log).set(1 if any(f.alert for f in findings) else 0)

    def serve(self, port: int) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr="127.0.0.1", registry=self.registry)


def _post(url: str, records: list[dict[str, Any]], timeout: float) -> None:
    """POST alerts to the webhook; a failure is reported on stderr and never stops the monitor."""
    import httpx

    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
    try:
        answer = httpx.post(url, json={"findings": records}, timeout=timeout)
    except httpx.HTTPError as e:
        _err.print(f"[yellow]webhook {shown}: {type(e).__name__}[/]")
        return
    if not 200 <= answer.status_code < 300:
        _err.print(f"[yellow]webhook {shown} answered HTTP {answer.status_code}[/]")


def _run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise InputError("interval", "must be more than 0 seconds")
    if args.stall_seconds is not None and args.stall_seconds <= 0:
        raise InputError("stall_seconds", "must be more than 0 seconds")
    policy = policy_from(args)
    client = TileClient(args.log, load_verifier(args.key), timeout=args.timeout)
    state = Path(args.state) if args.state else Path("lineage-monitor.state.json")
    lifecycle = LifecyclePolicy.from_text(args.lifecycle) if args.lifecycle else None
    monitor = Monitor(
        client,
        state,
        witnesses=policy.witnesses if policy else (),
        quorum=policy.quorum if policy else 0,
        stall_seconds=args.stall_seconds,
        verdicts=not args.no_verdicts,
        policy=lifecycle,
    )
    metrics = _Metrics(args.log) if args.metrics_port is not None or args.metrics_file else None
    if metrics is not None and args.metrics_port is not None:
        metrics.serve(args.metrics_port)
    sink: TextIO = open(args.findings, "a", encoding="utf-8") if args.findings else sys.stdout  # noqa: SIM115
    try:
        while True:
            before = monitor.entries_checked
            findings = monitor.round()
            records = [f.to_json(args.log, time.time()) for f in findings]
            for record in records:
                sink.write(json.dumps(record, sort_keys=True) + "\n")
            sink.flush()
            alerts = [r for r, f in zip(records, findings, strict=True) if f.alert]
            if alerts and args.webhook:
                _post(args.webhook, alerts, args.timeout)
            if metrics is not None:
                metrics.observe(monitor, findings, monitor.entries_checked - before)
                if args.metrics_file:
                    from prometheus_client import write_to_textfile

                    write_to_textfile(args.metrics_file, metrics.registry)
            if args.once:
                return 1 if alerts else 0
            time.sleep(args.interval)
    finally:
        if sink is not sys.stdout:
            sink.close()


def register(sub: Any) -> None:
    """Add ``lineage monitor``."""
    p = sub.add_parser("monitor", help="follow a published log and alert on rollbacks, forks and bad entries")
    p.set_defaults(func=_run, ledger_default=None)
    p.add_argument("--log", required=True, help="the log's URL prefix: http(s)://... or file:///published/dir")
    p.add_argument("--key", required=True, help="the log's verifier key (note key string, or a file)")
    p.add_argument(
        "--state",
        help="file keeping the last verified checkpoint and the entry checks' state (default "
        "./lineage-monitor.state.json); replaced atomically after each round",
    )
    add_policy_arguments(p)
    p.add_argument("--interval", type=float, default=60.0, help="seconds between rounds (default 60)")
    p.add_argument("--once", action="store_true", help="run one round; exit 0 if all is well, 1 on any alert")
    p.add_argument("--findings", help="append findings (JSON lines) to this file instead of standard output")
    p.add_argument("--webhook", help='POST each round\'s alerts as JSON {"findings": [...]} to this URL')
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT/metrics")
    p.add_argument("--metrics-file", help="write the Prometheus metrics to this file after each round")
    p.add_argument(
        "--stall-seconds",
        type=float,
        help="alert when the log has not grown for this many seconds (the operator promises growth at "
        "least this often; without it, no stall alerts)",
    )
    p.add_argument(
        "--lifecycle", help="the ledger's lifecycle policy as `lineage init` recorded it (default: the default policy)"
    )
    p.add_argument(
        "--no-verdicts",
        action="store_true",
        help="do not re-judge lifecycle verdicts (a shard log: parents in other shards are not local)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each fetch (default 10)")
