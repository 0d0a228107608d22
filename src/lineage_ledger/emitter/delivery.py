"""Delivery, the emitter's last stage: one batch of spooled events is sealed (DSSE envelope), sent through
the :class:`~lineage_ledger.emitter.transport.Transport`, and its receipts checked. Only events the ledger
judged invalid are dead-lettered (transport.refuses_events decides: the event an error names, a refusal
naming none being narrowed by halving the batch); anything else is retried with backoff (honouring
Retry-After) while the events stay in the spool. The emitter (emitter.sender) runs it on its sender thread.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from lineage_ledger.core.crypto import Signer
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.model import redact
from lineage_ledger.core.receipt import Receipt
from lineage_ledger.emitter.spool import DeadLetter
from lineage_ledger.emitter.transport import GroupingTransport, Transport, refuses_events
from lineage_ledger.errors import InputError, LedgerError, PushbackError, StoreError, TransportError, event_at

__all__ = ["Backoff", "Delivery", "event_id_of", "event_position"]

log = logging.getLogger("lineage_ledger.emitter")

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


class _Head(msgspec.Struct):
    event_id: str


_HEAD = msgspec.json.Decoder(_Head)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt ``n`` waits uniformly between ``initial`` and
    ``min(maximum, initial * 2**n)`` seconds, and never less than a Retry-After the ledger asked for."""

    initial: float = 0.05
    maximum: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first)."""
        cap = max(min(self.maximum, self.initial * 2.0 ** min(attempt, 60)), self.initial)
        wait = self.rng.uniform(self.initial, cap)
        return wait if retry_after is None else max(wait, retry_after)


def event_id_of(item: object) -> str | None:
    """The event id (a UUIDv7) an event, its dict or its bytes names, if it names a valid one."""
    if isinstance(item, dict):
        value = item.get("event_id")
    elif isinstance(item, bytes):
        try:
            value = _HEAD.decode(item).event_id
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
    else:
        value = getattr(item, "event_id", None)
    return value if isinstance(value, str) and _UUID.match(value) else None


def event_position(error: LedgerError, count: int) -> int | None:
    """The batch position of the one event an error names (``events[3].payload.ip``), if it names one."""
    at = event_at(error.field if isinstance(error, InputError) else str(error))
    return at[0] if at is not None and at[0] < count else None


class Delivery:
    """Delivers batches of spooled events for one producer key through ``transport``.

    ``count`` is told how the emitter's counters grow (``sent``, ``duplicates``, ``retried``);
    ``dead_letter`` records refused events (raising StoreError if it cannot); ``on_receipts`` is called with
    each acknowledged batch's receipts, which carry the log's signed promises: keep them to check the ledger
    later (``lineage receipt verify``). Setting ``stop`` ends a retry wait.
    """

    def __init__(
        self,
        producer: str,
        key_id: str,
        signer: Signer,
        transport: Transport,
        backoff: Backoff,
        stop: threading.Event,
        count: Callable[[Mapping[str, int]], None],
        dead_letter: Callable[[list[DeadLetter]], None],
        on_receipts: Callable[[Sequence[Receipt]], object] | None = None,
    ) -> None:
        self._producer = producer
        self._key_id = key_id
        self._signer = signer
        self._transport = transport
        self._backoff = backoff
        self._stop = stop
        self._count = count
        self._dead_letter = dead_letter
        self._on_receipts = on_receipts

    def deliver(self, events: list[bytes]) -> bool:
        """Deliver or dead-letter every event of one batch; False if stopped first.

        transport.refuses_events alone decides: a refusal of the events dead-letters the one it names (and
        the rest are re-sent); a refusal that names none is narrowed by halving the batch, so only events
        the ledger refuses on their own are dead-lettered. Anything else is retried with backoff while the
        events stay in the spool."""
        attempt = 0
        while events:
            retry_after: float | None = None
            try:
                receipts = self.send(events)
                duplicates = self.check(events, receipts)
            except Exception as e:
                if isinstance(e, LedgerError) and refuses_events(e):
                    at = event_position(e, len(events))
                    if at is None and len(events) > 1:
                        half = len(events) // 2
                        return self.deliver(events[:half]) and self.deliver(events[half:])
                    try:
                        self.refuse(events, e, at)
                    except StoreError as dead:
                        problem = f"cannot dead-letter refused events: {dead}"
                    else:
                        continue
                elif isinstance(e, LedgerError):
                    retry_after = e.retry_after if isinstance(e, PushbackError) else None
                    problem = f"{type(e).__name__}: {redact(str(e))}"
                else:  # a broken transport or signer: keep the events and retry
                    log.exception("delivering a batch failed unexpectedly")
                    problem = type(e).__name__
            else:
                self._count({"sent": len(events), "duplicates": duplicates})
                if self._on_receipts is not None:
                    try:
                        self._on_receipts(receipts)
                    except Exception:
                        log.exception("the on_receipts callback failed (the events were acknowledged)")
                if attempt:
                    log.info("ledger reachable again after %d retries", attempt)
                return True
            self._count({"retried": 1})
            if attempt == 0:
                log.warning(
                    "cannot deliver %d events (%s); they wait in the spool, retrying with backoff",
                    len(events),
                    problem,
                )
            if self._stop.wait(self._backoff.delay(attempt, retry_after)):
                return False
            attempt += 1
        return True

    def send(self, events: list[bytes]) -> Sequence[Receipt]:
        """Seal and send one batch: one envelope, or one per group when the transport routes (Kafka)."""
        transport = self._transport
        if not isinstance(transport, GroupingTransport):
            return transport.send(seal_batch(events, producer=self._producer, key_id=self._key_id, signer=self._signer))
        routes = transport.route(events)
        groups = [[events[i] for i in route] for route in routes]
        envelopes = [
            seal_batch(group, producer=self._producer, key_id=self._key_id, signer=self._signer) for group in groups
        ]
        got = transport.send_groups(envelopes, groups)
        order = [i for route in routes for i in route]
        if len(got) != len(order) or sorted(order) != list(range(len(events))):
            raise TransportError(f"the transport returned {len(got)} receipts for {len(events)} events")
        receipts: list[Receipt] = [got[0]] * len(events)
        for receipt, pos in zip(got, order, strict=True):
            receipts[pos] = receipt
        return receipts

    def refuse(self, events: list[bytes], error: LedgerError, at: int | None) -> None:
        """Dead-letter the event at ``at`` (and keep the rest), or the whole batch."""
        field = redact(error.field) if isinstance(error, InputError) else None
        reason = redact(error.reason if isinstance(error, InputError) else str(error))
        chosen = [at] if at is not None else list(range(len(events)))
        self._dead_letter(
            [DeadLetter(type(error).__name__, reason, field, event_id_of(events[i]), events[i]) for i in chosen]
        )
        if at is None:
            events.clear()
        else:
            del events[at]

    @staticmethod
    def check(events: list[bytes], receipts: Sequence[Receipt]) -> int:
        """How many of ``receipts`` are duplicates; TransportError unless they answer ``events`` in order."""
        if len(receipts) != len(events):
            raise TransportError(f"the ledger returned {len(receipts)} receipts for {len(events)} events")
        duplicates = 0
        for body, receipt in zip(events, receipts, strict=True):
            if _HEAD.decode(body).event_id != receipt.event_id:
                raise TransportError("the ledger's receipts do not match the batch's events")
            duplicates += receipt.duplicate
        return duplicates
