"""Producer signing keys through the API: registration, rotation with a start time, revocation, history.

The ledger's clock is a fake here, so a key's start time can be reached without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.entry import KeyEntry, decode_entry
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.ledger.verify import verify_ledger
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.service.app import SERVICE_PRODUCER, create_app
from lineage_ledger.service.auth import ApiKeyStore
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_log_signer, token_events
from tests.service.conftest import SETTINGS, Harness, make_harness
from tests.service.test_ingest import assert_problem

S = 1_000_000_000


class FakeClock:
    """Nanoseconds since the epoch that move only when told."""

    def __init__(self) -> None:
        self.now = time.time_ns()

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def timed(tmp_path: Path) -> Iterator[tuple[Harness, FakeClock]]:
    clock = FakeClock()
    for harness in make_harness(tmp_path, clock=clock):
        yield harness, clock


def admin_post(service: Harness, path: str, body: Any = None) -> Any:
    return service.client.post(path, json=body, headers=service.auth("admin"))


def test_rotation_and_revocation_keep_history_verifiable(timed: tuple[Harness, FakeClock]) -> None:
    service, clock = timed
    new_signer = Ed25519Signer(PRODUCER, bytes(range(7, 39)))
    old_batch = service.post_batch(service.batch(token_events(10, start_ns=clock.now - 60 * S)))
    assert old_batch.status_code == 200
    old_index = old_batch.json()["receipts"][0]["index"]

    start = format_reading(clock.now + 10 * S, 0)
    registered = admin_post(
        service,
        "/v1/keys",
        {
            "producer": PRODUCER,
            "key_id": "test-producer-2",
            "public_key": new_signer.public_key.hex(),
            "valid_from": start,
        },
    )
    assert registered.status_code == 201, registered.text
    assert registered.json()["valid_from"] == start

    def signed_by_new(label: str) -> bytes:
        return service.batch(
            token_events(4, label=label, start_ns=clock.now), key_id="test-producer-2", signer=new_signer
        )

    size = service.stored_size()
    early = service.post_batch(signed_by_new("early"))
    assert "valid from" in assert_problem(early, 403, "key-not-accepted")["detail"]
    assert service.stored_size() == size

    clock.now += 20 * S
    assert service.post_batch(signed_by_new("rotated")).status_code == 200
    assert service.post_batch(service.batch(token_events(2, label="old-still", start_ns=clock.now))).status_code == 200

    revoked = admin_post(service, f"/v1/keys/{PRODUCER_KEY_ID}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    size = service.stored_size()
    refused = service.post_batch(service.batch(token_events(2, label="too-late", start_ns=clock.now)))
    assert_problem(refused, 403, "key-not-accepted")
    assert service.stored_size() == size
    assert service.post_batch(signed_by_new("after")).status_code == 200

    # every key change is an entry in the log itself
    for change in (registered.json(), revoked.json()):
        entry = service.client.get(f"/v1/entries/{change['index']}", headers=service.auth("auditor")).json()
        assert entry["type"] == "key"
        body = decode_entry(entry["entry"].encode())
        assert isinstance(body, KeyEntry)
        assert body.change.key_id in {"test-producer-2", PRODUCER_KEY_ID}

    # history signed by the revoked key is shown as such, and still verifies
    old_entry = service.client.get(f"/v1/entries/{old_index}", headers=service.auth("auditor")).json()
    assert old_entry["signed_by"]["key_id"] == PRODUCER_KEY_ID
    assert old_entry["signed_by"]["revoked_later"] is True
    keys = {k["key_id"]: k for k in service.client.get("/v1/keys", headers=service.auth("auditor")).json()}
    assert keys[PRODUCER_KEY_ID]["revoked_at"] == revoked.json()["revoked_at"]
    assert keys["test-producer-2"]["revoked_at"] is None
    service.seal()
    report = service.client.post("/v1/verify", headers=service.auth("auditor")).json()
    assert report["ok"] is True, report["problems"]
    direct = verify_ledger(str(service.path), verifier=service.ledger.log_verifier(), workers=1)
    assert direct.ok, direct.problems
    assert direct.envelopes >= 4


def test_key_registration_errors_name_the_field(service: Harness) -> None:
    size = service.stored_size()
    good = {"producer": "svc-b", "key_id": "svc-b-1", "public_key": "ab" * 32}
    cases = [
        ({**good, "public_key": "zz"}, 422, "invalid-input", "public_key"),
        ({**good, "producer": "Not Valid"}, 422, "invalid-input", "producer"),
        ({**good, "key_id": ""}, 422, "invalid-input", "key_id"),
        ({**good, "valid_from": "yesterday"}, 422, "invalid-input", "valid_from"),
        (
            {**good, "valid_from": format_reading(2 * 10**18, 0), "valid_until": format_reading(10**18, 0)},
            422,
            "invalid-input",
            "valid_until",
        ),
        ({**good, "producer": SERVICE_PRODUCER}, 422, "invalid-input", "producer"),
        ({**good, "extra": 1}, 422, "invalid-input", "extra"),
        ({k: v for k, v in good.items() if k != "key_id"}, 422, "invalid-input", "key_id"),
        ({**good, "key_id": 5}, 422, "invalid-input", "key_id"),
        ({**good, "key_id": PRODUCER_KEY_ID}, 409, "conflict", None),
    ]
    for body, status, slug, field in cases:
        assert_problem(admin_post(service, "/v1/keys", body), status, slug, field)
    assert service.stored_size() == size
    assert admin_post(service, "/v1/keys", good).status_code == 201
    assert service.stored_size() == size + 1


def test_key_revocation_errors(service: Harness) -> None:
    assert_problem(admin_post(service, "/v1/keys/no-such-key/revoke"), 404, "not-found")
    assert_problem(
        admin_post(service, f"/v1/keys/{PRODUCER_KEY_ID}/revoke", {"at": "soon"}), 422, "invalid-input", "at"
    )
    service_key = service.app.state.lineage.key_id
    assert_problem(admin_post(service, f"/v1/keys/{service_key}/revoke"), 409, "conflict")
    assert admin_post(service, f"/v1/keys/{PRODUCER_KEY_ID}/revoke").status_code == 200
    size = service.stored_size()
    assert_problem(admin_post(service, f"/v1/keys/{PRODUCER_KEY_ID}/revoke"), 409, "conflict")
    assert service.stored_size() == size


def test_the_service_key_is_registered_once(tmp_path: Path) -> None:
    signer = Ed25519Signer(SERVICE_PRODUCER, bytes(range(1, 33)))
    for harness in make_harness(tmp_path, service_signer=signer):
        service_keys = [k for k in harness.ledger.keyring.producer_keys() if k.producer == SERVICE_PRODUCER]
        assert [k.public_key for k in service_keys] == [signer.public_key]
        size = harness.stored_size()
    # a restart with the same key (the fixture has stopped its app) reuses the registration
    with Ledger.open(str(tmp_path / "ledger.db"), make_log_signer(), settings=SETTINGS) as ledger:
        app = create_app(ledger, api_keys=ApiKeyStore.in_memory(), token_secret=b"x" * 32, service_signer=signer)
        app.state.lineage.close()
        assert ledger.size == size
