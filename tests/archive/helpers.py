"""A ledger with a token family, several sealed blocks and an open one, on SQLite or PostgreSQL."""

from __future__ import annotations

import time
from dataclasses import dataclass

from lineage_ledger.archive.writer import sealed_blocks
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_log_signer, make_producer_signer, token_event, token_id

BLOCK = 40
SETTINGS = LedgerSettings(block_size=BLOCK, block_seconds=1e9)
OLD, NEW, CHILD = token_id("archive-old"), token_id("archive-both"), token_id("archive-child")


@dataclass(frozen=True, slots=True)
class Built:
    url: str
    size: int
    cut: str
    """An HLC reading between the third and fourth sealed blocks: archiving before it leaves later ones hot."""
    archived_last: int
    """The last index that archiving before ``cut`` takes (the third block's seal)."""


def build(url: str, events: int = 300) -> Built:
    """Events for 6 tokens round-robin (OLD only early, NEW early and late, CHILD refreshed from NEW late),
    sealed every BLOCK entries; the last few events stay in the open block."""
    producer = make_producer_signer()
    start = time.time_ns() - 3_600_000_000_000
    with Ledger.create(url, make_log_signer(), settings=SETTINGS) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, producer.public_key)
        bodies = [
            token_event("ISSUED", OLD, start, user_id="olga"),
            token_event("ISSUED", NEW, start + 1, user_id="nina"),
        ]
        for i in range(events):
            tid = token_id(f"archive-{i % 4}") if i < events - 20 else token_id(f"archive-late-{i % 3}")
            kind = "ISSUED" if i < 4 else "USED"
            payload: dict[str, object] = (
                {"user_id": f"u{i % 4}"} if kind == "ISSUED" else {"resource": f"/r/{i % 7}", "outcome": "ALLOW"}
            )
            bodies.append(token_event(kind, tid, start + 10 + i, **payload))
            if i == 30:
                bodies.append(token_event("USED", OLD, start + 10 + i, resource="/old", outcome="ALLOW"))
                bodies.append(token_event("USED", NEW, start + 10 + i, resource="/both", outcome="ALLOW"))
        bodies.append(token_event("USED", NEW, start + 500, resource="/both", outcome="ALLOW"))
        bodies.append(token_event("REFRESHED", CHILD, start + 501, parent_token_id=NEW, user_id="nina"))
        bodies.append(token_event("USED", CHILD, start + 502, resource="/child", outcome="ALLOW"))
        for i in range(0, len(bodies), 9):
            ledger.append(seal_batch(bodies[i : i + 9], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=producer))
        blocks = sealed_blocks(ledger.store)
        assert len(blocks) >= 5
        third = blocks[2]
        cut = blocks[3].hlc_first
        size = ledger.size
    return Built(url, size, cut, third.seal)
