"""Events producers emit and entries the log commits to: small immutable types that validate on decode.

Three kinds of event, told apart by their ``kind`` field:

* ``token``: a step in a bearer token's life (ISSUED ... REVOKED, ORIGIN for backfilled legacy tokens).
  ``token_id`` is an HMAC fingerprint (core.crypto.token_fingerprint), never the token itself.
* ``policy``: POLICY_CHANGED, carrying the whole policy document so later questions can use the policy that
  was in force at the time.
* ``data``: a step in a data asset's provenance (CREATED, TRANSFORMED, AGGREGATED, TRANSMITTED, ACCESSED,
  DELETED).

An event travels and is committed as the producer's canonical JSON bytes; fields this version does not know
stay in those bytes untouched (schemas evolve), and the typed view below ignores them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from lineage_ledger.core.crypto import TOKEN_ID_PATTERN
from lineage_ledger.core.encoding import MAX_SAFE_INTEGER, TOO_DEEP, canonical_bytes, decode_json
from lineage_ledger.core.hlc import HLC_PATTERN
from lineage_ledger.errors import CanonicalFormError, InputError

__all__ = [
    "DATA_EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "SCHEMA_VERSION",
    "TOKEN_EVENT_TYPES",
    "TOKEN_ID_FORM",
    "TOKEN_ID_PATTERN",
    "AssetRef",
    "DataEvent",
    "DataPayload",
    "Event",
    "PolicyEvent",
    "PolicyPayload",
    "TokenEvent",
    "TokenPayload",
    "decode_event",
    "encode_event",
    "head_ok",
    "is_token_id",
    "read_event",
    "read_subject",
    "redact",
    "subject_of",
]

SCHEMA_VERSION: Final = 1
MAX_EVENT_BYTES: Final = 64 * 1024

TOKEN_EVENT_TYPES: Final = (
    "ISSUED",
    "ACTIVATED",
    "USED",
    "REFRESHED",
    "ROTATED",
    "EXPIRED",
    "REVOKED",
    "ORIGIN",
)
DATA_EVENT_TYPES: Final = ("CREATED", "TRANSFORMED", "AGGREGATED", "TRANSMITTED", "ACCESSED", "DELETED")

_EVENT_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
_TOKEN_ID = TOKEN_ID_PATTERN  # its one home is core.crypto, beside the fingerprint it describes
_TOKEN_ID_RE = re.compile(_TOKEN_ID)
TOKEN_ID_FORM: Final = (
    "an HMAC-SHA256 fingerprint: 64 lowercase hex digits, optionally '<region>:' first and '.v<n>' "  # noqa: S105
    "(the secret's version, 2 or more) after"
)
"""What a token id looks like, in words for error messages."""
_HLC = HLC_PATTERN.removeprefix("^").removesuffix(r"\Z")
# The three fields every event has are checked with one regex over "<event_id> <occurred_at> <id>" after
# decoding: a msgspec pattern per field costs a regex call each, which dominated the ingest path.
_HEAD_FIELDS: Final = (
    ("event_id", _EVENT_ID, "a lowercase UUIDv7"),
    (
        "occurred_at",
        _HLC,
        "an HLC reading '<19-digit nanoseconds since the Unix epoch>.<5-digit counter>', "
        "such as '1763891234123456789.00000' (not an ISO 8601 time)",
    ),
)
_HEAD_FORMS: Final = {name: what for name, _, what in _HEAD_FIELDS} | {"token_id": TOKEN_ID_FORM}
_TOKEN_HEAD_RE = re.compile(f"{_EVENT_ID} {_HLC} {_TOKEN_ID}")
_OTHER_HEAD_RE = re.compile(f"{_EVENT_ID} {_HLC}")
EventId = Annotated[str, Meta(min_length=36, max_length=36, description="a lowercase UUIDv7")]
TokenId = Annotated[
    str,
    Meta(
        pattern=f"^{_TOKEN_ID}\\Z",
        description="HMAC-SHA256 fingerprint of the token, hex, optionally prefixed by a region",
    ),
]
SubjectTokenId = Annotated[str, Meta(min_length=64, max_length=103, description="checked with _TOKEN_HEAD_RE")]
Name = Annotated[str, Meta(min_length=1, max_length=256)]
AssetId = Annotated[str, Meta(min_length=1, max_length=512, pattern=r"^[^\x00-\x20\x7f]+\Z")]
Text = Annotated[str, Meta(max_length=4096)]
Hlc = Annotated[str, Meta(pattern=HLC_PATTERN)]
SubjectHlc = Annotated[str, Meta(min_length=25, max_length=25, description="checked with the head regexes")]
ContentHash = Annotated[str, Meta(pattern=r"^sha256:[0-9a-f]{64}\Z")]
SchemaVersion = Annotated[int, Meta(ge=1, le=MAX_SAFE_INTEGER)]


class TokenPayload(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a token event says beyond its type. Every field is optional; unknown fields are kept in the bytes."""

    user_id: Name | None = None
    client_id: Name | None = None
    scopes: tuple[Name, ...] | None = None
    ip: Annotated[str, Meta(max_length=64)] | None = None
    user_agent: Text | None = None
    policy_version: Name | None = None
    resource: Text | None = None
    outcome: Literal["ALLOW", "DENY"] | None = None
    parent_token_id: TokenId | None = None
    actor_token_id: TokenId | None = None
    mfa_at: Hlc | None = None
    expires_at: Hlc | None = None
    reason: Text | None = None
    trace_id: Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z")] | None = None


class TokenEvent(Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind", tag="token"):
    """One step in a bearer token's life."""

    event_id: EventId
    event_type: Literal["ISSUED", "ACTIVATED", "USED", "REFRESHED", "ROTATED", "EXPIRED", "REVOKED", "ORIGIN"]
    token_id: SubjectTokenId
    occurred_at: SubjectHlc
    schema_version: SchemaVersion
    payload: TokenPayload = TokenPayload()


class PolicyPayload(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A policy version and its whole document (any canonical JSON object)."""

    policy_version: Name
    document: dict[str, Any]
    reason: Text | None = None


class PolicyEvent(Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind", tag="policy"):
    """A policy change: from ``occurred_at`` on, ``payload.document`` is the policy in force."""

    event_id: EventId
    event_type: Literal["POLICY_CHANGED"]
    policy_id: Name
    occurred_at: SubjectHlc
    schema_version: SchemaVersion
    payload: PolicyPayload


class AssetRef(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An input asset and the hash of the content that was read."""

    asset_id: AssetId
    content_hash: ContentHash | None = None


class DataPayload(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who did what to a data asset, from which inputs, producing which content, sent where."""

    actor: Name
    inputs: tuple[AssetRef, ...] = ()
    output_hash: ContentHash | None = None
    destination: Text | None = None
    purpose: Text | None = None
    token_id: TokenId | None = None
    reason: Text | None = None


class DataEvent(Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind", tag="data"):
    """One step in a data asset's provenance."""

    event_id: EventId
    event_type: Literal["CREATED", "TRANSFORMED", "AGGREGATED", "TRANSMITTED", "ACCESSED", "DELETED"]
    asset_id: AssetId
    occurred_at: SubjectHlc
    schema_version: SchemaVersion
    payload: DataPayload


Event = TokenEvent | PolicyEvent | DataEvent

_DECODER = msgspec.json.Decoder(Event)
_ENCODER = msgspec.json.Encoder(order="sorted")
# A JWT's header and claims both begin with '{"' whose base64url is "eyJ"; three dot-separated segments.
_JWT_RE = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")
_JWT_TEXT_RE = re.compile(_JWT_RE.pattern.decode())
_QUOTED_RE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_JWT_ANY_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_AT_RE = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)
_MISSING_RE = re.compile(r"^Object missing required field `(.*)`$", re.DOTALL)


def _input_error(exc: msgspec.ValidationError, field: str) -> InputError:
    m = _AT_RE.match(str(exc))
    reason, where = (m.group(1), m.group(2) or "") if m else (str(exc), "")
    missing = _MISSING_RE.match(reason)
    if missing:  # msgspec reports the object that lacks the field; name the field itself
        where = f"{where}.{missing.group(1)}"
    elif where.lstrip(".") in _HEAD_FORMS:  # their types only bound the length (see _HEAD_FIELDS): say the form
        reason = f"expected {_HEAD_FORMS[where.lstrip('.')]}"
    return InputError(f"{field}{where}", reason)


def _jwt_path(value: Any, path: str) -> str | None:
    """The path of the first key or string in ``value`` that holds a JWT, or None."""
    if type(value) is str:
        return path if _JWT_TEXT_RE.search(value) else None
    if type(value) is list:
        for i, item in enumerate(value):
            found = _jwt_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    elif type(value) is dict:
        for key, item in value.items():
            found = f"{path}.{key}" if _JWT_TEXT_RE.search(key) else _jwt_path(item, f"{path}.{key}")
            if found is not None:
                return found
    return None


def redact(text: str) -> str:
    """``text`` without quoted values or JWT-shaped strings: safe to log or store even if the input that
    caused an error held a raw token (error messages quote the offending value)."""
    return _JWT_ANY_RE.sub("<jwt>", _QUOTED_RE.sub("<value>", text))


def subject_of(event: Event) -> str:
    """The chain an event belongs to: ``token:<id>``, ``policy:<id>`` or ``asset:<id>``."""
    if type(event) is TokenEvent:
        return "token:" + event.token_id
    if type(event) is PolicyEvent:
        return "policy:" + event.policy_id
    assert type(event) is DataEvent
    return "asset:" + event.asset_id


def decode_event(data: bytes, *, field: str = "event") -> Event:
    """Validate an event's bytes and return its typed view.

    The bytes must be canonical JSON (encoding.canonical_bytes) of an object of a known kind whose known
    fields are well typed; unknown fields are allowed and stay in the bytes. Raises InputError (or its
    subclass CanonicalFormError) naming the field.
    """
    if len(data) > MAX_EVENT_BYTES:
        raise InputError(field, f"event is {len(data)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        event: Event = _DECODER.decode(data)
    except RecursionError:
        raise InputError(field, TOO_DEEP) from None
    except msgspec.ValidationError as e:
        raise _input_error(e, field) from e
    except UnicodeDecodeError as e:
        raise InputError(field, f"not valid UTF-8 at byte {e.start}") from e
    except msgspec.DecodeError as e:
        raise InputError(field, f"not valid JSON ({e})") from e
    if not head_ok(event):
        _name_bad_head(event, field)
    # Fast path: re-encoding the typed view reproduces the bytes. Otherwise (unknown fields, explicit nulls,
    # free-form policy documents) the whole value is checked.
    fast = _ENCODER.encode(event) == data and type(event) is not PolicyEvent
    if not fast and canonical_bytes(decode_json(data, field=field), field=field) != data:
        raise CanonicalFormError(field, "not canonical JSON (RFC 8785: sorted keys, no whitespace, no duplicate keys)")
    if _JWT_RE.search(data):
        raise InputError(
            _jwt_path(decode_json(data, field=field), field) or field,
            "holds what looks like a raw JWT bearer token; record token_fingerprint(secret, token) instead",
        )
    return event


def head_ok(event: Event) -> bool:
    """True if the event id, the occurred_at reading (and a token event's token id) have the forms
    decode_event requires; a typed view decoded without decode_event (a verifier's fast path) needs this
    before anything reads the reading as a number."""
    if type(event) is TokenEvent:
        return _TOKEN_HEAD_RE.fullmatch(f"{event.event_id} {event.occurred_at} {event.token_id}") is not None
    return _OTHER_HEAD_RE.fullmatch(f"{event.event_id} {event.occurred_at}") is not None


def _name_bad_head(event: Event, field: str) -> None:
    checks = list(_HEAD_FIELDS)
    if type(event) is TokenEvent:
        checks.append(("token_id", _TOKEN_ID, TOKEN_ID_FORM))
    for name, pattern, what in checks:
        if not re.fullmatch(pattern, getattr(event, name)):
            raise InputError(f"{field}.{name}", f"{getattr(event, name)!r} is not {what}")
    raise InputError(field, "malformed event head")  # unreachable: one of the fields failed


def is_token_id(text: str) -> bool:
    """True if ``text`` has the form of a token id (TOKEN_ID_FORM), without the ``token:`` subject prefix."""
    return _TOKEN_ID_RE.fullmatch(text) is not None


def read_event(data: bytes) -> Event:
    """The typed view of event bytes the ledger already accepted (stored entries): no canonical-form or
    token-shape checks, which decode_event made when the event arrived. Raises InputError if malformed."""
    try:
        event: Event = _DECODER.decode(data)
    except RecursionError:
        raise InputError("event", TOO_DEEP) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise InputError("event", str(e)) from e
    return event


class _Head(Struct):
    kind: str
    event_id: str
    token_id: str | None = None
    asset_id: str | None = None
    policy_id: str | None = None


_HEAD_DECODER = msgspec.json.Decoder(_Head)


def read_subject(data: bytes) -> tuple[str, str]:
    """(subject, event id) of event bytes, read without validating the rest (for routing; decode_event
    checks the whole event where it is accepted). Raises InputError if the bytes name no subject."""
    try:
        head = _HEAD_DECODER.decode(data)
    except RecursionError:
        raise InputError("event", TOO_DEEP) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise InputError("event", f"not an event: {e}") from e
    if head.kind == "token" and head.token_id:
        return "token:" + head.token_id, head.event_id
    if head.kind == "data" and head.asset_id:
        return "asset:" + head.asset_id, head.event_id
    if head.kind == "policy" and head.policy_id:
        return "policy:" + head.policy_id, head.event_id
    raise InputError("event.kind", f"{head.kind!r} event without its subject id")


def encode_event(event: Event | dict[str, Any]) -> bytes:
    """Canonical bytes of an event given as a typed event or a plain dict (unknown fields kept).

    A dict is validated exactly as decode_event validates received bytes.
    """
    if isinstance(event, dict):
        data = canonical_bytes(event, field="event")
    else:
        data = _ENCODER.encode(event)
        if type(event) is PolicyEvent:
            # a free-form document's keys: the encoder sorts by code point, RFC 8785 by UTF-16 code unit
            # (they differ when a key holds characters above U+FFFF and at or above U+E000)
            data = canonical_bytes(msgspec.json.decode(data), field="event")
    decode_event(data)
    return data
