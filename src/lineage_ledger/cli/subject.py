"""``lineage subject ...``: a data subject's events exported with their evidence, the subject erased, and the
subject key store backed up and restored (docs/privacy.md).

``export`` and ``keys backup`` only read; ``erase`` and ``keys restore`` open the ledger for writing (the
log key), as every command that records something does.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape

from lineage_ledger.cli._common import CommandError, open_ledger
from lineage_ledger.cli.render import error_console, output_console, print_json
from lineage_ledger.errors import InputError
from lineage_ledger.keys import write_private_file
from lineage_ledger.privacy.backup import read_backup, restore_keys, write_backup
from lineage_ledger.privacy.personal import PersonalData
from lineage_ledger.privacy.subjects import erase_subject, export_subject, subject_evidence, subject_name
from lineage_ledger.store import open_store

__all__ = ["register"]

out = output_console()
err = error_console()


def _name(args: argparse.Namespace) -> str:
    return subject_name(args.user, args.subject)


def _reading(args: argparse.Namespace) -> tuple[Any, PersonalData]:
    store = open_store(args.ledger, readonly=True)
    try:
        personal = PersonalData.open(args.ledger, store.meta()["origin"], store.meta())
    except BaseException:
        store.close()
        raise
    if personal is None:
        store.close()
        raise InputError("ledger", f"{args.ledger} seals no personal data (create it with --personal-data)")
    return store, personal


def _cell(value: Any) -> str:
    """A payload value as one CSV cell: text as it is, nothing as empty, anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _csv(events: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    fields = sorted({k for e in events for k in e["event"].get("payload", {})})
    writer = csv.writer(buffer, lineterminator="\n")
    head = ["index", "recorded_at", "producer", "subject", "verdict", "event_id", "event_type", "occurred_at"]
    writer.writerow(head + [f"payload.{f}" for f in fields])
    for e in events:
        ev = e["event"]
        payload = ev.get("payload", {})
        row = [e["index"], e["recorded_at"], e["producer"], e["subject"], e["verdict"]]
        row += [ev.get("event_id"), ev.get("event_type"), ev.get("occurred_at")]
        row += [_cell(payload.get(f)) for f in fields]
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue().encode()


def cmd_export(args: argparse.Namespace) -> int:
    store, personal = _reading(args)
    try:
        export = export_subject(store, personal, _name(args))
        evidence = subject_evidence(store, export) if args.evidence and export.subjects else None
    finally:
        store.close()
        personal.close()
    body = b"".join(export.jsonl()) if args.format == "jsonl" else _csv(export.events)
    if args.output == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    else:
        write_private_file(args.output, body, overwrite=True)
    if args.evidence:
        if evidence is None:
            err.print("[yellow]note:[/] no live event to prove: the evidence file was not written")
        else:
            write_private_file(args.evidence, evidence, overwrite=True)
    if args.output != "-":
        summary = {
            "fingerprint": export.fingerprint,
            "events": len(export.events),
            "erasures": [r.to_json() for r in export.erasures],
            "chains": len(export.subjects),
            "file": args.output,
            "evidence": args.evidence if evidence is not None else None,
        }
        if args.json:
            print_json(out, summary)
        else:
            out.print(
                f"{len(export.events)} events in {len(export.subjects)} chains -> {escape(args.output)}"
                + (f"; evidence -> {escape(args.evidence)}" if evidence is not None else "")
            )
            for rec in export.erasures:
                out.print(f"erased at entry {rec.index} ({rec.recorded_at}): {rec.count} entries")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    ledger = open_ledger(args)
    try:
        record = erase_subject(ledger, _name(args), args.reason)
    finally:
        ledger.close()
    if args.json:
        print_json(out, record.to_json())
    elif record.already:
        out.print(f"already erased at entry {record.index} ({record.recorded_at}); nothing left to erase")
    else:
        out.print(
            f"erased: {record.count} entries' personal fields, erasure entry {record.index} "
            f"(subject fingerprint {record.fingerprint})"
        )
        out.print(
            "now destroy every subject key backup taken before this erasure and take a new one "
            "(lineage subject keys backup; docs/privacy.md)"
        )
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    store, personal = _reading(args)
    try:
        body, count = write_backup(personal.key_store, store.meta()["origin"])
    finally:
        store.close()
        personal.close()
    try:
        write_private_file(args.output, body, overwrite=False)
    except FileExistsError:
        raise CommandError(f"{args.output} exists; a backup never overwrites a file") from None
    if args.json:
        print_json(out, {"file": args.output, "keys": count})
    else:
        out.print(f"{count} wrapped subject keys -> {escape(args.output)} (wrapped: useless without the KEK)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    rows = read_backup(Path(args.file).read_bytes())
    store, personal = _reading(args)
    try:
        restored, refused = restore_keys(store, personal, rows)
    finally:
        store.close()
        personal.close()
    if args.json:
        print_json(out, {"restored": restored, "refused_erased": refused})
    else:
        out.print(f"restored {restored} subject keys; refused {refused} that the log records as erased")
    return 0


def cmd_ingest_key(args: argparse.Namespace) -> int:
    store, personal = _reading(args)
    try:
        key = personal.ingest_public_key()
    finally:
        store.close()
        personal.close()
    if key is None:
        raise InputError("ledger", "its privacy key file holds no ingest key")
    if args.json:
        print_json(out, {"ingest_key": key.hex()})
    else:
        print(key.hex())
    return 0


def _who(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the person's user id (as producers send it in payload.user_id)")
    who.add_argument("--subject", help="a token:<id> or asset:<id> whose events had personal fields and no user id")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage subject ...`` to the ``lineage`` parser."""
    top = sub.add_parser("subject", help="a data subject's events: export, erase, key backups (docs/privacy.md)")
    cmds = top.add_subparsers(dest="subject_command", required=True)
    p = cmds.add_parser("export", parents=[common], help="every event about a person, decrypted, with evidence")
    _who(p)
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="output format (default jsonl)")
    p.add_argument("--output", "-o", default="-", help="file to write (default standard output)")
    p.add_argument("--evidence", help="also write an evidence set proving the events included and complete")
    p.set_defaults(func=cmd_export)
    p = cmds.add_parser("erase", parents=[common], help="destroy a person's keys and record a signed erasure")
    _who(p)
    p.add_argument("--reason", required=True, help="why (signed into the log: never name the person)")
    p.set_defaults(func=cmd_erase)
    p = cmds.add_parser("ingest-key", parents=[common], help="the public key producers seal personal fields to")
    p.set_defaults(func=cmd_ingest_key)
    keys = cmds.add_parser("keys", help="back up or restore the subject key store")
    kcmds = keys.add_subparsers(dest="keys_command", required=True)
    p = kcmds.add_parser("backup", parents=[common], help="write every wrapped subject key to a new file (0600)")
    p.add_argument("output", help="the backup file to create")
    p.set_defaults(func=cmd_backup)
    p = kcmds.add_parser("restore", parents=[common], help="put a backup's keys back, except erased ones")
    p.add_argument("file", help="a file lineage subject keys backup wrote")
    p.set_defaults(func=cmd_restore)
