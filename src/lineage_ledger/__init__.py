"""Lineage Ledger: a tamper-evident, Merkle-committed ledger of bearer-token and data lineage.

The public API is what this module exports; everything else may change between versions.
"""

from __future__ import annotations

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
from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.pipeline import Done, Pipeline
from lineage_ledger.ledger.query import TokenTrace, trace_token
from lineage_ledger.ledger.verify import VerifyReport, verify_ledger
from lineage_ledger.ledger.writer import AppendResult, Ledger, LedgerSettings, Receipt

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
