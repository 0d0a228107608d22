"""What the personal-data tests share: a sealing ledger on either backend, and events about known people."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.privacy.personal import personal_data_meta
from tests.conftest import (
    PRODUCER,
    PRODUCER_KEY_ID,
    SETTINGS,
    append_in_batches,
    make_log_signer,
    make_producer_signer,
    token_event,
    token_id,
)

ALICE = {"user_id": "alice.liddell@example.org", "ip": "198.51.100.23", "user_agent": "AliceBrowser/7.1 (Wonder)"}
BOB = {"user_id": "bob.builder@example.net", "ip": "203.0.113.77", "user_agent": "BobAgent/3.3 (Yes-we-can)"}
"""Personal values no other byte of a test ledger could contain by chance."""


def life(label: str, person: dict[str, str], uses: int, start_ns: int) -> list[bytes]:
    """A token's birth and ``uses`` USED events, each naming ``person`` (user id, address, user agent)."""
    tid = token_id(label)
    events = [token_event("ISSUED", tid, start_ns, client_id="web", **person)]
    for n in range(uses):
        events.append(
            token_event(
                "USED", tid, start_ns + (n + 1) * 1_000_000, resource=f"/v1/{label}/{n}", outcome="ALLOW", **person
            )
        )
    return events


def people_events(start_ns: int | None = None) -> list[bytes]:
    """Two tokens of Alice's and one of Bob's, with their uses, interleaved in time."""
    at = start_ns or time.time_ns() - 3_600_000_000_000
    return life("alice-1", ALICE, 4, at) + life("bob-1", BOB, 3, at + 10) + life("alice-2", ALICE, 2, at + 20)


@dataclass
class Sealing:
    """Where a sealing ledger lives: its URL; the environment names its privacy keys (and key store)."""

    url: str
    keys_file: Path


@contextmanager
def sealing_ledger(sealing: Sealing) -> Iterator[Ledger]:
    """Create the ledger with personal data sealed, the test producer registered."""
    meta = personal_data_meta(sealing.url)
    with Ledger.create(sealing.url, make_log_signer(), settings=SETTINGS, meta=meta) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, make_producer_signer().public_key)
        yield ledger


def ingest(ledger: Ledger, events: list[bytes]) -> None:
    """Append ``events`` in signed batches of the test producer and seal."""
    append_in_batches(ledger, events, make_producer_signer(), batch_size=4)
    ledger.seal()
