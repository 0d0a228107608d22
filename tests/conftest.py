"""Shared fixtures: deterministic keys, canonical token events, and a small multi-block ledger on disk.

The ledger built here is what the integration tests attack and read back: a registered producer key, a few
hundred token events (ISSUED, USED ..., REVOKED over a handful of tokens) appended in signed batches, sealed
every ``BLOCK_SIZE`` entries, so it holds several blocks, several signed checkpoints and, past 256 entries,
stored tree nodes.
"""

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import uuid_utils
from hypothesis import settings

from lineage_ledger.core.crypto import Ed25519Signer, token_fingerprint
from lineage_ledger.core.entry import EventEntry, decode_entry
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.model import TokenEvent, TokenPayload, encode_event
from lineage_ledger.core.note import NoteVerifier
from lineage_ledger.ledger.writer import Ledger, LedgerSettings, Receipt

pytest_plugins = ["tests.services", "tests.services_redis", "tests.services_kafka"]

# Properties are about correctness, not speed; on a shared 2-core machine a per-example deadline only adds
# flakiness. Speed is measured by the benchmarks.
settings.register_profile("lineage", deadline=None)
settings.load_profile("lineage")

LOG_NAME = "test.lineage-ledger.local/log"
PRODUCER = "test-producer"
PRODUCER_KEY_ID = "test-producer-1"
FINGERPRINT_SECRET = b"conftest-fingerprint-secret!"
BLOCK_SIZE = 50
BATCH_SIZE = 7
LEDGER_EVENTS = 560
"""Enough events for more than 512 entries, so level-8 tree nodes (0, 1) are stored."""

# Fixed seeds: the keys are the same in every process, so helper processes can rebuild them.
LOG_SEED = bytes(range(32))
PRODUCER_SEED = bytes(range(32, 64))
SETTINGS = LedgerSettings(block_size=BLOCK_SIZE, block_seconds=1e9)
"""Blocks close on size only, never on age, so the block layout depends on the inputs alone."""


def make_log_signer() -> Ed25519Signer:
    """The log key that signs checkpoints of the test ledgers."""
    return Ed25519Signer(LOG_NAME, LOG_SEED)


def make_producer_signer() -> Ed25519Signer:
    """The producer key that signs batches, registered as ``PRODUCER_KEY_ID``."""
    return Ed25519Signer(PRODUCER, PRODUCER_SEED)


def token_id(label: str) -> str:
    """The fingerprint of the raw token named ``label``."""
    return token_fingerprint(FINGERPRINT_SECRET, f"raw-token-{label}")


def token_event(event_type: str, token: str, occurred_ns: int, **payload: object) -> bytes:
    """Canonical bytes of one token event with a fresh UUIDv7 id (``token`` is a fingerprint)."""
    return encode_event(
        TokenEvent(
            event_id=str(uuid_utils.uuid7()),
            event_type=event_type,  # type: ignore[arg-type]
            token_id=token,
            occurred_at=format_reading(occurred_ns, 0),
            schema_version=1,
            payload=TokenPayload(**payload),  # type: ignore[arg-type]
        )
    )


def token_events(count: int, *, tokens: int = 5, label: str = "t", start_ns: int | None = None) -> list[bytes]:
    """``count`` canonical token events spread round-robin over ``tokens`` tokens, in time order.

    Each token's first event is ISSUED, its last (if it has more than one) REVOKED, the ones between USED:
    a lifecycle that breaks no rule, so every verdict is "ok".
    """
    start = time.time_ns() - 3_600_000_000_000 if start_ns is None else start_ns
    per_token = [count // tokens + (j < count % tokens) for j in range(tokens)]
    out: list[bytes] = []
    for i in range(count):
        j, step = i % tokens, i // tokens
        tid = token_id(f"{label}-{j}")
        at = start + i * 1_000_000
        if step == 0:
            out.append(token_event("ISSUED", tid, at, user_id=f"user-{j}", scopes=("read",)))
        elif step == per_token[j] - 1:
            out.append(token_event("REVOKED", tid, at, reason="logout"))
        else:
            out.append(token_event("USED", tid, at, resource=f"/v1/orders/{i}", outcome="ALLOW"))
    return out


def append_in_batches(
    ledger: Ledger, events: Sequence[bytes], signer: Ed25519Signer, batch_size: int = BATCH_SIZE
) -> list[Receipt]:
    """Append ``events`` in signed batches of ``batch_size``; return every receipt in order."""
    receipts: list[Receipt] = []
    for i in range(0, len(events), batch_size):
        envelope = seal_batch(events[i : i + batch_size], producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer)
        receipts.extend(ledger.append(envelope).receipts)
    return receipts


@dataclass(frozen=True, slots=True)
class BuiltLedger:
    """A sealed ledger file and what went into it."""

    path: Path
    verifier: NoteVerifier
    events: tuple[bytes, ...]
    receipts: tuple[Receipt, ...]
    size: int
    checkpoint_sizes: tuple[int, ...]

    @property
    def url(self) -> str:
        """The ledger URL (a plain path)."""
        return str(self.path)

    def copy_to(self, path: Path) -> BuiltLedger:
        """A copy of the ledger file at ``path`` (the file is complete: the writer closed it)."""
        shutil.copyfile(self.path, path)
        return replace(self, path=path)


def build_ledger(path: Path, events: int = LEDGER_EVENTS) -> BuiltLedger:
    """Create a ledger at ``path``, register the producer key, append ``events`` events and seal the rest."""
    log, producer = make_log_signer(), make_producer_signer()
    with Ledger.create(str(path), log, settings=SETTINGS) as ledger:
        ledger.register_key(PRODUCER, PRODUCER_KEY_ID, producer.public_key)
        bodies = token_events(events)
        receipts = append_in_batches(ledger, bodies, producer)
        ledger.seal()
        size = ledger.size
        checkpoints = tuple(row.size for row in ledger.store.checkpoints())
        verifier = ledger.log_verifier()
    assert all(r.verdict == "ok" and not r.duplicate for r in receipts)
    return BuiltLedger(path, verifier, tuple(bodies), tuple(receipts), size, checkpoints)


@pytest.fixture(autouse=True)
def _thawed_collector() -> Iterator[None]:
    """A command run in-process (serve, consume) may freeze the garbage collector at seals: undo it after
    each test, so frozen objects do not outlive the test that made them."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


@pytest.fixture(scope="session")
def pristine_ledger(tmp_path_factory: pytest.TempPathFactory) -> BuiltLedger:
    """One ledger built per session; tests get copies (``built_ledger``) and never touch this file."""
    return build_ledger(tmp_path_factory.mktemp("pristine") / "ledger.db")


@pytest.fixture
def built_ledger(tmp_path: Path, pristine_ledger: BuiltLedger) -> BuiltLedger:
    """A private copy, in ``tmp_path``, of the small sealed multi-block ledger."""
    return pristine_ledger.copy_to(tmp_path / "ledger.db")


@pytest.fixture
def log_signer() -> Ed25519Signer:
    """The log signing key of ``built_ledger``."""
    return make_log_signer()


@pytest.fixture
def producer_signer() -> Ed25519Signer:
    """The producer key registered in ``built_ledger`` as ``PRODUCER_KEY_ID``."""
    return make_producer_signer()


def signed_envelopes(events: Sequence[bytes], size: int) -> list[bytes]:
    """``events`` in signed batches of ``size`` (the test producer's key)."""
    signer = make_producer_signer()
    return [
        seal_batch(list(events[i : i + size]), producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=signer)
        for i in range(0, len(events), size)
    ]


def event_log(ledger: Ledger) -> list[tuple[str, str, bytes]]:
    """(subject, verdict, event bytes) of every event entry, in log order. Two ledgers fed the same batches
    differently differ in indices (where seals fall) and recorded_at, so in hashes; not in this."""
    out = []
    for row in ledger.store.entries(0, ledger.size):
        entry = decode_entry(row.body)
        if isinstance(entry, EventEntry):
            out.append((row.subject, row.verdict, bytes(entry.event)))
    return out
