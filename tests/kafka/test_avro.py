"""Tests for lineage_ledger.kafka.avro: the Avro form of a signed batch gives back every signed byte.

Round trips are checked where it matters: the events ``open_envelope`` finds after seal_batch -> Avro ->
JSON are byte-identical to the producer's and the producer's signature still verifies. The header is
checked against the Avro specification (single object encoding; the CRC-64-AVRO fingerprint recomputed
with a port of the specification's reference code and checked on Avro's own test vectors).
"""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.envelope import open_envelope, seal_batch, verify_batch_signature
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.model import DATA_EVENT_TYPES, TOKEN_EVENT_TYPES, decode_event
from lineage_ledger.errors import EnvelopeError, InputError
from lineage_ledger.kafka.avro import (
    MARKER,
    SCHEMA_V1,
    SCHEMAS,
    V1,
    Schema,
    UnknownSchemaError,
    decode_envelope,
    encode_envelope,
    fingerprint_of,
    schema_from_json,
)
from tests.conftest import PRODUCER, PRODUCER_KEY_ID, make_producer_signer, token_events

SIGNER: Final = make_producer_signer()
V1_FINGERPRINT: Final = "7afb3ae9d2d944f6"
"""Pinned: v1 is frozen, since every message on the topic names it by this fingerprint. A schema change
must be a new schema (v2) that decoders learn alongside v1, never an edit of v1."""


def _seal(events: Sequence[bytes]) -> bytes:
    return seal_batch(events, producer=PRODUCER, key_id=PRODUCER_KEY_ID, signer=SIGNER)


def _check_round_trip(envelope: bytes, events: Sequence[bytes], message: bytes, **decode: Any) -> None:
    """``message`` decodes to ``envelope`` exactly, and the producer's events and signature survive."""
    back = decode_envelope(message, **decode)
    assert back == envelope
    opened = open_envelope(back)
    assert opened.events == tuple(events)
    verify_batch_signature(opened, SIGNER.public_key)


# -- the CRC-64-AVRO fingerprint, from the Avro specification ----------------------------------------------


def _rabin_table() -> list[int]:
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE: Final = _rabin_table()


def rabin_fingerprint64(data: bytes) -> int:
    """Port of ``fingerprint64`` from the Avro specification ("Schema Fingerprints"), as a signed Java long.

    Java::

        long fp = EMPTY;  // 0xc15d213aa4d7a795L
        for (int i = 0; i < buf.length; i++)
          fp = (fp >>> 8) ^ FP_TABLE[(int)(fp ^ buf[i]) & 0xff];
    """
    fp = 0xC15D213AA4D7A795
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp - (1 << 64) if fp >> 63 else fp


# Avro's own test data, share/test/data/schema-tests.txt (apache/avro): input, canonical form, fingerprint.
AVRO_SCHEMA_TESTS: Final = [
    ('"null"', '"null"', 7195948357588979594),
    ('"boolean"', '"boolean"', -6970731678124411036),
    ('"int"', '"int"', 8247732601305521295),
    ('"long"', '"long"', -3434872931120570953),
    ('"string"', '"string"', -8142146995180207161),
    (
        '{"fields":[], "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[]}',
        -4824392279771201922,
    ),
    (
        '{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
        '{"name":"x.y.foo","type":"record","fields":[]}',
        5916914534497305771,
    ),
    (
        '{"name":"PigValue","type":"record", "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
        '{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]


class TestFingerprint:
    @pytest.mark.parametrize(("schema", "canonical", "expected"), AVRO_SCHEMA_TESTS)
    def test_known_answers(self, schema: str, canonical: str, expected: int) -> None:
        assert to_parsing_canonical_form(json.loads(schema)) == canonical
        assert rabin_fingerprint64(canonical.encode()) == expected
        # The header carries the 64-bit value little-endian; fastavro gives the same bytes as hex.
        assert fingerprint(canonical, "CRC-64-AVRO") == struct.pack("<q", expected).hex()

    def test_v1_fingerprint(self) -> None:
        assert V1.canonical == to_parsing_canonical_form(json.loads(SCHEMA_V1))
        assert V1.fingerprint == struct.pack("<q", rabin_fingerprint64(V1.canonical.encode()))
        assert V1.fingerprint == bytes.fromhex(fingerprint(V1.canonical, "CRC-64-AVRO"))
        assert V1.fingerprint.hex() == V1_FINGERPRINT
        assert V1.name == "dev.lineage_ledger.v1.Batch"
        assert dict(SCHEMAS) == {V1.fingerprint: V1}

    def test_header(self) -> None:
        message = encode_envelope(_seal(token_events(3)))
        assert message[:2] == MARKER == b"\xc3\x01"
        assert message[2:10] == V1.fingerprint == fingerprint_of(message)

    def test_the_canonical_form_is_a_usable_writer_schema(self) -> None:
        """A registry may keep only the canonical form (it drops defaults): it still decodes v1 messages."""
        stored = schema_from_json(V1.canonical)
        assert stored == V1
        assert stored.fingerprint == V1.fingerprint
        events = token_events(4)
        envelope = _seal(events)
        _check_round_trip(envelope, events, encode_envelope(envelope, stored))
        _check_round_trip(envelope, events, encode_envelope(envelope), schemas={stored.fingerprint: stored})


# -- events: valid ones (as producers make them) and arbitrary objects --------------------------------------

_CHARS = st.characters(codec="utf-8")
_TEXT = st.text(_CHARS, max_size=16)
_NAME = st.text(_CHARS, min_size=1, max_size=12)
_TOKEN_ID = st.from_regex(r"(?:[a-z0-9-]{1,8}:)?[0-9a-f]{64}", fullmatch=True)
_HLC = st.builds(format_reading, st.integers(0, 10**19 - 1), st.integers(0, 99_999))
_HASH = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)
_ASSET_ID = st.from_regex(r"[!-~]{1,20}", fullmatch=True)
_UUID7 = st.builds(
    "{:08x}-{:04x}-7{:03x}-{}{:03x}-{:012x}".format,
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**12 - 1),
    st.sampled_from("89ab"),
    st.integers(0, 2**12 - 1),
    st.integers(0, 2**48 - 1),
)
_SCALARS = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _TEXT
# Keys that sort differently in UTF-16 (canonical) order than in code point order, and keys the codec treats
# specially, next to arbitrary ones.
_ODD_KEYS = st.sampled_from(["_residual", "kind", "", "\ue000", "\U0001f511", "\uffff", "device_id"])
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(_ODD_KEYS | st.text(_CHARS, max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)
_EXTRAS = st.dictionaries(_ODD_KEYS | st.text(_CHARS, min_size=1, max_size=6), _JSON, max_size=3)
"""Members this version does not know (merged under the known ones, which win on a name clash)."""


def _nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _with_extras(known: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda extras, fields: {**extras, **fields}, _EXTRAS, known)


_TOKEN_PAYLOADS = _with_extras(
    st.fixed_dictionaries(
        {},
        optional={
            "user_id": _nullable(_NAME),
            "client_id": _nullable(_NAME),
            "scopes": _nullable(st.lists(_NAME, max_size=3)),
            "ip": _nullable(_TEXT),
            "user_agent": _nullable(_TEXT),
            "policy_version": _nullable(_NAME),
            "resource": _nullable(_TEXT),
            "outcome": _nullable(st.sampled_from(["ALLOW", "DENY"])),
            "parent_token_id": _nullable(_TOKEN_ID),
            "actor_token_id": _nullable(_TOKEN_ID),
            "mfa_at": _nullable(_HLC),
            "expires_at": _nullable(_HLC),
            "reason": _nullable(_TEXT),
            "trace_id": _nullable(st.from_regex(r"[0-9a-f]{32}", fullmatch=True)),
        },
    )
)
_TOKEN_EVENTS = _with_extras(
    st.fixed_dictionaries(
        {
            "kind": st.just("token"),
            "event_id": _UUID7,
            "event_type": st.sampled_from(TOKEN_EVENT_TYPES),
            "token_id": _TOKEN_ID,
            "occurred_at": _HLC,
            "schema_version": st.integers(1, 2**53 - 1),
        },
        optional={"payload": _TOKEN_PAYLOADS},
    )
)
_POLICY_EVENTS = _with_extras(
    st.fixed_dictionaries(
        {
            "kind": st.just("policy"),
            "event_id": _UUID7,
            "event_type": st.just("POLICY_CHANGED"),
            "policy_id": _NAME,
            "occurred_at": _HLC,
            "schema_version": st.integers(1, 3),
            "payload": _with_extras(
                st.fixed_dictionaries(
                    {
                        "policy_version": _NAME,
                        "document": st.dictionaries(_ODD_KEYS | st.text(_CHARS, max_size=4), _JSON, max_size=4),
                    },
                    optional={"reason": _nullable(_TEXT)},
                )
            ),
        }
    )
)
_ASSET_REFS = _with_extras(st.fixed_dictionaries({"asset_id": _ASSET_ID}, optional={"content_hash": _nullable(_HASH)}))
_DATA_EVENTS = _with_extras(
    st.fixed_dictionaries(
        {
            "kind": st.just("data"),
            "event_id": _UUID7,
            "event_type": st.sampled_from(DATA_EVENT_TYPES),
            "asset_id": st.from_regex(r"[!-~]{1,40}", fullmatch=True),
            "occurred_at": _HLC,
            "schema_version": st.just(1),
            "payload": _with_extras(
                st.fixed_dictionaries(
                    {"actor": _NAME},
                    optional={
                        "inputs": st.lists(_ASSET_REFS, max_size=3),
                        "output_hash": _nullable(_HASH),
                        "destination": _nullable(_TEXT),
                        "purpose": _nullable(_TEXT),
                        "token_id": _nullable(_TOKEN_ID),
                        "reason": _nullable(_TEXT),
                    },
                )
            ),
        }
    )
)


def _valid(event: dict[str, Any]) -> bytes:
    data = canonical_bytes(event)
    decode_event(data)  # the strategies make events the ledger accepts
    return data


VALID_EVENTS: Final = st.one_of(_TOKEN_EVENTS, _POLICY_EVENTS, _DATA_EVENTS).map(_valid)


def _field_names(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        if "name" in schema and "type" in schema and schema.get("type") not in ("record", "array"):
            yield schema["name"]
        for value in schema.values():
            yield from _field_names(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _field_names(item)


FIELD_NAMES: Final = sorted(set(_field_names(json.loads(SCHEMA_V1))))
_FIELD_KEYS = st.sampled_from(FIELD_NAMES) | _ODD_KEYS | st.text(_CHARS, max_size=4)
_ANY = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_FIELD_KEYS, inner, max_size=5),
    max_leaves=16,
)
ANY_EVENTS: Final = st.builds(
    lambda members, kind: canonical_bytes({**members, "kind": kind}),
    st.dictionaries(_FIELD_KEYS, _ANY, max_size=8),
    st.sampled_from(["token", "policy", "data"]),
)
"""Canonical objects of a known kind whose members use the schema's field names with any JSON values: typed
fields holding the wrong type, nulls, nested objects where strings belong."""


class TestRoundTrip:
    @given(st.lists(VALID_EVENTS, min_size=1, max_size=6))
    def test_valid_events(self, events: list[bytes]) -> None:
        envelope = _seal(events)
        message = encode_envelope(envelope)
        assert message[:10] == MARKER + V1.fingerprint
        _check_round_trip(envelope, events, message)
        _check_round_trip(envelope, events, message, reader=V2)

    @given(st.lists(ANY_EVENTS, min_size=1, max_size=4))
    def test_any_canonical_objects(self, events: list[bytes]) -> None:
        envelope = _seal(events)
        _check_round_trip(envelope, events, encode_envelope(envelope))
        _check_round_trip(envelope, events, encode_envelope(envelope, V2), schemas={V2.fingerprint: V2})

    def test_conftest_token_events(self) -> None:
        events = token_events(1000)
        envelope = _seal(events)
        message = encode_envelope(envelope)
        assert len(message) < len(envelope)  # raw bytes, no base64, no repeated member names
        _check_round_trip(envelope, events, message)

    def test_members_that_do_not_fit_their_field(self) -> None:
        """Each of these goes to the residual, and comes back where it was."""
        event = {
            "kind": "token",
            "event_id": "not checked here",
            "schema_version": True,  # a bool is not a long
            "token_id": None,  # JSON null, not absent
            "_residual": {"a": 1},  # a member named like the residual field
            "payload": {
                "scopes": ["read", 5],  # not all strings
                "user_id": {"nested": ["x"]},
                "_residual": "literal",
                "\U0001f511": "astral key",
                "\uffff": "BMP key that sorts after it in UTF-16",
            },
        }
        events = [canonical_bytes(event)]
        envelope = _seal(events)
        message = encode_envelope(envelope)
        datum = _datum(message, V1)
        token_event = datum["events"][0][1]
        assert token_event["event_id"] == "not checked here"
        assert json.loads(token_event["_residual"]) == {"schema_version": True, "token_id": None, "_residual": {"a": 1}}
        payload = token_event["payload"][1]
        assert payload["scopes"] is None
        assert payload["user_id"] is None
        assert set(json.loads(payload["_residual"])) == {"scopes", "user_id", "_residual", "\U0001f511", "\uffff"}
        _check_round_trip(envelope, events, message)

    def test_policy_document_is_free_form(self) -> None:
        document = {"rules": [{"allow": ["read"], "when": {"mfa": True, "n": -(2**53) + 1}}], "é": None}
        event = {
            "kind": "policy",
            "event_id": "01",
            "event_type": "POLICY_CHANGED",
            "payload": {"policy_version": "v7", "document": document},
        }
        events = [canonical_bytes(event)]
        envelope = _seal(events)
        message = encode_envelope(envelope)
        datum = _datum(message, V1)["events"][0][1]
        assert json.loads(datum["payload"][1]["document"][1]["_residual"]) == document
        _check_round_trip(envelope, events, message)


# -- schema evolution ---------------------------------------------------------------------------------------


def _find_record(schema: Any, name: str) -> dict[str, Any]:
    if isinstance(schema, dict):
        if schema.get("type") == "record" and schema.get("name") == name:
            return schema
        children: list[Any] = list(schema.values())
    elif isinstance(schema, list):
        children = schema
    else:
        children = []
    for child in children:
        try:
            return _find_record(child, name)
        except LookupError:
            pass
    raise LookupError(name)


def _evolve(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    definition: dict[str, Any] = json.loads(SCHEMA_V1)
    change(definition)
    return definition


def _add_v2_fields(definition: dict[str, Any]) -> None:
    _find_record(definition, "TokenPayload")["fields"].insert(
        0, {"name": "device_id", "type": ["null", "string"], "default": None}
    )
    definition["fields"].append({"name": "trace", "type": ["null", "string"], "default": None})


V2: Final = schema_from_json(json.dumps(_evolve(_add_v2_fields)))
"""v1 plus two optional fields: TokenPayload.device_id and Batch.trace."""


def _datum(message: bytes, schema: Schema) -> dict[str, Any]:
    """The Avro datum in ``message``, read with fastavro directly."""
    body = io.BytesIO(message[10:])
    datum = schemaless_reader(body, parse_schema(json.loads(schema.text)), None, return_record_name=True)
    assert isinstance(datum, dict)
    return datum


def _device_events() -> list[bytes]:
    events = token_events(3)
    with_device = json.loads(events[1])
    with_device["payload"]["device_id"] = "dev-1"
    events[1] = canonical_bytes(with_device)
    decode_event(events[1])  # an unknown member is fine for the ledger
    return events


def _with_trace(envelope: bytes, trace: Any) -> bytes:
    """``envelope`` with a top-level member ``trace``, laid out as seal_batch lays out its members."""
    opened = open_envelope(envelope)
    head = {
        "payload": base64.b64encode(opened.payload).decode(),
        "payloadType": json.loads(envelope)["payloadType"],
        "signatures": [{"keyid": PRODUCER_KEY_ID, "sig": base64.b64encode(opened.signature).decode()}],
        "trace": trace,
    }
    return canonical_bytes(head)[:-1] + b',"events":[' + b",".join(opened.events) + b"]}"


class TestEvolution:
    def test_v2_differs_from_v1(self) -> None:
        assert V2.fingerprint != V1.fingerprint
        assert V2.name == V1.name

    def test_a_v2_reader_reads_v1_messages(self) -> None:
        events = _device_events() + token_events(5)
        envelope = _seal(events)
        message = encode_envelope(envelope)
        _check_round_trip(envelope, events, message, reader=V2)
        _check_round_trip(envelope, events, message, schemas={V1.fingerprint: V1, V2.fingerprint: V2}, reader=V2)

    def test_a_v2_writer_fills_the_new_field(self) -> None:
        events = _device_events()
        envelope = _seal(events)
        message = encode_envelope(envelope, V2)
        assert fingerprint_of(message) == V2.fingerprint
        payload = _datum(message, V2)["events"][1][1]["payload"][1]
        assert payload["device_id"] == "dev-1"  # typed now, not in the residual
        assert payload["_residual"] is None
        # v1 kept the same member in the residual
        old = _datum(encode_envelope(envelope), V1)["events"][1][1]["payload"][1]
        assert json.loads(old["_residual"]) == {"device_id": "dev-1"}
        both = {V1.fingerprint: V1, V2.fingerprint: V2}
        _check_round_trip(envelope, events, message, schemas=both)
        assert b'"device_id":"dev-1"' in open_envelope(decode_envelope(message, both)).events[1]

    def test_an_old_reader_is_refused_rather_than_dropping_members(self) -> None:
        message = encode_envelope(_seal(_device_events()), V2)
        with pytest.raises(InputError) as info:
            decode_envelope(message, {V2.fingerprint: V2}, reader=V1)
        assert info.value.field == "reader"
        assert "TokenPayload.device_id" in info.value.reason
        assert "Batch.trace" in info.value.reason

    def test_a_reader_without_defaults_is_refused(self) -> None:
        """The canonical form drops defaults: fine for a writer, not for a reader that adds fields."""
        message = encode_envelope(_seal(token_events(2)))
        with pytest.raises(InputError, match="default"):
            decode_envelope(message, reader=schema_from_json(V2.canonical))

    def test_batch_level_field(self) -> None:
        events = token_events(2)
        envelope = _with_trace(_seal(events), "trace-7")
        message = encode_envelope(envelope, V2)
        assert _datum(message, V2)["trace"] == "trace-7"
        _check_round_trip(envelope, events, message, schemas={V2.fingerprint: V2})
        with pytest.raises(EnvelopeError) as info:
            encode_envelope(envelope)  # v1 has nowhere to keep it
        assert info.value.field == "trace"
        with pytest.raises(EnvelopeError):
            encode_envelope(_with_trace(_seal(events), 7), V2)  # not a string

    @pytest.mark.parametrize(
        ("change", "where"),
        [
            (lambda d: _find_record(d, "TokenEvent")["fields"].__setitem__(0, {"name": "event_id", "type": "string"}),
             "TokenEvent.event_id"),
            (lambda d: _find_record(d, "AssetRef")["fields"].append(
                {"name": "size", "type": ["null", "long"], "default": 0}), "AssetRef.size"),
            (lambda d: _find_record(d, "DataPayload")["fields"].insert(
                0, {"name": "score", "type": ["null", "double"], "default": None}), "DataPayload.score"),
            (lambda d: _find_record(d, "PolicyDocument")["fields"].clear(), "PolicyDocument"),
            (lambda d: _find_record(d, "TokenEvent")["fields"].insert(
                0, {"name": "kind", "type": ["null", "string"], "default": None}), "TokenEvent.kind"),
            (lambda d: d["fields"].append({"name": "extra", "type": "string"}), "Batch.extra"),
        ],
    )  # fmt: skip
    def test_schemas_outside_the_rule_are_refused(self, change: Callable[[dict[str, Any]], None], where: str) -> None:
        with pytest.raises(InputError) as info:
            schema_from_json(json.dumps(_evolve(change)))
        assert info.value.field.startswith("schema")
        assert where in info.value.field

    @pytest.mark.parametrize("text", ["{", '"int"', '{"type": "record", "name": "Batch", "fields": []}'])
    def test_not_a_batch_schema(self, text: str) -> None:
        with pytest.raises(InputError) as info:
            schema_from_json(text)
        assert info.value.field == "schema"


# -- errors -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def message() -> bytes:
    return encode_envelope(_seal(token_events(4)))


class TestDecodeErrors:
    @pytest.mark.parametrize("start", [b"\xc3\x00", b"\x00\x01", b'{"'])
    def test_bad_marker(self, message: bytes, start: bytes) -> None:
        with pytest.raises(EnvelopeError) as info:
            decode_envelope(start + message[2:])
        assert info.value.field == "message.marker"
        assert "not Avro single-object encoded" in info.value.reason
        with pytest.raises(EnvelopeError):
            fingerprint_of(start + message[2:])

    @pytest.mark.parametrize("size", [0, 2, 9])
    def test_shorter_than_the_header(self, message: bytes, size: int) -> None:
        with pytest.raises(EnvelopeError, match="shorter than the 10-byte"):
            decode_envelope(message[:size])

    def test_unknown_fingerprint(self, message: bytes) -> None:
        stranger = message[:2] + bytes.fromhex("0123456789abcdef") + message[10:]
        with pytest.raises(UnknownSchemaError) as info:
            decode_envelope(stranger)
        assert info.value.fingerprint == bytes.fromhex("0123456789abcdef")
        assert "0123456789abcdef" in str(info.value)
        assert isinstance(info.value, InputError)
        assert not isinstance(info.value, EnvelopeError)  # a consumer can tell "update the registry" apart
        with pytest.raises(UnknownSchemaError, match=V1_FINGERPRINT):
            decode_envelope(message, {})
        with pytest.raises(UnknownSchemaError):
            decode_envelope(encode_envelope(_seal(token_events(1)), V2))  # v2 is not in the default registry

    @pytest.mark.parametrize("cut", [1, 7, 100])
    def test_truncated_body(self, message: bytes, cut: int) -> None:
        with pytest.raises(EnvelopeError) as info:
            decode_envelope(message[:-cut])
        assert info.value.field == "message.body"
        assert info.value.reason.startswith("truncated")

    def test_header_only(self, message: bytes) -> None:
        with pytest.raises(EnvelopeError, match="truncated"):
            decode_envelope(message[:10])

    @pytest.mark.parametrize("body", [b"\xff" * 20, b"\x01" * 40, b"\x00\x00\x00\x00\x02\x0a"])
    def test_garbage_body(self, message: bytes, body: bytes) -> None:
        with pytest.raises(EnvelopeError) as info:
            decode_envelope(message[:10] + body)
        assert info.value.field == "message.body"

    def test_trailing_bytes(self, message: bytes) -> None:
        with pytest.raises(EnvelopeError, match="1 bytes after the end"):
            decode_envelope(message + b"\x00")

    @pytest.mark.parametrize(
        ("residual", "reason"),
        [("not json", "_residual is not JSON"), ("[1]", "not a JSON object"), ('{"event_id":"y"}', "both")],
    )
    def test_residual_no_encoder_writes(self, residual: str, reason: str) -> None:
        datum = {
            "payload_type": "t",
            "payload": b"p",
            "signatures": [],
            "events": [("dev.lineage_ledger.v1.TokenEvent", {"event_id": "x", "_residual": residual})],
        }
        out = io.BytesIO()
        schemaless_writer(out, parse_schema(json.loads(SCHEMA_V1)), datum)
        with pytest.raises(EnvelopeError, match=reason) as info:
            decode_envelope(MARKER + V1.fingerprint + out.getvalue())
        assert "events[0]" in info.value.reason


class TestEncodeErrors:
    def _envelope(self, event: bytes) -> bytes:
        return _seal([event])

    @pytest.mark.parametrize(
        ("event", "field"),
        [
            (b'{"kind": "token"}', "events[0]"),  # whitespace: not canonical
            (b'{"b":1,"a":2,"kind":"token"}', "events[0]"),  # unsorted
            (b'{"a":"\xff","kind":"token"}', "events[0]"),  # not UTF-8
            (b'["kind","token"]', "events[0]"),
            (b'{"kind":"user"}', "events[0].kind"),
            (b'{"a":1}', "events[0].kind"),
            (b'{"kind":7}', "events[0].kind"),
        ],
    )
    def test_bad_event(self, event: bytes, field: str) -> None:
        with pytest.raises(EnvelopeError) as info:
            encode_envelope(self._envelope(event))
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("envelope", "field"),
        [
            (b"[]", "envelope"),
            (b"{", "envelope"),
            (b'{"payload":"AA==","signatures":[],"events":[]}', "payloadType"),
            (b'{"payloadType":"t","payload":"%%%","signatures":[],"events":[]}', "payload"),
            (b'{"payloadType":"t","payload":"AA==","signatures":[{"keyid":"k","sig":"AA==","x":1}],"events":[]}',
             "signatures"),
            (b'{"payloadType":"t","payload":"AA==","signatures":[],"events":{}}', "events"),
        ],
    )  # fmt: skip
    def test_bad_envelope(self, envelope: bytes, field: str) -> None:
        with pytest.raises(EnvelopeError) as info:
            encode_envelope(envelope)
        assert info.value.field == field
