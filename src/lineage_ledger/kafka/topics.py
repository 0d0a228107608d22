"""What the producer and the consumer both ask a Kafka cluster: the partitions of a topic."""

from __future__ import annotations

from typing import Any

from lineage_ledger.errors import TransportError

__all__ = ["topic_partitions"]


def topic_partitions(client: Any, topic: str, bootstrap: str, timeout: float = 30.0) -> list[int]:
    """The partition ids of ``topic``, from the metadata a confluent_kafka Producer or Consumer reads.

    TransportError naming the topic and the cluster if the metadata cannot be read or the topic does not
    exist (the ledger never creates topics: their settings are the operator's, see the README).
    """
    from confluent_kafka import KafkaException

    try:
        metadata = client.list_topics(topic, timeout=timeout)
    except KafkaException as e:
        raise TransportError(f"cannot read the metadata of topic {topic!r} from {bootstrap}: {e}") from e
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        why = found.error if found is not None and found.error is not None else "no such topic"
        raise TransportError(f"topic {topic!r} on {bootstrap}: {why}")
    return sorted(found.partitions)
