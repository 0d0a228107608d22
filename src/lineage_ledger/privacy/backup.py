"""Backups of the subject key store: every wrapped key in one JSON-lines file, and restoring one.

Format: a first line ``{"format": "lineage-ledger-subject-keys/1", "keys": n, "origin": ...}``, then one line
per key ``{"erasing": bool, "fingerprint": hex, "kid": hex, "wrapped": base64}``. The keys stay wrapped by
the ledger's key-encryption key: a backup without the privacy key file decrypts nothing. A restore never
brings back a key that the log records as erased (an ``erasure`` entry names its id): a backup taken
before an erasure cannot undo it by accident. It can still be read with the KEK, which is why the erasure
procedure (docs/privacy.md) destroys the backups taken before it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Final

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.errors import InputError
from lineage_ledger.privacy.keystore import KeyRow, SubjectKeyStore
from lineage_ledger.privacy.personal import PersonalData
from lineage_ledger.privacy.subjects import erasure_records
from lineage_ledger.store.base import Store

__all__ = ["BACKUP_FORMAT", "read_backup", "restore_keys", "write_backup"]

BACKUP_FORMAT: Final = "lineage-ledger-subject-keys/1"


def write_backup(key_store: SubjectKeyStore, origin: str) -> tuple[bytes, int]:
    """The bytes of a backup of every key in ``key_store``, and how many keys it holds."""
    rows = list(key_store.rows())
    lines = [canonical_bytes({"format": BACKUP_FORMAT, "keys": len(rows), "origin": origin})]
    for row in rows:
        lines.append(
            canonical_bytes(
                {
                    "erasing": row.erasing,
                    "fingerprint": row.fingerprint,
                    "kid": row.kid,
                    "wrapped": base64.b64encode(row.wrapped).decode("ascii"),
                }
            )
        )
    return b"\n".join(lines) + b"\n", len(rows)


def read_backup(data: bytes) -> list[KeyRow]:
    """The keys of a backup file; InputError naming the line that is wrong."""
    lines = data.splitlines()
    try:
        head = json.loads(lines[0]) if lines else None
    except ValueError as e:
        raise InputError("backup", f"line 1 is not JSON: {e}") from e
    if not isinstance(head, dict) or head.get("format") != BACKUP_FORMAT:
        raise InputError("backup", f"not a subject key backup ({BACKUP_FORMAT})")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        try:
            obj = json.loads(line)
            rows.append(
                KeyRow(
                    str(obj["fingerprint"]),
                    str(obj["kid"]),
                    base64.b64decode(obj["wrapped"], validate=True),
                    bool(obj["erasing"]),
                )
            )
        except (ValueError, KeyError, TypeError) as e:
            raise InputError("backup", f"line {n}: {e}") from e
    if len(rows) != head.get("keys"):
        raise InputError("backup", f"holds {len(rows)} keys, its first line says {head.get('keys')}: truncated?")
    return rows


def restore_keys(store: Store, personal: PersonalData, rows: Sequence[KeyRow]) -> tuple[int, int]:
    """Put the keys of a backup back into the key store, except those an erasure entry in the log names:
    (restored, refused)."""
    erased: dict[str, set[str]] = {}
    keep = []
    for row in rows:
        if row.fingerprint not in erased:
            erased[row.fingerprint] = {k for rec in erasure_records(store, row.fingerprint) for k in rec.kids}
        if row.kid not in erased[row.fingerprint]:
            keep.append(row)
    personal.key_store.add(keep)
    return len(keep), len(rows) - len(keep)
