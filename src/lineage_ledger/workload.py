"""A realistic, seeded workload of token lifecycles, a policy change and a small data pipeline.

Used by ``lineage demo`` and the benchmarks. Deterministic for a given seed and start time, so two runs
with the same arguments produce the same events.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading

__all__ = ["PRODUCERS", "Workload", "batches", "generate"]

PRODUCERS = ("auth-server", "api-gateway", "orders-svc", "billing-svc", "policy-admin", "etl-pipeline")
_RESOURCES = {
    "api-gateway": ["/v1/profile", "/v1/search", "/v1/cart", "/v1/orders"],
    "orders-svc": ["/orders/create", "/orders/list", "/orders/cancel"],
    "billing-svc": ["/billing/charge", "/billing/invoices", "/billing/refund"],
}
_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Workload:
    """Generated events, as (occurred_at ns, producer, canonical event bytes), in time order."""

    events: list[tuple[int, str, bytes]]
    violations_planted: int
    token_ids: list[str]
    traced: list[str]
    """Two token ids worth showing: one with a refresh/rotation family, one with a planted violation."""


def _uuid7(rng: random.Random, ms: int) -> str:
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def generate(tokens: int, *, seed: int = 7, start_ns: int, secret: bytes = b"demo-fingerprint-secret!") -> Workload:
    """Events for ``tokens`` root tokens (plus their refresh/rotation children) starting at ``start_ns``."""
    rng = random.Random(seed)
    out: list[tuple[int, str, bytes]] = []
    counter = 0

    def emit(at: int, producer: str, body: dict[str, Any]) -> None:
        nonlocal counter
        counter += 1
        body["event_id"] = _uuid7(rng, at // 1_000_000)
        body["occurred_at"] = format_reading(at, counter % 100_000)
        body["schema_version"] = 1
        out.append((at, producer, canonical_bytes(body)))

    def token(kind: str, tid: str, at: int, producer: str = "auth-server", **payload: Any) -> None:
        emit(
            at,
            producer,
            {
                "kind": "token",
                "event_type": kind,
                "token_id": tid,
                "payload": {k: v for k, v in payload.items() if v is not None},
            },
        )

    span = max(60, tokens // 3) * _S  # arrival window of root tokens
    policy_switch = start_ns + span // 2
    emit(
        start_ns,
        "policy-admin",
        {
            "kind": "policy",
            "event_type": "POLICY_CHANGED",
            "policy_id": "api-access",
            "payload": {
                "policy_version": "v1",
                "document": {"allow": ["read", "write"], "mfa_required": True, "max_ttl_s": 3600},
            },
        },
    )
    emit(
        policy_switch,
        "policy-admin",
        {
            "kind": "policy",
            "event_type": "POLICY_CHANGED",
            "policy_id": "api-access",
            "payload": {
                "policy_version": "v2",
                "reason": "deny writes from legacy clients",
                "document": {"allow": ["read"], "mfa_required": True, "max_ttl_s": 1800},
            },
        },
    )
    ids: list[str] = []
    traced_family = ""
    traced_violation = ""
    planted = 0
    users = [f"user-{i:05d}" for i in range(max(1, tokens // 8))]
    clients = ["web", "ios", "android", "partner-api"]
    for n in range(tokens):
        t0 = start_ns + rng.randrange(span) + _S
        tid = token_fingerprint(secret, f"raw-token-{seed}-{n}", "eu-west-1" if n % 3 == 0 else None)
        ids.append(tid)
        user = rng.choice(users)
        client = rng.choice(clients)
        pv = "v1" if t0 < policy_switch else "v2"
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        common = {"user_id": user, "client_id": client, "policy_version": pv}
        if n % 50 == 0:
            token("ORIGIN", tid, t0, reason="backfilled legacy session", **common)
        else:
            token(
                "ISSUED",
                tid,
                t0,
                scopes=["read", "write"] if client != "partner-api" else ["read"],
                ip=ip,
                **common,
            )
            token("ACTIVATED", tid, t0 + 2 * _S, mfa_at=format_reading(t0 + _S, 0), **common)
        t = t0 + 3 * _S
        live = [tid]
        for _ in range(rng.randrange(2, 6)):
            t += rng.randrange(1, 30) * _S
            producer = rng.choice(("api-gateway", "orders-svc", "billing-svc"))
            token(
                "USED",
                live[-1],
                t,
                producer,
                resource=rng.choice(_RESOURCES[producer]),
                ip=ip,
                outcome="ALLOW" if rng.random() > 0.05 else "DENY",
                user_agent=f"{client}-app/4.2",
                trace_id=f"{rng.getrandbits(128):032x}",
                **common,
            )
        roll = rng.random()
        if roll < 0.25:
            child = token_fingerprint(secret, f"raw-token-{seed}-{n}-r")
            t += 60 * _S
            kind = "ROTATED" if roll < 0.1 else "REFRESHED"
            token(kind, child, t, parent_token_id=tid, **common)
            live.append(child)
            ids.append(child)
            for _ in range(rng.randrange(1, 4)):
                t += rng.randrange(1, 30) * _S
                token(
                    "USED",
                    child,
                    t,
                    "api-gateway",
                    resource=rng.choice(_RESOURCES["api-gateway"]),
                    outcome="ALLOW",
                    ip=ip,
                    **common,
                )
            if not traced_family and kind == "ROTATED":
                traced_family = tid
        end = rng.random()
        t += 120 * _S
        if end < 0.2:
            token("REVOKED", live[-1], t, reason="user logged out", **common)
            if n % 97 == 1:  # a leaked token replayed after revocation
                token(
                    "USED",
                    live[-1],
                    t + 300 * _S,
                    "api-gateway",
                    resource="/v1/orders",
                    outcome="ALLOW",
                    ip="203.0.113.66",
                    **common,
                )
                planted += 1
                traced_violation = traced_violation or live[-1]
        elif end < 0.8:
            for x in live:
                token("EXPIRED", x, t)
        if n % 211 == 5:  # a second ISSUED for the same token id: a bug or a forgery
            token("ISSUED", tid, t + 400 * _S, **common)
            planted += 1
    # a small data pipeline
    base = start_ns + span // 3
    raw = [f"s3://lake/raw/orders/2026-11-{d:02d}.parquet" for d in range(1, 4)]
    for i, asset in enumerate(raw):
        emit(
            base + i * _S,
            "etl-pipeline",
            {
                "kind": "data",
                "event_type": "CREATED",
                "asset_id": asset,
                "payload": {"actor": "ingest-job", "output_hash": _h(asset)},
            },
        )
    clean = "warehouse.orders_clean"
    emit(
        base + 10 * _S,
        "etl-pipeline",
        {
            "kind": "data",
            "event_type": "TRANSFORMED",
            "asset_id": clean,
            "payload": {
                "actor": "dbt-run-1187",
                "inputs": [{"asset_id": a, "content_hash": _h(a)} for a in raw],
                "output_hash": _h(clean),
            },
        },
    )
    agg = "warehouse.revenue_daily"
    emit(
        base + 20 * _S,
        "etl-pipeline",
        {
            "kind": "data",
            "event_type": "AGGREGATED",
            "asset_id": agg,
            "payload": {
                "actor": "dbt-run-1188",
                "inputs": [{"asset_id": clean, "content_hash": _h(clean)}],
                "output_hash": _h(agg),
            },
        },
    )
    emit(
        base + 30 * _S,
        "etl-pipeline",
        {
            "kind": "data",
            "event_type": "TRANSMITTED",
            "asset_id": agg,
            "payload": {
                "actor": "reverse-etl",
                "destination": "https://crm.example.com/import",
                "output_hash": _h(agg),
                "purpose": "sales reporting",
            },
        },
    )
    out.sort(key=lambda e: e[0])
    return Workload(out, planted, ids, [t for t in (traced_family, traced_violation) if t])


def _h(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def batches(
    workload: Workload, signers: dict[str, Ed25519Signer], key_ids: dict[str, str], max_batch: int = 1000
) -> Iterator[bytes]:
    """Signed envelopes, one producer per envelope, in an order that keeps each token's events in time order.

    A window of events closes early when a token would otherwise have events from two producers in it, so
    appending the window's per-producer batches one after another never reorders one token's events.
    """
    window: dict[str, list[bytes]] = {}
    owner: dict[str, str] = {}
    size = 0

    def flush() -> Iterator[bytes]:
        for producer, events in window.items():
            yield seal_batch(events, producer=producer, key_id=key_ids[producer], signer=signers[producer])
        window.clear()
        owner.clear()

    for _, producer, body in workload.events:
        touched = _touched(body)
        if size >= max_batch or any(owner.get(t, producer) != producer for t in touched):
            yield from flush()
            size = 0
        for t in touched:
            owner[t] = producer
        window.setdefault(producer, []).append(body)
        size += 1
    yield from flush()


def _touched(body: bytes) -> list[str]:
    """The subjects whose state an event reads or changes: its own, and a token's parent."""
    head = msgspec.json.decode(body)
    own = str(head.get("token_id") or head.get("asset_id") or head.get("policy_id"))
    parent = head.get("payload", {}).get("parent_token_id")
    return [own, parent] if parent else [own]
