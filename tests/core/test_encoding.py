"""Tests for lineage_ledger.core.encoding: canonical bytes are RFC 8785 (JCS) inside the integer-only domain."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given
from hypothesis import strategies as st

from lineage_ledger.core.encoding import MAX_SAFE_INTEGER, canonical_bytes, decode_canonical, decode_json
from lineage_ledger.errors import CanonicalFormError, InputError

# Characters whose UTF-16 order differs from their code point order: high-BMP (U+E000..U+FFFF) sorts after
# every supplementary-plane character (surrogates D800..DFFF) in UTF-16, before it by code point.
_AWKWARD_KEY_CHARS = st.sampled_from(
    ["\ue000", "\uf8ff", "\ufb33", "\ufeff", "\uffff", "\U00010000", "\U0001f600", "\U0010ffff", "\u20ac", "\x7f"]
)
_CHARS = st.characters(codec="utf-8")  # every scalar value: controls, BMP, non-BMP; no lone surrogates
_STRINGS = st.text(_CHARS, max_size=12)
_KEYS = st.text(st.one_of(_CHARS, _AWKWARD_KEY_CHARS, st.sampled_from("aZ0_")), max_size=6)
_INTS = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, _STRINGS)

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_KEYS, inner, max_size=6)),
    max_leaves=30,
)

# RFC 8785 section 3.2.3: the sorting example. The spec gives this order of the keys in the output.
RFC8785_SORT_INPUT = {
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\U0001f600": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis",
}
RFC8785_SORTED_KEYS = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]

# RFC 8785 section 3.2.2.2: the string serialisation example (input as a JavaScript literal
# "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", output "€$\u000f\nA'B\"\\\\\"/").
RFC8785_STRING_INPUT = "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/"
RFC8785_STRING_OUTPUT = '"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'.encode()


class TestCanonicalBytesIsJcs:
    @given(JSON_VALUES)
    @example({"\ue000": 1, "\U0001f600": 2})
    @example({"a": {"\uffff": [], "\U00010000": None, "b": {"\ufb33": 0, "\U0010ffff": ""}}})
    @example(["\x00\x1f\x7f\u2028\u2029\ud7ff\ue000\U0001f600", -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER])
    def test_equals_rfc8785(self, value: Any) -> None:
        assert canonical_bytes(value) == rfc8785.dumps(value)

    @given(st.dictionaries(_KEYS, _SCALARS, min_size=2, max_size=8))
    def test_object_key_order_is_utf16(self, value: dict[str, Any]) -> None:
        out = json.loads(canonical_bytes(value))
        keys = list(out)
        assert keys == sorted(value, key=lambda k: k.encode("utf-16-be"))

    def test_rfc8785_sorting_example(self) -> None:
        out = canonical_bytes(RFC8785_SORT_INPUT)
        assert list(json.loads(out)) == RFC8785_SORTED_KEYS
        assert out == rfc8785.dumps(RFC8785_SORT_INPUT)
        assert out.startswith(b'{"\\r":"Carriage Return","1":"One","\xc2\x80":"Control"')

    def test_rfc8785_string_example(self) -> None:
        assert canonical_bytes(RFC8785_STRING_INPUT) == RFC8785_STRING_OUTPUT
        assert rfc8785.dumps(RFC8785_STRING_INPUT) == RFC8785_STRING_OUTPUT

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, b"null"),
            (True, b"true"),
            (False, b"false"),
            (0, b"0"),
            (MAX_SAFE_INTEGER, b"9007199254740991"),
            (-MAX_SAFE_INTEGER, b"-9007199254740991"),
            ({}, b"{}"),
            ([], b"[]"),
            ((1, "a"), b'[1,"a"]'),
            ({"b": [1, {"d": True, "c": None}], "a": ""}, b'{"a":"","b":[1,{"c":null,"d":true}]}'),
        ],
    )
    def test_literals(self, value: Any, expected: bytes) -> None:
        assert canonical_bytes(value) == expected

    @given(JSON_VALUES)
    def test_decode_canonical_accepts_exactly_canonical_bytes(self, value: Any) -> None:
        data = rfc8785.dumps(value)
        assert decode_canonical(data) == value

    @given(st.dictionaries(_KEYS, JSON_VALUES, min_size=2, max_size=6))
    def test_decode_canonical_rejects_any_other_key_order(self, value: dict[str, Any]) -> None:
        reordered = json.dumps(dict(reversed(value.items())), ensure_ascii=False, separators=(",", ":")).encode()
        if reordered != rfc8785.dumps(value):
            with pytest.raises(CanonicalFormError):
                decode_canonical(reordered)


class _NotJson:
    pass


class TestCanonicalBytesRejects:
    @pytest.mark.parametrize(
        ("value", "field"),
        [
            (1.5, ""),
            (0.0, ""),
            ({"a": [1, 2.0]}, "a[1]"),
            ({"a": {"b": float("nan")}}, "a.b"),
            (2**53, ""),
            ({"a": {"b": 2**53}}, "a.b"),
            ({"a": [-(2**53)]}, "a[0]"),
            ({"n": 10**30}, "n"),
            ({1: "x"}, ""),
            ({"a": {"b": {None: 1}}}, "a.b"),
            ({"a": [{("t",): 1}]}, "a[0]"),
            ("\ud800", ""),
            ({"s": "ok\udfffok"}, "s"),
            ({"\udc00": 1}, ""),
            ({"k": {"x\ud83d": 1}}, "k"),
            ({"b": b"bytes"}, "b"),
            ({"b": [bytearray(b"x")]}, "b[0]"),
            ({"set": {1, 2}}, "set"),
            ({"o": _NotJson()}, "o"),
        ],
    )
    def test_names_the_path(self, value: Any, field: str) -> None:
        with pytest.raises(InputError) as info:
            canonical_bytes(value)
        assert info.value.field == field
        assert not isinstance(info.value, CanonicalFormError)

    def test_field_prefix(self) -> None:
        with pytest.raises(InputError) as info:
            canonical_bytes({"a": [1.0]}, field="event")
        assert info.value.field == "event.a[0]"

    @pytest.mark.parametrize("value", [1.5, 2**53, -(2**53), 10**30])
    def test_rfc8785_agrees_these_are_outside_the_domain(self, value: Any) -> None:
        # Floats are legal JCS but outside the ledger's domain; big integers are outside both.
        if isinstance(value, int):
            with pytest.raises(ValueError):
                rfc8785.dumps(value)
        with pytest.raises(InputError):
            canonical_bytes(value)


class TestDecodeCanonicalRejects:
    @pytest.mark.parametrize(
        ("data", "error", "field"),
        [
            (b'{"a": 1}', CanonicalFormError, "payload"),
            (b'{"a":1} ', CanonicalFormError, "payload"),
            (b' {"a":1}', CanonicalFormError, "payload"),
            (b'{"a":1}\n', CanonicalFormError, "payload"),
            (b"[1, 2]", CanonicalFormError, "payload"),
            (b'{\t"a":1}', CanonicalFormError, "payload"),
            (b'{"b":1,"a":2}', CanonicalFormError, "payload"),
            (b'{"\xee\x80\x80":1,"\xf0\x9f\x98\x80":2}', CanonicalFormError, "payload"),  # code point order, not UTF-16
            (b'{"a":1,"a":1}', CanonicalFormError, "payload"),
            (b'{"a":1,"a":2}', CanonicalFormError, "payload"),
            (b"-0", CanonicalFormError, "payload"),
            (b"[-0]", CanonicalFormError, "payload"),
            (b"01", InputError, "payload"),
            (b'"\\u0041"', CanonicalFormError, "payload"),
            (b'"\\/"', CanonicalFormError, "payload"),
            (b'"\\u001F"', CanonicalFormError, "payload"),
            (b'"\\u007f"', CanonicalFormError, "payload"),
            (b'"\\ud83d\\ude00"', CanonicalFormError, "payload"),
            (b"1.0", InputError, "payload"),
            (b"1e3", InputError, "payload"),
            (b"1E3", InputError, "payload"),
            (b'{"a":0.5}', InputError, "payload.a"),
            (b"9007199254740992", InputError, "payload"),
            (b"-9007199254740992", InputError, "payload"),
            (b'"\xff"', InputError, "payload"),
            (b'"\xc3"', InputError, "payload"),
            (b'"\xed\xa0\x80"', InputError, "payload"),  # CESU-8 lone surrogate
            (b"", InputError, "payload"),
            (b"{", InputError, "payload"),
            (b"\xef\xbb\xbf{}", InputError, "payload"),  # a byte order mark is not canonical
        ],
    )
    def test_rejects(self, data: bytes, error: type[InputError], field: str) -> None:
        with pytest.raises(error) as info:
            decode_canonical(data, field="payload")
        assert info.value.field == field

    @pytest.mark.parametrize(
        "data",
        [
            b"null",
            b"0",
            b"-9007199254740991",
            b'{"a":[1,"\\u000f",{"b":null}],"c":false}',
            b'"\\b\\t\\n\\f\\r\\"\\\\"',
            b'{"\xf0\x9f\x98\x80":2,"\xee\x80\x80":1}',
        ],
    )
    def test_accepts_canonical(self, data: bytes) -> None:
        value = decode_canonical(data)
        assert rfc8785.dumps(value) == data

    def test_decode_json_names_the_field(self) -> None:
        with pytest.raises(InputError) as info:
            decode_json(b"\xff", field="body")
        assert info.value.field == "body"
        with pytest.raises(InputError) as info:
            decode_json(b"{", field="body")
        assert info.value.field == "body"
