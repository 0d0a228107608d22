"""Reads an auditor checks offline: entries, timelines, inclusion and consistency proofs, checkpoints, verify.

Proofs are checked the way an outside verifier would: the checkpoint's signature under the log's public key,
then the proof against the root that checkpoint signs, with the pure verifiers of core.merkle.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lineage_ledger.core.merkle import leaf_hash, verify_consistency, verify_inclusion
from lineage_ledger.core.note import Checkpoint, open_note
from tests.conftest import token_event, token_events, token_id
from tests.service.conftest import Harness
from tests.service.test_ingest import assert_problem


def signed_root(service: Harness, note: str, size: int) -> bytes:
    """The root a checkpoint note signs, after checking its signature and size."""
    text, _ = open_note(note, [service.ledger.log_verifier()])
    checkpoint = Checkpoint.from_text(text)
    assert checkpoint.size == size
    return checkpoint.root_hash


def get(service: Harness, path: str, **params: Any) -> Any:
    response = service.client.get(path, params=params, headers=service.auth("auditor"))
    assert response.status_code == 200, response.text
    return response.json()


def test_no_checkpoint_before_the_first_seal(service: Harness) -> None:
    response = service.client.get("/v1/checkpoints/latest", headers=service.auth("auditor"))
    assert_problem(response, 404, "not-found")
    inclusion = service.client.get("/v1/proofs/inclusion", params={"index": 0}, headers=service.auth("auditor"))
    assert_problem(inclusion, 404, "not-found")


def test_entry_shows_its_bytes_hash_status_and_signer(service: Harness) -> None:
    receipts = service.post_batch(service.batch(token_events(3))).json()["receipts"]
    index = receipts[0]["index"]
    entry = get(service, f"/v1/entries/{index}")
    assert entry["type"] == "event"
    assert entry["status"] == "pending"
    assert entry["leaf_hash"] == leaf_hash(entry["entry"].encode()).hex()
    assert entry["signed_by"] == {
        "producer": "test-producer",
        "key_id": "test-producer-1",
        "revoked_at": None,
        "revoked_later": False,
    }
    service.seal()
    assert get(service, f"/v1/entries/{index}")["status"] == "sealed"
    assert get(service, "/v1/entries/0")["type"] == "key"
    assert_problem(service.client.get("/v1/entries/99999", headers=service.auth("auditor")), 404, "not-found")
    assert_problem(service.client.get("/v1/entries/-1", headers=service.auth("auditor")), 422, "invalid-input")
    assert_problem(
        service.client.get("/v1/entries/abc", headers=service.auth("auditor")), 422, "invalid-input", "index"
    )


def test_timeline_of_a_token(service: Harness) -> None:
    tid = token_id("timeline")
    now = time.time_ns()
    events = [
        token_event("ISSUED", tid, now, user_id="alice"),
        token_event("USED", tid, now + 1, resource="/v1/orders", outcome="ALLOW"),
        token_event("REVOKED", tid, now + 2),
        token_event("USED", tid, now + 3, resource="/v1/cart", outcome="ALLOW"),
    ]
    service.post_batch(service.batch(events[:2]))
    service.seal()
    service.post_batch(service.batch(events[2:]))
    timeline = get(service, f"/v1/tokens/{tid}/timeline")
    assert timeline["chain_ok"] is True
    assert [s["event_type"] for s in timeline["timeline"]] == ["ISSUED", "USED", "REVOKED", "USED"]
    assert [s["status"] for s in timeline["timeline"]] == ["sealed", "sealed", "pending", "pending"]
    assert timeline["violations"] == [{"index": timeline["timeline"][3]["index"], "rule": "token.use_after_revoke"}]
    assert timeline["resources"] == ["/v1/orders", "/v1/cart"]
    unknown = service.client.get(f"/v1/tokens/{token_id('never')}/timeline", headers=service.auth("auditor"))
    assert_problem(unknown, 404, "not-found")
    raw = service.client.get("/v1/tokens/not-a-fingerprint/timeline", headers=service.auth("auditor"))
    assert_problem(raw, 422, "invalid-input", "token_id")


def test_inclusion_proofs_verify_against_signed_checkpoints(service: Harness) -> None:
    first = service.post_batch(service.batch(token_events(20))).json()["receipts"]
    service.seal()
    old_size = get(service, "/v1/checkpoints/latest")["size"]
    service.post_batch(service.batch(token_events(30, label="more")))
    service.seal()
    latest = get(service, "/v1/checkpoints/latest")
    for index in (0, first[0]["index"], first[-1]["index"], latest["size"] - 1):
        proof = get(service, "/v1/proofs/inclusion", index=index)
        assert proof["tree_size"] == latest["size"]
        assert proof["checkpoint"] == latest["note"]
        leaf = leaf_hash(proof["entry"].encode())
        assert leaf.hex() == proof["leaf_hash"]
        root = signed_root(service, proof["checkpoint"], latest["size"])
        verify_inclusion(leaf, index, latest["size"], [bytes.fromhex(h) for h in proof["inclusion_path"]], root)
    older = get(service, "/v1/proofs/inclusion", index=first[0]["index"], size=old_size)
    root = signed_root(service, older["checkpoint"], old_size)
    path = [bytes.fromhex(h) for h in older["inclusion_path"]]
    verify_inclusion(leaf_hash(older["entry"].encode()), first[0]["index"], old_size, path, root)

    auditor = service.auth("auditor")
    beyond = service.client.get("/v1/proofs/inclusion", params={"index": old_size, "size": old_size}, headers=auditor)
    assert_problem(beyond, 404, "not-found")
    unsigned = service.client.get("/v1/proofs/inclusion", params={"index": 0, "size": 5}, headers=auditor)
    assert_problem(unsigned, 404, "not-found")
    missing = service.client.get("/v1/proofs/inclusion", headers=auditor)
    assert_problem(missing, 422, "invalid-input", "index")


def test_consistency_proofs_verify_between_signed_checkpoints(service: Harness) -> None:
    sizes = []
    for label in ("a", "b", "c"):
        service.post_batch(service.batch(token_events(11, label=label)))
        service.seal()
        sizes.append(get(service, "/v1/checkpoints/latest")["size"])
    for old, new in [(sizes[0], sizes[1]), (sizes[0], sizes[2]), (sizes[1], sizes[2]), (sizes[2], sizes[2])]:
        proof = get(service, "/v1/proofs/consistency", old=old, new=new)
        old_root = signed_root(service, proof["old_checkpoint"], old)
        new_root = signed_root(service, proof["new_checkpoint"], new)
        verify_consistency(old, new, old_root, new_root, [bytes.fromhex(h) for h in proof["proof"]])
    auditor = service.auth("auditor")
    backwards = service.client.get("/v1/proofs/consistency", params={"old": sizes[1], "new": sizes[0]}, headers=auditor)
    assert_problem(backwards, 422, "invalid-input", "old")
    unsigned = service.client.get("/v1/proofs/consistency", params={"old": 3, "new": sizes[0]}, headers=auditor)
    assert_problem(unsigned, 404, "not-found")


def test_checkpoint_by_size(service: Harness) -> None:
    service.post_batch(service.batch(token_events(5)))
    service.seal()
    latest = get(service, "/v1/checkpoints/latest")
    assert get(service, f"/v1/checkpoints/{latest['size']}") == latest
    signed_root(service, latest["note"], latest["size"])
    other = service.client.get(f"/v1/checkpoints/{latest['size'] - 1}", headers=service.auth("auditor"))
    assert_problem(other, 404, "not-found")


@pytest.mark.parametrize("trusted", [False, True])
def test_verify_runs_the_full_verification(service: Harness, trusted: bool) -> None:
    service.post_batch(service.batch(token_events(30)))
    service.seal()
    body = {"trusted_checkpoint": get(service, "/v1/checkpoints/latest")["note"]} if trusted else None
    service.post_batch(service.batch(token_events(5, label="after")))
    service.seal()
    response = service.client.post("/v1/verify", json=body, headers=service.auth("auditor"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is True, report["problems"]
    assert report["size"] == service.size()
    assert report["key_source"] == "given"
    assert (report["trusted_size"] is not None) is trusted


def test_health_and_readiness(service: Harness) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}


def test_verify_since_a_checkpoint_checks_what_came_after_it(service: Harness) -> None:
    service.post_batch(service.batch(token_events(30)))
    service.seal()
    trusted = get(service, "/v1/checkpoints/latest")
    service.post_batch(service.batch(token_events(5, label="after")))
    service.seal()
    auditor = service.auth("auditor")
    response = service.client.post("/v1/verify", json={"since": trusted["note"]}, headers=auditor)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is True, report["problems"]
    assert report["trusted_size"] == report["since"] == trusted["size"]
    assert report["checked"] == service.size() - trusted["size"]
    garbage = service.client.post("/v1/verify", json={"since": "not a note\n"}, headers=auditor)
    assert_problem(garbage, 422, "invalid-input", "since")
