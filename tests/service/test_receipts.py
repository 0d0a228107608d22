"""POST /v1/batches answers with the log key's signed promise for its events and the latest checkpoint."""

from __future__ import annotations

from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.note import Checkpoint, open_note
from lineage_ledger.core.receipt import SignedPromise, promise_path
from tests.conftest import token_events
from tests.service.conftest import Harness


def test_every_receipt_carries_a_promise_its_path_proves(service: Harness) -> None:
    verifier = service.on_writer(service.ledger.log_verifier)
    response = service.post_batch(service.batch(token_events(9, tokens=3)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checkpoint"] is None  # nothing sealed yet
    assert len(body["promises"]) == 1  # one commit, one promise, listed once
    promise = SignedPromise.from_json(body["promises"][0]).verify(verifier)
    auditor = service.auth("auditor")
    for receipt in body["receipts"]:
        assert receipt["promise"] == 0
        leaf = bytes.fromhex(receipt["leaf"])
        entry = service.client.get(f"/v1/entries/{receipt['index']}", headers=auditor).json()
        assert leaf == leaf_hash(entry["entry"].encode())
        promise_path(promise, receipt["index"], leaf, [bytes.fromhex(h) for h in receipt["path"]])
    assert promise.first == body["receipts"][0]["index"]
    assert promise.size == body["size"]

    service.seal()
    later = service.post_batch(service.batch(token_events(2, label="later"))).json()
    text, _ = open_note(later["checkpoint"], [verifier])
    assert Checkpoint.from_text(text).size == later["sealed_size"] > promise.size


def test_a_retried_batch_answers_with_the_same_promise(service: Harness) -> None:
    envelope = service.batch(token_events(4, label="retry"))
    first = service.post_batch(envelope).json()
    again = service.post_batch(envelope).json()
    assert all(r["duplicate"] for r in again["receipts"])
    assert again["promises"] == first["promises"]
    assert [r["path"] for r in again["receipts"]] == [r["path"] for r in first["receipts"]]
