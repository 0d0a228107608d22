"""A token family spread over shards: honest verdicts in every shard, and family, blast-radius and
since-refresh answers equal to those of one unsharded ledger holding the same events."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from lineage_ledger.cli.main import main
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.model import read_subject
from lineage_ledger.core.routing import shard_of
from lineage_ledger.errors import NotFoundError
from lineage_ledger.keys import write_signer_key
from lineage_ledger.ledger.lineage import Lineage
from lineage_ledger.ledger.sharded_lineage import ShardedLineage
from lineage_ledger.ledger.shards import ShardedLedger, shard_url, verify_sharded
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    SETTINGS,
    make_log_signer,
    make_producer_signer,
    token_event,
    token_id,
)

S = 1_000_000_000
T0 = 1_763_000_000_000_000_000
SHARDS, PARTITIONS = 2, 4


def _alternating(count: int) -> list[str]:
    """Token ids whose shards alternate 0, 1, 0, 1 ...: each generation of the family in the other shard."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        tid = token_id(f"family-{i}")
        if shard_of("token:" + tid, PARTITIONS, SHARDS) == len(out) % SHARDS:
            out.append(tid)
        i += 1
    return out


def _family_events() -> tuple[list[bytes], list[str]]:
    a, b, c, d, other = _alternating(5)
    t = T0
    events = [
        token_event("ISSUED", a, t, user_id="alice"),
        token_event("USED", a, t + 1 * S, resource="/v1/a", outcome="ALLOW"),
        token_event("REFRESHED", b, t + 2 * S, parent_token_id=a),
        token_event("USED", b, t + 3 * S, resource="/v1/b", outcome="ALLOW"),
        token_event("ROTATED", c, t + 4 * S, parent_token_id=b),
        token_event("USED", c, t + 5 * S, resource="/v1/c", outcome="ALLOW"),
        token_event("ISSUED", d, t + 6 * S, parent_token_id=c, user_id="alice"),  # a token exchange
        token_event("USED", d, t + 7 * S, resource="/v1/d", outcome="ALLOW"),
        token_event("ISSUED", other, t + 8 * S, user_id="bob"),
        token_event("USED", other, t + 9 * S, resource="/v1/a", outcome="ALLOW"),
        token_event("REVOKED", c, t + 10 * S, reason="logout"),
    ]
    return events, [a, b, c, d, other]


def _build(tmp_path: Path) -> tuple[str, str, list[bytes], list[str]]:
    events, tokens = _family_events()
    signer = make_producer_signer()
    root = str(tmp_path / "root.db")
    sharded = ShardedLedger.create(root, make_log_signer(), shards=SHARDS, partitions=PARTITIONS, settings=SETTINGS)
    sharded.register_key(PRODUCER, PRODUCER_KEY_ID, signer.public_key)
    by_shard: dict[int, list[bytes]] = defaultdict(list)
    for event in events:
        by_shard[sharded.layout.shard_of(read_subject(event)[0])].append(event)
    for group in by_shard.values():
        for event in group:  # one envelope per event, in time order within each shard
            result = sharded.append(seal_batch([event], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer))
            assert [r.verdict for r in result.receipts] == ["ok"]  # a parent in another shard is no violation
    sharded.seal()
    sharded.close()
    single = str(tmp_path / "single.db")
    with Ledger.create(single, make_log_signer(), settings=SETTINGS) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, signer.public_key)
        result = ledger.append(seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer))
        assert all(r.verdict == "ok" for r in result.receipts)
        ledger.seal()
    return root, single, events, tokens


def test_family_answers_across_shards_equal_one_ledgers(tmp_path: Path) -> None:
    root, single, _, (a, b, c, d, _other) = _build(tmp_path)
    assert {shard_of("token:" + t, PARTITIONS, SHARDS) for t in (a, b, c, d)} == {0, 1}
    stores = [open_store(shard_url(root, n), readonly=True) for n in range(SHARDS)]
    whole = open_store(single, readonly=True)
    try:
        store = open_store(root, readonly=True)
        from lineage_ledger.ledger.shards import layout_of

        layout = layout_of(store)
        store.close()
        assert layout is not None
        sharded, one = ShardedLineage(layout, stores), Lineage(whole)

        fam, expected = sharded.family(d), one.family(d)
        assert fam.root == expected.root == a
        assert fam.tokens == expected.tokens == [a, b, c, d]
        assert [(p, ch, k) for p, ch, k, _, _ in fam.edges] == [(p, ch, k) for p, ch, k, _ in expected.edges]
        # each edge cites the child's birth in the child's own shard
        assert [s for _, ch, _, s, _ in fam.edges] == [shard_of("token:" + ch, PARTITIONS, SHARDS) for ch in (b, c, d)]

        def ids(records: list) -> list[str]:  # type: ignore[type-arg]
            return [r.event.event_id for r in records]

        br, expected_br = sharded.blast_radius(a), one.blast_radius(a)
        assert ids([r for _, r in br.uses]) == ids(expected_br.uses)
        assert br.resources == expected_br.resources == ["/v1/a", "/v1/b", "/v1/c", "/v1/d"]
        since, expected_since = sharded.since_last_refresh(b), one.since_last_refresh(b)
        assert (since.start, since.end) == (expected_since.start, expected_since.end)
        assert ids([r for _, r in since.uses]) == ids(expected_since.uses)
        never = token_id("sharded-never-seen")  # an answer about a token no shard knows is NotFoundError
        for ask in (sharded.family, sharded.blast_radius, one.family, one.blast_radius):
            with pytest.raises(NotFoundError, match=never):
                ask(never)
    finally:
        for s in [*stores, whole]:
            s.close()
    report = verify_sharded(root)
    assert report.ok, report.to_json()  # the verdicts are judged again per shard, with the same rule for parents
    again = [open_store(shard_url(root, n), readonly=True) for n in range(SHARDS)]
    assert ShardedLineage(layout, again).cross_shard_findings() == []  # an honest family breaks no rule
    for s in again:
        s.close()


def test_family_query_on_a_root_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _, (a, b, c, d, _) = _build(tmp_path)
    write_signer_key(tmp_path / "root.db.key", make_log_signer())
    capsys.readouterr()
    assert main(["query", "family", c, "--ledger", root, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"]["tokens"] == [a, b, c, d]
    assert {(e["shard"], e["index"]) for e in out["answer"]["edges"]} == {
        (ev["shard"], ev["index"]) for ev in out["evidence"]
    }
    assert main(["query", "blast-radius", a, "--ledger", root, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"]["resources"] == ["/v1/a", "/v1/b", "/v1/c", "/v1/d"]
    assert main(["query", "family", c, "--ledger", root, "--proofs"]) == 2  # prove per shard instead


def _in_shards(shards: list[int]) -> list[str]:
    """Token ids in the given shards, in order."""
    out: list[str] = []
    i = 0
    while len(out) < len(shards):
        tid = token_id(f"rules-{i}")
        if shard_of("token:" + tid, PARTITIONS, SHARDS) == shards[len(out)]:
            out.append(tid)
        i += 1
    return out


def test_cross_shard_rules_are_found_as_one_ledger_judges_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A (shard 0) is revoked, then B (shard 1) is refreshed from it; Q (shard 1) rotates P (shard 0) away,
    # then P is used and R (shard 0, the parent's own shard) is refreshed from P again
    a, b, p, q, r = _in_shards([0, 1, 0, 1, 0])
    t = T0
    events = [
        token_event("ISSUED", a, t),
        token_event("REVOKED", a, t + S),
        token_event("REFRESHED", b, t + 2 * S, parent_token_id=a),
        token_event("ISSUED", p, t + 3 * S),
        token_event("ROTATED", q, t + 4 * S, parent_token_id=p),
        token_event("USED", p, t + 5 * S, resource="/v1/after-rotation", outcome="ALLOW"),
        token_event("REFRESHED", r, t + 6 * S, parent_token_id=p),
    ]
    signer = make_producer_signer()
    single = str(tmp_path / "single.db")
    with Ledger.create(single, make_log_signer(), settings=SETTINGS) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, signer.public_key)
        receipts = ledger.append(seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer)).receipts
    one_ledger = {(read_subject(e)[0], r.verdict) for e, r in zip(events, receipts, strict=True) if r.verdict != "ok"}
    assert one_ledger == {
        ("token:" + b, "token.parent_revoked"),
        ("token:" + p, "token.use_after_rotation"),
        ("token:" + r, "token.refresh_after_rotation"),
    }

    root = str(tmp_path / "root.db")
    sharded = ShardedLedger.create(root, make_log_signer(), shards=SHARDS, partitions=PARTITIONS, settings=SETTINGS)
    sharded.register_key(PRODUCER, PRODUCER_KEY_ID, signer.public_key)
    for event in events:
        result = sharded.append(seal_batch([event], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer))
        assert [x.verdict for x in result.receipts] == ["ok"]  # no shard can judge these alone
    stores = [shard.store for shard in sharded.shards]
    findings = ShardedLineage(sharded.layout, stores).cross_shard_findings()
    assert {(f.subject, f.rule) for f in findings} == one_ledger
    by_rule = {f.rule: f for f in findings}
    assert by_rule["token.use_after_rotation"].evidence[0][0] == 0  # P's use, in P's shard ...
    assert by_rule["token.use_after_rotation"].evidence[1][0] == 1  # ... after Q's rotation, in Q's
    sharded.close()

    # lineage findings scan on the root: each shard's findings, and these
    capsys.readouterr()
    assert main(["findings", "scan", "--ledger", root, "--json", "--fail-on", "high"]) == 1
    out = json.loads(capsys.readouterr().out)
    across = {(f["subject"], f["rule"]) for f in out["findings"] if "shard" not in f}
    assert across == one_ledger
