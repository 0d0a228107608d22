"""The sealed-event formats: personal fields sealed under a subject key (core.sealed) and sealed by the
producer for the ledger's ingest key (core.transport_seal), each opened back to the producer's exact bytes
and bound to the event it came in."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.sealed import (
    ERASED,
    associated_data,
    open_personal,
    personal_of,
    seal_event,
    unseal_event,
)
from lineage_ledger.core.transport_seal import ingest_public_key, open_for_ledger, seal_for_ledger
from lineage_ledger.errors import InputError, LedgerError
from tests.conftest import token_event, token_id

KEY = bytes(range(32))
FIELDS = ("ip", "user_agent", "user_id")
PEOPLE = [
    {"user_id": "ana", "ip": "192.0.2.1", "user_agent": "Plain/1.0"},
    {"user_id": "zoë", "ip": "2001:db8::1", "user_agent": "Ünïcode 🦊 agent \t tab"},  # the slow, exact path
    {"user_id": 'quote"back\\slash', "user_agent": "ctl \u0001 char"},
]


def _seal(raw: bytes, event_id: str) -> tuple[bytes, bytes]:
    aad = associated_data("log.example/1", "token:" + token_id("t"), event_id)
    sealed = seal_event(
        raw, FIELDS, key=AESGCM(KEY), kid="ab" * 16, subject_fp="cd" * 32, aad=aad, signed_leaf=leaf_hash(raw)
    )
    assert sealed is not None
    return sealed[0], aad


@pytest.mark.parametrize("person", PEOPLE)
def test_sealing_then_opening_gives_back_the_producers_exact_bytes(person: dict[str, str]) -> None:
    raw = token_event("USED", token_id("t"), 1_763_891_234_000_000_000, resource="/r", **person)
    event_id = json.loads(raw)["event_id"]
    sealed, aad = _seal(raw, event_id)
    for value in person.values():
        assert value.encode() not in sealed
        assert json.dumps(value).encode()[1:-1] not in sealed
    assert canonical_bytes(json.loads(sealed)) == sealed  # the stored event is canonical JSON too
    personal = personal_of(sealed)
    assert personal is not None
    assert personal.signed == leaf_hash(raw).hex()
    fields = open_personal(personal, KEY, aad)
    assert canonical_bytes(unseal_event(sealed, fields)) == raw
    shown = unseal_event(sealed, None)
    assert {shown["payload"][name] for name in personal.fields} == {ERASED}


def test_a_ciphertext_does_not_open_in_another_entry_or_under_another_key() -> None:
    raw = token_event("USED", token_id("t"), 1_763_891_234_000_000_000, **PEOPLE[0])
    sealed, aad = _seal(raw, json.loads(raw)["event_id"])
    personal = personal_of(sealed)
    assert personal is not None
    other = associated_data("log.example/1", "token:" + token_id("t"), "01000000-0000-7000-8000-000000000000")
    with pytest.raises(LedgerError, match="do not decrypt"):
        open_personal(personal, KEY, other)
    with pytest.raises(LedgerError, match="do not decrypt"):
        open_personal(personal, bytes(32), aad)


def test_an_event_without_personal_fields_is_not_sealed() -> None:
    raw = token_event("USED", token_id("t"), 1_763_891_234_000_000_000, resource="/r")
    assert (
        seal_event(raw, FIELDS, key=AESGCM(KEY), kid="ab" * 16, subject_fp="cd" * 32, aad=b"", signed_leaf=b"") is None
    )
    assert personal_of(raw) is None


def _ingest_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@pytest.mark.parametrize("person", PEOPLE)
def test_sealed_for_the_ledger_opens_to_the_exact_event(person: dict[str, str]) -> None:
    private = _ingest_key()
    raw = token_event("ISSUED", token_id("t"), 1_763_891_234_000_000_000, client_id="web", **person)
    sent = seal_for_ledger(raw, FIELDS, ingest_public_key(private))
    for value in person.values():
        assert value.encode() not in sent
    assert open_for_ledger(sent, private) == raw
    assert open_for_ledger(raw, private) is None  # not sealed: nothing to open


def test_sealed_for_the_ledger_is_bound_to_its_event_and_key() -> None:
    private = _ingest_key()
    raw = token_event("ISSUED", token_id("t"), 1_763_891_234_000_000_000, **PEOPLE[0])
    sent = seal_for_ledger(raw, FIELDS, ingest_public_key(private))
    moved = sent.replace(token_id("t").encode(), token_id("u").encode())
    with pytest.raises(InputError, match="does not open"):
        open_for_ledger(moved, private)
    with pytest.raises(InputError, match="does not open"):
        open_for_ledger(sent, _ingest_key())
    with pytest.raises(InputError, match="no ingest key"):
        open_for_ledger(sent, None)
