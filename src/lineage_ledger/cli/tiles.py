"""``lineage publish`` writes the log as static C2SP tlog-tiles; ``lineage remote ...`` reads a published log
(a ``lineage serve --public-log`` URL, a web server or CDN in front of a published directory, or ``file://``)
trusting only the log's verifier key."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from lineage_ledger.cli.options import output_options
from lineage_ledger.core.note import Checkpoint, open_note
from lineage_ledger.keys import load_verifier
from lineage_ledger.ledger.tiles import publish_tiles
from lineage_ledger.store import open_store
from lineage_ledger.tile_client import TileClient

__all__ = ["register"]

_out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _print_json(value: Any) -> None:
    print(json.dumps(value))


def _publish(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    try:
        done = publish_tiles(store, Path(args.dir))
    finally:
        store.close()
    if args.json:
        _print_json({"dir": args.dir, "size": done.size, "written": done.written, "kept": done.kept})
    else:
        _out.print(
            f"published the log at size {done.size} to {args.dir}: {done.written} tiles written, {done.kept} kept"
        )
    return 0


def _client(args: argparse.Namespace) -> TileClient:
    return TileClient(args.url, load_verifier(args.key), timeout=args.timeout)


def _remote_checkpoint(args: argparse.Namespace) -> int:
    client = _client(args)
    signed = client.checkpoint()
    cp = signed.checkpoint
    if args.check_tree:
        client.audit(cp)  # RootMismatchError naming the first tile or entry that disagrees
    if args.json:
        _print_json({"origin": cp.origin, "size": cp.size, "root": cp.root_hash.hex(), "tree_checked": args.check_tree})
    else:
        checked = "; every tile and entry checked against it" if args.check_tree else ""
        _out.print(f"[green]OK[/] {cp.origin} size {cp.size} root {cp.root_hash.hex()}{checked}")
        sys.stdout.write(signed.note)
    return 0


def _remote_entry(args: argparse.Namespace) -> int:
    client = _client(args)
    signed = client.checkpoint().checkpoint
    body, proof = client.entry(args.index, signed)
    if args.json:
        _print_json(
            {
                "index": args.index,
                "tree_size": signed.size,
                "root": signed.root_hash.hex(),
                "entry": body.decode("utf-8"),
                "inclusion_proof": [h.hex() for h in proof],
            }
        )
    else:
        _out.print(f"[green]OK[/] entry {args.index} is in the signed tree of size {signed.size}:")
        print(body.decode("utf-8"))
    return 0


def _remote_consistency(args: argparse.Namespace) -> int:
    client = _client(args)
    trusted_note = Path(args.trusted_checkpoint).read_text("utf-8")
    text, _ = open_note(trusted_note, [load_verifier(args.key)])
    old = Checkpoint.from_text(text)
    new = client.checkpoint().checkpoint
    proof = client.consistency(old, new)  # InconsistencyError / ProofError if history was rewritten
    if args.json:
        _print_json({"old_size": old.size, "new_size": new.size, "proof": [h.hex() for h in proof]})
    else:
        _out.print(f"[green]OK[/] the log at size {new.size} extends the trusted checkpoint of size {old.size}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage publish`` and ``lineage remote checkpoint|entry|consistency``."""
    p = sub.add_parser("publish", parents=[common], help="write the log as static C2SP tlog-tiles files")
    p.add_argument("--dir", required=True, help="the directory to write (serve it at the log's URL prefix)")
    p.set_defaults(func=_publish)

    output = output_options()
    r = sub.add_parser("remote", parents=[output], help="read and check a published log through its tiles")
    rs = r.add_subparsers(dest="remote_command", required=True)

    def remote(name: str, help_text: str) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = rs.add_parser(name, parents=[output], help=help_text)
        q.set_defaults(ledger_default=None)  # reads a published log, never a ledger
        q.add_argument("url", help="the log's URL prefix: http(s)://... or file:///published/dir")
        q.add_argument("--key", required=True, help="the log's verifier key (note key string, or a file)")
        q.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each fetch (default 10)")
        return q

    q = remote("checkpoint", "fetch and check the signed checkpoint")
    q.add_argument(
        "--check-tree",
        action="store_true",
        help="also fetch every tile and entry bundle and check them all against the root",
    )
    q.set_defaults(func=_remote_checkpoint)
    q = remote("entry", "fetch an entry and prove it is in the signed tree, from tiles")
    q.add_argument("index", type=int, help="the entry's log index")
    q.set_defaults(func=_remote_entry)
    q = remote("consistency", "prove the log still extends a checkpoint you kept, from tiles")
    q.add_argument("--trusted-checkpoint", required=True, help="a signed checkpoint file saved earlier")
    q.set_defaults(func=_remote_consistency)
