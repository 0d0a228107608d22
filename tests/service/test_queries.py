"""Lineage questions and evidence bundles over HTTP give what the ledger recorded, with verifiable proofs."""

from __future__ import annotations

import time

from lineage_ledger.core.merkle import leaf_hash, verify_inclusion
from lineage_ledger.core.note import Checkpoint, open_note
from lineage_ledger.offline import verify_bundle
from tests.conftest import token_event
from tests.service.conftest import Harness
from tests.service.test_ingest import assert_problem

PARENT = "a" * 64
CHILD = "b" * 64
OTHER = "c" * 64


def _history(service: Harness) -> list[int]:
    t = time.time_ns() - 60_000_000_000
    events = [
        token_event("ISSUED", PARENT, t, user_id="u-1", policy_version="v1"),
        token_event("USED", PARENT, t + 1_000, resource="/orders", outcome="ALLOW"),
        token_event("ROTATED", CHILD, t + 2_000, parent_token_id=PARENT, user_id="u-1"),
        token_event("USED", CHILD, t + 3_000, resource="/billing", outcome="ALLOW"),
        token_event("ISSUED", OTHER, t + 4_000, user_id="u-2"),
        token_event("USED", OTHER, t + 5_000, resource="/orders", outcome="DENY"),
        token_event("REVOKED", CHILD, t + 6_000),
    ]
    receipts = service.post_batch(service.batch(events)).json()["receipts"]
    service.seal()
    return [r["index"] for r in receipts]


def test_family_blast_radius_and_resource_answers(service: Harness) -> None:
    indices = _history(service)
    auditor = service.auth("auditor")
    family = service.client.get(f"/v1/query/tokens/{CHILD}/family", headers=auditor).json()
    assert family["answer"]["root"] == PARENT
    assert family["answer"]["edges"] == [{"parent": PARENT, "child": CHILD, "kind": "ROTATED", "index": indices[2]}]

    blast = service.client.get(f"/v1/query/tokens/{PARENT}/blast-radius", params={"proofs": "true"}, headers=auditor)
    body = blast.json()
    assert body["answer"]["tokens"] == [PARENT, CHILD]
    assert body["answer"]["resources"] == ["/orders", "/billing"]
    assert body["evidence"] == [indices[1], indices[3]]
    proofs = body["proofs"]
    text, _ = open_note(proofs["checkpoint"], [service.ledger.verifier])
    checkpoint = Checkpoint.from_text(text)
    for index in body["evidence"]:
        entry = proofs["entries"][str(index)].encode()
        path = [bytes.fromhex(h) for h in proofs["inclusion"][str(index)]]
        verify_inclusion(leaf_hash(entry), index, checkpoint.size, path, checkpoint.root_hash)

    users = service.client.get("/v1/query/resources", params={"resource": "/orders"}, headers=auditor).json()
    assert users["answer"]["tokens"] == sorted([PARENT, OTHER])

    assert service.client.get(f"/v1/query/tokens/{PARENT}/family", headers=service.auth("producer")).status_code == 403


def test_evidence_endpoint_bundle_verifies_offline(service: Harness) -> None:
    _history(service)
    response = service.client.get(f"/v1/evidence/{CHILD}", headers=service.auth("auditor"))
    assert response.status_code == 200
    report = verify_bundle(response.content, log_key=str(service.ledger.verifier))
    assert report.ok, report.problems
    assert report.count == 3  # ROTATED, USED, REVOKED
    assert report.revoked


def test_an_unknown_token_is_not_found_and_a_malformed_one_is_refused(service: Harness) -> None:
    _history(service)
    auditor = service.auth("auditor")
    never, t = "d" * 64, str(time.time_ns())
    for route, params in (
        ("family", {}),
        ("blast-radius", {}),
        ("since-refresh", {}),
        ("policy", {}),
        ("state", {"at": t}),
    ):
        unknown = service.client.get(f"/v1/query/tokens/{never}/{route}", params=params, headers=auditor)
        assert unknown.status_code == 404, (route, unknown.text)
        assert unknown.headers["content-type"].startswith("application/problem+json")
        assert never in unknown.json()["detail"]
        malformed = service.client.get(f"/v1/query/tokens/{'D' * 64}/{route}", params=params, headers=auditor)
        assert malformed.status_code == 422, (route, malformed.text)
        assert malformed.headers["content-type"].startswith("application/problem+json")


def test_evidence_of_an_unknown_token_says_it_proves_absence(service: Harness) -> None:
    _history(service)
    auditor = service.auth("auditor")
    never = "d" * 64
    absent = service.client.get(f"/v1/evidence/{never}", headers=auditor)
    assert absent.status_code == 200
    assert absent.headers["lineage-evidence"] == "absence"
    report = verify_bundle(absent.content, log_key=str(service.ledger.verifier))
    assert (report.ok, report.count, report.subject) == (True, 0, "token:" + never)
    present = service.client.get(f"/v1/evidence/token:{CHILD}", headers=auditor)
    assert present.headers["lineage-evidence"] == "history"
    for malformed in ("token:" + "D" * 64, "token:abc", "abc"):
        refused = service.client.get(f"/v1/evidence/{malformed}", headers=auditor)
        assert refused.status_code == 422, (malformed, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")


def test_time_parameters_take_rfc3339_and_refuse_what_is_not_a_time(service: Harness) -> None:
    _history(service)
    auditor = service.auth("auditor")
    now = time.time_ns()
    zoned = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now // 1_000_000_000 + 60))
    state = service.client.get(f"/v1/query/tokens/{CHILD}/state", params={"at": zoned}, headers=auditor)
    assert state.status_code == 200, state.text
    assert state.json()["answer"]["state"] == "REVOKED"
    epoch = service.client.get(f"/v1/query/tokens/{OTHER}/state", params={"at": str(now // 10**9)}, headers=auditor)
    assert epoch.json()["answer"]["state"] == "ISSUED"
    blast = service.client.get(
        f"/v1/query/tokens/{PARENT}/blast-radius", params={"start": "1970-01-02", "end": zoned}, headers=auditor
    )
    assert blast.json()["answer"]["resources"] == ["/orders", "/billing"]
    for path, name in [
        (f"/v1/query/tokens/{CHILD}/state", "at"),
        ("/v1/query/policies", "at"),
        (f"/v1/query/tokens/{PARENT}/blast-radius", "start"),
        ("/v1/query/users/u-1/policy-changes", "end"),
    ]:
        params = {name: "2026-12-01T09:30:00"}  # no zone
        if name != "at":
            params["at"] = zoned
        assert_problem(service.client.get(path, params=params, headers=auditor), 422, "invalid-input", name)


def test_tokens_of_a_user_and_active_tokens_with_proofs(service: Harness) -> None:
    indices = _history(service)
    auditor = service.auth("auditor")
    held = service.client.get("/v1/query/users/u-1/tokens", params={"proofs": "true"}, headers=auditor).json()
    assert [life["token_id"] for life in held["answer"]["tokens"]] == [PARENT, CHILD]
    assert [life["ended_by"] for life in held["answer"]["tokens"]] == ["ROTATED", "REVOKED"]
    assert held["evidence"] == [indices[0], indices[2], indices[6]]
    text, _ = open_note(held["proofs"]["checkpoint"], [service.ledger.verifier])
    checkpoint = Checkpoint.from_text(text)
    for index in held["evidence"]:
        entry = held["proofs"]["entries"][str(index)].encode()
        path = [bytes.fromhex(h) for h in held["proofs"]["inclusion"][str(index)]]
        verify_inclusion(leaf_hash(entry), index, checkpoint.size, path, checkpoint.root_hash)
    now = str(time.time_ns())
    active = service.client.get("/v1/query/active-tokens", params={"at": now}, headers=auditor).json()
    assert [life["token_id"] for life in active["answer"]["tokens"]] == [OTHER]
    mine = service.client.get("/v1/query/active-tokens", params={"at": now, "user": "u-1"}, headers=auditor).json()
    assert mine["answer"]["tokens"] == []
    refused = service.client.get("/v1/query/active-tokens", params={"at": "now"}, headers=auditor)
    assert_problem(refused, 422, "invalid-input", "at")
