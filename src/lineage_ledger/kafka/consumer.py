"""``lineage consume``: a Kafka topic into a ledger, exactly once.

The consumer assigns itself the topic's partitions (all of them, or a shard's group) at the positions the
ledger's store holds, checks each message's batch (:meth:`Ledger.check`) and appends the batches of one
poll together (one group commit through a :class:`~lineage_ledger.ledger.pipeline.Pipeline`, so the
store commits a poll while the next one is decoded and checked) with each partition's next offset: the
positions are committed in the same store transaction as the batches' rows, in message order. A consumer killed
at any moment restarts at the last committed position, so no event is lost and none is recorded twice (a
batch the ledger already holds, such as a producer's retry, comes back as duplicates and only moves the
position on). Kafka's own consumer-group offsets are not used.

What a message can be:

* a batch the ledger accepts: appended, position moved on;
* a batch that is not authentic or not well formed (bad signature under a known key, malformed envelope or
  event, an event id already recorded with other bytes): recorded in the store's quarantine (position,
  reason, SHA-256 of the message, and the message itself only with ``keep_refused``), position moved on;
* a batch the ledger cannot judge *yet*: signed by a producer key it does not know, or written with an Avro
  schema that is not registered; or one that does not belong here: an event of another shard (RoutingError:
  its producer partitions by another function than the ledger's, so the right shard's consumer never sees
  it). The consumer stops with KeyringError, UnknownSchemaError or RoutingError naming the partition and
  offset, without moving the position: an operator registers the key (``lineage keys register``) or the
  schema (``lineage schemas add``), or fixes the producer, and restarts it. Nothing authentic is ever
  skipped or filed in the wrong shard.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from lineage_ledger.core.model import redact
from lineage_ledger.errors import (
    ConflictError,
    InputError,
    KeyringError,
    LedgerError,
    RoutingError,
    TransportError,
    VerificationError,
)
from lineage_ledger.kafka.avro import V1, Schema, UnknownSchemaError, decode_envelope, schema_from_json
from lineage_ledger.kafka.topics import topic_partitions
from lineage_ledger.ledger.pipeline import Done, Pipeline
from lineage_ledger.ledger.writer import CheckedBatch, Ledger
from lineage_ledger.metrics import LedgerMetrics
from lineage_ledger.store.base import OffsetRow, QuarantineRow, SchemaRow

__all__ = ["CONSUMER_DEFAULTS", "ConsumeStats", "LedgerConsumer", "register_schema"]

_log = logging.getLogger(__name__)

CONSUMER_DEFAULTS: Final[Mapping[str, Any]] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "isolation.level": "read_committed",
    "auto.offset.reset": "earliest",
    "enable.partition.eof": False,
    "fetch.wait.max.ms": 50,
}


@dataclass(slots=True)
class ConsumeStats:
    """What one run did."""

    messages: int = 0
    events: int = 0
    duplicates: int = 0
    quarantined: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    """Commit time minus the message's Kafka timestamp, per message (when ``measure`` is on)."""


def register_schema(ledger: Ledger, schema: Schema) -> bool:
    """Register an Avro schema in the ledger's store; False if it was already registered."""
    if any(row.fingerprint == schema.fingerprint for row in ledger.store.schemas()):
        return False
    row = SchemaRow(schema.fingerprint, schema.name, schema.canonical, ledger.now())
    ledger.record_transport(schemas=[row])
    return True


class LedgerConsumer:
    """Reads ``topic`` from the cluster at ``bootstrap`` into ``ledger``.

    ``partitions`` limits the consumer to some partitions (a shard's group); by default it takes all of them.
    ``config`` adds librdkafka settings (security ...). Up to ``batch`` messages are read at once and their
    batches committed together, up to ``per_commit`` events per transaction (positions with them).
    ``keep_refused`` keeps the bytes of refused messages
    in the quarantine (off by default: bytes that failed the checks were never scanned for raw tokens).
    """

    def __init__(
        self,
        ledger: Ledger,
        bootstrap: str,
        topic: str,
        *,
        partitions: Sequence[int] | None = None,
        config: Mapping[str, Any] | None = None,
        batch: int = 500,
        per_commit: int = 4000,
        keep_refused: bool = False,
        measure: bool = False,
        metrics: LedgerMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            import confluent_kafka
        except ImportError as e:  # pragma: no cover - depends on the installed extras
            raise TransportError("lineage consume needs confluent-kafka: pip install 'lineage-ledger[kafka]'") from e
        self._kafka = confluent_kafka
        if ledger.shard_root:
            raise InputError("ledger", f"{ledger.store.url} is a sharded ledger's root: consume into a shard (--shard)")
        self.ledger = ledger
        self.topic = topic
        self.bootstrap = bootstrap
        self._batch = batch
        self._per_commit = per_commit
        self._metrics = metrics
        self._keep = keep_refused
        self._measure = measure
        self._clock = clock
        self._pipe: Pipeline[list[Any]]  # one per run()
        self._reported = (0, 0, 0)  # (messages, duplicates, refused) at the last metrics report
        settings = {
            **CONSUMER_DEFAULTS,
            "group.id": f"lineage-ledger:{ledger.origin}",
            **(config or {}),
            "bootstrap.servers": bootstrap,
        }
        self._consumer = confluent_kafka.Consumer(settings)
        try:
            register_schema(ledger, V1)
            self._schemas: dict[bytes, Schema] = {}
            self._load_schemas()
            self.partitions = (
                sorted(partitions) if partitions is not None else topic_partitions(self._consumer, topic, bootstrap)
            )
            positions = ledger.store.offsets(topic)
            self._consumer.assign(
                [
                    confluent_kafka.TopicPartition(topic, p, positions.get(p, confluent_kafka.OFFSET_BEGINNING))
                    for p in self.partitions
                ]
            )
        except BaseException:
            self._consumer.close()
            raise
        _log.info(
            "consuming %s partitions %s from %s",
            topic,
            self.partitions,
            {p: positions.get(p, 0) for p in self.partitions},
        )

    def _load_schemas(self) -> None:
        self._schemas = {row.fingerprint: schema_from_json(row.text) for row in self.ledger.store.schemas()}

    def positions(self) -> dict[int, int]:
        """partition -> next offset, as committed in the ledger's store."""
        return self.ledger.store.offsets(self.topic)

    def run(
        self,
        *,
        idle_timeout: float | None = None,
        max_messages: int | None = None,
        stop: threading.Event | None = None,
        on_commit: Callable[[ConsumeStats], object] | None = None,
    ) -> ConsumeStats:
        """Consume until ``stop`` is set, ``max_messages`` were handled, or nothing arrived for ``idle_timeout``
        seconds (None: keep waiting). Seals the open block (if due) between polls, so checkpoints keep coming
        while the topic is quiet."""
        stats = ConsumeStats()
        with Pipeline[list[Any]](self.ledger) as self._pipe:
            self._reported = (0, 0, 0)
            self._consume(stats, idle_timeout, max_messages, stop, on_commit)
            self._account(self._pipe.drain(), stats, on_commit)
        return stats

    def _consume(
        self,
        stats: ConsumeStats,
        idle_timeout: float | None,
        max_messages: int | None,
        stop: threading.Event | None,
        on_commit: Callable[[ConsumeStats], object] | None,
    ) -> None:
        idle_since = time.monotonic()
        taken = 0  # messages read, including those whose commit has not landed yet
        while not (stop is not None and stop.is_set()):
            want = self._batch if max_messages is None else min(self._batch, max_messages - taken)
            if want <= 0:
                break
            try:
                # what has arrived, without waiting for a full batch (that wait would add latency); if
                # nothing has, let the commit in flight land (nothing is left to overlap it with), then wait
                # for one message and take whatever came with it
                messages = self._consumer.consume(num_messages=want, timeout=0)
                if not messages:
                    if self._pipe.in_flight:
                        self._account(self._pipe.drain(), stats, on_commit)
                    messages = self._consumer.consume(num_messages=1, timeout=0.2)
                    if messages and want > 1:
                        messages += self._consumer.consume(num_messages=want - 1, timeout=0)
            except self._kafka.KafkaException as e:
                raise TransportError(f"consuming {self.topic!r} from {self.bootstrap}: {e}") from e
            if not messages:
                self.ledger.tick()
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    break
                continue
            idle_since = time.monotonic()
            taken += len(messages)
            pending: list[tuple[Any, CheckedBatch]] = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal() or not error.retriable():
                        self._flush(pending, stats, wait=True)
                        raise TransportError(f"consuming {self.topic!r}: {error}")
                    _log.warning("consuming %s: %s (retrying)", self.topic, error)
                    continue
                checked = self._check(message, pending, stats)
                if checked is not None:
                    pending.append((message, checked))
                    if sum(len(c.events) for _, c in pending) >= self._per_commit:
                        self._flush(pending, stats)
            self._flush(pending, stats)
            if self._metrics is not None:
                self._report(stats)
            if on_commit is not None:
                on_commit(stats)

    def _account(
        self, landed: list[Done[list[Any]]], stats: ConsumeStats, on_commit: Callable[[ConsumeStats], object] | None
    ) -> None:
        """Account for groups that landed outside a poll's own flush, and tell the metrics and ``on_commit``."""
        if not landed:
            return
        self._landed(landed, stats)
        if self._metrics is not None:
            self._report(stats)
        if on_commit is not None:
            on_commit(stats)

    def _report(self, stats: ConsumeStats) -> None:
        """Hand the work committed since the last report, the committed positions and the lag to the metrics."""
        assert self._metrics is not None
        before, self._reported = self._reported, (stats.messages, stats.duplicates, stats.quarantined)
        positions = self.ledger.store.offsets(self.topic)
        ends: dict[int, int] = {}
        for partition in self.partitions:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    self._kafka.TopicPartition(self.topic, partition), cached=True
                )
            except self._kafka.KafkaException:
                continue
            if high >= 0:
                ends[partition] = high
        self._metrics.consumed(
            self.topic,
            messages=stats.messages - before[0],
            duplicates=stats.duplicates - before[1],
            refused=stats.quarantined - before[2],
            positions={p: positions.get(p, 0) for p in self.partitions},
            ends=ends,
        )

    def _check(self, message: Any, pending: list[tuple[Any, CheckedBatch]], stats: ConsumeStats) -> CheckedBatch | None:
        """The message's batch, checked; None if it was refused (and quarantined, after what came before it)."""
        partition, offset = message.partition(), message.offset()
        value: bytes = message.value() or b""
        where = f"{self.topic}[{partition}]@{offset}"
        try:
            try:
                envelope = decode_envelope(value, self._schemas)
            except UnknownSchemaError:
                self._load_schemas()  # registered since the consumer started?
                envelope = decode_envelope(value, self._schemas)
            return self.ledger.check(envelope)
        except UnknownSchemaError as e:
            self._flush(pending, stats, wait=True)
            raise UnknownSchemaError(
                e.field, f"{where}: {e.reason}; register the schema (lineage schemas add) and restart"
            ) from e
        except RoutingError as e:
            self._flush(pending, stats, wait=True)
            raise RoutingError(
                f"{where}: {e}; the message stays unread: fix the producer's partitioner, then move the message "
                "to the right partition"
            ) from e
        except KeyringError as e:
            self._flush(pending, stats, wait=True)
            raise KeyringError(
                f"{where}: {e}; register the producer's key (lineage keys register) and restart; nothing was skipped"
            ) from e
        except (InputError, VerificationError) as e:
            self._flush(pending, stats, wait=True)  # positions are committed in order: what came before goes first
            self._quarantine(message, e, stats)
            return None

    def _quarantine(self, message: Any, error: LedgerError, stats: ConsumeStats) -> None:
        partition, offset = message.partition(), message.offset()
        value: bytes = message.value() or b""
        reason = f"{type(error).__name__}: {redact(str(error))}"  # errors quote values: never a token
        _log.warning("refused %s[%d]@%d: %s", self.topic, partition, offset, reason)
        row = QuarantineRow(
            self.topic, partition, offset, reason, hashlib.sha256(value).digest(), value if self._keep else None
        )
        self.ledger.record_transport(offsets=[OffsetRow(self.topic, partition, offset + 1)], quarantine=[row])
        stats.messages += 1
        stats.quarantined += 1

    def _flush(self, pending: list[tuple[Any, CheckedBatch]], stats: ConsumeStats, *, wait: bool = False) -> None:
        """Submit the checked batches of ``pending`` with their positions as one group commit, and account for
        the groups that have landed (all of them, with ``wait``: before a refusal or a stop is recorded)."""
        if pending:
            landed = self._pipe.submit(
                [checked for _, checked in pending],
                [[OffsetRow(self.topic, message.partition(), message.offset() + 1)] for message, _ in pending],
                tag=[message for message, _ in pending],
            )
            pending.clear()
            self._landed(landed, stats)
        if wait:
            self._landed(self._pipe.drain(), stats)

    def _landed(self, landed: list[Done[list[Any]]], stats: ConsumeStats) -> None:
        """Account for committed groups; quarantine a batch that conflicts with a recorded event."""
        now_ms = self._clock() * 1000.0
        for done in landed:
            for message, outcome in zip(done.tag, done.outcomes, strict=True):
                if isinstance(outcome, ConflictError):  # an event id recorded with other bytes: not authentic
                    self._quarantine(message, outcome, stats)
                    continue
                if isinstance(outcome, LedgerError):  # the store failed: stop; what came before is committed
                    raise outcome
                stats.messages += 1
                stats.events += len(outcome.receipts)
                stats.duplicates += sum(r.duplicate for r in outcome.receipts)
                if self._measure:
                    kind, stamp = message.timestamp()
                    if kind != self._kafka.TIMESTAMP_NOT_AVAILABLE:
                        stats.latencies_ms.append(now_ms - stamp)

    def close(self) -> None:
        """Leave the cluster; the ledger stays open (it belongs to the caller)."""
        self._consumer.close()

    def __enter__(self) -> LedgerConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
