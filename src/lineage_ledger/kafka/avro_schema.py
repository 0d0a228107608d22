"""The v1 ``Batch`` schema, and the compiler that turns a ``Batch`` schema into the encoders that fit a JSON
object into an Avro record: typed optional fields, and whatever does not fit exactly in ``_residual``
(kafka.avro describes the conventions and parses schemas with it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import msgspec

from lineage_ledger.errors import InputError

__all__ = ["NOFIT", "RESIDUAL", "SCHEMA_V1", "Fit", "NoFit", "RecordEncoder", "SchemaCompiler"]

RESIDUAL: Final = "_residual"
"""The field of every event record that holds, as JSON text, the members no typed field took."""
_COMPACT: Final = msgspec.json.Encoder().encode


def _opt(name: str, avro_type: Any) -> dict[str, Any]:
    return {"name": name, "type": ["null", avro_type], "default": None}


def _record(name: str, *fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [*fields, _opt(RESIDUAL, "string")]}


def _strings(*names: str) -> list[dict[str, Any]]:
    return [_opt(name, "string") for name in names]


_STRING_ARRAY: Final = {"type": "array", "items": "string"}
_V1_DEFINITION: Final[dict[str, Any]] = {
    "type": "record",
    "name": "Batch",
    "namespace": "dev.lineage_ledger.v1",
    "fields": [
        {"name": "payload_type", "type": "string"},
        {"name": "payload", "type": "bytes"},
        {
            "name": "signatures",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Signature",
                    "fields": [{"name": "keyid", "type": "string"}, {"name": "sig", "type": "bytes"}],
                },
            },
        },
        {
            "name": "events",
            "type": {
                "type": "array",
                "items": [
                    _record(
                        "TokenEvent",
                        *_strings("event_id", "event_type", "token_id", "occurred_at"),
                        _opt("schema_version", "long"),
                        _opt(
                            "payload",
                            _record(
                                "TokenPayload",
                                *_strings("user_id", "client_id"),
                                _opt("scopes", _STRING_ARRAY),
                                *_strings(
                                    "ip",
                                    "user_agent",
                                    "policy_version",
                                    "resource",
                                    "outcome",
                                    "parent_token_id",
                                    "actor_token_id",
                                    "mfa_at",
                                    "expires_at",
                                    "reason",
                                    "trace_id",
                                ),
                            ),
                        ),
                    ),
                    _record(
                        "PolicyEvent",
                        *_strings("event_id", "event_type", "policy_id", "occurred_at"),
                        _opt("schema_version", "long"),
                        _opt(
                            "payload",
                            _record(
                                "PolicyPayload",
                                _opt("policy_version", "string"),
                                _opt("document", _record("PolicyDocument")),
                                _opt("reason", "string"),
                            ),
                        ),
                    ),
                    _record(
                        "DataEvent",
                        *_strings("event_id", "event_type", "asset_id", "occurred_at"),
                        _opt("schema_version", "long"),
                        _opt(
                            "payload",
                            _record(
                                "DataPayload",
                                _opt("actor", "string"),
                                _opt(
                                    "inputs",
                                    {
                                        "type": "array",
                                        "items": _record("AssetRef", *_strings("asset_id", "content_hash")),
                                    },
                                ),
                                *_strings("output_hash", "destination", "purpose", "token_id", "reason"),
                            ),
                        ),
                    ),
                ],
            },
        },
    ],
}
SCHEMA_V1: Final = json.dumps(_V1_DEFINITION, indent=1)
"""The v1 schema as JSON text (defaults included; publish this, not the canonical form, to a registry)."""


class NoFit:
    """Returned by a field encoder when the JSON value does not fit the field's type exactly."""


NOFIT: Final = NoFit()
"""The one NoFit value."""
Fit = Callable[[Any], Any]
"""JSON value -> Avro datum, or NOFIT."""


def _fit_string(value: Any) -> Any:
    return value if type(value) is str else NOFIT


def _fit_boolean(value: Any) -> Any:
    return value if type(value) is bool else NOFIT


def _fit_long(value: Any) -> Any:
    return value if type(value) is int and -(2**63) <= value < 2**63 else NOFIT


def _fit_int(value: Any) -> Any:
    return value if type(value) is int and -(2**31) <= value < 2**31 else NOFIT


_PRIMITIVE_FITS: Final[Mapping[str, Fit]] = MappingProxyType(
    {"string": _fit_string, "boolean": _fit_boolean, "long": _fit_long, "int": _fit_int}
)


def _fit_array(items: Fit) -> Fit:
    def fit(value: Any) -> Any:
        if type(value) is not list:
            return NOFIT
        out = []
        for item in value:
            datum = items(item)
            if datum is NOFIT:
                return NOFIT
            out.append(datum)
        return out

    return fit


class RecordEncoder:
    """A record of optional typed fields plus ``_residual``: how to split a JSON object into its datum."""

    __slots__ = ("branches", "fields", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, Fit] = {}
        """Typed field -> encoder of its non-null branch (``_residual`` is not in here)."""
        self.branches: dict[str, str] = {}
        """Typed field -> the name of its non-null union branch, for fastavro's tuple notation."""

    def encode(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The datum of ``obj``: members that fit a typed field in it, the rest as ``_residual`` JSON text."""
        out: dict[str, Any] = {}
        residual: dict[str, Any] | None = None
        fields = self.fields
        for key, value in obj.items():
            fit = fields.get(key)
            if fit is not None:
                datum = fit(value)
                if datum is not NOFIT:
                    out[key] = (self.branches[key], datum)
                    continue
            if residual is None:
                residual = {}
            residual[key] = value
        if residual is not None:
            out[RESIDUAL] = ("string", _COMPACT(residual).decode())
        return out

    def fit(self, value: Any) -> Any:
        """``encode`` for an object; NOFIT for anything else."""
        return self.encode(value) if type(value) is dict else NOFIT


class SchemaCompiler:
    """Walks a parsed schema, checks it follows the conventions above, and builds the record encoders."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.records: dict[str, RecordEncoder] = {}
        self.defaulted: dict[str, set[str]] = {}
        """Record -> its fields that have ``"default": null`` (so a reader may add them)."""

    def bad(self, where: str, reason: str) -> InputError:
        """The error for a schema that breaks the conventions at ``where``."""
        return InputError(f"schema.{where}", reason)

    def record(self, schema: dict[str, Any]) -> RecordEncoder:
        """The encoder of the record ``schema`` (built once per name), after checking its fields."""
        name = schema["name"]
        if name in self.records:
            return self.records[name]
        rec = self.records[name] = RecordEncoder(name)
        fields = {f["name"]: f for f in schema["fields"]}
        residual = fields.pop(RESIDUAL, None)
        if residual is None or residual["type"] != ["null", "string"]:
            raise self.bad(name, f'needs a field {{"name": "{RESIDUAL}", "type": ["null", "string"], "default": null}}')
        self.optional(residual, name, f"{name}.{RESIDUAL}")
        for field_name, field in fields.items():
            rec.branches[field_name], rec.fields[field_name] = self.optional(field, name, f"{name}.{field_name}")
        return rec

    def optional(self, field: dict[str, Any], record: str, where: str) -> tuple[str, Fit]:
        """Check ``field`` is ``["null", T]`` with default null; its non-null branch name and encoder.

        A missing default is accepted (the Parsing Canonical Form drops defaults, and a writer schema does
        not need them) and remembered: such a schema cannot be a reader that adds the field.
        """
        kind = field["type"]
        if not (type(kind) is list and len(kind) == 2 and kind[0] == "null" and field.get("default") is None):
            raise self.bad(where, 'must be ["null", T] with "default": null (see the schema evolution rule)')
        if "default" in field:
            self.defaulted.setdefault(record, set()).add(field["name"])
        return self.value(kind[1], where)

    def value(self, schema: Any, where: str) -> tuple[str, Fit]:
        """The union branch name of ``schema`` and its encoder."""
        if type(schema) is str and schema in self.named:
            schema = self.named[schema]
        if type(schema) is dict and schema.get("type") in _PRIMITIVE_FITS and len(schema) == 1:
            schema = schema["type"]
        if type(schema) is str and schema in _PRIMITIVE_FITS:
            return schema, _PRIMITIVE_FITS[schema]
        if type(schema) is dict and schema.get("type") == "array":
            _, items = self.value(schema["items"], f"{where}[]")
            return "array", _fit_array(items)
        if type(schema) is dict and schema.get("type") == "record":
            return schema["name"], self.record(schema).fit
        raise self.bad(
            where,
            f"type {json.dumps(schema)[:80]} is not supported: use string, long, int, "
            "boolean, records, or arrays of them (JSON has nothing else without loss)",
        )
