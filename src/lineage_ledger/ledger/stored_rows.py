"""Checks of rows the store keeps beside the log that no signature covers, against what the log says.

Each function takes rows as the store gives them and what the verifier worked out from the entries, and
returns (message, log index or None) for every row that disagrees; ``verify_ledger`` reports them. The table
of which check covers which stored column is docs/storage.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from lineage_ledger.errors import LedgerError
from lineage_ledger.ledger.completeness import checked_node, stored_node_hash

__all__ = ["REQUIRED_META", "envelope_row_problems", "map_node_row_problems", "meta_problems"]

REQUIRED_META: Final = ("format", "lifecycle", "origin", "verifier_key")
"""The settings every ledger records at creation; the log's own checks start from them (a missing lifecycle
policy must not silently become the default one, under which the recorded verdicts would be judged)."""
_SHOWN: Final = 10
"""At most this many disagreeing rows are named per table, then a count of the rest."""

Found = list[tuple[str, int | None]]


def _capped(found: Found, what: str) -> Found:
    if len(found) <= _SHOWN:
        return found
    return [*found[:_SHOWN], (f"... and {len(found) - _SHOWN} more {what}", None)]


def meta_problems(meta: Mapping[str, str], expected_format: str) -> Found:
    """The creation settings: every required key present, and the format one this verifier knows."""
    found: Found = [(f"the ledger's settings lack {key!r}", None) for key in REQUIRED_META if key not in meta]
    if "format" in meta and meta["format"] != expected_format:
        found.append((f"the ledger's format is {meta['format']!r}, not {expected_format!r}", None))
    return found


def envelope_row_problems(stored: Iterable[tuple[bytes, int]], first_uses: Mapping[bytes, int]) -> Found:
    """Stored envelopes (digest, first index) against the entries: each is named by an entry, and its first
    index is the index of the first entry that names it (``first_uses``, digest -> that index).

    Entries naming an envelope that is not stored are reported by the entry checks, not here."""
    found: Found = []
    for digest, first in stored:
        use = first_uses.get(digest)
        if use is None:
            found.append((f"envelope {digest.hex()[:16]} is stored but no entry names it", None))
        elif first != use:
            found.append((f"envelope {digest.hex()[:16]}: stored first index {first}, its first entry is {use}", use))
    return _capped(found, "envelope rows")


def map_node_row_problems(rows: Iterable[tuple[bytes, bytes]]) -> Found:
    """Every stored subject-map node (hash, bytes) hashes to the name it is stored under.

    The nodes under every seal's verified root are then right wherever they are stored: a completeness
    proof read from them at any checkpoint chains to that checkpoint's root. A node that no root reaches
    (left by a writer stopped mid-seal) is never read, and is right too if it hashes to its name."""
    found: Found = []
    for digest, data in rows:
        if stored_node_hash(data) == digest:
            continue
        try:
            checked_node(digest, data)
        except LedgerError as e:
            found.append((f"subject-map node {digest.hex()}: {e}", None))
    return _capped(found, "subject-map nodes")
