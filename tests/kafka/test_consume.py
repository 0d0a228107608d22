"""Kafka end to end on a real broker: emitter -> topic (Avro) -> lineage consume -> ledger, exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from lineage_ledger.core.envelope import open_envelope, seal_batch
from lineage_ledger.core.model import read_subject
from lineage_ledger.core.routing import partition_for, subject_key
from lineage_ledger.emitter import Emitter
from lineage_ledger.errors import InputError, KeyringError, RoutingError, TransportError
from lineage_ledger.kafka.avro import V1, UnknownSchemaError, decode_envelope, encode_envelope
from lineage_ledger.kafka.consumer import ConsumeStats, LedgerConsumer, register_schema
from lineage_ledger.kafka.producer import KafkaTransport
from lineage_ledger.ledger.shards import ShardedLedger, shard_url, verify_sharded
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.store import open_store
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    SETTINGS,
    make_log_signer,
    make_producer_signer,
    token_events,
)
from tests.services_kafka import CLIENT_LOGGER, KafkaCluster

WAIT_SECONDS = 60.0


def _ledger(path: Path | str) -> Ledger:
    ledger = Ledger.create(str(path), make_log_signer(), settings=SETTINGS)
    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    return ledger


def _consume_until(consumer: LedgerConsumer, events: int) -> ConsumeStats:
    """Run the consumer until the ledger holds ``events`` more events, failing after WAIT_SECONDS of silence."""
    stop = threading.Event()

    def check(stats: ConsumeStats) -> None:
        if stats.events >= events:
            stop.set()

    got = consumer.run(stop=stop, idle_timeout=WAIT_SECONDS, on_commit=check)
    assert got.events >= events, f"only {got.events} of {events} events arrived within {WAIT_SECONDS} s of silence"
    return got


def _emit(bootstrap: str, topic: str, events: Sequence[bytes], *, batch_size: int = 50) -> Emitter:
    transport = KafkaTransport(bootstrap, topic, config={"logger": CLIENT_LOGGER})
    emitter = Emitter(PRODUCER, PRODUCER_KEY_ID, make_producer_signer(), transport, batch_size=batch_size)
    for event in events:
        emitter.emit(event)
    return emitter


def _event_ids(ledger: Ledger) -> list[str]:
    return [r.event_id for r in ledger.store.entries(0, ledger.size) if r.event_id is not None]


def _high_watermarks(cluster: KafkaCluster, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "probe", "logger": CLIENT_LOGGER})
    try:
        return {
            p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
            if probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] > 0
        }
    finally:
        probe.close()


def test_emitter_to_kafka_to_ledger(kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path) -> None:
    events = token_events(400, tokens=30)
    emitter = _emit(kafka_server.bootstrap, kafka_topic, events)
    assert emitter.close(timeout=WAIT_SECONDS)
    assert emitter.metrics()["sent"] == 400

    # every message holds the events of one partition, keyed by a fingerprint of that partition
    from confluent_kafka import Consumer

    raw = Consumer(
        {"bootstrap.servers": kafka_server.bootstrap, "group.id": "raw", "auto.offset.reset": "earliest"},
        logger=CLIENT_LOGGER,
    )
    raw.subscribe([kafka_topic])
    seen = 0
    deadline = time.monotonic() + WAIT_SECONDS
    while seen < 400 and time.monotonic() < deadline:
        message = raw.poll(0.5)
        if message is None or message.error():
            continue
        value, key = message.value(), message.key()
        assert value is not None
        assert key is not None
        assert value[:2] == b"\xc3\x01"
        assert value[2:10] == V1.fingerprint
        assert partition_for(key, 4) == message.partition()
        envelope = open_envelope(decode_envelope(value, {V1.fingerprint: V1}))
        for event in envelope.events:
            assert partition_for(subject_key(read_subject(bytes(event))[0]), 4) == message.partition()
            seen += 1
    raw.close()
    assert seen == 400

    ledger = _ledger(tmp_path / "ledger.db")
    with LedgerConsumer(ledger, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER}) as consumer:
        assert consumer.partitions == [0, 1, 2, 3]
        stats = _consume_until(consumer, 400)
    assert (stats.events, stats.duplicates, stats.quarantined) == (400, 0, 0)
    assert sorted(_event_ids(ledger)) == sorted(read_subject(e)[1] for e in events)
    # the committed positions are the end of every partition
    assert ledger.store.offsets(kafka_topic) == _high_watermarks(kafka_server, kafka_topic, 4)
    assert [row.fingerprint for row in ledger.store.schemas()] == [V1.fingerprint]
    ledger.seal()
    ledger.close()
    assert verify_ledger(str(tmp_path / "ledger.db")).ok


def _produce(bootstrap: str, topic: str, values: Sequence[tuple[bytes, int]]) -> None:
    """Publish raw messages (value, partition) with an idempotent producer and wait for them all."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"}, logger=CLIENT_LOGGER
    )
    for value, partition in values:
        producer.produce(topic, value=value, key=b"k", partition=partition)
    assert producer.flush(WAIT_SECONDS) == 0


def _sealed(events: Sequence[bytes], signer_seed: bytes | None = None) -> bytes:
    from lineage_ledger.core.crypto import Ed25519Signer

    signer = make_producer_signer() if signer_seed is None else Ed25519Signer(PRODUCER, signer_seed)
    return seal_batch(list(events), producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer)


def test_refused_messages_are_quarantined_and_passed(
    kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path
) -> None:
    good = token_events(10, tokens=2, label="good")
    forged = token_events(5, tokens=1, label="forged")
    _produce(
        kafka_server.bootstrap,
        kafka_topic,
        [
            (b"not avro at all", 0),
            (encode_envelope(_sealed(forged, signer_seed=bytes(32)), V1), 0),  # right key id, wrong key
            (encode_envelope(_sealed(good), V1), 0),
        ],
    )
    ledger = _ledger(tmp_path / "ledger.db")
    with LedgerConsumer(ledger, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER}) as consumer:
        stats = _consume_until(consumer, 10)
    assert (stats.messages, stats.events, stats.quarantined) == (3, 10, 2)
    refused = ledger.store.quarantined(kafka_topic)
    assert [(r.partition, r.offset) for r in refused] == [(0, 0), (0, 1)]
    assert "single-object" in refused[0].reason or "marker" in refused[0].reason
    assert "SignatureError" in refused[1].reason
    assert all(r.value is None and len(r.digest) == 32 for r in refused)
    assert ledger.store.offsets(kafka_topic) == {0: 3}
    assert sorted(_event_ids(ledger)) == sorted(read_subject(e)[1] for e in good)
    ledger.close()


def test_raw_tokens_in_refused_messages_reach_no_store_and_no_log(
    kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a producer that bypasses the emitter puts raw tokens where fingerprints belong: an opaque session token
    # as token_id, and a JWT in a payload field; the ledger refuses both batches and must not keep the tokens
    opaque = "sess_" + "Zx9" * 20
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"
    good = json.loads(token_events(1, label="victim")[0])
    bad_id = {**good, "token_id": opaque}
    bad_payload = {**good, "payload": {**good["payload"], "user_agent": jwt}}
    envelopes = [
        _sealed([json.dumps(e, separators=(",", ":"), sort_keys=True).encode()]) for e in (bad_id, bad_payload)
    ]
    _produce(kafka_server.bootstrap, kafka_topic, [(encode_envelope(e, V1), 0) for e in envelopes])
    ledger = _ledger(tmp_path / "ledger.db")
    with (
        caplog.at_level("DEBUG"),
        LedgerConsumer(ledger, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER}) as consumer,
    ):
        stop = threading.Event()

        def both_seen(seen: ConsumeStats) -> None:
            if seen.messages >= 2:
                stop.set()

        stats = consumer.run(stop=stop, idle_timeout=WAIT_SECONDS, on_commit=both_seen)
    assert (stats.messages, stats.quarantined, stats.events) == (2, 2, 0)
    reasons = [r.reason for r in ledger.store.quarantined(kafka_topic)]
    assert "token_id" in reasons[0]
    assert "JWT" in reasons[1]
    ledger.close()
    stored = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("ledger.db"))
    for secret in (opaque, jwt):
        assert secret.encode() not in stored
        assert secret not in caplog.text


def test_a_batch_published_twice_is_recorded_once(kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path) -> None:
    # a producer that re-sends after a lost acknowledgement publishes the same batch twice; the second copy
    # is read in the same poll as the first, so the combined commit conflicts and the batches go one by one
    first = _sealed(token_events(8, tokens=2, label="a"))
    second = _sealed(token_events(8, tokens=2, label="b"))
    message = encode_envelope(first, V1)
    _produce(kafka_server.bootstrap, kafka_topic, [(message, 3), (encode_envelope(second, V1), 3), (message, 3)])
    ledger = _ledger(tmp_path / "ledger.db")
    with LedgerConsumer(ledger, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER}) as consumer:
        stats = _consume_until(consumer, 24)
    assert (stats.messages, stats.events, stats.duplicates, stats.quarantined) == (3, 24, 8, 0)
    assert len(_event_ids(ledger)) == 16
    assert ledger.store.offsets(kafka_topic) == {3: 3}
    ledger.close()


def test_an_unknown_producer_key_stops_the_consumer_without_skipping(
    kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path
) -> None:
    from lineage_ledger.core.crypto import Ed25519Signer

    newcomer = Ed25519Signer("newcomer", bytes(range(100, 132)))
    events = token_events(6, tokens=1, label="new")
    envelope = seal_batch(events, producer="newcomer", key_id="newcomer-1", signer=newcomer)
    _produce(kafka_server.bootstrap, kafka_topic, [(encode_envelope(_sealed(token_events(4, tokens=1)), V1), 1)])
    _produce(kafka_server.bootstrap, kafka_topic, [(encode_envelope(envelope, V1), 1)])
    ledger = _ledger(tmp_path / "ledger.db")
    with (
        LedgerConsumer(ledger, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER}) as consumer,
        pytest.raises(KeyringError, match=rf"{kafka_topic}\[1\]@1: .*lineage keys register"),
    ):
        consumer.run(idle_timeout=WAIT_SECONDS)
    assert ledger.store.offsets(kafka_topic) == {1: 1}  # the first message only: the second waits
    assert ledger.store.quarantined() == []

    ledger.register_key("newcomer", "newcomer-1", newcomer.public_key)
    with LedgerConsumer(ledger, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER}) as consumer:
        stats = _consume_until(consumer, 6)
    assert (stats.messages, stats.events) == (1, 6)
    assert ledger.store.offsets(kafka_topic) == {1: 2}
    ledger.close()


def test_a_reader_with_a_newer_schema_reads_older_events_and_new_schemas_wait_for_registration(
    kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path
) -> None:
    from lineage_ledger.kafka.avro import schema_from_json

    v2 = schema_from_json(v2_schema_text())
    old = token_events(5, tokens=1, label="old")
    new = token_events(5, tokens=1, label="new")
    _produce(
        kafka_server.bootstrap,
        kafka_topic,
        [(encode_envelope(_sealed(old), V1), 2), (encode_envelope(_sealed(new), v2), 2)],
    )
    ledger = _ledger(tmp_path / "ledger.db")
    with (
        LedgerConsumer(ledger, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER}) as consumer,
        pytest.raises(UnknownSchemaError, match=rf"{kafka_topic}\[2\]@1: .*{v2.fingerprint.hex()}"),
    ):
        consumer.run(idle_timeout=WAIT_SECONDS)
    assert ledger.store.offsets(kafka_topic) == {2: 1}
    assert register_schema(ledger, v2) is True
    assert register_schema(ledger, v2) is False
    with LedgerConsumer(ledger, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER}) as consumer:
        _consume_until(consumer, 5)
    assert sorted(_event_ids(ledger)) == sorted(read_subject(e)[1] for e in old + new)
    assert [r.fingerprint for r in ledger.store.schemas()] == [V1.fingerprint, v2.fingerprint]
    ledger.close()


def v2_schema_text() -> str:
    """Schema v1 with one optional field added to the token payload (an allowed evolution)."""
    schema = json.loads(V1.canonical)

    def add_field(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "record" and str(node.get("name", "")).endswith("TokenPayload"):
                node["fields"].append({"name": "device_id", "type": ["null", "string"], "default": None})
            for value in node.values():
                add_field(value)
        elif isinstance(node, list):
            for value in node:
                add_field(value)

    add_field(schema)
    return json.dumps(schema)


@pytest.mark.crash
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_consumer_killed_at_any_moment_neither_loses_nor_duplicates(
    kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    events = token_events(3000, tokens=200)
    batches = [events[i : i + 10] for i in range(0, len(events), 10)]
    messages: list[tuple[bytes, int]] = []
    for batch in batches:
        by_partition: dict[int, list[bytes]] = {}
        for event in batch:
            by_partition.setdefault(partition_for(subject_key(read_subject(event)[0]), 4), []).append(event)
        messages.extend((encode_envelope(_sealed(group), V1), p) for p, group in by_partition.items())
    _produce(kafka_server.bootstrap, kafka_topic, messages)

    # the offsets are committed in the same transaction as the rows on either store
    url = str(tmp_path / "ledger.db") if backend == "sqlite" else request.getfixturevalue("postgres_ledger").writer_url
    _ledger(url).close()
    key = tmp_path / "log.key"
    from lineage_ledger.keys import write_signer_key

    write_signer_key(key, make_log_signer())
    command = [
        sys.executable,
        "-m",
        "lineage_ledger.cli.main",
        "consume",
        "--ledger",
        url,
        "--log-key",
        str(key),
        "--bootstrap",
        kafka_server.bootstrap,
        "--topic",
        kafka_topic,
        "--block-size",
        "200",
        "--kafka-config",
        "log_level=0",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kills = 0
    for target in (300, 1200, 2100):  # kill once the ledger holds at least this many events
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + WAIT_SECONDS
        while _events_in(url) < target:
            assert process.poll() is None, "the consumer exited before it was killed"
            assert time.monotonic() < deadline, f"no progress to {target} events"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    final = subprocess.run(
        [*command, "--idle-timeout", "3", "--json"],
        env=env,
        capture_output=True,
        timeout=WAIT_SECONDS * 2,
        check=False,
    )
    assert final.returncode == 0, final.stderr.decode()
    summary = json.loads(final.stdout)
    assert summary["duplicates"] == 0  # a restart resumes exactly where the last commit left off
    ledger = Ledger.open(url, make_log_signer(), settings=SETTINGS)
    assert sorted(_event_ids(ledger)) == sorted(read_subject(e)[1] for e in events)
    assert ledger.store.offsets(kafka_topic) == _high_watermarks(kafka_server, kafka_topic, 4)
    ledger.close()
    assert kills == 3
    assert verify_ledger(url).ok


def _events_in(url: str) -> int:
    store = open_store(url, readonly=True)
    try:
        return sum(1 for r in store.entries(0, store.size()) if r.event_id is not None)
    finally:
        store.close()


def test_sharded_ledger_consumes_partition_groups(kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path) -> None:
    events = token_events(500, tokens=60)
    emitter = _emit(kafka_server.bootstrap, kafka_topic, events)
    assert emitter.close(timeout=WAIT_SECONDS)
    url = str(tmp_path / "root.db")
    sharded = ShardedLedger.create(url, make_log_signer(), shards=2, partitions=4, settings=SETTINGS)
    sharded.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    expected = {0: 0, 1: 0}
    for event in events:
        expected[sharded.layout.shard_of(read_subject(event)[0])] += 1
    for n, shard in enumerate(sharded.shards):
        with LedgerConsumer(
            shard,
            kafka_server.bootstrap,
            kafka_topic,
            partitions=sharded.layout.partitions_of(n),
            config={"logger": CLIENT_LOGGER},
        ) as consumer:
            stats = _consume_until(consumer, expected[n])
        assert stats.events == expected[n]
        assert set(shard.store.offsets(kafka_topic)) <= set(sharded.layout.partitions_of(n))
    assert sharded.seal() is not None
    sharded.close()
    report = verify_sharded(url)
    assert report.ok, report.to_json()
    held = []
    for n in range(2):
        store = open_store(shard_url(url, n), readonly=True)
        held.append(sorted(r.event_id for r in store.entries(0, store.size()) if r.event_id is not None))
        store.close()
    assert [len(h) for h in held] == [expected[0], expected[1]]
    assert sorted(held[0] + held[1]) == sorted(read_subject(e)[1] for e in events)


def test_three_brokers_one_killed_every_acknowledged_event_arrives_once(
    kafka_cluster3: KafkaCluster, tmp_path: Path
) -> None:
    topic = "ledger-events"
    kafka_cluster3.create_topic(topic, partitions=4, replication_factor=3, config={"min.insync.replicas": "2"})
    events = token_events(3000, tokens=150)
    transport = KafkaTransport(
        kafka_cluster3.bootstrap, topic, config={"logger": CLIENT_LOGGER, "message.timeout.ms": 60_000}
    )
    emitter = Emitter(PRODUCER, PRODUCER_KEY_ID, make_producer_signer(), transport, batch_size=50, linger_ms=5)
    victim = kafka_cluster3.leader_of(topic, 0)
    for i, event in enumerate(events):
        emitter.emit(event)
        if i == 1000:
            assert emitter.flush(WAIT_SECONDS)  # some events acknowledged before the kill
            kafka_cluster3.kill(victim)
        if i % 100 == 0:
            time.sleep(0.005)  # a steady stream rather than one burst
    assert emitter.close(timeout=WAIT_SECONDS * 2), emitter.metrics()
    metrics = emitter.metrics()
    assert metrics["sent"] == 3000
    assert metrics["dropped"] == 0
    assert metrics["dead_lettered"] == 0

    ledger = _ledger(tmp_path / "ledger.db")
    with LedgerConsumer(ledger, kafka_cluster3.bootstrap, topic, config={"logger": CLIENT_LOGGER}) as consumer:
        _consume_until(consumer, 3000)
    ids = _event_ids(ledger)
    assert len(ids) == len(set(ids)) == 3000  # every acknowledged event, once
    assert set(ids) == {read_subject(e)[1] for e in events}
    ledger.close()


def test_a_missing_topic_is_named_by_both_ends(kafka_server: KafkaCluster, tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "ledger.db")
    with pytest.raises(TransportError, match=r"'no-such-topic' on 127\.0\.0\.1"):
        LedgerConsumer(ledger, kafka_server.bootstrap, "no-such-topic", config={"logger": CLIENT_LOGGER})
    with pytest.raises(TransportError, match=r"'no-such-topic' on 127\.0\.0\.1"):
        KafkaTransport(kafka_server.bootstrap, "no-such-topic", config={"logger": CLIENT_LOGGER}, timeout=10)
    assert ledger.store.schemas() != []  # the consumer registered its schema before it looked for the topic
    ledger.close()


def test_an_event_of_another_shard_stops_the_shard_consumer(
    kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path
) -> None:
    # a producer that partitions with librdkafka's default (CRC32) instead of murmur2 puts a token's batch
    # in a partition of the other shard: that shard must not file it, and must not skip it
    url = str(tmp_path / "root.db")
    sharded = ShardedLedger.create(url, make_log_signer(), shards=2, partitions=4, settings=SETTINGS)
    sharded.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
    events = token_events(4, tokens=1, label="misrouted")
    home = sharded.layout.shard_of(read_subject(events[0])[0])
    wrong_partition = next(p for p in range(4) if p % 2 != home)
    _produce(kafka_server.bootstrap, kafka_topic, [(encode_envelope(_sealed(events), V1), wrong_partition)])
    wrong = sharded.shards[1 - home]
    with pytest.raises(InputError, match="consume into a shard"):
        LedgerConsumer(sharded.root, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER})
    with (
        LedgerConsumer(
            wrong,
            kafka_server.bootstrap,
            kafka_topic,
            partitions=sharded.layout.partitions_of(1 - home),
            config={"logger": CLIENT_LOGGER},
        ) as consumer,
        pytest.raises(RoutingError, match=rf"{kafka_topic}\[{wrong_partition}\]@0: .*belongs to shard {home}"),
    ):
        consumer.run(idle_timeout=WAIT_SECONDS)
    assert wrong.store.offsets(kafka_topic) == {}  # not skipped
    assert wrong.store.quarantined() == []
    assert _event_ids(wrong) == []
    sharded.close()


def test_consumer_metrics_show_positions_and_no_lag_once_caught_up(
    kafka_server: KafkaCluster, kafka_topic: str, tmp_path: Path
) -> None:
    from lineage_ledger.metrics import LedgerMetrics

    batches = [_sealed(token_events(5, tokens=1, label=f"m{i}")) for i in range(3)]
    _produce(kafka_server.bootstrap, kafka_topic, [(encode_envelope(b, V1), 2) for b in batches] + [(b"junk", 1)])
    ledger = _ledger(tmp_path / "ledger.db")
    metrics = LedgerMetrics(ledger.origin)
    metrics.attach(ledger)
    with LedgerConsumer(
        ledger, kafka_server.bootstrap, kafka_topic, config={"logger": CLIENT_LOGGER}, metrics=metrics
    ) as consumer:
        stop = threading.Event()

        def all_four(seen: ConsumeStats) -> None:
            if seen.messages >= 4:
                stop.set()

        stats = consumer.run(stop=stop, idle_timeout=WAIT_SECONDS, on_commit=all_four)
    assert (stats.messages, stats.events, stats.quarantined) == (4, 15, 1)
    value = metrics.registry.get_sample_value
    base = {"log": ledger.origin, "topic": kafka_topic}
    assert value("lineage_consumed_messages_total", base) == 4
    assert value("lineage_refused_messages_total", base) == 1
    assert value("lineage_entries_total", {"log": ledger.origin, "kind": "event"}) == 15
    for partition, end in _high_watermarks(kafka_server, kafka_topic, 4).items():
        assert value("lineage_consumer_position", {**base, "partition": str(partition)}) == end
        assert value("lineage_consumer_lag", {**base, "partition": str(partition)}) == 0
    ledger.close()
