"""Tests for lineage_ledger.core.model: events decode only from canonical, well-typed bytes; errors name the field."""

from __future__ import annotations

import copy
import json
from typing import Any, Final

import msgspec
import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.model import (
    DATA_EVENT_TYPES,
    MAX_EVENT_BYTES,
    TOKEN_EVENT_TYPES,
    AssetRef,
    DataEvent,
    DataPayload,
    Event,
    PolicyEvent,
    PolicyPayload,
    TokenEvent,
    TokenPayload,
    decode_event,
    encode_event,
    subject_of,
)
from lineage_ledger.errors import CanonicalFormError, InputError

# RFC 9562 appendix A.6: example UUIDv7 (lowercased) and appendix A.4: example UUIDv4.
UUID7: Final = "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"
UUID4: Final = "919108f7-52d1-4320-9bac-f847db4148a8"
TOKEN_ID: Final = "0123456789abcdef" * 4
PARENT_ID: Final = "eu-west-1:" + "fedcba9876543210" * 4
HLC: Final = "1763891234123456789.00002"
MFA: Final = "1763891200000000000.00000"
SHA: Final = "sha256:" + "ab" * 32
# RFC 7519 section 3.1: the example JWT.
JWT: Final = (
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)

TOKEN_EVENT: Final[dict[str, Any]] = {
    "kind": "token",
    "event_id": UUID7,
    "event_type": "ACTIVATED",
    "token_id": TOKEN_ID,
    "occurred_at": HLC,
    "schema_version": 1,
    "payload": {
        "user_id": "alice",
        "client_id": "web-app",
        "scopes": ["read", "write"],
        "ip": "2001:db8::1",
        "user_agent": "Mozilla/5.0",
        "policy_version": "v7",
        "resource": "/v1/accounts",
        "outcome": "ALLOW",
        "parent_token_id": PARENT_ID,
        "actor_token_id": TOKEN_ID,
        "mfa_at": MFA,
        "expires_at": HLC,
        "reason": "login",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    },
}
POLICY_EVENT: Final[dict[str, Any]] = {
    "kind": "policy",
    "event_id": UUID7,
    "event_type": "POLICY_CHANGED",
    "policy_id": "token-policy",
    "occurred_at": HLC,
    "schema_version": 1,
    "payload": {
        "policy_version": "v8",
        "document": {"rules": [{"scope": "admin", "max_ttl": "3600", "mfa": True}], "owner": None},
        "reason": "tighten admin",
    },
}
DATA_EVENT: Final[dict[str, Any]] = {
    "kind": "data",
    "event_id": UUID7,
    "event_type": "TRANSFORMED",
    "asset_id": "s3://warehouse/daily.parquet",
    "occurred_at": HLC,
    "schema_version": 1,
    "payload": {
        "actor": "etl-job",
        "inputs": [{"asset_id": "s3://raw/a.json", "content_hash": SHA}, {"asset_id": "s3://raw/b.json"}],
        "output_hash": SHA,
        "destination": "eu-analytics",
        "purpose": "reporting",
        "token_id": TOKEN_ID,
        "reason": "nightly",
    },
}
BASES: Final = {"token": TOKEN_EVENT, "policy": POLICY_EVENT, "data": DATA_EVENT}

DELETE: Final = object()


def raw(json_text: str) -> str:
    """A placeholder for JSON that RFC 8785 cannot produce (floats, big integers), swapped in after encoding."""
    return f"\x00raw\x00{json_text}"


FLOAT: Final = raw("1.5")


def _edit(base: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _bytes(event: dict[str, Any]) -> bytes:
    """The canonical bytes of ``event`` by RFC 8785, with every raw() placeholder swapped for its JSON text."""
    data: bytes = rfc8785.dumps(event)
    placeholder = rfc8785.dumps(raw(""))[:-1]
    while placeholder in data:
        start = data.index(placeholder)
        end = data.index(b'"', start + len(placeholder))
        data = data[:start] + data[start + len(placeholder) : end] + data[end + 1 :]
    return data


def _field_of(data: bytes) -> tuple[type[InputError], str]:
    with pytest.raises(InputError) as info:
        decode_event(data)
    return type(info.value), info.value.field


class TestValidEvents:
    @pytest.mark.parametrize("kind", sorted(BASES))
    def test_decodes(self, kind: str) -> None:
        base = BASES[kind]
        event = decode_event(rfc8785.dumps(base))
        assert json.loads(msgspec.json.encode(event)) == base
        assert encode_event(event) == rfc8785.dumps(base)
        assert encode_event(base) == rfc8785.dumps(base)

    def test_typed_views(self) -> None:
        token = decode_event(rfc8785.dumps(TOKEN_EVENT))
        assert isinstance(token, TokenEvent)
        assert token.payload.scopes == ("read", "write")
        assert token.payload.parent_token_id == PARENT_ID
        assert subject_of(token) == "token:" + TOKEN_ID
        policy = decode_event(rfc8785.dumps(POLICY_EVENT))
        assert isinstance(policy, PolicyEvent)
        assert policy.payload.document == POLICY_EVENT["payload"]["document"]
        assert subject_of(policy) == "policy:token-policy"
        data = decode_event(rfc8785.dumps(DATA_EVENT))
        assert isinstance(data, DataEvent)
        assert data.payload.inputs == (
            AssetRef(asset_id="s3://raw/a.json", content_hash=SHA),
            AssetRef(asset_id="s3://raw/b.json"),
        )
        assert subject_of(data) == "asset:s3://warehouse/daily.parquet"

    @pytest.mark.parametrize("event_type", TOKEN_EVENT_TYPES)
    def test_every_token_event_type(self, event_type: str) -> None:
        minimal = {k: v for k, v in TOKEN_EVENT.items() if k != "payload"} | {"event_type": event_type}
        event = decode_event(rfc8785.dumps(minimal))
        assert isinstance(event, TokenEvent)
        assert event.event_type == event_type
        assert event.payload == TokenPayload()

    @pytest.mark.parametrize("event_type", DATA_EVENT_TYPES)
    def test_every_data_event_type(self, event_type: str) -> None:
        event = decode_event(rfc8785.dumps(_edit(DATA_EVENT, ("event_type",), event_type)))
        assert event.event_type == event_type

    def test_region_prefixed_token_id(self) -> None:
        event = decode_event(rfc8785.dumps(_edit(TOKEN_EVENT, ("token_id",), PARENT_ID)))
        assert isinstance(event, TokenEvent)
        assert event.token_id == PARENT_ID

    def test_max_size_is_inclusive(self) -> None:
        empty = len(rfc8785.dumps(_edit(DATA_EVENT, ("padding",), "")))
        data = rfc8785.dumps(_edit(DATA_EVENT, ("padding",), "x" * (MAX_EVENT_BYTES - empty)))
        assert len(data) == MAX_EVENT_BYTES
        decode_event(data)


class TestUnknownFields:
    @pytest.mark.parametrize(
        ("kind", "path", "value"),
        [
            ("token", ("x_future",), {"b": [1, "é", None], "a": "\U0001f600", "\ue000": True}),
            ("token", ("payload", "x_new"), [{"n": -5}]),
            ("token", ("aaa",), "sorts first"),
            ("token", ("\U0001f600",), "non-BMP key"),
            ("policy", ("payload", "x_new"), "kept"),
            ("policy", ("x_new",), {"\ufb33": 1, "\U00010000": 2}),
            ("data", ("payload", "inputs", 0, "x_size"), 12),
            ("data", ("zzz",), None),
        ],
    )
    def test_accepted_and_kept_byte_for_byte(self, kind: str, path: tuple[str | int, ...], value: Any) -> None:
        event = _edit(BASES[kind], path, value)
        data = rfc8785.dumps(event)
        typed = decode_event(data)
        assert typed == decode_event(rfc8785.dumps(BASES[kind]))  # the typed view ignores unknown fields
        assert encode_event(event) == data
        assert json.dumps(path[-1], ensure_ascii=False).encode() in data
        assert json.loads(data) == event

    def test_policy_document_is_kept_whole(self) -> None:
        event = _edit(POLICY_EVENT, ("payload", "document", "\U0001f600"), {"\ufb33": 1, "a": [None, "x"]})
        data = rfc8785.dumps(event)
        typed = decode_event(data)
        assert isinstance(typed, PolicyEvent)
        assert typed.payload.document == event["payload"]["document"]
        assert encode_event(event) == data
        assert encode_event(typed) == data


class TestRejected:
    @pytest.mark.parametrize(
        ("kind", "path", "value", "field"),
        [
            # missing fields
            ("token", ("event_id",), DELETE, "event.event_id"),
            ("token", ("kind",), DELETE, "event.kind"),
            ("token", ("schema_version",), DELETE, "event.schema_version"),
            ("policy", ("payload",), DELETE, "event.payload"),
            ("policy", ("payload", "document"), DELETE, "event.payload.document"),
            ("data", ("payload", "actor"), DELETE, "event.payload.actor"),
            ("data", ("payload", "inputs", 1, "asset_id"), DELETE, "event.payload.inputs[1].asset_id"),
            # wrong types
            ("token", ("event_id",), 7, "event.event_id"),
            ("token", ("schema_version",), "1", "event.schema_version"),
            ("token", ("schema_version",), 0, "event.schema_version"),
            ("token", ("payload",), [], "event.payload"),
            ("token", ("payload", "scopes"), "read", "event.payload.scopes"),
            ("token", ("payload", "scopes", 1), "", "event.payload.scopes[1]"),
            ("token", ("payload", "outcome"), "MAYBE", "event.payload.outcome"),
            ("token", ("payload", "outcome"), "allow", "event.payload.outcome"),
            ("token", ("payload", "user_id"), True, "event.payload.user_id"),
            ("token", ("payload", "ip"), "x" * 65, "event.payload.ip"),
            ("token", ("payload", "trace_id"), "0AF7651916CD43DD8448EB211C80319C", "event.payload.trace_id"),
            ("token", ("payload", "trace_id"), "0af7651916cd43dd8448eb211c80319c\n", "event.payload.trace_id"),
            ("token", ("payload", "mfa_at"), "yesterday", "event.payload.mfa_at"),
            ("token", ("payload", "mfa_at"), MFA + "\n", "event.payload.mfa_at"),
            ("token", ("payload", "parent_token_id"), TOKEN_ID.upper(), "event.payload.parent_token_id"),
            ("token", ("payload", "parent_token_id"), TOKEN_ID + "\n", "event.payload.parent_token_id"),
            ("token", ("payload", "actor_token_id"), JWT, "event.payload.actor_token_id"),
            ("policy", ("payload", "document"), ["not", "an", "object"], "event.payload.document"),
            ("policy", ("policy_id",), "", "event.policy_id"),
            ("data", ("asset_id",), "has space", "event.asset_id"),
            ("data", ("asset_id",), "s3://x\n", "event.asset_id"),
            ("data", ("payload", "inputs", 0, "content_hash"), "md5:00", "event.payload.inputs[0].content_hash"),
            ("data", ("payload", "output_hash"), SHA + "\n", "event.payload.output_hash"),
            ("data", ("payload", "token_id"), "raw-bearer-token", "event.payload.token_id"),
            # unknown event_type or kind
            ("token", ("event_type",), "LOGGED_IN", "event.event_type"),
            ("token", ("event_type",), "POLICY_CHANGED", "event.event_type"),
            ("data", ("event_type",), "ISSUED", "event.event_type"),
            ("token", ("kind",), "session", "event.kind"),
            ("token", ("kind",), "Token", "event.kind"),
            # floats anywhere: known fields, unknown fields, inside a policy document
            ("token", ("schema_version",), FLOAT, "event.schema_version"),
            ("token", ("payload", "reason"), FLOAT, "event.payload.reason"),
            ("token", ("x_score",), FLOAT, "event.x_score"),
            ("token", ("payload", "x_score"), FLOAT, "event.payload.x_score"),
            ("data", ("payload", "inputs", 0, "x_weight"), FLOAT, "event.payload.inputs[0].x_weight"),
            (
                "policy",
                ("payload", "document", "rules", 0, "max_ttl"),
                FLOAT,
                "event.payload.document.rules[0].max_ttl",
            ),
            ("policy", ("payload", "document", "limit"), FLOAT, "event.payload.document.limit"),
            # integers outside +-(2**53-1)
            ("token", ("schema_version",), raw(str(2**53)), "event.schema_version"),
            ("token", ("x_big",), raw(str(2**60)), "event.x_big"),
            ("policy", ("payload", "document", "n"), raw(str(-(2**53))), "event.payload.document.n"),
            ("token", ("payload", "x_exp"), raw("1e3"), "event.payload.x_exp"),
            # the subject head
            ("token", ("token_id",), JWT, "event.token_id"),
            ("token", ("token_id",), JWT[:80], "event.token_id"),
            ("token", ("token_id",), TOKEN_ID.upper(), "event.token_id"),
            ("token", ("token_id",), TOKEN_ID[:-1], "event.token_id"),
            ("token", ("token_id",), "EU:" + TOKEN_ID, "event.token_id"),
            ("token", ("event_id",), UUID4, "event.event_id"),
            ("token", ("event_id",), UUID7.upper(), "event.event_id"),
            ("token", ("event_id",), UUID7.replace("-98c4-", "-08c4-"), "event.event_id"),
            ("data", ("event_id",), UUID4, "event.event_id"),
            ("token", ("occurred_at",), "2025-11-23T10:00:00.000Z", "event.occurred_at"),
            ("policy", ("occurred_at",), "1763891234123456789-00002", "event.occurred_at"),
            ("data", ("occurred_at",), "176389123412345678.000002", "event.occurred_at"),
            # a raw JWT planted in a payload field
            ("token", ("payload", "reason"), "bearer " + JWT, "event.payload.reason"),
            ("token", ("payload", "user_agent"), JWT, "event.payload.user_agent"),
            (
                "token",
                ("payload", "x_header"),
                {"authorization": "Bearer " + JWT},
                "event.payload.x_header.authorization",
            ),
            ("data", ("payload", "destination"), JWT, "event.payload.destination"),
            ("policy", ("payload", "document", "rules", 0, "example"), JWT, "event.payload.document.rules[0].example"),
        ],
    )
    def test_names_the_field(self, kind: str, path: tuple[str | int, ...], value: Any, field: str) -> None:
        data = _bytes(_edit(BASES[kind], path, value))
        error, got = _field_of(data)
        assert got == field
        assert error is InputError
        if not (isinstance(value, str) and value.startswith(raw(""))):
            with pytest.raises(InputError) as info:
                encode_event(_edit(BASES[kind], path, value))
            assert info.value.field == field

    def test_oversized(self) -> None:
        data = rfc8785.dumps(_edit(DATA_EVENT, ("padding",), "x" * MAX_EVENT_BYTES))
        assert _field_of(data) == (InputError, "event")

    def test_oversized_is_refused_before_parsing(self) -> None:
        assert _field_of(b"[" * (MAX_EVENT_BYTES + 1)) == (InputError, "event")

    @pytest.mark.parametrize(
        "data",
        [
            rfc8785.dumps(TOKEN_EVENT).replace(b"alice", b"al\xffce"),
            rfc8785.dumps(_edit(TOKEN_EVENT, ("x_new",), "alice")).replace(b"alice", b"al\xc3ce"),
            rfc8785.dumps(TOKEN_EVENT).replace(b"alice", b"al\xed\xa0\x80ce"),
            b"\xff",
        ],
    )
    def test_non_utf8(self, data: bytes) -> None:
        assert _field_of(data) == (InputError, "event")

    @pytest.mark.parametrize(
        "data",
        [
            json.dumps(TOKEN_EVENT, sort_keys=True, ensure_ascii=False).encode(),
            json.dumps(TOKEN_EVENT, separators=(",", ":"), ensure_ascii=False).encode(),
            json.dumps(_edit(TOKEN_EVENT, ("x_new",), 1), separators=(",", ":"), ensure_ascii=False).encode(),
            json.dumps(POLICY_EVENT, separators=(",", ":"), ensure_ascii=False).encode(),
            rfc8785.dumps(TOKEN_EVENT) + b"\n",
            rfc8785.dumps(TOKEN_EVENT).replace(b'{"event_id"', b'{"event_id":"' + UUID7.encode() + b'","event_id"'),
            rfc8785.dumps(TOKEN_EVENT).replace(b'"alice"', b'"\\u0061lice"'),
            rfc8785.dumps(POLICY_EVENT).replace(b'"admin"', b'"\\u0061dmin"'),
            rfc8785.dumps(DATA_EVENT).replace(b"s3://", b"s3:\\/\\/"),
            rfc8785.dumps(_edit(DATA_EVENT, ("x_zero",), 0)).replace(b'"x_zero":0', b'"x_zero":-0'),
        ],
    )
    def test_non_canonical(self, data: bytes) -> None:
        assert _field_of(data) == (CanonicalFormError, "event")

    @pytest.mark.parametrize("data", [b"", b"{", b"null", b"[]", b'"token"', b"{}"])
    def test_not_an_event(self, data: bytes) -> None:
        _, field = _field_of(data)
        assert field.startswith("event")


# -- typed events round trip, and their bytes are exactly RFC 8785 -------------------------------------------

_CHARS = st.characters(codec="utf-8")
_NAMES = st.text(_CHARS, min_size=1, max_size=12)
_TEXTS = st.text(_CHARS, max_size=24)
_TOKEN_IDS = st.from_regex(r"(?:[a-z0-9-]{1,32}:)?[0-9a-f]{64}", fullmatch=True)
_HLCS = st.builds(format_reading, st.integers(0, 10**19 - 1), st.integers(0, 99_999))
_UUID7S = st.builds(
    "{:08x}-{:04x}-7{:03x}-{}{:03x}-{:012x}".format,
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**12 - 1),
    st.sampled_from("89ab"),
    st.integers(0, 2**12 - 1),
    st.integers(0, 2**48 - 1),
)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


TOKEN_PAYLOADS = st.builds(
    TokenPayload,
    user_id=_opt(_NAMES),
    client_id=_opt(_NAMES),
    scopes=_opt(st.lists(_NAMES, max_size=4).map(tuple)),
    ip=_opt(st.text(_CHARS, max_size=20)),
    user_agent=_opt(_TEXTS),
    policy_version=_opt(_NAMES),
    resource=_opt(_TEXTS),
    outcome=_opt(st.sampled_from(["ALLOW", "DENY"])),
    parent_token_id=_opt(_TOKEN_IDS),
    actor_token_id=_opt(_TOKEN_IDS),
    mfa_at=_opt(_HLCS),
    expires_at=_opt(_HLCS),
    reason=_opt(_TEXTS),
    trace_id=_opt(st.from_regex(r"[0-9a-f]{32}", fullmatch=True)),
)
TOKEN_EVENTS = st.builds(
    TokenEvent,
    event_id=_UUID7S,
    event_type=st.sampled_from(TOKEN_EVENT_TYPES),
    token_id=_TOKEN_IDS,
    occurred_at=_HLCS,
    schema_version=st.integers(1, 2**53 - 1),
    payload=TOKEN_PAYLOADS,
)
POLICY_EVENTS = st.builds(
    PolicyEvent,
    event_id=_UUID7S,
    event_type=st.just("POLICY_CHANGED"),
    policy_id=_NAMES,
    occurred_at=_HLCS,
    schema_version=st.integers(1, 3),
    payload=st.builds(
        PolicyPayload,
        policy_version=_NAMES,
        document=st.dictionaries(
            st.text(_CHARS, max_size=4),
            st.recursive(
                st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _TEXTS,
                lambda inner: (
                    st.lists(inner, max_size=3) | st.dictionaries(st.text(_CHARS, max_size=4), inner, max_size=3)
                ),
                max_leaves=8,
            ),
            max_size=4,
        ),
        reason=_opt(_TEXTS),
    ),
)
DATA_EVENTS = st.builds(
    DataEvent,
    event_id=_UUID7S,
    event_type=st.sampled_from(DATA_EVENT_TYPES),
    asset_id=st.from_regex(r"[!-~]{1,40}", fullmatch=True),
    occurred_at=_HLCS,
    schema_version=st.just(1),
    payload=st.builds(
        DataPayload,
        actor=_NAMES,
        inputs=st.lists(
            st.builds(
                AssetRef,
                asset_id=st.from_regex(r"[!-~]{1,20}", fullmatch=True),
                content_hash=_opt(st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)),
            ),
            max_size=3,
        ).map(tuple),
        output_hash=_opt(st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)),
        destination=_opt(_TEXTS),
        purpose=_opt(_TEXTS),
        token_id=_opt(_TOKEN_IDS),
        reason=_opt(_TEXTS),
    ),
)


class TestTypedRoundTrip:
    @given(TOKEN_EVENTS)
    def test_token_event_bytes_are_rfc8785(self, event: TokenEvent) -> None:
        data = encode_event(event)
        assert data == rfc8785.dumps(msgspec.to_builtins(event))
        assert decode_event(data) == event

    def test_policy_document_keys_sort_by_utf16_code_units(self) -> None:
        # U+10000 is D800 DC00 in UTF-16, so it sorts before U+E000 there, after it by code point
        event = PolicyEvent(
            event_id="00000000-0000-7000-8000-000000000000",
            event_type="POLICY_CHANGED",
            policy_id="0",
            occurred_at=format_reading(0, 0),
            schema_version=1,
            payload=PolicyPayload(policy_version="0", document={"\ue000": None, "\U00010000": None}),
        )
        data = encode_event(event)
        assert data.index("\U00010000".encode()) < data.index("\ue000".encode())
        assert data == rfc8785.dumps(msgspec.to_builtins(event))

    @given(st.one_of(TOKEN_EVENTS, POLICY_EVENTS, DATA_EVENTS))
    def test_round_trip(self, event: Event) -> None:
        data = encode_event(event)
        assert data == rfc8785.dumps(msgspec.to_builtins(event))
        assert decode_event(data) == event
        assert encode_event(msgspec.to_builtins(event)) == data


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("occurred_at", "2026-12-01T09:30:00Z", "HLC reading"),  # shorter than a reading
        ("occurred_at", "2026-12-01T09:30:00.123456+00:00", "HLC reading"),  # longer
        ("occurred_at", "2026-12-01T09:30:00.1234Z", "HLC reading"),  # as long as one
        ("occurred_at", 1763891234, "HLC reading"),  # a number (epoch seconds)
        ("event_id", "not-a-uuid", "UUIDv7"),
        ("token_id", "abc", "64 lowercase hex digits"),
    ],
)
def test_a_malformed_head_field_names_the_form_expected(field: str, value: object, expected: str) -> None:
    event = {**TOKEN_EVENT, field: value}
    with pytest.raises(InputError) as raised:
        decode_event(rfc8785.dumps(event))
    assert raised.value.field == f"event.{field}"
    assert expected in raised.value.reason
    assert "Expected `" not in raised.value.reason
    if field == "occurred_at":
        assert "1763891234123456789.00000" in raised.value.reason  # an example of the form
