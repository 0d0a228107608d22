"""``lineage timestamp ...``: get RFC 3161 timestamps of a ledger's checkpoints, and check them offline.

Also what the other commands share: ``--tsa-cert`` checks for ``lineage verify`` and ``lineage evidence
verify``, and the timestamping thread of ``lineage serve`` (``--tsa-url``). docs/timestamps.md.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from lineage_ledger.errors import InputError, LedgerError, NotFoundError
from lineage_ledger.store import open_store

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from lineage_ledger.ledger.writer import Ledger
    from lineage_ledger.timestamps.authority import Timestamper

__all__ = ["add_serve_arguments", "check_bundle_timestamp", "check_timestamps", "register", "start_timestamper"]

_out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _print_json(value: Any) -> None:
    print(json.dumps(value))


def _anchors(path: str) -> list[Certificate]:
    try:
        from lineage_ledger.timestamps.token import load_tsa_anchors
    except ImportError as e:  # pragma: no cover - the extra is part of [dev]
        raise InputError(
            "tsa_cert", f"timestamps need the [timestamps] extra: pip install 'lineage-ledger[timestamps]' ({e})"
        ) from e
    return load_tsa_anchors(path)


def check_timestamps(url: str, tsa_cert: str, size: int | None = None) -> list[dict[str, Any]]:
    """Check the stored timestamp tokens of the ledger at ``url`` (all, or that of checkpoint ``size``)
    against the TSA trust anchors in the PEM file ``tsa_cert``: one result per token, ``ok`` with the
    token's genTime, or the problem. NotFoundError if there is no token to check."""
    from lineage_ledger.timestamps.token import verify_timestamp

    anchors = _anchors(tsa_cert)
    store = open_store(url, readonly=True)
    try:
        sizes = store.timestamped_sizes() if size is None else [size]
        notes = {row.size: row.note for row in store.checkpoints(min(sizes, default=0))}
        tokens = {s: store.timestamp(s) for s in sizes}
    finally:
        store.close()
    results = []
    for s in sizes:
        token, note = tokens[s], notes.get(s)
        if token is None or note is None:
            raise NotFoundError(f"no timestamp of a checkpoint of size {s}")
        try:
            check = verify_timestamp(token, note, anchors)
        except LedgerError as e:
            results.append({"size": s, "ok": False, "problem": str(e)})
            continue
        results.append({"size": s, "ok": True} | check.to_json())
    if not results:
        raise NotFoundError("the ledger has no timestamp of any checkpoint")
    return results


def check_bundle_timestamp(data: bytes, tsa_cert: str) -> dict[str, Any]:
    """Check the ``timestamp`` field of an evidence bundle against the TSA trust anchors in ``tsa_cert``:
    ``{"ok": True, "gen_time": ...}`` or ``{"ok": False, "problem": ...}`` (also when the field is absent)."""
    from lineage_ledger.timestamps.token import verify_timestamp

    anchors = _anchors(tsa_cert)
    try:
        bundle = json.loads(data)
        encoded, note = bundle.get("timestamp"), bundle.get("checkpoint")
    except (ValueError, AttributeError):
        return {"ok": False, "problem": "the bundle is not a JSON object"}
    if not isinstance(encoded, str) or not isinstance(note, str):
        return {"ok": False, "problem": "the bundle holds no timestamp of its checkpoint"}
    try:
        token = base64.b64decode(encoded, validate=True)
        return {"ok": True} | verify_timestamp(token, note, anchors).to_json()
    except binascii.Error:
        return {"ok": False, "problem": "the bundle's timestamp is not base64"}
    except LedgerError as e:
        return {"ok": False, "problem": str(e)}


def print_timestamp_results(results: list[dict[str, Any]]) -> None:
    """One line per checked token."""
    for r in results:
        if r["ok"]:
            _out.print(f"[green]OK[/] checkpoint {r['size']} timestamped at {r['gen_time']} by {escape(r['tsa'])}")
        else:
            _out.print(f"[red]FAILED[/] timestamp of checkpoint {r['size']}: {escape(r['problem'])}")


# -- lineage serve's timestamping thread ----------------------------------------------------------------------


def start_timestamper(ledger: Ledger, args: argparse.Namespace) -> Timestamper | None:
    """Start asking the ``--tsa-url`` TSA to timestamp ``ledger``'s checkpoints, on a daemon thread of its
    own (ingest never waits for the TSA)."""
    if not getattr(args, "tsa_url", None):
        return None
    from lineage_ledger.timestamps.authority import Timestamper

    anchors = _anchors(args.tsa_cert) if args.tsa_cert else []
    timestamper = Timestamper(ledger.store, args.tsa_url, anchors=anchors)
    timestamper.start(args.timestamp_seconds if args.timestamp_seconds is not None else 2.0)
    return timestamper


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """``--tsa-url``, ``--tsa-cert`` and ``--timestamp-seconds`` on ``lineage serve``."""
    p.add_argument("--tsa-url", help="ask this RFC 3161 Time Stamping Authority to timestamp each checkpoint")
    p.add_argument("--tsa-cert", help="the TSA's trust anchor (PEM); a token that does not verify is not stored")
    p.add_argument("--timestamp-seconds", type=float, help="seconds between timestamping rounds (default 2)")


# -- lineage timestamp ... ------------------------------------------------------------------------------------


def _request(args: argparse.Namespace) -> int:
    import httpx

    from lineage_ledger.timestamps.authority import request_timestamp

    anchors = _anchors(args.tsa_cert) if args.tsa_cert else []
    probe = open_store(args.ledger, readonly=True)  # NotFoundError, rather than creating an empty ledger
    try:
        latest = probe.latest_checkpoint()
        existing = probe.timestamp(latest.size) if latest is not None else None
    finally:
        probe.close()
    if latest is None:
        raise NotFoundError("the ledger has no signed checkpoint yet")
    if existing is None:
        with httpx.Client(timeout=args.timeout) as client:
            token, _ = request_timestamp(client, args.tsa_url, latest.note, anchors)
        store = open_store(args.ledger)
        try:
            store.add_timestamp(latest.size, token)
        finally:
            store.close()
    status = "timestamped" if existing is None else "already timestamped"
    if args.json:
        _print_json({"size": latest.size, "status": status})
    else:
        _out.print(f"checkpoint {latest.size}: {status}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    results = check_timestamps(args.ledger, args.tsa_cert, args.size)
    if args.json:
        _print_json(results)
    else:
        print_timestamp_results(results)
    return 0 if all(r["ok"] for r in results) else 1


def _export(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    try:
        token = store.timestamp(args.size)
    finally:
        store.close()
    if token is None:
        raise NotFoundError(f"no timestamp of a checkpoint of size {args.size}")
    if args.output == "-":
        sys.stdout.buffer.write(token)
        sys.stdout.buffer.flush()
    else:
        with open(args.output, "wb") as sink:
            sink.write(token)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage timestamp request|verify|export`` to the CLI's subcommands."""
    t = sub.add_parser("timestamp", parents=[common], help="RFC 3161 timestamps of checkpoints")
    ts = t.add_subparsers(dest="timestamp_command", required=True)

    p = ts.add_parser("request", parents=[common], help="get the latest checkpoint timestamped by a TSA")
    p.add_argument("--tsa-url", required=True, help="the Time Stamping Authority's URL (RFC 3161 over HTTP)")
    p.add_argument("--tsa-cert", help="the TSA's trust anchor (PEM): check the token before storing it")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for the HTTP request")
    p.set_defaults(func=_request)

    p = ts.add_parser("verify", parents=[common], help="check the stored timestamps against a TSA trust anchor")
    p.add_argument("--tsa-cert", required=True, help="the TSA's trust anchor: its root certificate (PEM)")
    p.add_argument("--size", type=int, help="only the timestamp of the checkpoint of this size")
    p.set_defaults(func=_verify)

    p = ts.add_parser("export", parents=[common], help="write a checkpoint's TimeStampToken (DER)")
    p.add_argument("--size", type=int, required=True, help="the checkpoint's tree size")
    p.add_argument("-o", "--output", default="-", help="the file to write (default: stdout)")
    p.set_defaults(func=_export)
