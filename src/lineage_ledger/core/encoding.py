"""The one place that makes the bytes the ledger hashes and signs.

Canonical JSON here is RFC 8785 (JCS) restricted to a domain with no floats and integers within
+-(2**53 - 1): UTF-8, no insignificant whitespace, object keys sorted by their UTF-16 code units, strings
escaped as ECMAScript's JSON.stringify does. Inside that domain the output equals JCS byte for byte (a
property test checks it against the ``rfc8785`` package). Values outside it (nanosecond clocks, big counters)
travel as decimal strings.

Wire codecs (HTTP bodies, Kafka records) live elsewhere; nothing in this module is for display.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lineage_ledger.errors import CanonicalFormError, InputError

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_SAFE_INTEGER",
    "TOO_DEEP",
    "canonical_bytes",
    "decode_canonical",
    "decode_json",
]

MAX_SAFE_INTEGER = 2**53 - 1
MAX_JSON_DEPTH = 128
"""The deepest nesting of arrays and objects in canonical JSON: deeper values are refused as bad input (a
parser following them would exhaust the stack)."""
TOO_DEEP = f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"
"""The reason given for JSON nested too deeply, by this module and by the wire codecs."""

# msgspec's escaping matches ECMAScript's for every code point, and its "sorted" order matches UTF-16 order
# for keys made only of code points below U+D800 (where UTF-16 and code point order agree). Keys with
# higher code points are re-ordered by _utf16_key before encoding.
_ENCODE = msgspec.json.Encoder(order="sorted").encode
_ENCODE_AS_GIVEN = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder().decode


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _normalise(value: Any, path: str, depth: int = 0) -> tuple[Any, bool]:
    """Check ``value`` is in the canonical domain; return it and whether keys need UTF-16 ordering."""
    if value is None or value is True or value is False:
        return value, False
    kind = type(value)
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(path, "string holds a lone surrogate, which is not valid UTF-8") from e
        return value, False
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value, False
        raise InputError(path, f"integer {value} is outside +-(2**53-1); send it as a decimal string")
    if kind is float:
        raise InputError(path, "floats are not allowed in canonical JSON; use an integer or a decimal string")
    if (kind is list or kind is tuple or kind is dict) and depth >= MAX_JSON_DEPTH:
        raise InputError(path, TOO_DEEP)
    if kind is list or kind is tuple:
        out = []
        wide = False
        for i, item in enumerate(value):
            norm, w = _normalise(item, f"{path}[{i}]", depth + 1)
            out.append(norm)
            wide = wide or w
        return out, wide
    if kind is dict:
        out_d: dict[str, Any] = {}
        wide = False
        for key, item in value.items():
            if type(key) is not str:
                raise InputError(path, f"object key {key!r} is not a string")
            try:
                key.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InputError(path, "object key holds a lone surrogate") from e
            norm, w = _normalise(item, f"{path}.{key}" if path else key, depth + 1)
            out_d[key] = norm
            wide = wide or w or any(ord(ch) >= 0xD800 for ch in key)
        return out_d, wide
    if isinstance(value, bool | int | str | float | list | tuple | dict):
        return _normalise(_plain(value), path, depth)
    raise InputError(path, f"{kind.__name__} is not a JSON value")


def _plain(value: Any) -> Any:
    """Subclasses of the JSON types (str enums, IntFlag...) as their base type."""
    bases: tuple[type[Any], ...] = (bool, int, str, float, list, tuple, dict)
    for base in bases:
        if isinstance(value, base):
            return base(value)
    return value  # callers only pass subclasses of the JSON types


def _utf16_sorted(value: Any) -> Any:
    if type(value) is dict:
        return {k: _utf16_sorted(value[k]) for k in sorted(value, key=_utf16_key)}
    if type(value) is list:
        return [_utf16_sorted(v) for v in value]
    return value


def canonical_bytes(value: Any, *, field: str = "") -> bytes:
    """Return the canonical JSON bytes of ``value``.

    Raises InputError naming the offending path for floats, out-of-range integers, non-string keys, lone
    surrogates and non-JSON types. Equal values always give equal bytes.
    """
    norm, wide = _normalise(value, field)
    if wide:
        return _ENCODE_AS_GIVEN(_utf16_sorted(norm))
    return _ENCODE(norm)


def decode_json(data: bytes, *, field: str = "") -> Any:
    """Parse JSON bytes into plain Python values; InputError names ``field`` on bad UTF-8 or syntax, or on
    nesting too deep to parse."""
    try:
        return _DECODE(data)
    except RecursionError:
        raise InputError(field, TOO_DEEP) from None
    except UnicodeDecodeError as e:
        raise InputError(field, f"not valid UTF-8 at byte {e.start}") from e
    except msgspec.DecodeError as e:
        raise InputError(field, f"not valid JSON ({e})") from e


def decode_canonical(data: bytes, *, field: str = "") -> Any:
    """Parse ``data`` and check it is exactly the canonical form of what it holds.

    Duplicate keys, whitespace, unsorted keys, non-canonical escapes or numbers are all rejected with
    CanonicalFormError; values outside the domain (floats, big integers) with InputError.
    """
    value = decode_json(data, field=field)
    if canonical_bytes(value, field=field) != data:
        raise CanonicalFormError(
            field,
            "not canonical JSON (RFC 8785: sorted keys, no whitespace, no duplicate keys, minimal escapes)",
        )
    return value
