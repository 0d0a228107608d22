"""Prometheus metrics of a ledger process: what an SRE watches on a sequencer, a consumer or the service.

``LedgerMetrics`` keeps its own registry (so several ledgers, or tests, in one process never collide) and
is fed by the ledger itself (``attach``: a listener on every commit) and by the Kafka consumer (positions,
lag, refusals). ``serve`` exposes it on a port of its own, bound to loopback unless told otherwise, apart
from the authenticated API. Labels are the log's origin, a topic, a partition, an entry kind or a rule id:
never a token id, a subject or anything from an event's payload, so no metric can carry a bearer token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lineage_ledger.errors import TransportError

if TYPE_CHECKING:
    from lineage_ledger.ledger.writer import Ledger
    from lineage_ledger.store.base import EntryRow

__all__ = ["LedgerMetrics"]


def _kind(subject: str) -> str:
    if subject == "ledger:blocks":
        return "seal"
    if subject.startswith("producer:"):
        return "key"
    if subject.startswith("shard:"):
        return "shard"
    return "event"


class LedgerMetrics:
    """The metrics of one ledger (its log origin labels every series)."""

    def __init__(self, origin: str) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge
        except ImportError as e:  # pragma: no cover - depends on the installed extras
            raise TransportError("metrics need prometheus-client: pip install 'lineage-ledger[metrics]'") from e
        self.origin = origin
        self.registry = CollectorRegistry()
        r = self.registry
        self.entries = Counter(
            "lineage_entries",
            "Entries committed to the log, by kind (event, seal, key, shard)",
            ["log", "kind"],
            registry=r,
        )
        self.violations = Counter(
            "lineage_violations",
            "Events recorded with a broken lifecycle rule, by rule id",
            ["log", "rule"],
            registry=r,
        )
        self.size = Gauge("lineage_log_size", "Entries in the log (the tree size)", ["log"], registry=r)
        self.sealed = Gauge(
            "lineage_sealed_size", "Entries covered by the latest signed checkpoint", ["log"], registry=r
        )
        self.messages = Counter(
            "lineage_consumed_messages", "Kafka messages taken into the ledger", ["log", "topic"], registry=r
        )
        self.duplicates = Counter(
            "lineage_duplicate_events",
            "Events received again (already recorded, nothing written)",
            ["log", "topic"],
            registry=r,
        )
        self.refused = Counter(
            "lineage_refused_messages",
            "Kafka messages quarantined as not authentic or malformed",
            ["log", "topic"],
            registry=r,
        )
        self.position = Gauge(
            "lineage_consumer_position",
            "Next offset to read, as committed in the ledger",
            ["log", "topic", "partition"],
            registry=r,
        )
        self.lag = Gauge(
            "lineage_consumer_lag",
            "Messages in a partition not yet in the ledger",
            ["log", "topic", "partition"],
            registry=r,
        )
        self.wal = Gauge(
            "lineage_wal_bytes",
            "Size of the store's write-ahead log on disk (SQLite; bounded by the store's checkpoints)",
            ["log"],
            registry=r,
        )
        self._ledger: Ledger | None = None

    @classmethod
    def serving(cls, ledger: Ledger, port: int, addr: str = "127.0.0.1") -> LedgerMetrics:
        """The metrics of ``ledger``, attached to it and served at ``addr:port`` (what --metrics-port does)."""
        metrics = cls(ledger.origin)
        metrics.attach(ledger)
        metrics.serve(port, addr)
        return metrics

    def attach(self, ledger: Ledger) -> None:
        """Follow every commit of ``ledger`` (a listener) and set the size gauges now."""
        self._ledger = ledger
        ledger.add_listener(self.observe)
        self.size.labels(self.origin).set(ledger.size)
        self.sealed.labels(self.origin).set(ledger.sealed_size)
        store = ledger.store
        if store.wal_bytes() is not None:  # read at each scrape
            self.wal.labels(self.origin).set_function(lambda: float(store.wal_bytes() or 0))

    def observe(self, rows: Sequence[EntryRow]) -> None:
        """Count committed entries (the ledger's listener)."""
        kinds: dict[str, int] = {}
        for row in rows:
            kind = _kind(row.subject)
            kinds[kind] = kinds.get(kind, 0) + 1
            if row.verdict != "ok":
                self.violations.labels(self.origin, row.verdict).inc()
        for kind, count in kinds.items():
            self.entries.labels(self.origin, kind).inc(count)
        if rows:
            self.size.labels(self.origin).set(rows[-1].index + 1)
        if self._ledger is not None:
            self.sealed.labels(self.origin).set(self._ledger.sealed_size)

    def consumed(
        self,
        topic: str,
        *,
        messages: int,
        duplicates: int,
        refused: int,
        positions: Mapping[int, int],
        ends: Mapping[int, int],
    ) -> None:
        """Record a poll's work and, for each partition, the committed position and the lag behind ``ends``
        (the partition's high watermark)."""
        self.messages.labels(self.origin, topic).inc(messages)
        self.duplicates.labels(self.origin, topic).inc(duplicates)
        self.refused.labels(self.origin, topic).inc(refused)
        for partition, position in positions.items():
            self.position.labels(self.origin, topic, str(partition)).set(position)
            if partition in ends:
                self.lag.labels(self.origin, topic, str(partition)).set(max(ends[partition] - position, 0))

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve the metrics over HTTP at ``addr:port`` (``/metrics``) from a daemon thread; the server."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    def text(self) -> str:
        """The metrics in the Prometheus text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
