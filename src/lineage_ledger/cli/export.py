"""``lineage export``: a token's family or an asset's lineage as PROV-JSON, DOT, Mermaid or JSON lines."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from lineage_ledger.cli.options import TOKEN_ID_HELP, token_id_argument
from lineage_ledger.cli.tiers import tiers_of
from lineage_ledger.core.log_key import KeyChain
from lineage_ledger.core.note import Checkpoint, open_note
from lineage_ledger.errors import NotFoundError
from lineage_ledger.keys import load_verifier
from lineage_ledger.ledger.export import Exportable, to_dot, to_jsonl, to_mermaid, to_prov_json
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.log_keys import read_key_chain
from lineage_ledger.store import open_store
from lineage_ledger.store.base import Store

__all__ = ["register"]


def _checkpoint(store: Store, chain: KeyChain) -> Checkpoint | None:
    row = store.latest_checkpoint()
    if row is None:
        return None
    text, _ = open_note(row.note, [chain.verifier_for(row.size)])
    return Checkpoint.from_text(text)


def _items(lineage: Lineage, args: argparse.Namespace) -> list[Exportable]:
    if args.token_id:
        lineage.timeline(args.token_id)  # NotFoundError for a token the ledger never saw
        family = lineage.family(args.token_id)
        rows = lineage.store.subject_entries(["token:" + t for t in family.tokens])
        return [family, *lineage.records(rows)]
    up, down = lineage.upstream(args.asset_id), lineage.downstream(args.asset_id)
    if not up.steps and not down.steps:
        raise NotFoundError(f"no events for asset {args.asset_id}")
    return [up, down]


def _export(args: argparse.Namespace) -> int:
    store = open_store(args.ledger, readonly=True)
    try:
        chain = read_key_chain(store)
        trusted = load_verifier(args.key) if args.key else chain.original
        chain.since(trusted)  # LedgerError for a key that is not one of the log's
        checkpoint = _checkpoint(store, chain)
        with tiers_of(store) as tiers:
            items = _items(Lineage(store), args)
    finally:
        store.close()
    if args.format == "prov":
        data = to_prov_json(items, checkpoint)
    elif args.format == "dot":
        data = to_dot(items, checkpoint)
    elif args.format == "mermaid":
        data = to_mermaid(items, checkpoint)
    else:
        data = to_jsonl(items)
    info: dict[str, Any] = {
        "format": args.format,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "checkpoint_size": checkpoint.size if checkpoint else None,
        **tiers.to_json(),
    }
    if args.output:
        Path(args.output).write_bytes(data)
        if args.json:
            print(json.dumps({**info, "output": args.output}))
        return 0
    if args.json:
        print(json.dumps({**info, "content": data.decode("utf-8")}))
        return 0
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage export FORMAT --token-id T | --asset-id A [-o FILE]`` to the CLI's subcommands."""
    p: argparse.ArgumentParser = sub.add_parser(
        "export", parents=[common], help="a token family or asset lineage as PROV-JSON, DOT, Mermaid or JSONL"
    )
    formats = ["prov", "dot", "mermaid", "jsonl"]
    p.add_argument("format", choices=formats, help="W3C PROV-JSON, Graphviz DOT, Mermaid or JSON lines")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--token-id",
        type=token_id_argument,
        help="the token's whole family, with every event of its tokens; " + TOKEN_ID_HELP,
    )
    target.add_argument("--asset-id", help="the asset's upstream and downstream lineage")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: standard output)")
    p.add_argument(
        "--key",
        help="the log's verifier key (note key string or file) for the checkpoint bundle "
        "(default: the copy stored in the ledger)",
    )
    p.set_defaults(func=_export)
