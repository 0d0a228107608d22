"""Checking, the first stage of the write path: what a signed batch must pass before any of it is sequenced.

The envelope's structure and batch root, the producer's key (valid now, by the keyring the log records), the
DSSE signature, every event, each event's size, its shard (in one shard of a sharded ledger), and no event
id twice. Nothing here writes or reads the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from lineage_ledger.core.envelope import OpenedEnvelope, open_envelope, verify_batch_signature
from lineage_ledger.core.model import Event, decode_event, subject_of
from lineage_ledger.core.sealed import claims_personal
from lineage_ledger.core.tiles import MAX_BUNDLE_ENTRY_BYTES
from lineage_ledger.core.transport_seal import open_for_ledger
from lineage_ledger.errors import InputError, RoutingError
from lineage_ledger.ledger.keyring import Keyring

if TYPE_CHECKING:
    from lineage_ledger.privacy.personal import PersonalData

__all__ = ["MAX_NEW_EVENT_BYTES", "CheckedBatch", "check_batch"]

MAX_NEW_EVENT_BYTES: Final = MAX_BUNDLE_ENTRY_BYTES - 1024
"""The largest event the ledger takes in: its entry (the event plus at most a few hundred bytes the ledger
asserts) must fit the uint16 length prefix of a tlog-tiles entry bundle."""


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """A batch envelope whose structure, signature and events passed ``Ledger.check`` (not yet sequenced)."""

    opened: OpenedEnvelope
    events: list[Event]


def check_batch(
    envelope: bytes,
    keyring: Keyring,
    now: Callable[[], str],
    shard: tuple[int, Callable[[str], int]] | None,
    personal: PersonalData | None = None,
) -> CheckedBatch:
    """``envelope`` opened and checked against ``keyring`` at the time ``now()`` reads (taken once the envelope
    has opened); ``shard`` is this shard's index and the shard of any subject, in one shard of a sharded
    ledger; ``personal``, on a ledger that seals personal fields, opens what producers sealed to its ingest
    key and makes the subject keys durable before sequencing. Raises InputError, RoutingError or a
    signature/keyring error naming what is wrong."""
    opened = open_envelope(envelope)
    stmt = opened.statement
    key = keyring.signing_key(stmt.key_id, stmt.producer, now())
    verify_batch_signature(opened, key.public_key)
    events = [
        decode_event(
            personal.received(raw, f"events[{i}]") if personal is not None else _unsealed(raw, f"events[{i}]"),
            field=f"events[{i}]",
        )
        for i, raw in enumerate(opened.events)
    ]
    if personal is not None:  # the subject keys, durable before sequencing (overlapping a commit in flight)
        personal.prepare(zip(opened.events, events, strict=True))
    for i, raw in enumerate(opened.events):
        if len(raw) > MAX_NEW_EVENT_BYTES:
            raise InputError(
                f"events[{i}]",
                f"event is {len(raw)} bytes; the limit is {MAX_NEW_EVENT_BYTES}, so that its entry fits "
                "a tlog-tiles entry bundle (65,535 bytes)",
            )
    if shard is not None:
        index, home = shard
        for i, event in enumerate(events):
            subject = subject_of(event)
            if home(subject) != index:
                raise RoutingError(
                    f"events[{i}]: {subject} belongs to shard {home(subject)}, not to this shard {index}: its "
                    "producer does not partition by Kafka's murmur2 of the token fingerprint; nothing was written"
                )
    ids = [e.event_id for e in events]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for i, eid in enumerate(ids):
            if eid in seen:
                raise InputError(f"events[{i}].event_id", f"{eid} appears twice in the batch")
            seen.add(eid)
    return CheckedBatch(opened, events)


def _unsealed(raw: bytes, field: str) -> bytes:
    """An event for a ledger that seals nothing: refused if a producer sealed fields to an ingest key, or if
    it claims the name of sealed fields (verification reads a top-level ``personal`` as them)."""
    if claims_personal(raw):
        raise InputError(f"{field}.personal", "is reserved for the fields a ledger seals")
    open_for_ledger(raw, None, field=field)
    return raw
