"""Query latency at scale: builds a skewed ledger of N events, then times each lineage question.

    python benchmarks/bench_queries.py --events 1000000 --ledger /tmp/q1m.db      # build (once) and measure
    python benchmarks/bench_queries.py --ledger /tmp/q1m.db --no-build             # measure an existing one

The workload: tokens arrive over 30 days; users and resources are Zipf-skewed (a few hot resources, a long
tail); about one root token in 2,000 grows a large family (a refresh chain with branches, 1,000 tokens) so
the blast-radius query has something to chase. Events go through the full write path (envelopes,
signatures, chains, tree, subject map); the store runs with synchronous=off because this measures reads.

Prints one JSON object: per query p50/p99 in milliseconds over repeated random instances.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lineage_ledger.core import smt
from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.entry import SealEntry, decode_entry
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.ledger.completeness import MapReader
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.store import open_store

_S = 1_000_000_000
_DAY = 86_400 * _S
PRODUCER = "bench-platform"
KEY_ID = "bench-platform-1"
SECRET = b"bench-query-fingerprint-secret"


def _zipf(rng: random.Random, n: int, s: float = 1.1) -> int:
    """A Zipf-ish rank in [0, n) by inverse transform on a power law (cheap, skewed enough)."""
    return min(n - 1, int(n ** rng.random() ** s) - 1)


def _events(total: int, seed: int, start_ns: int) -> Iterator[tuple[int, bytes]]:
    """(occurred_at ns, canonical event bytes), roughly in time order per token."""
    rng = random.Random(seed)
    span = 30 * _DAY
    n = 0
    serial = 0

    def event(kind: str, tid: str, at: int, **payload: Any) -> tuple[int, bytes]:
        nonlocal serial
        serial += 1
        ms = at // 1_000_000
        eid = (
            f"{ms >> 16 & 0xFFFFFFFF:08x}-{ms & 0xFFFF:04x}-7{serial >> 48 & 0xFFF:03x}"
            f"-8{serial >> 36 & 0xFFF:03x}-{serial & 0xFFFFFFFFFFFF:012x}"
        )
        body = {
            "event_id": eid,
            "event_type": kind,
            "kind": "token",
            "occurred_at": format_reading(at, serial % 100_000),
            "payload": {k: v for k, v in payload.items() if v is not None},
            "schema_version": 1,
            "token_id": tid,
        }
        return at, canonical_bytes(body)

    root = 0
    while n < total:
        root += 1
        t0 = start_ns + int(span * root / max(1, total // 5))
        tid = token_fingerprint(SECRET, f"tok-{seed}-{root}")
        user = f"user-{_zipf(rng, 50_000):05d}"
        family = 1000 if root % 2000 == 7 else 1
        chain = [tid]
        batch = [event("ISSUED", tid, t0, user_id=user, client_id="web", policy_version="v1")]
        for k in range(1, family):
            parent = chain[rng.randrange(max(0, len(chain) - 3), len(chain))]
            child = token_fingerprint(SECRET, f"tok-{seed}-{root}-{k}")
            batch.append(event("REFRESHED", child, t0 + k * _S, parent_token_id=parent, user_id=user))
            chain.append(child)
        for tok in chain:
            for _ in range(3 if family == 1 else 1):
                at = t0 + rng.randrange(family, family + 3600) * _S
                res = f"/api/r{_zipf(rng, 1000):04d}"
                batch.append(event("USED", tok, at, resource=res, outcome="ALLOW", user_id=user))
        batch.append(event("REVOKED" if rng.random() < 0.3 else "EXPIRED", tid, t0 + 7200 * _S))
        batch.sort(key=lambda e: e[0])
        n += len(batch)
        yield from batch


def build(path: str, total: int, seed: int) -> dict[str, Any]:
    """Ingest ``total`` events into a new ledger at ``path``."""
    log = Ed25519Signer.generate("bench.lineage-ledger.local/queries")
    producer = Ed25519Signer.generate(PRODUCER)
    # Large blocks: fewer subject-map updates per entry while building; reads are what is measured.
    ledger = Ledger.create(
        f"{path}?synchronous=off", log, settings=LedgerSettings(block_size=100_000, block_seconds=3600.0)
    )
    ledger.register_key(PRODUCER, KEY_ID, producer.public_key)
    started = time.perf_counter()
    pending: list[bytes] = []
    count = 0
    for _, body in _events(total, seed, time.time_ns() - 40 * _DAY):
        pending.append(body)
        if len(pending) == 1000:
            ledger.append(seal_batch(pending, producer=PRODUCER, key_id=KEY_ID, signer=producer))
            count += len(pending)
            pending = []
    if pending:
        ledger.append(seal_batch(pending, producer=PRODUCER, key_id=KEY_ID, signer=producer))
        count += len(pending)
    ledger.seal()
    ledger.close()
    return {"events": count, "build_seconds": round(time.perf_counter() - started, 1)}


def _time(fn: Callable[[], object], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
        "runs": runs,
    }


def measure(path: str, runs: int, seed: int) -> dict[str, Any]:
    """Time each query over ``runs`` random instances drawn from the ledger's own contents."""
    store = open_store(path, readonly=True)
    lineage = Lineage(store)
    rng = random.Random(seed)
    size = store.size()
    tokens = [
        r.subject[6:]
        for r in store.entries_at([rng.randrange(size) for _ in range(runs * 3)])
        if r.subject.startswith("token:")
    ][:runs]
    big_roots: list[str] = []
    for row in store.entries_at(list(range(0, size, max(1, size // 5000)))):
        if row.parent and len(big_roots) < 20:
            fam = lineage.descendants(row.parent[6:])
            if len(fam.tokens) >= 900:
                big_roots.append(fam.root)
    # resource windows: one hour around real uses, so every query has something to find
    windows: list[tuple[str, int, int]] = []
    while len(windows) < runs:
        for rec in lineage.records(store.entries_at([rng.randrange(size) for _ in range(runs)])):
            resource = getattr(rec.event.payload, "resource", None)
            if resource:
                at = int(rec.event.occurred_at[:19])
                windows.append((resource, at - 1800 * _S, at + 1800 * _S))
    latest = store.latest_checkpoint()
    assert latest is not None
    seal = store.entry(latest.size - 1)
    seal_entry = decode_entry(seal.body)
    assert isinstance(seal_entry, SealEntry)
    map_root = bytes.fromhex(seal_entry.block.subjects_root)
    reader = MapReader(store, cache_size=0)
    out: dict[str, Any] = {"entries": size, "tree_size": latest.size}
    it = iter(range(10**9))
    out["timeline"] = _time(lambda: lineage.timeline(tokens[next(it) % len(tokens)]), runs)
    it = iter(range(10**9))
    hits: list[int] = []

    def resource_window() -> None:
        resource, start, end = windows[next(it) % len(windows)]
        hits.append(len(lineage.tokens_for_resource(resource, start, end)))

    out["resource_window_1h"] = _time(resource_window, runs)
    out["resource_window_1h"]["median_rows"] = statistics.median(hits)
    if big_roots:
        it = iter(range(10**9))
        out["blast_radius_family_1000"] = _time(
            lambda: lineage.blast_radius(big_roots[next(it) % len(big_roots)]), min(runs, 50)
        )
    it = iter(range(10**9))
    out["family"] = _time(lambda: lineage.family(tokens[next(it) % len(tokens)]), runs)
    it = iter(range(10**9))
    out["since_refresh"] = _time(lambda: lineage.since_last_refresh(tokens[next(it) % len(tokens)]), runs)
    it = iter(range(10**9))
    out["state_at"] = _time(lambda: lineage.state_at(tokens[next(it) % len(tokens)], windows[0][2]), runs)
    it = iter(range(10**9))
    out["policy_for_token"] = _time(lambda: lineage.policy_for_token(tokens[next(it) % len(tokens)]), runs)
    users = [f"user-{_zipf(rng, 50_000):05d}" for _ in range(runs)]
    it = iter(range(10**9))
    out["user_policy_changes_24h"] = _time(
        lambda: lineage.policy_changes_for_user(
            users[(i := next(it)) % len(users)],
            windows[i % len(windows)][1] - 86_400 * _S,
            windows[i % len(windows)][1],
        ),
        runs,
    )
    it = iter(range(10**9))
    out["completeness_proof"] = _time(
        lambda: smt.prove(map_root, smt.key_of("token:" + tokens[next(it) % len(tokens)]), reader), runs
    )
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if not args.no_build:
        if Path(args.ledger).exists():
            raise SystemExit(f"{args.ledger} exists; pass --no-build to measure it")
        result.update(build(args.ledger, args.events, args.seed))
    result.update(measure(args.ledger, args.runs, args.seed))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
