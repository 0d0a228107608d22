"""``lineage emit`` sends JSONL events to a lineage service or to Kafka through the emitter SDK."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lineage_ledger.cli._common import API_KEY_ENV_VAR, CommandError, producer_key_id
from lineage_ledger.cli.options import BATCH_HELP, output_options
from lineage_ledger.cli.render import error_console, output_console, print_json
from lineage_ledger.core.encoding import canonical_bytes, decode_json
from lineage_ledger.core.envelope import MAX_BATCH_EVENTS
from lineage_ledger.core.model import decode_event
from lineage_ledger.core.receipt import Receipt
from lineage_ledger.errors import InputError
from lineage_ledger.keys import load_signer, load_verifier

__all__ = ["register"]

out = output_console()
err = error_console()


def _emit_api_key(args: argparse.Namespace) -> str | None:
    """--api-key-file, else $LINEAGE_API_KEY, else none (a key on the command line would show in ps)."""
    if args.api_key_file:
        return Path(args.api_key_file).read_text(encoding="utf-8").strip() or None
    return os.environ.get(API_KEY_ENV_VAR, "").strip() or None


def cmd_emit(args: argparse.Namespace) -> int:
    """Send JSONL events through the emitter SDK: spool, batches, signatures, retries, dead letters."""
    from rich.markup import escape

    from lineage_ledger.emitter import Emitter, HttpTransport, ShardedHttpTransport
    from lineage_ledger.emitter.sender import redact
    from lineage_ledger.emitter.transport import Transport
    from lineage_ledger.errors import SpoolFullError

    signer = load_signer(args.key)
    transport: Transport
    if args.kafka:
        from lineage_ledger.kafka.producer import KafkaTransport

        if not args.topic:
            raise CommandError("--kafka needs --topic")
        transport = KafkaTransport(args.kafka, args.topic, timeout=args.timeout)
    elif args.url and len(args.url) > 1:  # a sharded ledger: one lineage serve per shard, shard 0 first
        transport = ShardedHttpTransport(args.url, args.partitions, _emit_api_key(args), timeout=args.http_timeout)
    elif args.url:
        if args.partitions is not None:
            raise CommandError("--partitions is for a sharded ledger: give every shard's --url, shard 0 first")
        log_key = load_verifier(args.log_verifier_key) if args.log_verifier_key else None
        transport = HttpTransport(args.url[0], _emit_api_key(args), timeout=args.http_timeout, log_key=log_key)
    else:
        raise CommandError("say where to send: --url (a lineage service) or --kafka with --topic")
    saved = open(args.receipts, "a", encoding="utf-8") if args.receipts else None  # noqa: SIM115

    def keep(receipts: Sequence[Receipt]) -> None:
        assert saved is not None
        saved.writelines(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in receipts)
        saved.flush()

    emitter = Emitter(
        args.producer,
        args.key_id or producer_key_id(signer),
        signer,
        transport,
        spool_dir=args.spool,
        batch_size=args.batch,
        overflow="block",
        block_timeout=None if args.spool else args.timeout,
        spool_full="block",
        spool_full_timeout=args.timeout,
        on_receipts=keep if saved is not None else None,
        ledger_ingest_key=_ingest_key(args.seal_personal_to),
    )
    started = time.perf_counter()
    lines = invalid = 0
    stopped_at: int | None = None
    emitted_lines = array("q")  # the input line of every event handed to the emitter, in order
    try:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
        with stream:
            for n, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                lines += 1
                field = f"line {n}"
                try:
                    data = canonical_bytes(decode_json(line.strip(), field=field), field=field)
                    decode_event(data, field=field)
                except InputError as e:
                    invalid += 1
                    err.print(f"[red]bad input:[/] {escape(redact(e.field))}: {escape(redact(e.reason))}")
                    continue
                try:
                    emitter.emit(data)
                    emitted_lines.append(n)
                except SpoolFullError as e:
                    stopped_at, lines = n, lines - 1
                    err.print(
                        f"[red]error:[/] {escape(str(e))}; stopped at line {n}: it and later lines were not sent. "
                        "Run again with the same input and --spool once there is space: events still in the "
                        "spool are kept once, and the ledger answers those it holds as duplicates"
                    )
                    break
    finally:
        delivered = emitter.close(timeout=args.timeout)
        if saved is not None:
            saved.close()
    m = emitter.metrics()
    if stopped_at is None and m["dropped"] and emitted_lines:
        # Events the emitter took but could not make durable are the last it took (it spools in order):
        # the first of them is where a run with the same input must pick up.
        stopped_at = emitted_lines[max(len(emitted_lines) - int(m["dropped"]), 0)]
        err.print(
            f"[red]error:[/] {m['dropped']} events taken from the input were not made durable; stopped at line "
            f"{stopped_at}: it and later lines were not sent. Run again with the same input and --spool once "
            "there is space: events still in the spool are kept once, and the ledger answers those it holds as "
            "duplicates"
        )
    summary = {
        "lines": lines,
        "invalid": invalid,
        "emitted": m["emitted"],
        "sent": m["sent"],
        "duplicates": m["duplicates"],
        "absorbed": m["absorbed"],
        "dead_lettered": m["dead_lettered"],
        "dropped": m["dropped"],
        "pending": m["pending"],
        "retried": m["retried"],
        "stopped_at_line": stopped_at,
        "log_inconsistent": m["log_inconsistent"],
        "delivered": delivered,
        "spool": args.spool,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if args.json:
        print_json(out, summary)
    else:
        out.print(
            f"sent {m['sent']} events ({m['duplicates']} already recorded, {m['absorbed']} repeats of spooled "
            f"events kept once), {m['dead_lettered']} dead-lettered, "
            f"{invalid} invalid lines, {m['pending']} waiting in the spool, {m['dropped']} dropped"
        )
    if m["log_inconsistent"]:
        err.print(
            f"[red]the ledger's log is not consistent with what it showed before[/] ({m['log_inconsistent']} "
            "times): keep the receipts; see the log above"
        )
    if m["pending"] or m["dropped"]:
        where = f"they stay in {args.spool} for the next run" if args.spool and not m["dropped"] else "lost"
        err.print(
            f"[yellow]warning:[/] {m['pending'] + m['dropped']} events not delivered in {args.timeout} s; {where}"
        )
        return 3
    if stopped_at is not None:
        return 3
    return 2 if invalid or m["dead_lettered"] else 0


def _ingest_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise InputError("--seal-personal-to", "expected the ledger's ingest key: 64 hex digits")
    return key


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the commands of this module to the ``lineage`` parser."""
    output = output_options()
    p = sub.add_parser(
        "emit", parents=[output], help="send JSONL events to a lineage service or Kafka through the emitter SDK"
    )
    p.add_argument("file", nargs="?", default="-", help="JSONL file, one event per line (default: standard input)")
    p.add_argument(
        "--url",
        action="append",
        help="the lineage service, e.g. https://ledger.example; for a sharded ledger, once per shard's server, "
        "shard 0 first",
    )
    p.add_argument(
        "--partitions",
        type=int,
        help="a sharded ledger's partition count (lineage init --partitions; default: the number of shards)",
    )
    p.add_argument("--kafka", metavar="BOOTSTRAP", help="publish to Kafka instead (host:port[,...]); needs --topic")
    p.add_argument("--topic", help="the Kafka topic")
    p.add_argument("--producer", required=True, help="producer id the batches are signed for")
    p.add_argument("--key", required=True, help="producer signing key file (0600)")
    p.add_argument("--key-id", help="the key's registered id (default: <key name>-<first 4 bytes of its hash>)")
    p.add_argument("--api-key-file", help=f"file holding the service API key (else ${API_KEY_ENV_VAR})")
    p.add_argument("--spool", help="durable spool directory: undelivered events wait here for the next run")
    p.add_argument(
        "--batch", type=int, default=1000, choices=range(1, MAX_BATCH_EVENTS + 1), metavar="N", help=BATCH_HELP
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery at the end")
    p.add_argument("--http-timeout", type=float, default=10.0, help="seconds per HTTP request")
    p.add_argument(
        "--receipts", metavar="FILE", help="append each event's receipt, with the log's signed promise, as JSONL"
    )
    p.add_argument(
        "--log-verifier-key",
        help="the log's verifier key (text or file): check its checkpoints' and promises' signatures",
    )
    p.add_argument(
        "--seal-personal-to",
        metavar="HEX",
        help="the ledger's ingest key (lineage subject ingest-key): seal personal fields before spooling or sending",
    )
    p.set_defaults(func=cmd_emit)
