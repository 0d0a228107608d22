"""Real Kafka brokers (tests/services_kafka.py): round trips, and acknowledged writes surviving a killed leader.

Every wait is a bounded poll of the client or of the cluster's metadata; nothing sleeps and hopes.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from tests.services_kafka import CLIENT_LOGGER, KafkaCluster

_SECONDS = 60.0


def _producer(bootstrap: str, **extra: object) -> Producer:
    """An idempotent producer (acks=all): retries never duplicate or reorder a partition's messages."""
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        **extra,
    }
    return Producer(config, logger=CLIENT_LOGGER)


def _consumer(bootstrap: str, **extra: object) -> Consumer:
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"test-{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **extra,
    }
    return Consumer(config, logger=CLIENT_LOGGER)


class _Deliveries:
    """Delivery reports as the producer's callbacks give them (only ever inside poll or flush)."""

    def __init__(self) -> None:
        self.acked: list[tuple[bytes, bytes]] = []
        self.failed: list[str] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        key, value = msg.key() or b"", msg.value() or b""
        if err is None:
            self.acked.append((key, value))
        else:
            self.failed.append(f"{key!r}={value!r}: {err.str()}")


def _poll_until(producer: Producer, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _SECONDS
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {_SECONDS} s")
        producer.poll(0.1)


def _check(msg: Message | None) -> Message | None:
    if msg is not None and msg.error() is not None:
        raise AssertionError(f"consumer error: {msg.error()}")
    return msg


def _read_to_end(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, bytes, bytes]]:
    """Every record in ``topic``, read from the beginning of each partition up to its high watermark."""
    consumer = _consumer(bootstrap)
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=_SECONDS)[1] for p in range(partitions)
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        records: list[tuple[int, bytes, bytes]] = []
        next_offset = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + _SECONDS
        while any(next_offset[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"read {next_offset} of {ends} records in {_SECONDS} s")
            msg = _check(consumer.poll(0.5))
            if msg is None:
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None
            assert offset is not None
            records.append((partition, msg.key() or b"", msg.value() or b""))
            next_offset[partition] = offset + 1
        return records
    finally:
        consumer.close()


def test_kafka_topic_is_fresh_and_private_to_the_test(kafka_server: KafkaCluster, kafka_topic: str) -> None:
    metadata = kafka_server.metadata(kafka_topic)
    assert [b.id for b in metadata.brokers.values()] == [1]
    assert len(metadata.topics[kafka_topic].partitions) == 4
    assert _read_to_end(kafka_server.bootstrap, kafka_topic, 4) == []


def test_idempotent_round_trip_keeps_every_keys_order(kafka_server: KafkaCluster, kafka_topic: str) -> None:
    sent = [(f"key-{i % 7}".encode(), f"{i % 7}:{i}".encode()) for i in range(100)]
    deliveries = _Deliveries()
    producer = _producer(kafka_server.bootstrap)
    for key, value in sent:
        producer.produce(kafka_topic, value=value, key=key, on_delivery=deliveries)
        producer.poll(0)
    assert producer.flush(_SECONDS) == 0
    assert deliveries.failed == []
    assert sorted(deliveries.acked) == sorted(sent)

    # through a consumer group (subscribe), as an application would read it
    consumer = _consumer(kafka_server.bootstrap)
    consumed: list[tuple[bytes, bytes]] = []
    try:
        consumer.subscribe([kafka_topic])
        deadline = time.monotonic() + _SECONDS
        while len(consumed) < len(sent):
            assert time.monotonic() < deadline, f"consumed {len(consumed)} of {len(sent)} in {_SECONDS} s"
            msg = _check(consumer.poll(0.5))
            if msg is not None:
                consumed.append((msg.key() or b"", msg.value() or b""))
    finally:
        consumer.close()

    assert sorted(consumed) == sorted(sent)  # every message, each once
    for key in {k for k, _ in sent}:
        assert [v for k, v in consumed if k == key] == [v for k, v in sent if k == key]
    # and nothing beyond them in the log
    assert len(_read_to_end(kafka_server.bootstrap, kafka_topic, 4)) == len(sent)


@pytest.mark.crash
def test_acknowledged_writes_survive_killing_the_partition_leader(kafka_cluster3: KafkaCluster) -> None:
    cluster = kafka_cluster3
    topic = f"replicated-{uuid.uuid4().hex[:12]}"
    partitions, before, after = 3, 300, 600
    cluster.create_topic(topic, partitions, 3, {"min.insync.replicas": "2"})
    metadata = cluster.metadata(topic)
    assert sorted(metadata.brokers) == [1, 2, 3]
    assert all(sorted(p.replicas) == [1, 2, 3] for p in metadata.topics[topic].partitions.values())

    deliveries = _Deliveries()
    # generous delivery timeout: partitions led by the killed broker have no leader until it is fenced
    producer = _producer(cluster.bootstrap, **{"message.timeout.ms": 120_000})

    def produce(start: int, stop: int) -> None:
        for i in range(start, stop):
            producer.produce(topic, value=f"m-{i:05d}".encode(), key=f"k-{i % 11}".encode(), on_delivery=deliveries)
            producer.poll(0)

    victim = cluster.leader_of(topic, 0)
    victim_id = cluster.node_id(victim)
    produce(0, before // 2)
    _poll_until(producer, lambda: len(deliveries.acked) >= before // 4, "the first acknowledgements")
    produce(before // 2, before)
    cluster.kill(victim)  # mid-stream: the last messages are still queued or in flight to it
    produce(before, before + after)
    assert producer.flush(150) == 0
    assert deliveries.failed == []

    # with 2 of 3 brokers every message was acknowledged, those sent after the kill included
    acked = Counter(value for _, value in deliveries.acked)
    assert all(count == 1 for count in acked.values())
    assert set(acked) == {f"m-{i:05d}".encode() for i in range(before + after)}

    # partition 0 has another leader, and the killed broker is out of every ISR
    cluster.wait_for_topic(topic, partitions=partitions, in_sync=2)
    assert cluster.leader_of(topic, 0) != victim
    assert all(victim_id not in p.isrs for p in cluster.metadata(topic).topics[topic].partitions.values())

    # every acknowledged message is in the log exactly once, and nothing else is
    records = _read_to_end(cluster.bootstrap, topic, partitions)
    stored = Counter(value for _, _, value in records)
    assert stored == acked
    # each key stays in one partition, in the order it was produced
    for key in {k for k, _ in deliveries.acked}:
        in_log = [(p, v) for p, k, v in records if k == key]
        assert len({p for p, _ in in_log}) == 1
        assert [v for _, v in in_log] == sorted(v for _, v in in_log)

    # the killed node comes back on its old ports and data and catches up
    cluster.start(victim)
    cluster.wait_for_topic(topic, partitions=partitions, in_sync=3, timeout=_SECONDS)
    assert sorted(cluster.metadata().brokers) == [1, 2, 3]
    producer.produce(topic, value=b"after-restart", key=b"k-0", on_delivery=deliveries)
    assert producer.flush(_SECONDS) == 0
    assert deliveries.failed == []
    assert deliveries.acked[-1] == (b"k-0", b"after-restart")
