"""``lineage init`` creates a ledger, its log key and the CLI's producer key; ``lineage ingest`` appends the events
of a JSONL file in signed batches; ``lineage trace`` shows a token's timeline, family and resources."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from lineage_ledger.cli._common import default_key_path as _default_key_path
from lineage_ledger.cli._common import open_ledger as _open
from lineage_ledger.cli._common import producer_key_id
from lineage_ledger.cli._common import settings_from as _settings
from lineage_ledger.cli.events import ensure_token_secret
from lineage_ledger.cli.options import BATCH_HELP, TOKEN_ID_HELP, token_id_argument
from lineage_ledger.cli.query import shown
from lineage_ledger.cli.render import counted, error_console, output_console, print_json, print_table, progress
from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.encoding import canonical_bytes, decode_json
from lineage_ledger.core.envelope import MAX_BATCH_EVENTS, seal_batch
from lineage_ledger.core.model import decode_event
from lineage_ledger.errors import ConflictError, InputError, LedgerError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, load_signer, write_signer_key
from lineage_ledger.ledger.pipeline import Done, Pipeline
from lineage_ledger.ledger.query import trace_token
from lineage_ledger.ledger.resume import split_recorded
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store

__all__ = ["CLI_PRODUCER", "add_personal_data_option", "init_ledger", "print_trace", "register", "register_trace"]

out = output_console()
err = error_console()


CLI_PRODUCER = "lineage-cli"


def init_ledger(args: argparse.Namespace) -> Ledger:
    """Create the ledger, its log key file (0600) and the CLI's own producer key."""
    from_env = not args.log_key and bool(os.environ.get(DEFAULT_KEY_ENV_VAR))
    key_path = None if from_env else Path(args.log_key) if args.log_key else _default_key_path(args.ledger)
    producer_path = _producer_key_path(args)  # resolved first: nothing is created if it cannot be
    if key_path is not None:
        key_path.parent.mkdir(parents=True, exist_ok=True)
        if not key_path.exists():
            write_signer_key(key_path, Ed25519Signer.generate(args.origin))
    signer = load_signer(key_path)
    if not producer_path.exists():
        write_signer_key(producer_path, Ed25519Signer.generate(CLI_PRODUCER))
    producer = load_signer(producer_path)
    if getattr(args, "shards", None):
        from lineage_ledger.ledger.shards import ShardedLedger

        sharded = ShardedLedger.create(
            args.ledger,
            signer,
            shards=args.shards,
            partitions=args.partitions or args.shards,
            origin=args.origin,
            settings=_settings(args),
        )
        sharded.register_key(CLI_PRODUCER, producer_key_id(producer), producer.public_key)
        for shard in sharded.shards:
            shard.close()
        return sharded.root
    meta = None
    if getattr(args, "personal_data", None):
        from lineage_ledger.privacy.personal import personal_data_meta

        meta = personal_data_meta(args.ledger, args.personal_data.split(","))
    ledger = Ledger.create(args.ledger, signer, origin=args.origin, settings=_settings(args), meta=meta)
    ledger.register_key(CLI_PRODUCER, producer_key_id(producer), producer.public_key)
    return ledger


def _producer_key_path(args: argparse.Namespace) -> Path:
    return (
        Path(args.producer_key)
        if getattr(args, "producer_key", None)
        else _default_key_path(args.ledger, ".producer.key", "--producer-key")
    )


def cmd_init(args: argparse.Namespace) -> int:
    ledger = init_ledger(args)
    info = {"ledger": args.ledger, "origin": ledger.origin, "verifier_key": str(ledger.verifier)}
    ledger.close()
    info["token_secret_file"] = ensure_token_secret(args.ledger)
    if args.json:
        print_json(out, info)
    else:
        out.print(f"created ledger {args.ledger} (origin {info['origin']})")
        out.print(f"log verifier key: {info['verifier_key']}")
        if info["token_secret_file"]:
            out.print(
                f"token secret: {info['token_secret_file']} (producers and lineage serve fingerprint tokens with it)"
            )
    return 0


# -- ingest -----------------------------------------------------------------------------------------------


def _read_events(path: str) -> list[bytes]:
    """Every line of a JSONL file as canonical event bytes; all lines are checked before any is written."""
    events: list[bytes] = []
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    with stream:
        for n, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            field = f"line {n}"
            try:
                data = canonical_bytes(decode_json(line.strip(), field=field), field=field)
                decode_event(data, field=field)
            except InputError as e:
                raise InputError(e.field if e.field.startswith("line") else f"{field}: {e.field}", e.reason) from e
            events.append(data)
    return events


def cmd_ingest(args: argparse.Namespace) -> int:
    events = _read_events(args.file)
    ledger = _open(args, long_running=True)  # the sequencer for a whole bulk load: the collector frozen at seals
    producer = load_signer(_producer_key_path(args))
    name = args.producer or producer.name
    key_id = args.key_id or producer_key_id(producer)
    recorded = violations = 0
    refused: list[tuple[str, LedgerError]] = []
    """What was not written: where in the file, and why."""
    started = time.perf_counter()
    # a rerun (after a crash, or by mistake) skips what the ledger already holds with one read per event
    try:
        known = split_recorded(ledger.store, events)
    except BaseException:
        ledger.close()
        raise
    duplicates = len(known.duplicates)
    for pos, index in known.conflicts.items():
        reason = f"its event id is already recorded at index {index} with different bytes; it was not written"
        refused.append((f"event {pos + 1} of the file", ConflictError(reason)))
    todo = [events[pos] for pos in known.fresh]

    def tally(landed: list[Done[int]]) -> None:
        nonlocal recorded, duplicates, violations
        for done in landed:
            (outcome,) = done.outcomes
            if isinstance(outcome, LedgerError):
                batch = known.fresh[done.tag : done.tag + args.batch]  # named by their places in the file
                refused.append((f"events {batch[0] + 1} to {batch[-1] + 1} of the file", outcome))
                continue
            for r in outcome.receipts:
                duplicates += r.duplicate
                recorded += not r.duplicate
                violations += r.verdict != "ok" and not r.duplicate
            advance(done.tag + args.batch)

    # the store commits each batch while the next one is signed, checked and sequenced (ledger.pipeline)
    with ledger, progress(err, args.json, "ingest", len(todo)) as advance, Pipeline[int](ledger) as pipe:
        for i in range(0, len(todo), args.batch):
            envelope = seal_batch(todo[i : i + args.batch], producer=name, key_id=key_id, signer=producer)
            tally(pipe.submit([ledger.check(envelope)], tag=i))
        tally(pipe.drain())
        checkpoint = None if args.no_seal else ledger.seal()
        size, sealed = ledger.size, ledger.sealed_size
    summary = {
        "events": len(events),
        "recorded": recorded,
        "duplicates": duplicates,
        "violations": violations,
        "size": size,
        "sealed_size": sealed,
        "refused_batches": len(refused) - len(known.conflicts),
        "conflicts": len(known.conflicts),
        "checkpoint_size": checkpoint.size if checkpoint else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if args.json:
        print_json(out, summary)
    else:
        out.print(
            f"recorded {counted(recorded, 'event')} ({duplicates} already present, {violations} flagged as "
            f"{'a violation' if violations == 1 else 'violations'}); log size {size}, sealed {sealed}"
        )
    if refused:  # the other batches are recorded; these are not, and nothing of them was written
        for where, error in refused:
            err.print(f"[red]error:[/] {where}: {type(error).__name__}: {escape(str(error))}")
        return 3
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    try:
        trace = trace_token(store, args.token_id)
    finally:
        store.close()
    if args.json:
        print_json(out, trace.to_json())
        return 0
    print_trace(trace)
    return 0


def print_trace(trace: Any) -> None:
    """Print a token's trace (ledger.query.trace_token) for people: its chain, family and steps."""
    chain = "[green]intact[/]" if trace.chain_ok else f"[red]BROKEN[/] ({trace.chain_problem})"
    out.print(f"[bold]token {trace.token_id}[/]  chain {chain}")
    if trace.parents:
        out.print(f"  parents: {', '.join(trace.parents)}")
    for tid, kind, idx in trace.children:
        out.print(f"  child: {tid} ({kind} at index {idx})")
    table = Table(show_edge=False, pad_edge=False)
    for col in (
        "index",
        "occurred_at",
        "event",
        "verdict",
        "producer",
        "resource",
        "outcome",
        "policy",
        "status",
    ):
        table.add_column(col)
    for s in trace.steps:
        verdict = "ok" if s.verdict == "ok" else f"[red]{s.verdict}[/]"
        table.add_row(
            str(s.index),
            shown(s.occurred_at),
            s.event_type,
            verdict,
            s.producer,
            s.resource or "",
            s.outcome or "",
            s.policy_version or "",
            "sealed" if s.sealed else "pending",
        )
    print_table(out, table)
    out.print(f"  resources touched: {', '.join(trace.resources) or 'none'}")
    out.print(f"  violations: {len(trace.violations)}")


def add_personal_data_option(p: argparse.ArgumentParser) -> None:
    """``--personal-data [FIELDS]``: create the ledger sealing these payload fields per data subject."""
    p.add_argument(
        "--personal-data",
        nargs="?",
        const="ip,user_agent,user_id",
        metavar="FIELDS",
        help="encrypt these payload fields per data subject (default ip,user_agent,user_id; docs/privacy.md)",
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage init`` and ``lineage ingest`` to the ``lineage`` parser."""
    p = sub.add_parser("init", parents=[common], help="create a ledger and its log key")
    p.add_argument("--origin", default="lineage.local/log", help="checkpoint origin line (a unique log name)")
    p.add_argument("--shards", type=int, help="create a sharded ledger: a root log and this many shard logs")
    p.add_argument("--partitions", type=int, help="Kafka partitions the shards split (a multiple of --shards)")
    p.add_argument(
        "--producer-key", help="the CLI's producer key file, created if missing (default <ledger>.producer.key)"
    )
    add_personal_data_option(p)
    p.set_defaults(func=cmd_init, creates_ledger=True)

    p = sub.add_parser("ingest", parents=[common], help="append events from a JSONL file in signed batches")
    p.add_argument("file", help="JSONL file, one event per line ('-' for standard input)")
    p.add_argument(
        "--batch", type=int, default=1000, choices=range(1, MAX_BATCH_EVENTS + 1), metavar="N", help=BATCH_HELP
    )
    p.add_argument("--producer", help="producer id (default: the key's name)")
    p.add_argument("--producer-key", help="producer signing key file (default <ledger>.producer.key)")
    p.add_argument("--key-id", help="producer key id (default: <key name>-<first 4 bytes of its hash>)")
    p.add_argument("--no-seal", action="store_true", help="leave the new entries pending")
    p.set_defaults(func=cmd_ingest)


def register_trace(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage trace`` to the ``lineage`` parser."""
    p = sub.add_parser("trace", parents=[common], help="a token's timeline, family and resources")
    p.add_argument("token_id", type=token_id_argument, help=TOKEN_ID_HELP)
    p.set_defaults(func=cmd_trace)
