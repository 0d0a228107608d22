"""Signed batch envelopes as Avro single-object encoded Kafka record values.

A message is the Avro 1.12 single object encoding of one ``Batch`` record::

    C3 01 | 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's Parsing Canonical Form
          | Avro binary body

``Batch`` carries what the JSON envelope (core.envelope.seal_batch) carries: ``payload_type``, ``payload``
(the raw batch statement bytes, not base64), ``signatures`` ([{keyid, sig}], sig raw) and ``events``, an
array of the union {TokenEvent, PolicyEvent, DataEvent}. The union branch gives an event's ``kind`` (the
record's short name without its ``Event`` suffix, lowercased), so ``kind`` is not a field.

Lossless by construction
------------------------
The producer signed a Merkle root over the events' canonical JSON bytes, so a consumer must get those bytes
back exactly. Every field of an event record, and of the records nested in it (payloads, AssetRef), is
``["null", T]`` with default null, and every such record has a ``_residual: ["null", "string"]`` field.
Encoding walks the schema: a JSON member whose name is a typed field and whose value fits the field's type
exactly (str for string, int but not bool for long, a list of fitting items for an array, an object for a
record, recursively) goes into that field; any other member (an unknown name, a JSON null, a wrong type, a
member literally named ``_residual``) goes into the record's ``_residual``, as the JSON text of an object.
Decoding rebuilds each object from its non-null fields, merges the residual back in, adds ``kind`` and
takes the canonical JSON of the result, which equals the original event bytes because they were canonical
(encoding refuses event bytes it could not give back exactly). Free-form data (a policy's ``document``) is
a record with only ``_residual``.

Decoding is name-based and needs no per-field code, so it reads data through any reader schema, and
returns the writer's bytes as long as no information is lost on the way.

Schema evolution rule
---------------------
A new schema may only add fields of type ``["null", T]`` with default null (to event records, their nested
records, or ``Batch``). Written by an old producer such a field reads as null, that is absent, and the
event bytes are unchanged; written by a new producer it holds what the old schema kept in ``_residual``,
and reads back to the same member. Anything else (removing or renaming a field, changing a type, a
non-null default) changes the canonical bytes of some event, the Merkle root in ``open_envelope`` stops
matching, and the batch is refused: that check is the safety net. A decoder therefore reads with the
writer's own schema by default (looked up by the fingerprint in the header); a ``reader`` schema is
accepted only if it has every field the writer's schema has. Never change ``SCHEMA_V1``: messages on the
topic name it by fingerprint. Publish a new schema instead and keep the old one in the decoder's registry.

``Batch``-level optional fields carry top-level envelope members of the same name (unsigned metadata,
which ``open_envelope`` ignores); ``Batch`` has no residual, so an envelope member the schema lacks is
refused rather than dropped.

The v1 schema and the record encoders are in kafka.avro_schema; this module parses schemas and encodes and
decodes envelopes.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, cast

import msgspec
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import SchemaParseException, fingerprint, to_parsing_canonical_form

from lineage_ledger.core.encoding import canonical_bytes, decode_json
from lineage_ledger.errors import EnvelopeError, InputError
from lineage_ledger.kafka.avro_schema import NOFIT, RESIDUAL, SCHEMA_V1, Fit, RecordEncoder, SchemaCompiler

__all__ = [
    "MARKER",
    "SCHEMAS",
    "SCHEMA_V1",
    "V1",
    "Schema",
    "UnknownSchemaError",
    "decode_envelope",
    "encode_envelope",
    "fingerprint_of",
    "schema_from_json",
]

MARKER: Final = b"\xc3\x01"
"""The two bytes that open every Avro single-object encoded message."""
_HEADER_LEN: Final = len(MARKER) + 8
_BATCH_FIXED: Final = ("payload_type", "payload", "signatures", "events")
_SORTED: Final = msgspec.json.Encoder(order="sorted").encode
_COMPACT: Final = msgspec.json.Encoder().encode
_WIDE: Final = re.compile(rb"[\xee-\xf4]")
"""A UTF-8 lead byte of a code point from U+E000 up: a key there may sort differently in UTF-16 order."""


class UnknownSchemaError(InputError):
    """The message names a writer schema (by fingerprint) that the decoder does not have.

    Not a malformed message: the consumer may need a newer schema registry. ``fingerprint`` is the 8 bytes
    from the header.
    """

    def __init__(self, field: str, reason: str, *, fingerprint: bytes = b"") -> None:
        super().__init__(field, reason)
        self.fingerprint = fingerprint


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class Schema:
    """A parsed ``Batch`` schema: its fingerprint, its Parsing Canonical Form, and the encoders built from it.

    Build one with :func:`schema_from_json`. Two schemas are equal when their fingerprints are.
    """

    __slots__ = ("_batch_extras", "_defaulted", "_fields", "_kind_of", "_parsed", "_record_of", "canonical",
                 "fingerprint", "name", "text")  # fmt: skip

    name: str
    """Full name of the top-level record, e.g. ``dev.lineage_ledger.v1.Batch``."""
    canonical: str
    """The Parsing Canonical Form (Avro spec): what the fingerprint is taken over."""
    fingerprint: bytes
    """CRC-64-AVRO of ``canonical``, 8 bytes little-endian, exactly as in the message header."""
    text: str
    """The schema text as given (with defaults, which the canonical form drops)."""

    def __init__(self, text: str) -> None:
        """Parse and check ``text``; prefer :func:`schema_from_json`."""
        try:
            definition = json.loads(text)
            named: dict[str, Any] = {}
            parsed = parse_schema(definition, named)
            canonical = to_parsing_canonical_form(parsed)
        except (ValueError, TypeError, KeyError, SchemaParseException) as e:
            raise InputError("schema", f"not a valid Avro schema ({e})") from e
        if type(parsed) is not dict or parsed.get("type") != "record":
            raise InputError("schema", "the top-level type must be a record (Batch)")
        compiler = SchemaCompiler(named)
        fields = {f["name"]: f for f in parsed["fields"]}
        self._check_fixed(fields, named)
        branches = fields["events"]["type"]["items"]
        kind_of: dict[str, str] = {}
        record_of: dict[str, RecordEncoder] = {}
        for branch in branches:
            branch_schema = named.get(branch, branch) if type(branch) is str else branch
            if type(branch_schema) is not dict or branch_schema.get("type") != "record":
                raise InputError("schema.events", "every branch of the events union must be a record")
            short = _short(branch_schema["name"])
            if not short.endswith("Event") or len(short) == len("Event"):
                raise InputError("schema.events", f"record {short!r}: event record names end in 'Event'")
            kind = short.removesuffix("Event").lower()
            rec = compiler.record(branch_schema)
            if "kind" in rec.fields:
                raise InputError(f"schema.{rec.name}.kind", "the union branch gives the kind; it is not a field")
            if kind in record_of:
                raise InputError("schema.events", f"two event records for kind {kind!r}")
            kind_of[rec.name], record_of[kind] = kind, rec
        extras: dict[str, tuple[str, Fit]] = {}
        for name, field in fields.items():
            if name not in _BATCH_FIXED:
                extras[name] = compiler.optional(field, parsed["name"], f"{parsed['name']}.{name}")
        self.name = parsed["name"]
        self.canonical = canonical
        self.fingerprint = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        self.text = text
        self._parsed = parsed
        self._kind_of: Mapping[str, str] = kind_of
        self._record_of: Mapping[str, RecordEncoder] = record_of
        self._batch_extras: Mapping[str, tuple[str, Fit]] = extras
        self._fields: Mapping[str, frozenset[str]] = {
            **{rec.name: frozenset(rec.fields) | {RESIDUAL} for rec in compiler.records.values()},
            parsed["name"]: frozenset(fields),
        }
        self._defaulted: Mapping[str, frozenset[str]] = {k: frozenset(v) for k, v in compiler.defaulted.items()}

    @staticmethod
    def _check_fixed(fields: dict[str, Any], named: dict[str, Any]) -> None:
        def resolve(schema: Any) -> Any:
            return named.get(schema, schema) if type(schema) is str else schema

        def is_array_of(schema: Any, kind: type) -> bool:
            return type(schema) is dict and schema.get("type") == "array" and type(resolve(schema["items"])) is kind

        ok = (
            all(name in fields for name in _BATCH_FIXED)
            and fields["payload_type"]["type"] == "string"
            and fields["payload"]["type"] == "bytes"
            and is_array_of(fields["signatures"]["type"], dict)
            and is_array_of(fields["events"]["type"], list)
        )
        if ok:
            signature = resolve(fields["signatures"]["type"]["items"])
            ok = signature.get("type") == "record" and [(f["name"], f["type"]) for f in signature["fields"]] == [
                ("keyid", "string"),
                ("sig", "bytes"),
            ]
        if not ok:
            raise InputError(
                "schema",
                "the top-level record needs payload_type: string, payload: bytes, signatures: "
                "array<{keyid: string, sig: bytes}> and events: array<union of event records>",
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and other.fingerprint == self.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"Schema({self.name!r}, fingerprint={self.fingerprint.hex()!r})"


def schema_from_json(text: str) -> Schema:
    """Parse a ``Batch`` schema from its JSON text and check it follows this module's conventions.

    Raises InputError (field ``schema...``) for invalid Avro, a missing ``_residual``, a field that is not
    ``["null", T]`` with default null, or a type JSON cannot carry without loss.
    """
    return Schema(text)


V1: Final = schema_from_json(SCHEMA_V1)
"""The v1 schema. Frozen: messages on the topic name it by fingerprint."""
SCHEMAS: Final[Mapping[bytes, Schema]] = MappingProxyType({V1.fingerprint: V1})
"""The writer schemas this version knows, by fingerprint: the default registry of :func:`decode_envelope`."""


# -- envelopes -------------------------------------------------------------------------------------------


class _Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keyid: str
    sig: str


_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STR = msgspec.json.Decoder(str)
_SIGNATURES = msgspec.json.Decoder(list[_Signature])
_EVENTS = msgspec.json.Decoder(list[msgspec.Raw])


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EnvelopeError(field, "not valid base64") from e


def _member(decoder: msgspec.json.Decoder[Any], members: dict[str, msgspec.Raw], name: str) -> Any:
    raw = members.get(name)
    if raw is None:
        raise EnvelopeError(name, "missing")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise EnvelopeError(name, str(e)) from e


def encode_envelope(envelope: bytes, schema: Schema = V1) -> bytes:
    """The Avro single-object encoding, under ``schema``, of a JSON batch envelope (core.envelope).

    Every event must be canonical JSON (as model.encode_event makes it) of an object whose ``kind`` names
    one of the schema's event records; :func:`decode_envelope` then gives back the same event bytes, and
    for an envelope as ``seal_batch`` builds it, the same envelope bytes. Events are not validated beyond
    that (the ledger does it), nor are the signature and the Merkle root (the consumer's ``open_envelope``
    and ``verify_batch_signature`` do). Raises EnvelopeError naming the member or event at fault.
    """
    try:
        members = _TOP.decode(envelope)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise EnvelopeError("envelope", f"not a JSON object ({e})") from e
    payload_type = _member(_STR, members, "payloadType")
    payload = _b64(_member(_STR, members, "payload"), "payload")
    signatures = [
        {"keyid": s.keyid, "sig": _b64(s.sig, f"signatures[{i}].sig")}
        for i, s in enumerate(_member(_SIGNATURES, members, "signatures"))
    ]
    events = _member(_EVENTS, members, "events")
    datum: dict[str, Any] = {
        "payload_type": payload_type,
        "payload": payload,
        "signatures": signatures,
        "events": [_encode_event(schema, bytes(raw), i) for i, raw in enumerate(events)],
    }
    for name, raw in members.items():
        if name in ("payloadType", "payload", "signatures", "events"):
            continue
        extra = schema._batch_extras.get(name)
        value = decode_json(bytes(raw), field=name)
        if extra is None or (fitted := extra[1](value)) is NOFIT:
            raise EnvelopeError(name, f"schema {schema.name} has no optional field {name!r} this value fits")
        datum[name] = (extra[0], fitted)
    out = io.BytesIO()
    out.write(MARKER)
    out.write(schema.fingerprint)
    schemaless_writer(out, schema._parsed, datum)
    return out.getvalue()


def _event_bytes(obj: dict[str, Any]) -> bytes:
    """The bytes an event object is sent as: its canonical JSON, computed fast.

    For canonical-domain values msgspec's sorted encoding is canonical_bytes' output unless some key has
    code points from U+D800 up (canonical order is UTF-16 order); only then is canonical_bytes called.
    Encoding accepts an event only if this gives back its bytes, and decoding returns this, so the round
    trip is exact whatever the bytes hold.
    """
    data = _SORTED(obj)
    return canonical_bytes(obj) if _WIDE.search(data) else data


def _encode_event(schema: Schema, data: bytes, index: int) -> tuple[str, dict[str, Any]]:
    field = f"events[{index}]"
    try:
        obj = decode_json(data, field=field)
        if type(obj) is not dict:
            raise EnvelopeError(field, "an event is a JSON object")
        same = _event_bytes(obj) == data
    except InputError as e:
        raise EnvelopeError(e.field, e.reason) from e
    if not same:
        raise EnvelopeError(field, "not canonical JSON, so the Avro form could not give these bytes back")
    kind = obj.pop("kind", None)
    rec = schema._record_of.get(kind) if type(kind) is str else None
    if rec is None:
        kinds = ", ".join(sorted(schema._record_of))
        raise EnvelopeError(f"{field}.kind", f"{kind!r} is not an event kind of schema {schema.name} ({kinds})")
    return rec.name, rec.encode(obj)


def fingerprint_of(message: bytes) -> bytes:
    """The writer schema's fingerprint from a single-object encoded message's header (8 bytes).

    Raises EnvelopeError if ``message`` is not single-object encoded.
    """
    if len(message) < _HEADER_LEN:
        raise EnvelopeError(
            "message", f"{len(message)} bytes: shorter than the {_HEADER_LEN}-byte Avro single-object header"
        )
    if message[:2] != MARKER:
        raise EnvelopeError(
            "message.marker",
            f"not Avro single-object encoded: starts {bytes(message[:2]).hex()}, expected {MARKER.hex()}",
        )
    return bytes(message[2:_HEADER_LEN])


class _Corrupt(Exception):
    """A decoded datum that no encoder could have produced (raised inside, reported as EnvelopeError)."""


def decode_envelope(
    message: bytes, schemas: Mapping[bytes, Schema] = SCHEMAS, *, reader: Schema | None = None
) -> bytes:
    """The JSON batch envelope carried by a single-object encoded ``message``.

    The writer schema is looked up in ``schemas`` by the fingerprint in the header. The result is what
    ``seal_batch`` built: ``open_envelope`` accepts it and the producer's signature verifies. ``reader``
    (optional) reads through another schema; it must have every field of the writer's schema, or events
    would lose members and their signature would no longer check, so that raises InputError.

    Raises EnvelopeError (not single-object encoded; a truncated, overlong or garbled body) or
    UnknownSchemaError (no schema in ``schemas`` has the header's fingerprint).
    """
    fp = fingerprint_of(message)
    writer = schemas.get(fp)
    if writer is None:
        raise UnknownSchemaError(
            "message.fingerprint",
            f"no writer schema with fingerprint {fp.hex()} (CRC-64-AVRO, little-endian); known: "
            + (", ".join(sorted(f.hex() for f in schemas)) or "none"),
            fingerprint=fp,
        )
    if reader is not None and reader.fingerprint != writer.fingerprint:
        _check_reader(writer, reader)
    else:
        reader = None
    body = io.BytesIO(message)
    body.seek(_HEADER_LEN)
    try:
        datum = schemaless_reader(
            body,
            writer._parsed,
            None if reader is None else reader._parsed,
            return_record_name=True,
        )
    except Exception as e:  # fastavro raises EOFError, IndexError, ValueError... on bad input
        reason = "truncated" if isinstance(e, EOFError) else f"garbled ({type(e).__name__}: {e})"
        raise EnvelopeError("message.body", f"{reason}: not a {writer.name} body") from e
    if body.tell() != len(message):
        raise EnvelopeError("message.body", f"{len(message) - body.tell()} bytes after the end of the Avro body")
    batch = cast("dict[str, Any]", datum)
    kind_of = (reader or writer)._kind_of
    events: list[bytes] = []
    for i, (name, event) in enumerate(batch["events"]):
        try:
            obj = _restore(event)
            if "kind" in obj:
                raise _Corrupt("'kind' in the residual of an event")
            obj["kind"] = kind_of[name]
            events.append(_event_bytes(obj))
        except (_Corrupt, InputError, msgspec.EncodeError) as e:
            raise EnvelopeError("message.body", f"events[{i}]: {e}") from e
    head: dict[str, Any] = {
        "payload": base64.b64encode(batch["payload"]).decode(),
        "payloadType": batch["payload_type"],
        "signatures": [{"keyid": s["keyid"], "sig": base64.b64encode(s["sig"]).decode()} for s in batch["signatures"]],
    }
    try:
        for name, value in batch.items():
            if name not in _BATCH_FIXED and value is not None:
                head[name] = _restore_value(value)
        head_bytes = canonical_bytes(head)
    except (_Corrupt, InputError) as e:
        raise EnvelopeError("message.body", str(e)) from e
    return _envelope_bytes(head_bytes, events)


def _check_reader(writer: Schema, reader: Schema) -> None:
    """Raise InputError unless reading ``writer`` data through ``reader`` keeps every member."""
    missing: list[str] = []
    undefaulted: list[str] = []
    for record, names in writer._fields.items():
        have = reader._fields.get(record)
        if have is None:
            missing.append(record)
            continue
        missing.extend(f"{record}.{name}" for name in sorted(names - have))
        added = have - names - reader._defaulted.get(record, frozenset())
        undefaulted.extend(f"{record}.{name}" for name in sorted(added))
    pair = f"reader schema {reader.fingerprint.hex()}, writer schema {writer.fingerprint.hex()}"
    if missing:
        raise InputError(
            "reader",
            f"{pair}: the reader lacks {', '.join(missing)}; those members would be dropped and the "
            "events' signature would no longer check; read with the writer's schema (reader=None)",
        )
    if undefaulted:
        raise InputError("reader", f'{pair}: the reader adds {", ".join(undefaulted)} without "default": null')


def _envelope_bytes(head: bytes, events: Sequence[bytes]) -> bytes:
    """Exactly seal_batch's layout: the canonical head, then the events verbatim as the last member."""
    return head[:-1] + b',"events":[' + b",".join(events) + b"]}"


_CONTAINERS: Final = frozenset({dict, list, tuple})


def _restore(datum: dict[str, Any]) -> dict[str, Any]:
    """The JSON object a record datum was split from: non-null fields, recursively, plus the residual."""
    obj: dict[str, Any] = {}
    for key, value in datum.items():
        if value is None or key == RESIDUAL:
            continue
        obj[key] = _restore_value(value) if type(value) in _CONTAINERS else value
    residual = datum.get(RESIDUAL)
    if residual is not None:
        try:
            extra = decode_json(residual.encode())
        except InputError as e:
            raise _Corrupt(f"_residual is not JSON ({e.reason})") from e
        if type(extra) is not dict:
            raise _Corrupt("_residual is not a JSON object")
        for key, value in extra.items():
            if key in obj:
                raise _Corrupt(f"member {key!r} is both a field and in _residual")
            obj[key] = value
    return obj


def _restore_value(value: Any) -> Any:
    kind = type(value)
    if kind is tuple:  # a record in a union, as fastavro's return_record_name gives it: (name, datum)
        return _restore(value[1])
    if kind is dict:
        return _restore(value)
    if kind is list:
        return [_restore_value(v) for v in value]
    if kind is bytes:
        raise _Corrupt("bytes have no JSON form")
    return value
