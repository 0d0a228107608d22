"""The event format as JSON Schema (draft 2020-12), generated from the msgspec models in core.model.

``docs/event.schema.json`` is this function's output, committed so producers in any language can validate
what they send; a test keeps the file equal to what the models generate. The schema says which fields an
event has and what each may hold. Three rules it cannot say are checked by the ledger on top:

* the bytes must be canonical JSON (RFC 8785: keys sorted, no whitespace, integers only, no floats);
* a value shaped like a raw JWT anywhere in the event is refused (record its fingerprint instead);
* patterns here end in ``$``; the ledger also refuses a trailing newline before the end of a value.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from lineage_ledger.core.hlc import HLC_PATTERN
from lineage_ledger.core.model import _EVENT_ID, _TOKEN_ID, Event

__all__ = ["SCHEMA_ID", "event_json_schema"]

SCHEMA_ID: Final = "https://lineage-ledger.dev/schemas/event.schema.json"

_HEAD: Final = {
    "event_id": ("^" + _EVENT_ID + "$", "the event's id: a lowercase UUIDv7 (RFC 9562), unique per event"),
    "occurred_at": (
        HLC_PATTERN.replace(r"\Z", "$"),
        "when it happened, as an HLC reading '<19-digit nanoseconds since the epoch>.<5-digit counter>'",
    ),
    "token_id": (
        "^" + _TOKEN_ID + "$",
        "HMAC-SHA256 fingerprint of the raw token under the ledger's token secret, 64 lowercase hex digits, "
        "optionally prefixed by a region ('eu-west-1:'); never the token itself",
    ),
}


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of one event (a token, policy or data event, told apart by ``kind``)."""
    # through JSON and back, so it equals what a reader of the file gets (tuples become lists)
    schema: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(msgspec.json.schema(Event)))
    for name in ("TokenEvent", "PolicyEvent", "DataEvent"):
        properties = schema["$defs"][name]["properties"]
        for field, (pattern, description) in _HEAD.items():
            if field in properties:
                properties[field] = {"type": "string", "pattern": pattern, "description": description}
    _ecma_patterns(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Lineage Ledger event",
        "description": "One event as a producer submits it, encoded as canonical JSON (RFC 8785, integers "
        "only). Fields this schema does not name are allowed and kept byte for byte.",
        **schema,
    }


def _ecma_patterns(value: Any) -> None:
    """Python's end-of-text ``\\Z`` as ``$``, which every JSON Schema regex dialect knows."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "pattern" and isinstance(item, str):
                value[key] = re.sub(r"\\Z$", "$", item)
            else:
                _ecma_patterns(item)
    elif isinstance(value, list):
        for item in value:
            _ecma_patterns(item)
