"""POST /v1/batches: receipts, idempotent retries, conflicts, size limits, refused signers, pushback, sealing.

Every refusal is checked twice: the status and problem document, and that the store holds exactly as many
entries as before.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.ledger.writer import LedgerSettings
from lineage_ledger.service.problems import PROBLEM_JSON, problem_type_uri
from tests.conftest import PRODUCER, token_event, token_events, token_id
from tests.service.conftest import OTHER_KEY_ID, OTHER_PRODUCER, Harness, make_harness


def assert_problem(response: httpx.Response, status: int, slug: str, field: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status and type (naming ``field`` when given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["type"] == problem_type_uri(slug)
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert "field" in problem
    if field is not None:
        assert problem["field"] == field, problem
    return problem


def compact(value: Any) -> bytes:
    """JSON without whitespace, keys in their existing order (so canonical events stay byte-identical)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_receipts_name_each_event_its_index_and_pending_then_sealed(service: Harness) -> None:
    events = token_events(10, tokens=2)
    first = service.size()
    response = service.post_batch(service.batch(events))
    assert response.status_code == 200, response.text
    body = response.json()
    ids = [json.loads(e)["event_id"] for e in events]
    assert [r["event_id"] for r in body["receipts"]] == ids
    assert [r["index"] for r in body["receipts"]] == list(range(first, first + 10))
    assert all(r["verdict"] == "ok" and not r["duplicate"] and r["status"] == "pending" for r in body["receipts"])
    assert body["size"] == first + 10 == service.stored_size()

    service.seal()
    again = service.post_batch(service.batch(events)).json()
    assert [r["status"] for r in again["receipts"]] == ["sealed"] * 10


def test_retried_batch_returns_the_original_result_and_writes_nothing(service: Harness) -> None:
    envelope = service.batch(token_events(25))
    original = service.post_batch(envelope).json()
    size = service.stored_size()
    for _ in range(2):
        retry = service.post_batch(envelope)
        assert retry.status_code == 200
        receipts = retry.json()["receipts"]
        assert [r["index"] for r in receipts] == [r["index"] for r in original["receipts"]]
        assert all(r["duplicate"] for r in receipts)
    assert service.stored_size() == size


def test_retry_with_new_events_records_only_the_new_ones(service: Harness) -> None:
    events = token_events(6, tokens=3)
    first = service.post_batch(service.batch(events[:3])).json()["receipts"]
    mixed = service.post_batch(service.batch(events)).json()["receipts"]
    assert [r["duplicate"] for r in mixed] == [True, True, True, False, False, False]
    assert [r["index"] for r in mixed[:3]] == [r["index"] for r in first]
    assert mixed[3]["index"] == first[-1]["index"] + 1


def test_event_id_reused_with_other_bytes_is_409_and_writes_nothing(service: Harness) -> None:
    tid = token_id("conflict")
    original = token_event("ISSUED", tid, time.time_ns(), user_id="alice")
    assert service.post_batch(service.batch([original])).status_code == 200
    size = service.stored_size()
    forged = json.loads(original)
    forged["payload"]["user_id"] = "mallory"
    forged_bytes = json.dumps(forged, separators=(",", ":"), sort_keys=True).encode()
    fresh = token_event("USED", tid, time.time_ns(), resource="/r", outcome="ALLOW")
    response = service.post_batch(service.batch([fresh, forged_bytes]))
    assert_problem(response, 409, "conflict")
    assert service.stored_size() == size
    assert service.on_writer(lambda: service.ledger.store.events_by_id([json.loads(fresh)["event_id"]])) == {}


@pytest.fixture
def small_bodies(tmp_path: Path) -> Iterator[Harness]:
    """A service that takes bodies of at most 4 KiB."""
    yield from make_harness(tmp_path, max_body_bytes=4096)


def test_oversized_body_is_413_declared_or_streamed(small_bodies: Harness) -> None:
    service = small_bodies
    envelope = service.batch(token_events(40))
    assert len(envelope) > 4096
    size = service.stored_size()
    assert_problem(service.post_batch(envelope), 413, "body-too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold on the stream itself
        for i in range(0, len(envelope), 1000):
            yield envelope[i : i + 1000]

    streamed = service.client.post(
        "/v1/batches", content=chunks(), headers={**service.auth("producer"), "Content-Type": "application/json"}
    )
    assert_problem(streamed, 413, "body-too-large")
    assert service.stored_size() == size
    assert service.post_batch(service.batch(token_events(2))).status_code == 200  # small bodies still pass


def test_producer_key_cannot_append_for_another_producer(service: Harness) -> None:
    size = service.stored_size()
    theirs = service.batch(token_events(3), producer=OTHER_PRODUCER, key_id=OTHER_KEY_ID, signer=service.other)
    assert_problem(service.post_batch(theirs, "producer"), 403, "wrong-producer", "payload.producer")
    mine = service.batch(token_events(3))
    assert_problem(service.post_batch(mine, "other_producer"), 403, "wrong-producer")
    assert service.stored_size() == size
    assert service.post_batch(theirs, "other_producer").status_code == 200


def test_signing_key_of_another_producer_is_refused(service: Harness) -> None:
    size = service.stored_size()
    envelope = service.batch(token_events(3), producer=PRODUCER, key_id=OTHER_KEY_ID, signer=service.other)
    problem = assert_problem(service.post_batch(envelope), 403, "key-not-accepted")
    assert OTHER_PRODUCER in problem["detail"]
    assert service.stored_size() == size


def test_unknown_expired_and_revoked_keys_are_refused(service: Harness) -> None:
    now = time.time_ns()
    expired = Ed25519Signer(PRODUCER, bytes(range(100, 132)))
    revoked = Ed25519Signer(PRODUCER, bytes(range(140, 172)))
    service.on_writer(
        lambda: service.ledger.register_key(
            PRODUCER,
            "expired-1",
            expired.public_key,
            valid_from=format_reading(now - 7200 * 10**9, 0),
            valid_until=format_reading(now - 3600 * 10**9, 0),
        )
    )
    service.on_writer(lambda: service.ledger.register_key(PRODUCER, "revoked-1", revoked.public_key))
    accepted = service.batch(token_events(2), key_id="revoked-1", signer=revoked)
    assert service.post_batch(accepted).status_code == 200
    service.on_writer(lambda: service.ledger.revoke_key("revoked-1"))
    size = service.stored_size()

    unknown = service.batch(token_events(2), key_id="never-registered", signer=expired)
    assert "unknown" in assert_problem(service.post_batch(unknown), 403, "key-not-accepted")["detail"]
    too_late = service.batch(token_events(2), key_id="expired-1", signer=expired)
    assert "valid" in assert_problem(service.post_batch(too_late), 403, "key-not-accepted")["detail"]
    after_revocation = service.batch(token_events(2), key_id="revoked-1", signer=revoked)
    assert "revoked" in assert_problem(service.post_batch(after_revocation), 403, "key-not-accepted")["detail"]
    # replaying the batch the key signed before its revocation is refused too: the key signs nothing now
    assert_problem(service.post_batch(accepted), 403, "key-not-accepted")
    assert service.stored_size() == size


def test_wrong_and_missing_signatures_are_refused(service: Harness) -> None:
    size = service.stored_size()
    impostor = Ed25519Signer(PRODUCER, bytes(range(200, 232)))
    forged = service.batch(token_events(2), signer=impostor)
    assert_problem(service.post_batch(forged), 403, "bad-signature")
    unsigned = json.loads(service.batch(token_events(2)))
    unsigned["signatures"] = []
    assert_problem(service.post_batch(compact(unsigned)), 400, "malformed-envelope", "signatures")
    short = json.loads(service.batch(token_events(2)))
    short["signatures"][0]["sig"] = base64.b64encode(b"x" * 10).decode()
    assert_problem(service.post_batch(compact(short)), 403, "bad-signature")
    assert service.stored_size() == size


@pytest.mark.parametrize(
    ("body", "status", "slug", "field"),
    [
        (b"", 400, "malformed-envelope", "envelope"),
        (b"{not json", 400, "malformed-envelope", "envelope"),
        (b"[1, 2, 3]", 400, "malformed-envelope", "envelope"),
        (b'{"payloadType": 5, "payload": "", "signatures": [], "events": []}', 400, "malformed-envelope", None),
        (b'{"payloadType": "x", "payload": "%%%", "signatures": [], "events": []}', 400, "malformed-envelope", None),
        (b"\xff\xfe\x00", 400, "malformed-envelope", "envelope"),
    ],
)
def test_malformed_bodies_are_400_naming_the_field(
    service: Harness, body: bytes, status: int, slug: str, field: str | None
) -> None:
    size = service.stored_size()
    assert_problem(service.post_batch(body), status, slug, field)
    assert service.stored_size() == size


def test_invalid_events_are_422_naming_the_event_field(service: Harness) -> None:
    size = service.stored_size()
    bad_type = json.loads(token_event("ISSUED", token_id("x"), time.time_ns()))
    bad_type["event_type"] = "TELEPORTED"
    event = json.dumps(bad_type, separators=(",", ":"), sort_keys=True).encode()
    assert_problem(service.post_batch(service.batch([event])), 422, "invalid-input", "events[0].event_type")
    spaced = json.dumps(json.loads(token_event("ISSUED", token_id("y"), time.time_ns())), indent=1).encode()
    assert_problem(service.post_batch(service.batch([spaced])), 422, "invalid-input", "events[0]")
    assert service.stored_size() == size


def test_other_media_types_are_415(service: Harness) -> None:
    envelope = service.batch(token_events(1))
    response = service.client.post(
        "/v1/batches", content=envelope, headers={**service.auth("producer"), "Content-Type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported-media-type")


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[Harness]:
    """A service that queues at most one writer call."""
    yield from make_harness(tmp_path, max_pending_writes=1)


def test_full_writer_queue_is_503_with_retry_after(one_slot: Harness) -> None:
    service = one_slot
    release = threading.Event()
    writer_blocked = threading.Thread(target=lambda: service.on_writer(lambda: release.wait(30)))
    writer_blocked.start()
    queued: list[httpx.Response] = []
    first = threading.Thread(target=lambda: queued.append(service.post_batch(service.batch(token_events(2)))))
    first.start()
    writer = service.app.state.lineage.writer
    deadline = time.monotonic() + 10
    while writer._pending < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert writer._pending == 1
    size = service.ledger.store.size()  # read directly: the writer thread is blocked
    refused = service.post_batch(service.batch(token_events(2)))
    problem = assert_problem(refused, 503, "busy")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queued" in problem["detail"]
    release.set()
    first.join(10)
    writer_blocked.join(10)
    assert queued[0].status_code == 200
    assert service.stored_size() == size + 2


class FakeMonotonic:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticking(tmp_path: Path) -> Iterator[tuple[Harness, FakeMonotonic]]:
    """A service whose blocks seal after 5 (fake) seconds, ticking every 10 ms."""
    clock = FakeMonotonic()
    settings = LedgerSettings(block_size=10_000, block_seconds=5.0)
    for harness in make_harness(tmp_path, settings=settings, monotonic=clock, tick_seconds=0.01):
        yield harness, clock


def test_the_background_tick_seals_an_old_block(ticking: tuple[Harness, FakeMonotonic]) -> None:
    service, clock = ticking
    receipts = service.post_batch(service.batch(token_events(3))).json()["receipts"]
    assert {r["status"] for r in receipts} == {"pending"}
    last = receipts[-1]["index"]
    auditor = service.auth("auditor")
    assert service.client.get(f"/v1/entries/{last}", headers=auditor).json()["status"] == "pending"
    clock.now += 6
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        latest = service.client.get("/v1/checkpoints/latest", headers=auditor)
        if latest.status_code == 200:
            break
        time.sleep(0.01)
    assert latest.status_code == 200, latest.text
    assert latest.json()["size"] > last
    assert service.client.get(f"/v1/entries/{last}", headers=auditor).json()["status"] == "sealed"


def test_entry_hash_in_receipt_order_matches_stored_bytes(service: Harness) -> None:
    events = token_events(4)
    receipts = service.post_batch(service.batch(events)).json()["receipts"]
    for receipt, event in zip(receipts, events, strict=True):
        row = service.ledger.store.entry(receipt["index"])
        assert event in row.body
        assert row.leaf == leaf_hash(row.body)
        assert row.event_id == receipt["event_id"]


def test_an_event_twice_in_one_batch_is_422(service: Harness) -> None:
    event = token_event("ISSUED", token_id("twice"), time.time_ns())
    size = service.stored_size()
    assert_problem(service.post_batch(service.batch([event, event])), 422, "invalid-input", "events[1].event_id")
    assert service.stored_size() == size


def _post_together(service: Harness, envelopes: list[bytes]) -> list[httpx.Response]:
    """POST every envelope at once while the writer is held, so they all wait for the same turn."""
    release = threading.Event()
    blocked = threading.Thread(target=lambda: service.on_writer(lambda: release.wait(30)))
    blocked.start()
    responses: list[httpx.Response | None] = [None] * len(envelopes)

    def post(i: int) -> None:
        responses[i] = service.post_batch(envelopes[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(envelopes))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10  # bounded: every request is accepted and waiting
    while service.app.state.lineage._queued < len(envelopes) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert service.app.state.lineage._queued == len(envelopes)
    release.set()
    for thread in threads:
        thread.join(30)
    blocked.join(30)
    answered = [r for r in responses if r is not None]
    assert len(answered) == len(envelopes)
    return answered


def test_batches_that_arrive_together_are_committed_together_and_answered_apart(service: Harness) -> None:
    ledger = service.ledger
    commits: list[int] = []
    real_append_many = ledger.append_many

    def counting(batches: Any, **kwargs: Any) -> Any:
        commits.append(len(batches))
        return real_append_many(batches, **kwargs)

    ledger.append_many = counting  # type: ignore[method-assign]
    good = [service.batch(token_events(3, tokens=1, label=f"group-{i}")) for i in range(12)]
    forged = service.batch(token_events(2, label="forged"), signer=Ed25519Signer.generate(PRODUCER))
    before = service.stored_size()
    answered = _post_together(service, [*good[:6], forged, *good[6:]])
    assert_problem(answered[6], 403, "bad-signature")  # refused alone; the others are not affected
    bodies = [r.json() for i, r in enumerate(answered) if i != 6]
    assert all(r.status_code == 200 for i, r in enumerate(answered) if i != 6)
    runs = [[x["index"] for x in b["receipts"]] for b in bodies]
    assert all(run == list(range(run[0], run[0] + 3)) for run in runs)  # each batch's events stay together
    assert sorted(i for run in runs for i in run) == list(range(before, before + 36))  # each event once
    assert commits == [12]  # one turn, one transaction for the twelve accepted batches
    assert service.stored_size() == before + 36

    # a batch and its retry in the same turn: the combined commit finds the id and they go one by one
    again = service.batch(token_events(3, tokens=1, label="retried"))
    answered = _post_together(service, [again, again, good[0]])
    assert [r.status_code for r in answered] == [200, 200, 200]
    flags = sorted(tuple(x["duplicate"] for x in r.json()["receipts"]) for r in answered[:2])
    assert flags == [(False,) * 3, (True,) * 3]  # whichever came second is the duplicate
    assert all(x["duplicate"] for x in answered[2].json()["receipts"])
    assert service.stored_size() == before + 36 + 3
