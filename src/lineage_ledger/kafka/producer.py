"""The emitter's Kafka transport: signed batches published to a topic, partitioned by token fingerprint.

Routing. Every event has a subject (``token:<fingerprint>``, ``asset:<id>``, ``policy:<id>``); its Kafka key is
the fingerprint (core.routing.subject_key) and its partition is ``murmur2(key) mod partitions``, the function
of Kafka's own default partitioner, so all events of a token land in one partition in emit order, and a
sharded ledger finds a token's shard from its fingerprint alone. The emitter hands this transport one batch at
a time; :meth:`KafkaTransport.route` splits it into one group per partition (or per subject, with
``per_subject=True``), the emitter signs each group as its own envelope, and :meth:`KafkaTransport.send_groups`
publishes one message per group, keyed by the group's first subject (every subject in the group maps to the
same partition as that key). One envelope per partition rather than per token keeps the ledger's signature
checks per message, not per event.

Delivery. An idempotent producer (``enable.idempotence``, ``acks=all``): a batch counts as delivered when every
in-sync replica has it; a failure raises TransportError and the emitter re-sends the whole batch from its
spool, and the ledger drops the copies of events it already holds (same event id, same bytes), so the effect
stays exactly once. Receipts carry index -1 and verdict ``"queued"``: the ledger judges the events when it
consumes them (``lineage consume``), and its findings report what it decided.

Messages are Avro single-object encoded (kafka.avro); the canonical JSON events inside are what the ledger
hashes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from lineage_ledger.core.model import read_subject
from lineage_ledger.core.receipt import Receipt
from lineage_ledger.core.routing import partition_for, subject_key
from lineage_ledger.errors import InputError, TransportError
from lineage_ledger.kafka.avro import V1, Schema, encode_envelope
from lineage_ledger.kafka.topics import topic_partitions

__all__ = ["PRODUCER_DEFAULTS", "KafkaTransport"]

PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "message.timeout.ms": 120_000,
}
"""librdkafka settings the transport starts from; ``config`` may add to them but not turn idempotence off."""


class KafkaTransport:
    """Publishes signed batch envelopes to ``topic`` on the Kafka cluster at ``bootstrap``.

    ``partitions`` is read from the cluster's metadata when not given. ``config`` adds librdkafka settings
    (security, client id ...); ``enable.idempotence`` and ``acks=all`` cannot be turned off. ``timeout``
    bounds how long one batch may wait for its acknowledgements.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        partitions: int | None = None,
        per_subject: bool = False,
        schema: Schema = V1,
        config: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> None:
        try:
            import confluent_kafka
        except ImportError as e:  # pragma: no cover - depends on the installed extras
            raise TransportError("KafkaTransport needs confluent-kafka: pip install 'lineage-ledger[kafka]'") from e
        settings = {**PRODUCER_DEFAULTS, **(config or {}), "bootstrap.servers": bootstrap}
        if str(settings["enable.idempotence"]).lower() not in ("true", "1") or str(settings["acks"]) not in (
            "all",
            "-1",
        ):
            raise InputError("config", "the ledger's Kafka transport needs enable.idempotence=true and acks=all")
        self._kafka = confluent_kafka
        self.topic = topic
        self.bootstrap = bootstrap
        self.per_subject = per_subject
        self._schema = schema
        self._timeout = timeout
        self._producer = confluent_kafka.Producer(settings)
        self._lock = threading.Lock()
        self.partitions = (
            partitions if partitions is not None else len(topic_partitions(self._producer, topic, bootstrap, timeout))
        )
        if self.partitions < 1:
            raise InputError("partitions", "must be at least 1")

    # -- the grouping protocol the emitter uses ----------------------------------------------------------

    def route(self, events: Sequence[bytes]) -> list[list[int]]:
        """Positions of ``events`` grouped by destination (partition, or subject), each group in batch order."""
        groups: dict[object, list[int]] = {}
        for pos, event in enumerate(events):
            subject, _ = read_subject(event)
            where: object = subject if self.per_subject else partition_for(subject_key(subject), self.partitions)
            groups.setdefault(where, []).append(pos)
        return list(groups.values())

    def send_groups(self, envelopes: Sequence[bytes], groups: Sequence[Sequence[bytes]]) -> list[Receipt]:
        """Publish one message per envelope (``groups[i]`` are its events) and wait for every acknowledgement.

        Returns one queued receipt per event, in the order of ``groups``. Raises TransportError if any
        message is not acknowledged: the emitter re-sends the batch, and the ledger drops what it already has.
        """
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        receipts: list[Receipt] = []
        with self._lock:
            for envelope, events in zip(envelopes, groups, strict=True):
                subject, _ = read_subject(events[0])
                key = subject_key(subject)
                value = encode_envelope(envelope, self._schema)
                self._produce(value, key, partition_for(key, self.partitions), delivered)
                receipts.extend(Receipt(read_subject(e)[1], -1, "queued", False) for e in events)
            deadline = time.monotonic() + self._timeout
            while len(self._producer) and time.monotonic() < deadline:
                self._producer.flush(min(1.0, max(deadline - time.monotonic(), 0.0)))
            pending = len(self._producer)
        if pending:
            raise TransportError(f"{pending} messages to {self.topic!r} not acknowledged within {self._timeout} s")
        if failures:
            raise TransportError(f"Kafka refused {len(failures)} of {len(envelopes)} messages: {failures[0]}")
        return receipts

    def _produce(self, value: bytes, key: bytes, partition: int, callback: Any) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, partition=partition, on_delivery=callback)
                return
            except BufferError:  # the local queue is full: serve delivery reports until there is room
                self._producer.poll(0.1)
            except self._kafka.KafkaException as e:
                raise TransportError(f"cannot publish to {self.topic!r}: {e}") from e

    # -- the plain Transport protocol --------------------------------------------------------------------

    def send(self, envelope: bytes) -> Sequence[Receipt]:
        """Publish one already-sealed envelope as one message (keyed by its first event's subject).

        The emitter uses route/send_groups instead, so each message holds one partition's events; this is
        for callers holding envelopes sealed elsewhere, whose events must all map to one partition.
        """
        from lineage_ledger.core.envelope import open_envelope

        events = list(open_envelope(envelope).events)
        partitions = {partition_for(subject_key(read_subject(e)[0]), self.partitions) for e in events}
        if len(partitions) > 1:
            raise InputError("envelope", f"its events belong to {len(partitions)} partitions; seal one per partition")
        return self.send_groups([envelope], [events])

    def close(self) -> None:
        """Wait (up to the timeout) for messages still in flight, then release the producer."""
        self._producer.flush(self._timeout)

    def __repr__(self) -> str:
        return f"KafkaTransport({self.bootstrap!r}, {self.topic!r}, partitions={self.partitions})"
