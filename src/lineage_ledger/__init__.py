"""Lineage Ledger: a tamper-evident, Merkle-committed ledger of bearer-token and data lineage.

The public API is what this module exports; everything else may change between versions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from lineage_ledger.core.crypto import Ed25519Signer, Signer, token_fingerprint
from lineage_ledger.core.envelope import seal_batch
from lineage_ledger.core.model import (
    DataEvent,
    DataPayload,
    PolicyEvent,
    PolicyPayload,
    TokenEvent,
    TokenPayload,
    decode_event,
    encode_event,
)
from lineage_ledger.core.note import Checkpoint, NoteVerifier
from lineage_ledger.core.receipt import Receipt
from lineage_ledger.errors import LedgerError

if TYPE_CHECKING:
    from lineage_ledger.ledger.pipeline import Done, Pipeline
    from lineage_ledger.ledger.query import TokenTrace, trace_token
    from lineage_ledger.ledger.verify import VerifyReport, verify_ledger
    from lineage_ledger.ledger.writer import AppendResult, Ledger, LedgerSettings

# The write path, queries and verification are loaded on first use, so that a producer importing the
# package (or the emitter SDK) does not load the ledger's store and writer modules.
_LAZY: Final[dict[str, str]] = {
    "AppendResult": "lineage_ledger.ledger.writer",
    "Done": "lineage_ledger.ledger.pipeline",
    "Ledger": "lineage_ledger.ledger.writer",
    "LedgerSettings": "lineage_ledger.ledger.writer",
    "Pipeline": "lineage_ledger.ledger.pipeline",
    "TokenTrace": "lineage_ledger.ledger.query",
    "VerifyReport": "lineage_ledger.ledger.verify",
    "trace_token": "lineage_ledger.ledger.query",
    "verify_ledger": "lineage_ledger.ledger.verify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lineage_ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AppendResult",
    "Checkpoint",
    "DataEvent",
    "DataPayload",
    "Done",
    "Ed25519Signer",
    "Ledger",
    "LedgerError",
    "LedgerSettings",
    "NoteVerifier",
    "Pipeline",
    "PolicyEvent",
    "PolicyPayload",
    "Receipt",
    "Signer",
    "TokenEvent",
    "TokenPayload",
    "TokenTrace",
    "VerifyReport",
    "decode_event",
    "encode_event",
    "seal_batch",
    "token_fingerprint",
    "trace_token",
    "verify_ledger",
]

__version__ = "0.1.0"
