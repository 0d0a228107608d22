"""Hypothesis against POST /v1/batches: whatever is wrong with a batch, the answer is a 4xx problem and the
ledger does not grow.

The valid batch every mutation starts from is already recorded, so a mutation that happens to leave the
signed content intact (say, a changed padding bit of base64) would be an idempotent retry; those few are
recognised and set aside, and everything else must be refused.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.envelope import open_envelope
from lineage_ledger.errors import LedgerError
from tests.conftest import token_events
from tests.service.conftest import OTHER_KEY_ID, OTHER_PRODUCER, Harness, make_harness

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, bytes]]:
    """One service for the whole module (nothing may change it), holding the batch the mutations start from."""
    for harness in make_harness(tmp_path_factory.mktemp("fuzz")):
        envelope = harness.batch(token_events(4, tokens=2))
        assert harness.post_batch(envelope).status_code == 200
        yield harness, envelope


def same_batch(mutated: bytes, original: bytes) -> bool:
    """True if the mutated bytes still carry exactly the original signed batch (an idempotent retry)."""
    try:
        a, b = open_envelope(mutated), open_envelope(original)
    except LedgerError:
        return False
    return (a.payload, a.signature, a.events) == (b.payload, b.signature, b.events)


def assert_refused(service: Harness, body: bytes, size: int, content_type: str = "application/json") -> None:
    response = service.client.post(
        "/v1/batches", content=body, headers={**service.auth("producer"), "Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text, body[:300])
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == response.status_code
    assert problem["detail"]
    assert service.stored_size() == size


byte_edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]),
        st.floats(0, 1, allow_nan=False),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def apply_edits(data: bytes, edits: list[tuple[str, float, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, where, blob in edits:
        i = min(int(where * len(out)), max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[i] ^= blob[0] or 1
        elif kind == "delete":
            del out[i : i + len(blob)]
        elif kind == "insert":
            out[i:i] = blob
        elif kind == "truncate":
            del out[i:]
        else:
            out[i:i] = out[i : i + 4 * len(blob)]
    return bytes(out)


@FUZZ
@given(edits=byte_edits)
def test_byte_level_mutations_are_refused(fuzzed: tuple[Harness, bytes], edits: list[tuple[str, float, bytes]]) -> None:
    service, envelope = fuzzed
    mutated = apply_edits(envelope, edits)
    if same_batch(mutated, envelope):
        return
    assert_refused(service, mutated, service.stored_size())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def mutate_structure(envelope: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """One structural change: a field replaced, removed or retyped; an event, the statement or the key id
    altered; the signature swapped for another key's."""
    out: dict[str, Any] = json.loads(json.dumps(envelope))
    kind = data.draw(
        st.sampled_from(["replace", "remove", "event", "drop_event", "statement", "keyid", "resign", "extra_event"])
    )
    if kind == "replace":
        out[data.draw(st.sampled_from(sorted(out)))] = data.draw(json_values)
    elif kind == "remove":
        del out[data.draw(st.sampled_from(sorted(out)))]
    elif kind == "event":
        out["events"][data.draw(st.integers(0, len(out["events"]) - 1))] = data.draw(json_values)
    elif kind == "drop_event":
        out["events"].pop(data.draw(st.integers(0, len(out["events"]) - 1)))
    elif kind == "statement":
        statement = json.loads(base64.b64decode(out["payload"]))
        statement[data.draw(st.sampled_from(sorted(statement)))] = data.draw(json_values)
        out["payload"] = base64.b64encode(json.dumps(statement, separators=(",", ":")).encode()).decode()
    elif kind == "keyid":
        out["signatures"][0]["keyid"] = data.draw(st.sampled_from([OTHER_KEY_ID, "unknown-key", ""]))
    elif kind == "resign":
        other = Ed25519Signer(OTHER_PRODUCER, bytes(range(64, 96)))
        out["signatures"][0]["sig"] = base64.b64encode(other.sign(b"something else")).decode()
    else:
        out["events"].append(data.draw(json_values))
    return out


@FUZZ
@given(data=st.data())
def test_structural_mutations_are_refused(fuzzed: tuple[Harness, bytes], data: st.DataObject) -> None:
    service, envelope = fuzzed
    mutated = mutate_structure(json.loads(envelope), data)
    body = json.dumps(mutated, separators=(",", ":"), ensure_ascii=False).encode()
    if same_batch(body, envelope):
        return
    assert_refused(service, body, service.stored_size())


@FUZZ
@given(body=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200))
def test_arbitrary_bodies_are_refused(fuzzed: tuple[Harness, bytes], body: bytes) -> None:
    service, _ = fuzzed
    assert_refused(service, body, service.stored_size())


def test_fuzz_fixture_is_not_vacuous(fuzzed: tuple[Harness, bytes]) -> None:
    service, envelope = fuzzed
    retry = service.post_batch(envelope)
    assert retry.status_code == 200
    assert all(r["duplicate"] for r in retry.json()["receipts"])
    assert not same_batch(apply_edits(envelope, [("flip", 0.99, b"\x01")]), envelope)
