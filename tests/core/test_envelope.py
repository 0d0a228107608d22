"""Tests for lineage_ledger.core.envelope: signed batches open only when every byte is as the producer signed it."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any, Final

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core.crypto import Ed25519Signer
from lineage_ledger.core.envelope import open_envelope, seal_batch, verify_batch_signature
from lineage_ledger.errors import EnvelopeError, InputError, SignatureError

PAYLOAD_TYPE: Final = "application/vnd.lineage-ledger.batch.v1+json"  # docs/formats.md, "Batch envelope"
PRODUCER: Final = "auth-svc"
KEY_ID: Final = "auth-svc:2025"
SIGNER: Final = Ed25519Signer(KEY_ID, bytes(range(32)))
OTHER: Final = Ed25519Signer("other", bytes(range(1, 33)))
EVENTS: Final = tuple(
    rfc8785.dumps({"event_id": f"e{i}", "kind": "token", "n": i, "note": "\U0001f600" * i}) for i in range(5)
)


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding, from the DSSE protocol specification."""
    t = payload_type.encode()
    return b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(payload)).encode() + b" " + payload


def _mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.1 Merkle Tree Hash over entries (not leaf hashes), written from the RFC."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _statement(events: Sequence[bytes], **changes: Any) -> bytes:
    body: dict[str, Any] = {
        "count": len(events),
        "key_id": KEY_ID,
        "producer": PRODUCER,
        "root": _mth(events).hex(),
        "v": 1,
    }
    body.update(changes)
    return rfc8785.dumps(body)


def _wire(
    events: Sequence[bytes],
    *,
    payload: bytes | str,
    signatures: list[dict[str, str]] | None = None,
    payload_type: str = PAYLOAD_TYPE,
    signer: Ed25519Signer = SIGNER,
) -> bytes:
    """An envelope assembled by hand; by default signed over exactly ``payload`` by ``signer``."""
    payload_text = payload if isinstance(payload, str) else base64.b64encode(payload).decode()
    if signatures is None:
        assert isinstance(payload, bytes)
        sig = signer.sign(_pae(PAYLOAD_TYPE, payload))
        signatures = [{"keyid": KEY_ID, "sig": base64.b64encode(sig).decode()}]
    head = json.dumps({"payload": payload_text, "payloadType": payload_type, "signatures": signatures}).encode()
    return head[:-1] + b', "events": [' + b", ".join(events) + b"]}"


def _parts(envelope: bytes) -> dict[str, Any]:
    parts: dict[str, Any] = json.loads(envelope)
    return parts


def _envelope_error(data: bytes) -> str:
    with pytest.raises(EnvelopeError) as info:
        open_envelope(data)
    return info.value.field


class TestRoundTrip:
    @given(
        st.lists(st.dictionaries(st.text(max_size=5), st.integers(-5, 5) | st.text(max_size=5)), min_size=1, max_size=9)
    )
    def test_seal_then_open(self, objects: list[dict[str, Any]]) -> None:
        events = [rfc8785.dumps(o) for o in objects]
        opened = open_envelope(seal_batch(events, producer=PRODUCER, key_id=KEY_ID, signer=SIGNER))
        assert opened.events == tuple(events)
        assert opened.event_leaves == tuple(hashlib.sha256(b"\x00" + e).digest() for e in events)
        assert opened.payload == _statement(events)
        assert opened.statement.count == len(events)
        assert opened.statement.producer == PRODUCER
        assert opened.statement.key_id == KEY_ID
        assert opened.statement.root == _mth(events).hex()
        assert opened.statement.v == 1
        assert opened.digest == hashlib.sha256(_pae(PAYLOAD_TYPE, opened.payload)).digest()
        Ed25519PublicKey.from_public_bytes(SIGNER.public_key).verify(
            opened.signature, _pae(PAYLOAD_TYPE, opened.payload)
        )
        verify_batch_signature(opened, SIGNER.public_key)

    def test_wire_form(self) -> None:
        data = seal_batch(EVENTS, producer=PRODUCER, key_id=KEY_ID, signer=SIGNER)
        parts = _parts(data)
        assert parts["payloadType"] == PAYLOAD_TYPE
        assert base64.b64decode(parts["payload"]) == _statement(EVENTS)
        assert parts["signatures"] == [
            {"keyid": KEY_ID, "sig": base64.b64encode(SIGNER.sign(_pae(PAYLOAD_TYPE, _statement(EVENTS)))).decode()}
        ]
        assert data.endswith(b',"events":[' + b",".join(EVENTS) + b"]}")

    def test_hand_built_envelope_opens(self) -> None:
        opened = open_envelope(_wire(EVENTS, payload=_statement(EVENTS)))
        assert opened.events == EVENTS
        verify_batch_signature(opened, SIGNER.public_key)

    def test_max_events(self) -> None:
        data = seal_batch(EVENTS, producer=PRODUCER, key_id=KEY_ID, signer=SIGNER)
        assert len(open_envelope(data, max_events=len(EVENTS)).events) == len(EVENTS)
        with pytest.raises(EnvelopeError) as info:
            open_envelope(data, max_events=len(EVENTS) - 1)
        assert info.value.field == "events"


class TestSealRejects:
    @pytest.mark.parametrize(
        ("events", "producer", "key_id", "field"),
        [
            ((), PRODUCER, KEY_ID, "events"),
            (EVENTS, "Auth", KEY_ID, "producer"),
            (EVENTS, "", KEY_ID, "producer"),
            (EVENTS, "auth svc", KEY_ID, "producer"),
            (EVENTS, "auth-svc\n", KEY_ID, "producer"),
            (EVENTS, "a" * 65, KEY_ID, "producer"),
            (EVENTS, PRODUCER, "", "key_id"),
            (EVENTS, PRODUCER, "-k", "key_id"),
            (EVENTS, PRODUCER, 'k"', "key_id"),
            (EVENTS, PRODUCER, "k\n", "key_id"),
            (EVENTS, PRODUCER, "k" * 129, "key_id"),
        ],
    )
    def test_names_the_field(self, events: Sequence[bytes], producer: str, key_id: str, field: str) -> None:
        with pytest.raises(InputError) as info:
            seal_batch(events, producer=producer, key_id=key_id, signer=SIGNER)
        assert info.value.field == field


class TestTamperingIsCaught:
    @given(st.data())
    def test_flip_any_byte_of_any_event(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(EVENTS) - 1))
        j = data.draw(st.integers(0, len(EVENTS[i]) - 1))
        mask = data.draw(st.integers(1, 255))
        event = bytearray(EVENTS[i])
        event[j] ^= mask
        events = [*EVENTS[:i], bytes(event), *EVENTS[i + 1 :]]
        tampered = _wire(events, payload=_statement(EVENTS))
        assert _envelope_error(tampered) in {"envelope", "events", "payload.root"}

    @given(st.permutations(range(len(EVENTS))))
    def test_reorder(self, order: list[int]) -> None:
        events = [EVENTS[k] for k in order]
        tampered = _wire(events, payload=_statement(EVENTS))
        if events == list(EVENTS):
            open_envelope(tampered)
        else:
            assert _envelope_error(tampered) == "payload.root"

    @given(st.integers(0, len(EVENTS) - 1))
    def test_drop(self, i: int) -> None:
        events = [*EVENTS[:i], *EVENTS[i + 1 :]]
        assert _envelope_error(_wire(events, payload=_statement(EVENTS))) == "events"

    @given(st.integers(0, len(EVENTS)), st.sampled_from([*EVENTS, b'{"extra":true}']))
    def test_add(self, i: int, extra: bytes) -> None:
        events = [*EVENTS[:i], extra, *EVENTS[i:]]
        assert _envelope_error(_wire(events, payload=_statement(EVENTS))) == "events"

    @given(st.integers(0, len(EVENTS) - 1))
    def test_replace_one_keeping_the_count(self, i: int) -> None:
        events = [*EVENTS[:i], b'{"forged":true}', *EVENTS[i + 1 :]]
        assert _envelope_error(_wire(events, payload=_statement(EVENTS))) == "payload.root"

    def test_wrong_count_in_a_validly_signed_statement(self) -> None:
        payload = _statement(EVENTS, count=len(EVENTS) + 1)
        assert _envelope_error(_wire(EVENTS, payload=payload)) == "events"

    def test_root_of_another_batch_validly_signed(self) -> None:
        payload = _statement(EVENTS, root=_mth(EVENTS[::-1]).hex())
        assert _envelope_error(_wire(EVENTS, payload=payload)) == "payload.root"

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"producer": "billing"}, None),  # still consistent with the events: only the signature tells
            ({"key_id": "auth-svc:2026"}, None),
            ({"count": len(EVENTS) - 1}, "events"),
            ({"root": "00" * 32}, "payload.root"),
        ],
    )
    def test_changed_payload_under_the_original_signature(self, changes: dict[str, Any], field: str | None) -> None:
        original = _parts(seal_batch(EVENTS, producer=PRODUCER, key_id=KEY_ID, signer=SIGNER))
        keyid = changes.get("key_id", KEY_ID)
        signatures = [{"keyid": keyid, "sig": original["signatures"][0]["sig"]}]
        tampered = _wire(EVENTS, payload=_statement(EVENTS, **changes), signatures=signatures)
        if field is not None:
            assert _envelope_error(tampered) == field
        else:
            opened = open_envelope(tampered)
            with pytest.raises(SignatureError):
                verify_batch_signature(opened, SIGNER.public_key)

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            (b'{"count": 5}', "payload"),
            (
                json.dumps(
                    {"v": 1, "root": _mth(EVENTS).hex(), "producer": PRODUCER, "key_id": KEY_ID, "count": 5}
                ).encode(),
                "payload",
            ),
            (_statement(EVENTS, v=2), "payload"),
            (_statement(EVENTS, count=0), "payload"),
            (_statement(EVENTS, count=1.5), "payload.count"),
            (_statement(EVENTS, root="AB" * 32), "payload"),
            (_statement(EVENTS, root=_mth(EVENTS).hex() + "\n"), "payload"),
            (_statement(EVENTS, producer="Auth"), "payload"),
            (_statement(EVENTS, producer=PRODUCER + "\n"), "payload"),
            (_statement(EVENTS, key_id=KEY_ID + "\n"), "payload"),
            (b"", "payload"),
            (b"\xff", "payload"),
        ],
    )
    def test_malformed_statement_even_if_signed(self, payload: bytes, field: str) -> None:
        keyid = KEY_ID + "\n" if (KEY_ID + "\\n").encode() in payload else KEY_ID
        sig = base64.b64encode(SIGNER.sign(_pae(PAYLOAD_TYPE, payload))).decode()
        tampered = _wire(EVENTS, payload=payload, signatures=[{"keyid": keyid, "sig": sig}])
        assert _envelope_error(tampered) == field

    @pytest.mark.parametrize("payload_type", ["application/json", PAYLOAD_TYPE.upper(), "", PAYLOAD_TYPE + " "])
    def test_wrong_payload_type(self, payload_type: str) -> None:
        tampered = _wire(EVENTS, payload=_statement(EVENTS), payload_type=payload_type)
        assert _envelope_error(tampered) == "payloadType"

    def test_two_signatures(self) -> None:
        sig = _parts(seal_batch(EVENTS, producer=PRODUCER, key_id=KEY_ID, signer=SIGNER))["signatures"][0]
        tampered = _wire(EVENTS, payload=_statement(EVENTS), signatures=[sig, sig])
        assert _envelope_error(tampered) == "signatures"

    def test_no_signature(self) -> None:
        assert _envelope_error(_wire(EVENTS, payload=_statement(EVENTS), signatures=[])) == "signatures"

    def test_keyid_mismatch(self) -> None:
        sig = _parts(seal_batch(EVENTS, producer=PRODUCER, key_id=KEY_ID, signer=SIGNER))["signatures"][0]
        tampered = _wire(EVENTS, payload=_statement(EVENTS), signatures=[{"keyid": "auth-svc:2026", "sig": sig["sig"]}])
        assert _envelope_error(tampered) == "signatures[0].keyid"

    @pytest.mark.parametrize("payload", ["not base64!", "e30", "e30=\n", "ZXlK\u00e9"])
    def test_invalid_base64_payload(self, payload: str) -> None:
        assert _envelope_error(_wire(EVENTS, payload=payload, signatures=[{"keyid": KEY_ID, "sig": ""}])) == "payload"

    @pytest.mark.parametrize("sig", ["not base64!", "AAA", "AAAA\n"])
    def test_invalid_base64_signature(self, sig: str) -> None:
        tampered = _wire(EVENTS, payload=_statement(EVENTS), signatures=[{"keyid": KEY_ID, "sig": sig}])
        assert _envelope_error(tampered) == "signatures[0].sig"

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"[]",
            b"{}",
            b"\xff",
            _wire(EVENTS, payload=_statement(EVENTS)).replace(b'"events"', b'"evens"'),
            _wire(EVENTS, payload=_statement(EVENTS)).replace(b'"signatures": [', b'"signatures": [1, '),
            _wire(EVENTS, payload=_statement(EVENTS))[:-1],
        ],
    )
    def test_not_an_envelope(self, data: bytes) -> None:
        assert _envelope_error(data) == "envelope"

    @given(st.integers(0, 63), st.integers(1, 255))
    def test_flipped_signature_bit(self, j: int, mask: int) -> None:
        sig = bytearray(SIGNER.sign(_pae(PAYLOAD_TYPE, _statement(EVENTS))))
        sig[j] ^= mask
        tampered = _wire(
            EVENTS, payload=_statement(EVENTS), signatures=[{"keyid": KEY_ID, "sig": base64.b64encode(sig).decode()}]
        )
        with pytest.raises(SignatureError):
            verify_batch_signature(open_envelope(tampered), SIGNER.public_key)

    @pytest.mark.parametrize("length", [0, 63, 65])
    def test_signature_of_wrong_length(self, length: int) -> None:
        sig = base64.b64encode(b"\x01" * length).decode()
        tampered = _wire(EVENTS, payload=_statement(EVENTS), signatures=[{"keyid": KEY_ID, "sig": sig}])
        with pytest.raises(SignatureError):
            verify_batch_signature(open_envelope(tampered), SIGNER.public_key)

    def test_signed_over_another_payload_type(self) -> None:
        sig = SIGNER.sign(_pae("application/vnd.in-toto+json", _statement(EVENTS)))
        tampered = _wire(
            EVENTS, payload=_statement(EVENTS), signatures=[{"keyid": KEY_ID, "sig": base64.b64encode(sig).decode()}]
        )
        with pytest.raises(SignatureError):
            verify_batch_signature(open_envelope(tampered), SIGNER.public_key)


class TestAnotherKey:
    def test_signed_by_another_key(self) -> None:
        data = seal_batch(EVENTS, producer=PRODUCER, key_id=KEY_ID, signer=OTHER)
        opened = open_envelope(data)
        with pytest.raises(SignatureError):
            verify_batch_signature(opened, SIGNER.public_key)
        verify_batch_signature(opened, OTHER.public_key)

    def test_verified_under_another_key(self) -> None:
        opened = open_envelope(seal_batch(EVENTS, producer=PRODUCER, key_id=KEY_ID, signer=SIGNER))
        with pytest.raises(SignatureError):
            verify_batch_signature(opened, OTHER.public_key)
