"""``lineage events ...``: the event format for producers (its JSON Schema) and sample events to start from.

``lineage events example`` writes a small, valid history (a refresh token rotated, an access token derived
from it, a policy change, a logout that revokes the family, a data pipeline) as JSON lines that
``lineage ingest`` takes as they are. Token ids are fingerprints under the ledger's token secret, the same
secret ``lineage serve`` reads, so introspecting the example's raw tokens against the served ledger gives the
states the history implies. docs/events.md documents every field.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import uuid_utils

from lineage_ledger.cli.query import instant_arg
from lineage_ledger.core.event_schema import event_json_schema
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.instant import format_rfc3339
from lineage_ledger.core.model import encode_event
from lineage_ledger.token_secrets import TokenSecrets

__all__ = ["ensure_token_secret", "example_events", "register"]

_MIN = 60 * 1_000_000_000
_RAW = {
    "refresh": "example-refresh-token-alice-1",
    "rotated": "example-refresh-token-alice-2",
    "access": "example-access-token-alice-1",
    "bob": "example-access-token-bob-1",
}
"""Raw example tokens. They stand for credentials only in this sample: real raw tokens never leave the
producer; only their fingerprints do."""


def example_events(secrets: TokenSecrets, start_ns: int) -> tuple[list[bytes], dict[str, str]]:
    """A valid sample history beginning at ``start_ns``, as canonical event bytes in time order, and the raw
    example tokens by role. Every lifecycle verdict of it is "ok"."""
    tid = {role: secrets.fingerprint(raw) for role, raw in _RAW.items()}  # under the current version

    def at(minutes: float) -> str:
        return format_reading(start_ns + int(minutes * _MIN), 0)

    def token(kind: str, role: str, minutes: float, **payload: Any) -> dict[str, Any]:
        return {
            "kind": "token",
            "event_id": str(uuid_utils.uuid7()),
            "event_type": kind,
            "token_id": tid[role],
            "occurred_at": at(minutes),
            "schema_version": 1,
            "payload": payload,
        }

    def policy(version: str, minutes: float, document: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": "policy",
            "event_id": str(uuid_utils.uuid7()),
            "event_type": "POLICY_CHANGED",
            "policy_id": "orders-api",
            "occurred_at": at(minutes),
            "schema_version": 1,
            "payload": {"policy_version": version, "document": document},
        }

    def data(kind: str, asset: str, minutes: float, **payload: Any) -> dict[str, Any]:
        return {
            "kind": "data",
            "event_id": str(uuid_utils.uuid7()),
            "event_type": kind,
            "asset_id": asset,
            "occurred_at": at(minutes),
            "schema_version": 1,
            "payload": {"actor": "etl-nightly", **payload},
        }

    raw_hash, clean_hash = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    alice = {"user_id": "alice", "client_id": "web-app"}
    history = [
        policy("v1", 0, {"allow": ["orders:read", "orders:write"]}),
        token("ISSUED", "refresh", 1, **alice, scopes=["orders:read", "orders:write"], expires_at=at(8 * 60)),
        token("ACTIVATED", "refresh", 1.5, mfa_at=at(1.2)),
        token("USED", "refresh", 2, resource="/v1/orders", outcome="ALLOW", ip="203.0.113.7"),
        token("ROTATED", "rotated", 15, **alice, parent_token_id=tid["refresh"], expires_at=at(8 * 60)),
        token("REFRESHED", "access", 20, **alice, parent_token_id=tid["rotated"], expires_at=at(120)),
        token("USED", "access", 21, resource="/v1/orders/42", outcome="ALLOW", ip="203.0.113.7", policy_version="v1"),
        token("ISSUED", "bob", 22, user_id="bob", client_id="mobile-app", scopes=["orders:read"]),
        token("USED", "bob", 23, resource="/v1/orders", outcome="DENY", ip="198.51.100.4", policy_version="v1"),
        policy("v2", 25, {"allow": ["orders:read"]}),
        token("REVOKED", "rotated", 30, reason="logout: RFC 7009 revocation of the refresh token"),
        data("CREATED", "s3://lake/raw/orders.parquet", 40, output_hash=raw_hash),
        data(
            "TRANSFORMED",
            "warehouse.orders_clean",
            41,
            inputs=[{"asset_id": "s3://lake/raw/orders.parquet", "content_hash": raw_hash}],
            output_hash=clean_hash,
        ),
        data("TRANSMITTED", "warehouse.orders_clean", 42, destination="https://crm.example.com/import"),
    ]
    return [encode_event(event) for event in history], dict(_RAW)


def ensure_token_secret(ledger: str) -> str | None:
    """The token secret file beside a file ledger, ``<ledger>.secret``, created (0600) if it does not exist;
    None when ``$LINEAGE_TOKEN_SECRET`` supplies the secret or the ledger is not a file."""
    from lineage_ledger.cli._common import TOKEN_SECRET_ENV_VAR
    from lineage_ledger.cli._common import ledger_file as _ledger_file
    from lineage_ledger.service.auth import TOKEN_SECRET_SUFFIX, create_token_secret

    path = _ledger_file(ledger)
    if os.environ.get(TOKEN_SECRET_ENV_VAR, "").strip() or path is None:
        return None
    secret = path.with_name(path.name + TOKEN_SECRET_SUFFIX)
    if not secret.exists():
        create_token_secret(secret)
    return str(secret)


def _cmd_schema(args: argparse.Namespace) -> int:
    text = json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_example(args: argparse.Namespace) -> int:
    from lineage_ledger.cli._common import token_secrets_from  # the secret `lineage serve` would use

    secret = token_secrets_from(args)
    start = args.start.ns if args.start is not None else time.time_ns() - 60 * _MIN
    events, raw = example_events(secret, start)
    text = b"".join(e + b"\n" for e in events)
    if args.output:
        Path(args.output).write_bytes(text)
    else:
        sys.stdout.buffer.write(text)
    summary = {"events": len(events), "start": format_rfc3339(start), "raw_tokens": raw}
    note = sys.stdout if args.output else sys.stderr
    if args.json and args.output:
        print(json.dumps(summary))
    else:
        print(
            f"{len(events)} example events from {summary['start']}"
            + (f" written to {args.output}" if args.output else "")
            + "; raw example tokens to try with /v1/introspect: "
            + ", ".join(f"{role}={value}" for role, value in raw.items()),
            file=note,
        )
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lineage events schema`` and ``lineage events example``."""
    from lineage_ledger.cli._common import TOKEN_SECRET_ENV_VAR

    e = sub.add_parser("events", parents=[common], help="the event format (JSON Schema) and sample events")
    es = e.add_subparsers(dest="events", required=True)
    p = es.add_parser("schema", parents=[common], help="print the JSON Schema every event follows")
    p.add_argument("-o", "--output", help="write it to this file instead of standard output")
    p.set_defaults(func=_cmd_schema, ledger_default=None)  # reads no ledger
    p = es.add_parser(
        "example", parents=[common], help="write valid sample events (JSON lines) that `lineage ingest` takes"
    )
    p.add_argument("-o", "--output", help="write them to this file instead of standard output")
    p.add_argument("--start", type=instant_arg("--start"), help="when the history begins (default: an hour ago)")
    p.add_argument(
        "--token-secret-file",
        help=f"token HMAC secret (else ${TOKEN_SECRET_ENV_VAR}, else <ledger>.secret, as lineage serve reads it)",
    )
    p.set_defaults(func=_cmd_example)
