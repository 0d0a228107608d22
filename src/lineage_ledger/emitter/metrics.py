"""Prometheus metrics of an emitter: what :meth:`Emitter.metrics` counts, read at each scrape.

    from prometheus_client import REGISTRY
    EmitterCollector(emitter).register(REGISTRY)      # or a registry of your own

Counters are ``lineage_emitter_<name>_total`` and gauges ``lineage_emitter_<name>``, labelled by the
producer id only (never anything from an event). Watch ``lineage_emitter_spool_full`` (1 while the spool's
disk refuses writes: ``emit()`` applies the ``spool_full`` policy), ``lineage_emitter_spool_write_failures_total``,
``lineage_emitter_refused_spool_full_total`` (events the caller got back with SpoolFullError) and
``lineage_emitter_dropped_total`` (events lost: should stay 0). Needs prometheus-client (the ``metrics`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from lineage_ledger.errors import TransportError

if TYPE_CHECKING:
    from lineage_ledger.emitter.sender import Emitter

__all__ = ["EmitterCollector"]

_HELP: Final = {
    "emitted": "Events emit() accepted",
    "sent": "Events the ledger acknowledged (duplicates included)",
    "duplicates": "Acknowledged events the ledger already held (a retry or a replay)",
    "absorbed": "Events emitted again while the same event waited in the spool, kept once",
    "spooled": "Events written to the spool",
    "overflowed": "emit() calls that found the in-memory queue full",
    "dropped": "Events lost (see Emitter.metrics)",
    "retried": "Failed deliveries that were retried",
    "dead_lettered": "Events the ledger or the emitter's validation refused as invalid",
    "spool_write_failures": "Spool writes the disk refused (retried)",
    "refused_spool_full": "emit() calls that raised SpoolFullError, leaving the event with the caller",
}
_GAUGES: Final = {
    "queued": "Events in memory, not yet in the spool",
    "pending": "Events in the spool, not yet acknowledged",
    "spool_full": "1 while the spool's disk refuses writes, else 0",
}


class EmitterCollector:
    """A prometheus-client collector over one emitter; each scrape reads its counters once."""

    def __init__(self, emitter: Emitter) -> None:
        try:
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError as e:  # pragma: no cover - depends on the installed extras
            raise TransportError("metrics need prometheus-client: pip install 'lineage-ledger[metrics]'") from e
        self.emitter = emitter
        self._counter = CounterMetricFamily
        self._gauge = GaugeMetricFamily

    def register(self, registry: Any) -> EmitterCollector:
        """Add this collector to ``registry`` (a prometheus_client CollectorRegistry); returns self."""
        registry.register(self)
        return self

    def collect(self) -> Iterator[Any]:
        """The emitter's metrics as metric families (called by the registry at each scrape)."""
        counts = self.emitter.metrics()
        producer = self.emitter.producer
        for name, text in _HELP.items():
            counter = self._counter(f"lineage_emitter_{name}", text, labels=["producer"])
            counter.add_metric([producer], counts[name])
            yield counter
        for name, text in _GAUGES.items():
            gauge = self._gauge(f"lineage_emitter_{name}", text, labels=["producer"])
            gauge.add_metric([producer], counts[name])
            yield gauge
