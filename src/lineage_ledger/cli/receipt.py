"""``lineage receipt verify``: check a producer's saved receipts against a ledger (docs/receipts.md)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lineage_ledger.cli._common import API_KEY_ENV_VAR
from lineage_ledger.cli.options import DEFAULT_LEDGER, require_ledger
from lineage_ledger.core.encoding import decode_json
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.receipt import SavedReceipt
from lineage_ledger.errors import InputError, NotFoundError, TransportError
from lineage_ledger.keys import load_verifier
from lineage_ledger.ledger.receipt_check import LedgerView, ReceiptCheck, StoreView, check_receipt
from lineage_ledger.store import open_store

__all__ = ["HttpView", "register"]


class HttpView:
    """A ledger read through its HTTP API with an auditor's API key."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 10.0) -> None:
        import httpx

        self._httpx = httpx
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _get(self, path: str, **params: int) -> dict[str, Any] | None:
        try:
            response = self._client.get(path, params=params)
        except self._httpx.HTTPError as e:
            raise TransportError(f"GET {path}: {type(e).__name__}: {e}") from e
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TransportError(f"GET {path} answered {response.status_code}: {response.text[:200]}")
        body: dict[str, Any] = response.json()
        return body

    def size(self) -> int | None:
        """None: the API does not publish the log's size to auditors; a missing entry answers 404 instead."""
        return None

    def entry(self, index: int) -> bytes | None:
        """The entry's bytes from /v1/entries/{index}."""
        body = self._get(f"/v1/entries/{index}")
        return None if body is None else str(body["entry"]).encode("utf-8")

    def latest_checkpoint(self) -> str | None:
        """The latest signed checkpoint."""
        body = self._get("/v1/checkpoints/latest")
        return None if body is None else str(body["note"])

    def inclusion(self, index: int, size: int) -> Sequence[bytes]:
        """The ledger's inclusion proof."""
        body = self._get("/v1/proofs/inclusion", index=index, size=size)
        if body is None:
            raise NotFoundError(f"the ledger gives no inclusion proof of entry {index} in tree {size}")
        return [bytes.fromhex(h) for h in body["inclusion_path"]]

    def consistency(self, old: int, new: int) -> Sequence[bytes] | None:
        """Only between signed checkpoints (None otherwise)."""
        body = self._get("/v1/proofs/consistency", old=old, new=new)
        return None if body is None else [bytes.fromhex(h) for h in body["proof"]]

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _receipts(path: str) -> list[SavedReceipt]:
    lines = Path(path).read_bytes().splitlines()
    out = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                out.append(SavedReceipt.from_json(decode_json(line, field=f"line {n}")))
            except InputError as e:
                raise InputError(f"{path} line {n}: {e.field}", e.reason) from None
    if not out:
        raise InputError("receipts", f"{path} holds no receipt")
    return out


def _verify(args: argparse.Namespace) -> int:
    from rich.console import Console

    out, err = Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True)
    verifier = load_verifier(args.key)
    receipts = _receipts(args.receipts)
    view: LedgerView
    if args.url:
        api_key = (
            Path(args.api_key_file).read_text("utf-8").strip() if args.api_key_file else os.environ.get(API_KEY_ENV_VAR)
        )
        http = HttpView(args.url, api_key)
        view, close = http, http.close
    else:
        ledger = getattr(args, "ledger", None) or DEFAULT_LEDGER
        require_ledger(ledger)
        store = open_store(ledger, readonly=True)
        view, close = StoreView(store), store.close
    now = format_reading(time.time_ns(), 0)
    try:
        results: list[ReceiptCheck] = [check_receipt(r, verifier, view, now) for r in receipts]
    finally:
        close()
    broken = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps({"ok": not broken, "checked": len(results), "receipts": [r.to_json() for r in results]}))
    else:
        for r in broken:
            err.print(f"[red]{r.status}:[/] event {r.event_id} at {r.index}: {r.detail}")
        held = sum(r.status == "sealed" for r in results)
        out.print(
            f"{len(results)} receipts: {held} sealed, {sum(r.status == 'pending' for r in results)} pending, "
            f"{len(broken)} broken promises or bad receipts"
        )
    return 1 if broken else 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage receipt verify RECEIPTS --key KEY [--ledger URL | --url URL]``."""
    p: argparse.ArgumentParser = sub.add_parser("receipt", help="check saved receipts against a ledger")
    rs = p.add_subparsers(dest="receipt_command", required=True)
    v: argparse.ArgumentParser = rs.add_parser(
        "verify",
        parents=[common],
        help="does the ledger still hold, as promised, every entry of these receipts? (exit 1 if not)",
    )
    v.add_argument("receipts", help="JSONL file of receipts (lineage emit --receipts)")
    v.add_argument("--key", required=True, help="the log's verifier key (note key string or file)")
    v.add_argument("--url", help="check through the ledger's HTTP API instead of --ledger (an auditor's API key)")
    v.add_argument("--api-key-file", help=f"file holding the auditor API key (else ${API_KEY_ENV_VAR})")
    v.set_defaults(func=_verify, ledger_default=None)  # --url reads no ledger; _verify checks --ledger
