"""How the emitter's Kafka transport splits a batch, checked without a broker (nothing is sent here)."""

from __future__ import annotations

import logging

import pytest

from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.model import read_subject
from lineage_ledger.core.routing import partition_for, subject_key
from lineage_ledger.errors import InputError
from lineage_ledger.kafka.producer import KafkaTransport
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_events

QUIET = logging.getLogger("tests.kafka.unreachable")
UNREACHABLE = "127.0.0.1:9"  # the discard port: the producer is built, never connected


@pytest.fixture
def events() -> list[bytes]:
    return token_events(60, tokens=12)


@pytest.fixture
def by_partition() -> KafkaTransport:
    return KafkaTransport(UNREACHABLE, "t", partitions=4, config={"logger": QUIET}, timeout=0.1)


def test_a_batch_is_split_by_partition_keeping_order(by_partition: KafkaTransport, events: list[bytes]) -> None:
    groups = by_partition.route(events)
    assert sorted(i for g in groups for i in g) == list(range(len(events)))
    for group in groups:
        assert group == sorted(group)  # batch order inside each envelope
        partitions = {partition_for(subject_key(read_subject(events[i])[0]), 4) for i in group}
        assert len(partitions) == 1
    assert len(groups) == len({partition_for(subject_key(read_subject(e)[0]), 4) for e in events})


def test_per_subject_routing_gives_one_envelope_per_token(events: list[bytes]) -> None:
    transport = KafkaTransport(UNREACHABLE, "t", partitions=4, per_subject=True, config={"logger": QUIET})
    groups = transport.route(events)
    assert len(groups) == 12
    for group in groups:
        assert len({read_subject(events[i])[0] for i in group}) == 1


def test_an_envelope_spanning_partitions_is_refused_before_sending(
    by_partition: KafkaTransport, events: list[bytes]
) -> None:
    envelope = seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=make_producer_signer())
    with pytest.raises(InputError, match="seal one per partition"):
        by_partition.send(envelope)


def test_idempotence_and_acks_all_cannot_be_turned_off() -> None:
    for config in ({"enable.idempotence": False}, {"acks": "1"}):
        with pytest.raises(InputError, match=r"enable\.idempotence=true and acks=all"):
            KafkaTransport(UNREACHABLE, "t", partitions=4, config={**config, "logger": QUIET})
