"""``lineage consume`` (a Kafka topic into the ledger) and ``lineage schemas`` (the Avro schemas it reads)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from lineage_ledger.cli.options import output_options
from lineage_ledger.cli.render import error_console, output_console
from lineage_ledger.errors import InputError

__all__ = ["register"]

_out = output_console()
_err = error_console()


@contextmanager
def _stopped_by_signals() -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs; the previous handlers are back after it,
    however the block ends."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _config(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError("--kafka-config", f"{pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def _child_argv(args: argparse.Namespace, shard: int) -> list[str]:
    """The command line of the consumer of one shard, from the supervisor's own options."""
    argv = [sys.executable, "-m", "lineage_ledger.cli.main", "consume", "--ledger", args.ledger, "--shard", str(shard)]
    argv += ["--bootstrap", args.bootstrap, "--topic", args.topic, "--json"]
    for flag, value in (
        ("--log-key", args.log_key),
        ("--idle-timeout", args.idle_timeout),
        ("--block-size", args.block_size),
        ("--block-seconds", args.block_seconds),
        ("--metrics-port", None if args.metrics_port is None else args.metrics_port + 1 + shard),
        ("--metrics-addr", args.metrics_addr if args.metrics_port is not None else None),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for pair in args.kafka_config or []:
        argv += ["--kafka-config", pair]
    if args.keep_refused:
        argv.append("--keep-refused")
    return argv


def _consume_all(args: argparse.Namespace, shards: int) -> int:
    """A sharded root without --shard: one consumer process per shard, and the root's collector here."""
    import subprocess

    from lineage_ledger.cli._common import open_ledger as _open
    from lineage_ledger.ledger.shards import collect, shard_url
    from lineage_ledger.store import open_store

    if args.partition or args.max_messages is not None:
        raise InputError("--partition", "give --shard N to choose partitions or a message count for one shard")
    with _stopped_by_signals() as stop:
        children = [
            subprocess.Popen(_child_argv(args, n), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            for n in range(shards)
        ]
        root = _open(args)
        stores = [open_store(shard_url(args.ledger, n), readonly=True) for n in range(shards)]
        try:
            while any(child.poll() is None for child in children):
                if stop.wait(args.collect_every):
                    for child in children:
                        if child.poll() is None:
                            child.send_signal(signal.SIGTERM)
                    for child in children:
                        child.wait()
                    break
                collect(root, stores)
            summaries = []
            for child in children:
                out, _ = child.communicate()
                summaries.append(json.loads(out) if child.returncode == 0 and out.strip() else None)
            checkpoint = collect(root, stores)
            latest = root.store.latest_checkpoint()
        finally:
            for store in stores:
                store.close()
            root.close()
    failed = [n for n, child in enumerate(children) if child.returncode != 0]
    total = {
        key: sum(s[key] for s in summaries if s is not None)
        for key in ("messages", "events", "duplicates", "quarantined")
    }
    summary = {
        **total,
        "shards": summaries,
        "failed_shards": failed,
        "root_size": latest.size if latest else 0,
        "root_sealed": checkpoint is not None or latest is not None,
    }
    if args.json:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    else:
        _out.print(
            f"{total['messages']} messages, {total['events']} events over {shards} shards; root checkpoint "
            f"{summary['root_size']}" + (f"; shards {failed} failed (see their errors above)" if failed else "")
        )
    return 3 if failed else 0


def _consume(args: argparse.Namespace) -> int:
    from lineage_ledger.cli._common import open_ledger as _open
    from lineage_ledger.kafka.consumer import LedgerConsumer

    if args.shard is None:
        from lineage_ledger.ledger.shards import read_layout

        layout = read_layout(args.ledger)
        if layout is not None:
            return _consume_all(args, layout.shards)
    with _stopped_by_signals() as stop:
        partitions = args.partition
        if args.shard is not None:
            from lineage_ledger.cli._common import open_shard as _open_shard

            ledger, layout = _open_shard(args)
            partitions = layout.partitions_of(args.shard)
        else:
            ledger = _open(args, long_running=True)
        try:
            metrics = None
            if args.metrics_port is not None:
                from lineage_ledger.metrics import LedgerMetrics

                metrics = LedgerMetrics.serving(ledger, args.metrics_port, args.metrics_addr)
            consumer = LedgerConsumer(
                ledger,
                args.bootstrap,
                args.topic,
                partitions=partitions,
                config=_config(args.kafka_config),
                keep_refused=args.keep_refused,
                metrics=metrics,
            )
            with consumer:
                if not args.json:
                    _err.print(f"[dim]consuming {args.topic} partitions {consumer.partitions} into {args.ledger}[/]")
                stats = consumer.run(idle_timeout=args.idle_timeout, max_messages=args.max_messages, stop=stop)
            checkpoint = ledger.seal()
            summary: dict[str, Any] = {
                "messages": stats.messages,
                "events": stats.events,
                "duplicates": stats.duplicates,
                "quarantined": stats.quarantined,
                "positions": {str(p): o for p, o in sorted(ledger.store.offsets(args.topic).items())},
                "size": ledger.size,
                "sealed": checkpoint is not None or ledger.sealed_size == ledger.size,
            }
        finally:
            ledger.close()
    if args.json:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    else:
        _out.print(
            f"{summary['messages']} messages, {summary['events']} events ({summary['duplicates']} duplicates), "
            f"{summary['quarantined']} refused; positions {summary['positions']}"
        )
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from lineage_ledger.cli._common import log_signer as _log_signer
    from lineage_ledger.cli._common import settings_from as _settings
    from lineage_ledger.kafka.avro import schema_from_json
    from lineage_ledger.kafka.consumer import register_schema
    from lineage_ledger.ledger.shards import layout_of, shard_url
    from lineage_ledger.ledger.writer import Ledger
    from lineage_ledger.store import open_store

    store = open_store(args.ledger, readonly=True)
    try:
        layout = layout_of(store)
        rows = store.schemas()
    finally:
        store.close()
    # a sharded ledger's consumers write the shards: each shard holds the schemas its consumer reads
    urls = [shard_url(args.ledger, n) for n in range(layout.shards)] if layout else [args.ledger]
    if args.schemas_command == "add":
        schema = schema_from_json(Path(args.file).read_text(encoding="utf-8"))
        added = False
        for url in urls:
            with Ledger.open(url, _log_signer(args), settings=_settings(args)) as ledger:
                added = register_schema(ledger, schema) or added
        if args.json:
            sys.stdout.write(json.dumps({"fingerprint": schema.fingerprint.hex(), "added": added}) + "\n")
        else:
            said = "registered" if added else "already registered"
            _out.print(f"{said}: {schema.name} fingerprint {schema.fingerprint.hex()} in {len(urls)} log(s)")
        return 0
    if layout is not None:
        store = open_store(urls[0], readonly=True)
        try:
            rows = store.schemas()
        finally:
            store.close()
    if args.json:
        listed = [{"fingerprint": r.fingerprint.hex(), "name": r.name, "registered_at": r.registered_at} for r in rows]
        sys.stdout.write(json.dumps(listed) + "\n")
    else:
        for r in rows:
            _out.print(f"{r.fingerprint.hex()}  {r.name}  registered {r.registered_at}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from lineage_ledger.cli._common import open_ledger as _open
    from lineage_ledger.ledger.shards import collect, layout_of, shard_url
    from lineage_ledger.store import open_store

    with _stopped_by_signals() as stop:
        root = _open(args)
        layout = layout_of(root.store)
        if layout is None:
            root.close()
            raise InputError("--ledger", f"{args.ledger} is not the root of a sharded ledger")
        stores = [open_store(shard_url(args.ledger, n), readonly=True) for n in range(layout.shards)]
        try:
            while True:
                checkpoint = collect(root, stores)
                if checkpoint is not None and not args.json:
                    _out.print(f"root checkpoint {checkpoint.size} covers {layout.shards} shards")
                if args.every is None or stop.wait(args.every):
                    break
            latest = root.store.latest_checkpoint()
        finally:
            for store in stores:
                store.close()
            root.close()
    if args.json:
        sys.stdout.write(json.dumps({"root_size": latest.size if latest else 0}) + "\n")
    return 0


def _provision(args: argparse.Namespace) -> int:
    from lineage_ledger.store.postgres import provision

    def secret(path: str | None) -> str | None:
        return Path(path).read_text(encoding="utf-8").strip() if path else None

    names = [args.database] + [f"{args.database}_shard_{n}" for n in range(args.shards or 0)]
    applied = {
        name: provision(
            args.admin_url,
            name,
            args.writer_role,
            args.auditor_role,
            writer_password=secret(args.writer_password_file),
            auditor_password=secret(args.auditor_password_file),
        )
        for name in names
    }
    if args.json:
        sys.stdout.write(json.dumps({"databases": applied}) + "\n")
    else:
        for name, steps in applied.items():
            said = f"migrations {steps} applied" if steps else "already up to date"
            _out.print(f"{name}: {said}; writer role {args.writer_role}, auditor role {args.auditor_role}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``consume``, ``schemas``, ``shards`` and ``provision`` commands."""
    p = sub.add_parser("consume", parents=[common], help="ingest a Kafka topic into the ledger, exactly once")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port...]")
    p.add_argument("--topic", required=True, help="the Kafka topic the producers publish to")
    p.add_argument("--partition", type=int, action="append", help="consume only this partition (repeatable)")
    p.add_argument(
        "--shard",
        type=int,
        help="of a sharded ledger: write this shard, reading its partitions (without it: one process per shard, "
        "and the root's checkpoints collected here)",
    )
    p.add_argument(
        "--collect-every", type=float, default=5.0, metavar="SECONDS", help="root collection interval (all shards)"
    )
    p.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a message")
    p.add_argument("--max-messages", type=int, help="stop after this many messages")
    p.add_argument("--keep-refused", action="store_true", help="keep refused messages' bytes in the quarantine")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics (lag, positions, entries) on this port")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address of the metrics port (default loopback)")
    p.add_argument("--kafka-config", action="append", metavar="KEY=VALUE", help="a librdkafka setting (repeatable)")
    p.add_argument("--block-size", type=int, help="seal at this many entries (default 10000)")
    p.add_argument("--block-seconds", type=float, help="... or at this block age (default 5)")
    p.set_defaults(func=_consume)

    p = sub.add_parser("schemas", parents=[common], help="Avro schemas registered for the Kafka transport")
    ss = p.add_subparsers(dest="schemas_command", required=True)
    s = ss.add_parser("list", parents=[common], help="every registered schema and its fingerprint")
    s.set_defaults(func=_schemas)
    s = ss.add_parser("add", parents=[common], help="register an Avro schema (.avsc) so consume can read it")
    s.add_argument("file", help="the Avro schema file (.avsc)")
    s.set_defaults(func=_schemas)

    p = sub.add_parser("shards", parents=[common], help="a sharded ledger's root log")
    ss = p.add_subparsers(dest="shards_command", required=True)
    s = ss.add_parser("collect", parents=[common], help="record the shards' new checkpoints in the root log; seal it")
    s.add_argument("--every", type=float, metavar="SECONDS", help="keep collecting at this interval until stopped")
    s.set_defaults(func=_collect)

    p = sub.add_parser(
        "provision",
        parents=[output_options()],
        help="create (or migrate) PostgreSQL ledger databases and their writer and auditor roles",
    )
    p.add_argument("--admin-url", required=True, help="a role that may create roles and databases (it owns the tables)")
    p.add_argument("--database", required=True, help="the ledger's database (a sharded ledger's root)")
    p.add_argument("--shards", type=int, help="also the shard databases <database>_shard_0 .. _<shards-1>")
    p.add_argument("--writer-role", default="lineage_writer", help="may only INSERT and SELECT ledger rows")
    p.add_argument("--auditor-role", default="lineage_auditor", help="may only SELECT")
    p.add_argument("--writer-password-file", help="set the writer role's password from this file")
    p.add_argument("--auditor-password-file", help="set the auditor role's password from this file")
    p.set_defaults(func=_provision)
