"""A running service (in-process, through Starlette's TestClient) over a fresh ledger file per test.

The harness holds one API key per principal of the authorisation matrix, two producers with registered
signing keys, and helpers to sign batches, post them, and run code on the service's writer thread.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from fastapi import FastAPI

with warnings.catch_warnings():
    # Recent Starlette asks for its httpx fork ("httpx2") and warns when it falls back to httpx; the
    # TestClient works the same with either.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.ledger.writer import Ledger, LedgerSettings
from lineage_ledger.service.app import call_on_writer, create_app
from lineage_ledger.service.auth import ApiKeyStore
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_log_signer, make_producer_signer

T = TypeVar("T")

OTHER_PRODUCER = "other-producer"
OTHER_KEY_ID = "other-producer-1"
TOKEN_SECRET = b"service-tests-token-secret-0123456789"
SETTINGS = LedgerSettings(block_size=10_000, block_seconds=1e9)
"""Blocks seal only when a test asks, so sealed/pending status is deterministic."""

PRINCIPALS = ("producer", "other_producer", "auditor", "admin")


@dataclass
class Harness:
    """A service under test and the keys to call it."""

    client: TestClient
    app: FastAPI
    ledger: Ledger
    path: Path
    api_keys: dict[str, str]
    producer: Ed25519Signer
    other: Ed25519Signer

    def auth(self, who: str | None) -> dict[str, str]:
        """Headers for ``who`` (a name in PRINCIPALS, or None for no Authorization header)."""
        return {} if who is None else {"Authorization": f"Bearer {self.api_keys[who]}"}

    def batch(
        self,
        events: Sequence[bytes],
        *,
        producer: str = PRODUCER,
        key_id: str = PRODUCER_KEY_ID,
        signer: Ed25519Signer | None = None,
    ) -> bytes:
        """A signed envelope of ``events`` (by default the test producer's, with its registered key)."""
        return seal_batch(list(events), producer=producer, key_id=key_id, signer=signer or self.producer)

    def post_batch(self, envelope: bytes, who: str | None = "producer") -> httpx.Response:
        """POST the envelope to /v1/batches as ``who``."""
        headers = {**self.auth(who), "Content-Type": "application/json"}
        response: httpx.Response = self.client.post("/v1/batches", content=envelope, headers=headers)
        return response

    def on_writer(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the service's writer thread (the only thread that may touch the ledger)."""
        return call_on_writer(self.app, fn)

    def size(self) -> int:
        """The ledger's size as its sequencer sees it."""
        return self.on_writer(lambda: self.ledger.size)

    def stored_size(self) -> int:
        """The number of entries in the store file."""
        return self.on_writer(self.ledger.store.size)

    def seal(self) -> None:
        """Seal the open block now."""
        self.on_writer(self.ledger.seal)


def make_harness(
    tmp_path: Path,
    *,
    settings: LedgerSettings = SETTINGS,
    clock: Callable[[], int] | None = None,
    monotonic: Callable[[], float] | None = None,
    **app_options: object,
) -> Iterator[Harness]:
    """Create the ledger, register both producers' keys, start the app; stop and close afterwards.

    ``clock`` and ``monotonic`` replace the ledger's clocks (and ``clock`` the app's) for tests of time.
    """
    path = tmp_path / "ledger.db"
    if clock is not None:
        app_options["clock"] = clock
    ledger = Ledger.create(
        str(path),
        make_log_signer(),
        settings=settings,
        clock=clock or time.time_ns,
        monotonic=monotonic or time.monotonic,
    )
    producer = make_producer_signer()
    other = Ed25519Signer(OTHER_PRODUCER, bytes(range(64, 96)))
    ledger.register_key(PRODUCER, PRODUCER_KEY_ID, producer.public_key)
    ledger.register_key(OTHER_PRODUCER, OTHER_KEY_ID, other.public_key)
    store = ApiKeyStore.in_memory()
    keys = {
        "producer": store.create("producer", PRODUCER)[1],
        "other_producer": store.create("producer", OTHER_PRODUCER)[1],
        "auditor": store.create("auditor")[1],
        "admin": store.create("admin")[1],
    }
    app = create_app(ledger, api_keys=store, token_secret=TOKEN_SECRET, **app_options)  # type: ignore[arg-type]
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Harness(client, app, ledger, path, keys, producer, other)
    finally:
        ledger.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Harness]:
    """A fresh service over a fresh ledger."""
    yield from make_harness(tmp_path)
