"""Sharded logs: routing by fingerprint, one ledger per shard, a root log that commits to all of them."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from lineage_ledger.core.entry import ShardEntry, decode_entry, shard_subject
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.model import read_subject
from lineage_ledger.core.note import Checkpoint, open_note, parse_verifier_key, verifier_key
from lineage_ledger.core.routing import partition_for, subject_key
from lineage_ledger.errors import ConflictError, InputError, RoutingError, VerificationError
from lineage_ledger.ledger.shards import ShardedLedger, collect, layout_of, shard_url, verify_sharded
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.store import open_store
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    SETTINGS,
    make_log_signer,
    make_producer_signer,
    token_events,
)

SHARDS = 2
VERIFIER = parse_verifier_key(verifier_key(make_log_signer().name, make_log_signer().public_key))
PARTITIONS = 4


def test_shard_urls_sit_beside_the_root() -> None:
    assert shard_url("/data/ledger.db", 3) == "/data/ledger.shard-3.db"
    assert (
        shard_url("sqlite:///rel/ledger.db?synchronous=normal", 0)
        == "sqlite:///rel/ledger.shard-0.db?synchronous=normal"
    )
    assert shard_url("/data/ledger", 1) == "/data/ledger.shard-1"
    assert (
        shard_url("postgresql://writer:pw@127.0.0.1:5433/lineage?sslmode=disable", 2)
        == "postgresql://writer:pw@127.0.0.1:5433/lineage_shard_2?sslmode=disable"
    )
    with pytest.raises(InputError, match="name its database"):
        shard_url("postgresql://127.0.0.1:5433", 0)


def _ingest(ledger: ShardedLedger, events: list[bytes]) -> dict[int, list[bytes]]:
    """Seal one envelope per shard, as the Kafka transport does (one per partition); events by shard."""
    signer = make_producer_signer()
    by_shard: dict[int, list[bytes]] = defaultdict(list)
    for event in events:
        by_shard[ledger.layout.shard_of(read_subject(event)[0])].append(event)
    for group in by_shard.values():
        for i in range(0, len(group), 7):
            ledger.append(seal_batch(group[i : i + 7], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer))
    return by_shard


@pytest.fixture
def sharded(tmp_path: Path) -> ShardedLedger:
    ledger = ShardedLedger.create(
        str(tmp_path / "root.db"), make_log_signer(), shards=SHARDS, partitions=PARTITIONS, origin="test/sharded"
    )
    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    return ledger


def test_events_land_in_the_shard_of_their_partition_and_the_root_commits_to_all(
    sharded: ShardedLedger, tmp_path: Path
) -> None:
    events = token_events(300, tokens=40)
    by_shard = _ingest(sharded, events)
    assert set(by_shard) == {0, 1}  # 40 tokens spread over both shards
    root_checkpoint = sharded.seal()
    assert root_checkpoint is not None
    layout = sharded.layout
    assert layout.partitions_of(0) == [0, 2]
    assert layout.partitions_of(1) == [1, 3]
    for shard, ledger in enumerate(sharded.shards):
        stored = {bytes(decode_entry(r.body).event) for r in ledger.store.entries(0, ledger.size) if r.event_id}  # type: ignore[union-attr]
        assert stored == set(by_shard[shard])
        # the shard is the one of the Kafka partition the fingerprint maps to
        for event in by_shard[shard]:
            subject = read_subject(event)[0]
            assert partition_for(subject_key(subject), PARTITIONS) % SHARDS == shard
    # the root's one checkpoint records each shard's latest signed checkpoint
    root = sharded.root
    for shard, ledger in enumerate(sharded.shards):
        rows = root.store.subject_entries([shard_subject(shard)])
        entry = decode_entry(rows[-1].body)
        assert isinstance(entry, ShardEntry)
        assert entry.shard == shard
        latest = ledger.store.latest_checkpoint()
        assert latest is not None
        assert entry.checkpoint == latest.note
        assert rows[-1].index < root_checkpoint.size
    # a token's queries go to its shard
    token = read_subject(events[0])[0]
    assert sharded.ledger_for(token).store.subject_entries([token])
    sharded.close()

    report = verify_sharded(str(tmp_path / "root.db"), verifier=VERIFIER)
    assert report.ok, report.to_json()
    assert [r.size for r in report.shards] == [
        verify_ledger(shard_url(str(tmp_path / "root.db"), n)).size for n in range(SHARDS)
    ]


def test_collect_records_only_new_checkpoints(sharded: ShardedLedger) -> None:
    _ingest(sharded, token_events(50, tokens=10))
    first = sharded.seal()
    assert first is not None
    assert collect(sharded.root, [s.store for s in sharded.shards]) is None  # nothing new: no root entry
    _ingest(sharded, token_events(30, tokens=10, label="more"))
    second = sharded.seal()
    assert second is not None
    assert second.size > first.size
    for shard in range(SHARDS):
        sizes = [
            Checkpoint.from_text(open_note(decode_entry(r.body).checkpoint, [sharded.root.verifier])[0]).size  # type: ignore[union-attr]
            for r in sharded.root.store.subject_entries([shard_subject(shard)])
        ]
        assert sizes == sorted(set(sizes))
        assert len(sizes) == 2
    sharded.close()


def test_an_envelope_spanning_shards_is_refused(sharded: ShardedLedger) -> None:
    events = token_events(40, tokens=40)
    shards = {sharded.layout.shard_of(read_subject(e)[0]) for e in events}
    assert shards == {0, 1}
    envelope = seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    with pytest.raises(InputError, match="seal one per shard"):
        sharded.append(envelope)
    assert all(s.size == 1 for s in sharded.shards)  # the key entry only: nothing was written
    sharded.close()


def test_a_rolled_back_shard_is_caught_by_collect_and_by_verify(sharded: ShardedLedger, tmp_path: Path) -> None:
    root_url = str(tmp_path / "root.db")
    _ingest(sharded, token_events(60, tokens=12))
    sharded.seal()
    sharded.close()
    old = tmp_path / "old-shard-1.db"
    shutil.copyfile(shard_url(root_url, 1), old)  # the operator keeps a copy of shard 1 at this state

    sharded = ShardedLedger.open(root_url, make_log_signer(), settings=SETTINGS)
    _ingest(sharded, token_events(60, tokens=12, label="later"))
    sharded.seal()
    sharded.close()
    shutil.copyfile(old, shard_url(root_url, 1))  # ... and rolls the shard back to it

    report = verify_sharded(root_url, verifier=VERIFIER)
    assert not report.ok
    assert report.shards[1].ok  # the old shard is a sound log on its own: only the root exposes it
    assert any("does not hold" in p.message for p in report.problems)

    root = ShardedLedger.open(root_url, make_log_signer(), settings=SETTINGS)
    with pytest.raises(VerificationError, match="root recorded size"):
        collect(root.root, [s.store for s in root.shards])
    root.close()


def test_a_shard_refuses_an_event_of_another_shard(sharded: ShardedLedger) -> None:
    events = token_events(3, tokens=1, label="elsewhere")
    home = sharded.layout.shard_of(read_subject(events[0])[0])
    other = sharded.shards[1 - home]
    envelope = seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    size = other.size
    with pytest.raises(RoutingError, match=f"belongs to shard {home}, not to this shard {1 - home}"):
        other.append(envelope)
    assert other.size == size
    assert [r.verdict for r in sharded.shards[home].append(envelope).receipts] == ["ok"] * 3
    sharded.close()


def test_the_root_log_takes_no_events(sharded: ShardedLedger) -> None:
    envelope = seal_batch(token_events(3), producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    size = sharded.root.size
    with pytest.raises(InputError, match="root log of a sharded ledger"):
        sharded.root.append(envelope)
    assert sharded.root.size == size
    sharded.close()


def test_layout_is_written_once_and_checked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="multiple of shards"):
        ShardedLedger.create(str(tmp_path / "bad.db"), make_log_signer(), shards=3, partitions=4)
    url = str(tmp_path / "root.db")
    ShardedLedger.create(url, make_log_signer(), shards=4, partitions=8).close()
    store = open_store(url, readonly=True)
    layout = layout_of(store)
    store.close()
    assert layout is not None
    assert (layout.shards, layout.partitions) == (4, 8)
    with pytest.raises(ConflictError):
        ShardedLedger.create(url, make_log_signer(), shards=4, partitions=8)
