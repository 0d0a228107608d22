"""The ``lineage`` command. The only code in the package that prints or exits.

Every command takes ``--ledger URL`` (default ``./lineage.db``; a path or ``sqlite:///path``) and ``--json``;
only ``init`` and ``demo`` create a ledger, every other command refuses a missing one (cli.options).
The log's signing key is read from ``--log-key FILE``, else ``$LINEAGE_LOG_KEY``, else ``<ledger>.key``
beside an embedded ledger; it never lives in the database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lineage_ledger.cli._common import TOKEN_SECRET_ENV_VAR, CommandError
from lineage_ledger.cli._common import api_key_path as _api_key_path
from lineage_ledger.cli._common import default_key_path as _default_key_path
from lineage_ledger.cli._common import ledger_file as _ledger_file
from lineage_ledger.cli._common import log_signer as _log_signer
from lineage_ledger.cli._common import open_ledger as _open
from lineage_ledger.cli._common import open_shard as _open_shard
from lineage_ledger.cli._common import settings_from as _settings
from lineage_ledger.cli._common import token_secrets_from as _token_secret
from lineage_ledger.cli.events import ensure_token_secret
from lineage_ledger.cli.events import register as register_events
from lineage_ledger.cli.evidence import register as register_evidence
from lineage_ledger.cli.export import register as register_export
from lineage_ledger.cli.findings import register as register_findings
from lineage_ledger.cli.kafka import register as register_kafka
from lineage_ledger.cli.key_lifecycle import register_apikey, register_rotate_log, register_token_secret
from lineage_ledger.cli.monitor import register as register_monitor
from lineage_ledger.cli.options import (
    TOKEN_ID_HELP,
    fill_defaults,
    ledger_options,
    output_options,
    package_version,
    require_ledger,
    shared_options,
    token_id_argument,
)
from lineage_ledger.cli.proofs import checkpoint_list, consistency_answer
from lineage_ledger.cli.query import register as register_query
from lineage_ledger.cli.receipt import register as register_receipt
from lineage_ledger.cli.render import counted, error_console, output_console, print_table, silence_stdout
from lineage_ledger.cli.tiles import register as register_tiles
from lineage_ledger.cli.timestamp import add_serve_arguments as add_timestamp_arguments
from lineage_ledger.cli.timestamp import check_timestamps, print_timestamp_results, start_timestamper
from lineage_ledger.cli.timestamp import register as register_timestamp
from lineage_ledger.cli.witness import (
    add_policy_arguments,
    add_serve_arguments,
    check_witnessed,
    policy_from,
    start_cosigner,
)
from lineage_ledger.cli.witness import register as register_witness
from lineage_ledger.core.crypto import Ed25519Signer, Signer
from lineage_ledger.core.encoding import canonical_bytes, decode_json
from lineage_ledger.core.envelope import MAX_BATCH_EVENTS, seal_batch
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.model import decode_event
from lineage_ledger.core.note import NoteVerifier
from lineage_ledger.core.receipt import Receipt
from lineage_ledger.errors import ConflictError, InputError, LedgerError, NotFoundError
from lineage_ledger.keys import DEFAULT_KEY_ENV_VAR, load_signer, load_verifier, write_signer_key
from lineage_ledger.ledger.log_keys import read_key_chain
from lineage_ledger.ledger.pipeline import Done, Pipeline
from lineage_ledger.ledger.query import trace_token
from lineage_ledger.ledger.resume import split_recorded
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store

if TYPE_CHECKING:
    pass

__all__ = ["TOKEN_SECRET_ENV_VAR", "main"]

CLI_PRODUCER = "lineage-cli"
DEMO_ORIGIN = "demo.lineage-ledger.local/log"
DEMO_LEDGER = "./lineage-demo/demo.db"
_BATCH = "events per signed batch (default 1000)"

out = output_console()
err = error_console()


def _json(value: Any) -> None:
    out.print_json(json.dumps(value), sort_keys=False) if sys.stdout.isatty() else print(json.dumps(value))


@contextmanager
def _progress(args: argparse.Namespace, label: str, total: int | None) -> Iterator[Any]:
    show = not args.json and err.is_terminal
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, total=total: bar.update(task, completed=done, total=total)


# -- init -------------------------------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> Ledger:
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
        sharded.register_key(CLI_PRODUCER, _key_id(producer), producer.public_key)
        for shard in sharded.shards:
            shard.close()
        return sharded.root
    ledger = Ledger.create(args.ledger, signer, origin=args.origin, settings=_settings(args))
    ledger.register_key(CLI_PRODUCER, _key_id(producer), producer.public_key)
    return ledger


def _producer_key_path(args: argparse.Namespace) -> Path:
    return (
        Path(args.producer_key)
        if getattr(args, "producer_key", None)
        else _default_key_path(args.ledger, ".producer.key", "--producer-key")
    )


def _key_id(signer: Signer) -> str:
    return f"{signer.name}-{leaf_hash(signer.public_key)[:4].hex()}"


def cmd_init(args: argparse.Namespace) -> int:
    ledger = _init(args)
    info = {"ledger": args.ledger, "origin": ledger.origin, "verifier_key": str(ledger.verifier)}
    ledger.close()
    info["token_secret_file"] = ensure_token_secret(args.ledger)
    if args.json:
        _json(info)
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
    ledger = _open(args)
    producer = load_signer(_producer_key_path(args))
    name = args.producer or producer.name
    key_id = args.key_id or _key_id(producer)
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
    with ledger, _progress(args, "ingest", len(todo)) as advance, Pipeline[int](ledger) as pipe:
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
        _json(summary)
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


# -- verify, checkpoint, prove -----------------------------------------------------------------------------


def _verifier_from(args: argparse.Namespace) -> NoteVerifier | None:
    if args.key:
        return load_verifier(args.key)
    return None


def cmd_verify(args: argparse.Namespace) -> int:
    trusted = Path(args.trusted_checkpoint).read_text(encoding="utf-8") if args.trusted_checkpoint else None
    policy = policy_from(args)
    if _sharded(args.ledger):
        if policy is not None:
            raise CommandError("--witness-key applies to one log; verify each shard's ledger with it instead")
        if args.tsa_cert:
            raise CommandError("--tsa-cert applies to one log; verify each shard's ledger with it instead")
        return _verify_sharded(args)
    with _progress(args, "verify", None) as advance:
        report = verify_ledger(
            args.ledger,
            verifier=_verifier_from(args),
            trusted_checkpoint=trusted,
            workers=args.workers,
            progress=advance,
        )
    witnessed = check_witnessed(args.ledger, _verifier_from(args), policy) if policy is not None else None
    stamps = check_timestamps(args.ledger, args.tsa_cert) if args.tsa_cert else None
    ok = report.ok and (witnessed is None or not witnessed[2]) and all(s["ok"] for s in stamps or ())
    if args.json:
        extra = {} if stamps is None else {"ok": ok, "timestamps": stamps}
        _json(report.to_json() | ({} if witnessed is None else _witnessed_json(witnessed, ok)) | extra)
    else:
        if args.key is None:
            err.print(
                "[yellow]warning:[/] no --key given: checking signatures against the key copy stored in the "
                "database, which only proves the ledger is internally consistent. Pass the log's verifier key."
            )
        if report.ok:
            rate = f"{report.size / report.seconds:,.0f}" if report.seconds else "-"
            out.print(
                f"[green]OK[/] {counted(report.size, 'entry', 'entries')}, {counted(report.blocks, 'block')}, "
                f"{counted(report.checkpoints, 'checkpoint')}, {counted(report.envelopes, 'envelope')} verified in "
                f"{report.seconds:.2f} s ({rate} entries/s)"
                + (f"; extends the trusted checkpoint of size {report.trusted_size}" if report.trusted_size else "")
            )
        else:
            out.print(f"[red]FAILED[/] first bad index: {report.first_bad_index}")
            for p in report.problems[:20]:
                where = f"index {p.index}" if p.index is not None else "-"
                out.print(f"  [{p.kind}] {where}: {p.message}")
        if witnessed is not None:
            _print_witnessed(witnessed)
        if stamps is not None:
            print_timestamp_results(stamps)
    return 0 if ok else 1


def _witnessed_json(witnessed: tuple[int, int, list[str]], ok: bool) -> dict[str, Any]:
    size, _, problems = witnessed
    return {"ok": ok, "witnessed_size": size, "witness_problems": problems}


def _print_witnessed(witnessed: tuple[int, int, list[str]]) -> None:
    size, latest, problems = witnessed
    if problems:
        out.print(f"[red]FAILED[/] witness policy: {escape(problems[0])}")
    elif size < latest:
        out.print(f"[green]OK[/] witnessed up to checkpoint {size}; checkpoint {latest} awaits the quorum")
    else:
        out.print(f"[green]OK[/] the latest checkpoint ({size}) meets the witness policy")


def _sharded(url: str) -> bool:
    from lineage_ledger.ledger.shards import read_layout

    return read_layout(url) is not None


def _verify_sharded(args: argparse.Namespace) -> int:
    from lineage_ledger.ledger.shards import verify_sharded

    report = verify_sharded(args.ledger, verifier=_verifier_from(args), workers=args.workers)
    if args.json:
        _json(report.to_json())
        return 0 if report.ok else 1
    for name, part in [("root", report.root), *((f"shard {n}", r) for n, r in enumerate(report.shards))]:
        status = "[green]OK[/]" if part.ok else "[red]FAILED[/]"
        out.print(f"{status} {name}: {part.size} entries, {part.blocks} blocks, {part.checkpoints} checkpoints")
        for problem in part.problems[:10]:
            out.print(f"  [{problem.kind}] index {problem.index}: {problem.message}")
    for problem in report.problems[:20]:
        out.print(f"  [red][{problem.kind}][/] {problem.message}")
    total = report.root.size + sum(r.size for r in report.shards)
    verdict = "[green]OK[/]" if report.ok else "[red]FAILED[/]"
    out.print(f"{verdict} root and {len(report.shards)} shards, {total} entries in {report.seconds:.2f} s")
    return 0 if report.ok else 1


def cmd_checkpoint(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    if args.list:
        try:
            listed = checkpoint_list(store)
        finally:
            store.close()
        if args.json:
            _json({"checkpoints": listed})
        else:
            for cp in listed:
                print(f"{cp['size']}\t{cp['root']}")
        return 0
    try:
        chain = read_key_chain(store)
        row = store.checkpoints(args.size)[0] if args.size is not None else store.latest_checkpoint()
        if row is None or (args.size is not None and row.size != args.size):
            raise NotFoundError("no checkpoint" + (f" of size {args.size}" if args.size is not None else " yet"))
        verifier = chain.verifier_for(row.size)
    finally:
        store.close()
    if args.verifier_key:
        if args.json:
            _json({"verifier_key": str(verifier)})
        else:
            print(verifier)
        return 0
    if args.json:
        _json({"size": row.size, "note": row.note, "verifier_key": str(verifier)})
    else:
        sys.stdout.write(row.note)
    return 0


def _signed_checkpoint(store: Any, size: int) -> str:
    rows = store.checkpoints(size)
    if not rows or rows[0].size != size:
        raise NotFoundError(f"no signed checkpoint of size {size}")
    return str(rows[0].note)


def cmd_prove(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    try:
        from lineage_ledger.core.merkle import TiledNodeReader, inclusion_proof

        reader = TiledNodeReader(store.nodes)
        latest = store.latest_checkpoint()
        if latest is None:
            raise NotFoundError("the ledger has no signed checkpoint yet: seal it first")
        if args.consistency:
            result: dict[str, Any] = consistency_answer(store, *args.consistency)
        else:
            if args.index is None:
                raise CommandError("give an INDEX or --consistency OLD NEW")
            size = args.size or latest.size
            note = _signed_checkpoint(store, size)
            row = store.entry(args.index)
            if args.index >= size:
                raise NotFoundError(f"entry {args.index} is pending: not yet covered by checkpoint {size}")
            result = {
                "index": args.index,
                "tree_size": size,
                "entry": row.body.decode("utf-8"),
                "leaf_hash": leaf_hash(row.body).hex(),
                "inclusion_path": [h.hex() for h in inclusion_proof(args.index, size, reader)],
                "checkpoint": note,
            }
    finally:
        store.close()
    if args.json:
        _json(result)
    else:
        for k, v in result.items():
            out.print(f"[bold]{k}[/]: {v if not isinstance(v, list) else ' '.join(v)}")
    return 0


# -- trace ------------------------------------------------------------------------------------------------


def cmd_trace(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    try:
        trace = trace_token(store, args.token_id)
    finally:
        store.close()
    if args.json:
        _json(trace.to_json())
        return 0
    _print_trace(trace)
    return 0


def _print_trace(trace: Any) -> None:
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
            s.occurred_at,
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


# -- keys, fingerprint ------------------------------------------------------------------------------------


def _key_ledgers(args: argparse.Namespace) -> list[Ledger]:
    """The ledgers whose keyrings a key command acts on: the ledger, or every shard of a sharded root (each
    shard checks the batches its consumer reads)."""
    from lineage_ledger.ledger.shards import layout_of, shard_url

    ledger = _open(args)
    layout = layout_of(ledger.store)
    if layout is None:
        return [ledger]
    ledger.close()
    shards: list[Ledger] = []
    try:
        for n in range(layout.shards):
            shards.append(Ledger.open(shard_url(args.ledger, n), _log_signer(args), settings=_settings(args)))
    except BaseException:
        for shard in shards:
            shard.close()
        raise
    return shards


def cmd_keys(args: argparse.Namespace) -> int:
    ledgers = _key_ledgers(args)
    if args.keys_command == "list":
        try:
            keys = [
                {
                    "producer": k.producer,
                    "key_id": k.key_id,
                    "public_key": k.public_key.hex(),
                    "valid_from": k.valid_from,
                    "valid_until": k.valid_until,
                    "revoked_at": k.revoked_at,
                }
                for k in ledgers[0].keyring.producer_keys()
            ]
        finally:
            for ledger in ledgers:
                ledger.close()
        if args.json:
            _json(keys)
        else:
            for k in keys:
                state = f"revoked at {k['revoked_at']}" if k["revoked_at"] else "active"
                out.print(f"{k['key_id']}  producer={k['producer']}  from={k['valid_from']}  {state}")
        return 0
    try:
        if args.keys_command == "register":
            if args.generate:
                signer = Ed25519Signer.generate(args.producer)
                write_signer_key(args.generate, signer)
                public = signer.public_key
            elif args.public_key:
                public = bytes.fromhex(args.public_key)
            else:
                raise CommandError("give --public-key HEX or --generate FILE")
            for ledger in ledgers:
                index = ledger.register_key(
                    args.producer, args.key_id, public, valid_from=args.valid_from, valid_until=args.valid_until
                )
        else:
            for ledger in ledgers:
                index = ledger.revoke_key(args.key_id, at=args.at)
        for ledger in ledgers:
            ledger.seal()
    finally:
        for ledger in ledgers:
            ledger.close()
    if args.json:
        _json({"index": index})
    else:
        out.print(f"recorded key change at index {index}")
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from lineage_ledger.token_secrets import load_token_secrets

    secrets = load_token_secrets(args.secret_file)
    token = sys.stdin.readline().strip()
    if not token:
        raise InputError("token", "read no token on standard input")
    ids = secrets.candidates(token, args.region) if args.all_versions else [secrets.fingerprint(token, args.region)]
    if args.json:
        _json({"token_id": ids[0], **({"token_ids": ids} if args.all_versions else {})})
    else:
        print("\n".join(ids))
    return 0


# -- serve, apikey ----------------------------------------------------------------------------------------


def _served_ledger(args: argparse.Namespace) -> Ledger:
    """The ledger ``lineage serve`` writes: --ledger, or with --shard its shard n (a sharded ledger is served by
    one process per shard; they share the root's log key, API keys, token secret and service key)."""
    return _open(args, long_running=True) if args.shard is None else _open_shard(args)[0]


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from lineage_ledger.service.app import create_app
    except ImportError as e:
        raise CommandError(
            f"the HTTP service needs the [server] extra: pip install 'lineage-ledger[server]' ({e})"
        ) from e
    from lineage_ledger.service.auth import ApiKeyStore

    api_keys = ApiKeyStore.load(_api_key_path(args))
    if not api_keys.principals():
        err.print(f"[yellow]warning:[/] no API keys yet: create one with lineage apikey create --ledger {args.ledger}")
    secret = _token_secret(args)
    service_key = Path(args.service_key) if args.service_key else _default_key_path(args.ledger, ".service.key")
    if not service_key.exists():
        from lineage_ledger.service.app import SERVICE_PRODUCER

        write_signer_key(service_key, Ed25519Signer.generate(SERVICE_PRODUCER))
    with _served_ledger(args) as ledger:
        introspector = None
        if args.redis:
            from lineage_ledger.state import open_introspector

            introspector = open_introspector(ledger, args.redis)  # catches up, then follows every commit
        metrics = None
        if args.metrics_port is not None:
            from lineage_ledger.metrics import LedgerMetrics

            metrics = LedgerMetrics.serving(ledger, args.metrics_port, args.metrics_addr)
        cosigner = start_cosigner(ledger, args, metrics.registry if metrics is not None else None)
        timestamper = start_timestamper(ledger, args)
        app = create_app(
            ledger,
            api_keys=api_keys,
            token_secret=secret,
            max_body_bytes=args.max_body_bytes,
            service_signer=load_signer(service_key),
            introspector=introspector,
            public_log=args.public_log,
        )
        # uvicorn's access log would print request paths and queries; the app logs route templates only.
        try:
            uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_config=_SERVE_LOGGING)
        finally:
            if cosigner is not None:
                cosigner.close()
            if timestamper is not None:
                timestamper.close()
    return 0


_SERVE_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "lineage_ledger": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


# -- emit -------------------------------------------------------------------------------------------------

API_KEY_ENV_VAR = "LINEAGE_API_KEY"


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
        args.key_id or _key_id(signer),
        signer,
        transport,
        spool_dir=args.spool,
        batch_size=args.batch,
        overflow="block",
        block_timeout=None if args.spool else args.timeout,
        spool_full="block",
        spool_full_timeout=args.timeout,
        on_receipts=keep if saved is not None else None,
    )
    started = time.perf_counter()
    lines = invalid = 0
    stopped_at: int | None = None
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
        _json(summary)
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


# -- demo and bench ---------------------------------------------------------------------------------------


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
    ledger = _init(args)
    signers = {p: Ed25519Signer.generate(p) for p in PRODUCERS}
    key_ids = {p: f"{p}-2026-11" for p in PRODUCERS}
    for p, s in signers.items():
        ledger.register_key(p, key_ids[p], s.public_key)
    workload = generate(args.tokens, start_ns=time.time_ns() - 7_200_000_000_000)
    n = len(workload.events)
    violations = 0
    with ledger, _progress(args, "demo ingest", n) as advance:
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
    if _sharded(args.ledger):
        return _verify_sharded(args)
    with _progress(args, "verify", None) as advance:
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
        _json({**summary, "traces": [t.to_json() for t in traces]})
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
        _print_trace(trace)
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
    for suffix in ("", "-wal", "-shm", ".key", ".producer.key"):
        target = path.with_name(path.name + suffix)
        if target.exists():
            target.unlink()


def cmd_bench(args: argparse.Namespace) -> int:
    from lineage_ledger.bench import run_bench

    def say(msg: str) -> None:
        if not args.json:
            err.print(f"[dim]{msg}[/]")

    figures = run_bench(args.events, synchronous=args.synchronous, workers=args.workers, progress=say)
    if args.json:
        _json(figures)
    else:
        for k, v in figures.items():
            out.print(f"{k:>22}: {v}")
    return 0


# -- wiring -----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common, output = shared_options(), output_options()
    parser = argparse.ArgumentParser(prog="lineage", description="A tamper-evident ledger of token lineage.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", parents=[common], help="create a ledger and its log key")
    p.add_argument("--origin", default="lineage.local/log", help="checkpoint origin line (a unique log name)")
    p.add_argument("--shards", type=int, help="create a sharded ledger: a root log and this many shard logs")
    p.add_argument("--partitions", type=int, help="Kafka partitions the shards split (a multiple of --shards)")
    p.add_argument(
        "--producer-key", help="the CLI's producer key file, created if missing (default <ledger>.producer.key)"
    )
    p.set_defaults(func=cmd_init, creates_ledger=True)

    p = sub.add_parser("ingest", parents=[common], help="append events from a JSONL file in signed batches")
    p.add_argument("file", help="JSONL file, one event per line ('-' for standard input)")
    p.add_argument("--batch", type=int, default=1000, choices=range(1, MAX_BATCH_EVENTS + 1), metavar="N", help=_BATCH)
    p.add_argument("--producer", help="producer id (default: the key's name)")
    p.add_argument("--producer-key", help="producer signing key file (default <ledger>.producer.key)")
    p.add_argument("--key-id", help="producer key id (default: <key name>-<first 4 bytes of its hash>)")
    p.add_argument("--no-seal", action="store_true", help="leave the new entries pending")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("verify", parents=[common], help="check every hash, chain, block and signature")
    p.add_argument("--key", help="the log's verifier key (note key string, or a file holding one)")
    p.add_argument("--trusted-checkpoint", help="a signed checkpoint saved earlier; the ledger must extend it")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    add_policy_arguments(p)
    p.add_argument("--tsa-cert", help="also check the checkpoints' RFC 3161 timestamps against this TSA root (PEM)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("checkpoint", parents=[common], help="print the latest signed checkpoint")
    p.add_argument("--verifier-key", action="store_true", help="print the log's note verifier key instead")
    p.add_argument("--size", type=int, help="the checkpoint of this tree size")
    p.add_argument("--list", action="store_true", help="list every signed checkpoint: size and root hash")
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("prove", parents=[common], help="inclusion or consistency proof")
    p.add_argument("index", nargs="?", type=int, help="entry index")
    p.add_argument("--size", type=int, help="tree size of the checkpoint to prove against (default latest)")
    p.add_argument(
        "--consistency",
        nargs=2,
        type=int,
        metavar=("OLD", "NEW"),
        help="a consistency proof between the signed checkpoints of tree sizes OLD and NEW",
    )
    p.set_defaults(func=cmd_prove)

    register_query(sub, common)
    register_evidence(sub, common)
    register_findings(sub, common)
    register_export(sub, common)
    register_kafka(sub, common)
    register_tiles(sub, common)
    register_monitor(sub)
    register_events(sub, common)
    register_receipt(sub, common)
    register_witness(sub, common)
    register_timestamp(sub, common)

    p = sub.add_parser("trace", parents=[common], help="a token's timeline, family and resources")
    p.add_argument("token_id", type=token_id_argument, help=TOKEN_ID_HELP)
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser(
        "keys", parents=[common], help="producer signing keys and the log key (each change a ledger entry)"
    )
    ks = p.add_subparsers(dest="keys_command", required=True)
    k = ks.add_parser("list", parents=[common], help="every producer key and its state")
    k.set_defaults(func=cmd_keys)
    k = ks.add_parser("register", parents=[common], help="record a producer's public key")
    k.add_argument("--producer", required=True, help="the producer id the key signs batches for")
    k.add_argument("--key-id", required=True, help="the key's id, named in every batch it signs")
    k.add_argument("--public-key", help="hex Ed25519 public key")
    k.add_argument("--generate", help="generate a key pair and write the private key to this file (0600)")
    k.add_argument("--valid-from", help="HLC reading from which the key may sign (default: now)")
    k.add_argument("--valid-until", help="HLC reading from which the key signs nothing (default: no end)")
    k.set_defaults(func=cmd_keys)
    k = ks.add_parser("revoke", parents=[common], help="record that a key signs nothing from an instant on")
    k.add_argument("--key-id", required=True, help="the key to revoke")
    k.add_argument("--at", help="HLC reading from which the key signs nothing (default now)")
    k.set_defaults(func=cmd_keys)
    register_rotate_log(ks, common)

    p = sub.add_parser("fingerprint", parents=[output], help="token id of a raw token read from stdin")
    p.add_argument(
        "--secret-file",
        required=True,
        help="the token HMAC secret the producers and lineage serve share (serve's default: <ledger>.secret)",
    )
    p.add_argument("--region", help="prefix the id with this region ('eu-west-1' gives 'eu-west-1:<hex>')")
    p.add_argument("--all-versions", action="store_true", help="the id under every secret version, newest first")
    p.set_defaults(func=cmd_fingerprint)
    register_token_secret(sub, common)

    p = sub.add_parser("serve", parents=[common], help="run the HTTP service (needs the [server] extra)")
    p.add_argument(
        "--redis",
        metavar="URL",
        help="keep hot token state in Redis and introspect from it (the [redis] extra), e.g. redis://127.0.0.1/0",
    )
    p.add_argument(
        "--shard",
        type=int,
        help="serve shard N of the sharded ledger --ledger (one process per shard; see lineage emit --url)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this host only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port to listen on (default 8080)")
    p.add_argument("--api-keys", help="API key file (default <ledger>.apikeys.json)")
    p.add_argument(
        "--token-secret-file", help=f"token HMAC secret (else ${TOKEN_SECRET_ENV_VAR}, else <ledger>.secret)"
    )
    p.add_argument("--service-key", help="the service's own producer key (default <ledger>.service.key, created)")
    p.add_argument(
        "--max-body-bytes", type=int, default=16 * 1024 * 1024, help="largest request body accepted (default 16 MiB)"
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port, apart from the API")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address of the metrics port (default loopback)")
    p.add_argument("--block-size", type=int, help="seal at this many entries (default 10000)")
    p.add_argument("--block-seconds", type=float, help="... or at this block age (default 5)")
    p.add_argument(
        "--public-log",
        action="store_true",
        help="serve the log's checkpoint and tiles (C2SP tlog-tiles: /checkpoint, /tile/...) without an API key",
    )
    add_serve_arguments(p)
    add_timestamp_arguments(p)
    p.set_defaults(func=cmd_serve)

    register_apikey(sub, common)

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
    p.add_argument("--batch", type=int, default=1000, choices=range(1, MAX_BATCH_EVENTS + 1), metavar="N", help=_BATCH)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery at the end")
    p.add_argument("--http-timeout", type=float, default=10.0, help="seconds per HTTP request")
    p.add_argument(
        "--receipts", metavar="FILE", help="append each event's receipt, with the log's signed promise, as JSONL"
    )
    p.add_argument(
        "--log-verifier-key",
        help="the log's verifier key (text or file): check its checkpoints' and promises' signatures",
    )
    p.set_defaults(func=cmd_emit)

    p = sub.add_parser(
        "demo",
        parents=[ledger_options(DEMO_LEDGER), output],
        help="build, ingest, seal, verify and trace a realistic workload",
    )
    p.add_argument("--tokens", type=int, default=10_000, help="root tokens in the workload (default 10000)")
    p.set_defaults(func=cmd_demo, origin=DEMO_ORIGIN, creates_ledger=True)

    p = sub.add_parser("bench", parents=[output], help="ingest, verify and floor throughput in one run")
    p.add_argument("--events", type=int, default=200_000, help="events to ingest (default 200000)")
    p.add_argument(
        "--synchronous", default="full", choices=["full", "normal"], help="SQLite's synchronous setting (default full)"
    )
    p.add_argument("--workers", type=int, default=None, help="verifying processes (default: all cores)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code: 0 ok, 1 verification failed, 2 bad input or usage (a missing ledger
    or input file included), 3 other error (an unknown token, checkpoint or entry included), 141 when the
    reader of the output went away (as for a command killed by SIGPIPE)."""
    args = _parser().parse_args(argv)
    fill_defaults(args)
    # messages are escaped: rich would take a bracketed part of one ("[a-z]", "[server]") for markup
    try:
        if getattr(args, "ledger_default", None) is not None and not args.creates_ledger:
            require_ledger(args.ledger)
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a reader that went away (BrokenPipeError) is handled, not at exit
        return code
    except CommandError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        return 2
    except InputError as e:
        err.print(f"[red]bad input:[/] {escape(str(e))}")
        return 2
    except LedgerError as e:
        err.print(f"[red]error:[/] {type(e).__name__}: {escape(str(e))}")
        return 3
    except BrokenPipeError:
        silence_stdout()
        return 141
    except (FileNotFoundError, IsADirectoryError) as e:
        where = f": {e.filename}" if e.filename else ""
        err.print(f"[red]error:[/] {escape((e.strerror or str(e)) + where)}")
        return 2
    except (OSError, ValueError) as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
