"""A data subject's rights over an immutable ledger: export every event about a person (access and
portability) and erase the person (crypto-shredding).

Erasure, step by step, each step safe to repeat (a crash at any point is finished by running it again):

1. mark every key of the subject as being erased in the key store (from here on the ledger seals the
   subject's new events under a new key, so nothing more lands under the keys being destroyed);
2. append the signed ``erasure`` entry (fingerprint, key ids, count of entries, reason; never the
   identity); skipped when an erasure entry already names these keys;
3. destroy the keys (the subject's rows of the key store), then seal so the erasure is under a signed
   checkpoint.

The lineage links by fingerprint and key id stay: they follow from the entries' bytes, which hold the same
pseudonymous values, and lead only to ciphertext (docs/privacy.md says what that leaves).

Afterwards the entries are unchanged (every hash, chain, proof and bundle still verifies) and their
personal fields cannot be decrypted: queries show them as ``"erased"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.entry import Erasure, ErasureEntry, EventEntry, decode_entry, erasure_subject
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.sealed import personal_of, unseal_event
from lineage_ledger.errors import InputError, LedgerError, NotFoundError
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.ledger.links import find_links
from lineage_ledger.ledger.writer import Ledger
from lineage_ledger.privacy.personal import PersonalData
from lineage_ledger.store.base import Store

__all__ = [
    "SUBJECT_EVIDENCE_SCOPE",
    "ErasureRecord",
    "SubjectExport",
    "erase_subject",
    "erasure_records",
    "export_subject",
    "subject_evidence",
    "subject_name",
]

SUBJECT_EVIDENCE_SCOPE: Final = "data-subject"
MAX_REASON: Final = 1024


def subject_name(user: str | None = None, subject: str | None = None) -> str:
    """The data subject an export or erasure is about: ``user:<id>`` for a person, or a chain subject
    (``token:<id>``) whose events had personal fields and no user id. InputError if neither or both."""
    if (user is None) == (subject is None):
        raise InputError("user", "give exactly one of a user id or a subject")
    if user is not None:
        if not user or len(user) > 256:
            raise InputError("user", "a user id is 1 to 256 characters")
        return "user:" + user
    assert subject is not None
    if not subject.startswith(("token:", "asset:")):
        raise InputError("subject", f"{subject!r} is not a token: or asset: subject")
    return subject


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    """A signed erasure: its log index, the subject's fingerprint, the keys destroyed, how many entries."""

    index: int
    fingerprint: str
    kids: tuple[str, ...]
    count: int
    reason: str
    recorded_at: str
    already: bool = False
    """True when nothing was left to erase: the subject had been erased before."""

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (no identity in it)."""
        return {
            "index": self.index,
            "fingerprint": self.fingerprint,
            "kids": list(self.kids),
            "count": self.count,
            "reason": self.reason,
            "recorded_at": self.recorded_at,
            "already_erased": self.already,
        }


def erasure_records(store: Store, fingerprint: str) -> list[ErasureRecord]:
    """The erasure entries of a subject, in log order."""
    out = []
    for row in store.subject_entries([erasure_subject(fingerprint)]):
        entry = decode_entry(row.body)
        if isinstance(entry, ErasureEntry):
            e = entry.erasure
            out.append(ErasureRecord(row.index, e.fingerprint, e.kids, e.count, e.reason, entry.recorded_at))
    return out


def _personal(personal: PersonalData | None) -> PersonalData:
    if personal is None:
        raise InputError("ledger", "this ledger seals no personal data (created without --personal-data)")
    return personal


def erase_subject(ledger: Ledger, name: str, reason: str) -> ErasureRecord:
    """Erase data subject ``name`` (see the module docstring): returns the erasure record (``already`` when
    an earlier erasure left nothing). NotFoundError for a subject the ledger never sealed anything for."""
    personal = _personal(ledger.personal)
    if not reason.strip() or len(reason) > MAX_REASON:
        raise InputError("reason", f"give a reason of 1 to {MAX_REASON} characters (it is signed into the log)")
    fingerprint = personal.fingerprint(name)
    store = ledger.store
    if not personal.key_store.keys_of(fingerprint):
        done = erasure_records(store, fingerprint)
        if done:
            last = done[-1]
            return ErasureRecord(
                last.index, fingerprint, last.kids, last.count, last.reason, last.recorded_at, already=True
            )
        raise NotFoundError("the ledger holds no personal data of this subject")
    personal.forget(fingerprint)
    kids = [row.kid for row in personal.key_store.mark_erasing(fingerprint)]
    recorded = {kid for rec in erasure_records(store, fingerprint) for kid in rec.kids}
    todo = sorted(set(kids) - recorded)
    if todo:
        count = sum(len(find_links(store, "personal", kid)) for kid in todo)
        ledger.record_erasure(Erasure(count=count, fingerprint=fingerprint, kids=tuple(todo), reason=reason))
    personal.key_store.destroy(fingerprint, kids)
    ledger.seal()
    return erasure_records(store, fingerprint)[-1]


@dataclass
class SubjectExport:
    """Every event about a data subject, decrypted, with what proves them (see export_subject)."""

    fingerprint: str
    events: list[dict[str, Any]] = field(default_factory=list)
    erasures: list[ErasureRecord] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    """The chains (token:, asset:) the events are in: the evidence covers each completely."""

    def jsonl(self) -> Iterator[bytes]:
        """One canonical JSON line per event, then one per erasure record."""
        for item in self.events:
            yield canonical_bytes(item) + b"\n"
        for rec in self.erasures:
            yield canonical_bytes({"erasure": rec.to_json()}) + b"\n"


def export_subject(store: Store, personal: PersonalData | None, name: str) -> SubjectExport:
    """Every event sealed under a live key of data subject ``name``, decrypted, each checked against the
    leaf its producer signed, in log order; and the subject's erasure records. NotFoundError if the ledger
    holds nothing about the subject."""
    sealing = _personal(personal)
    fingerprint = sealing.fingerprint(name)
    out = SubjectExport(fingerprint, erasures=erasure_records(store, fingerprint))
    found: dict[int, str] = {}
    for row in sealing.key_store.keys_of(fingerprint):
        for _, idx, chain in find_links(store, "personal", row.kid):
            found[idx] = chain
    if not found and not out.erasures:
        raise NotFoundError("the ledger holds no personal data of this subject")
    for idx in sorted(found):
        stored = store.entry(idx)
        entry = decode_entry(stored.body)
        if not isinstance(entry, EventEntry):
            raise LedgerError(f"entry {idx} is not an event entry")
        raw = bytes(entry.event)
        sealed = personal_of(raw)
        if sealed is None:
            continue
        event_id = json.loads(raw)["event_id"]
        fields = sealing.open_fields(sealed, stored.subject, event_id)
        event = unseal_event(raw, fields)
        out.events.append(
            {
                "index": idx,
                "recorded_at": entry.recorded_at,
                "producer": entry.producer,
                "subject": stored.subject,
                "verdict": entry.verdict,
                "signed_event_matches": fields is not None and leaf_hash(canonical_bytes(event)).hex() == sealed.signed,
                "event": event,
            }
        )
    out.subjects = sorted({e["subject"] for e in out.events})
    return out


def subject_evidence(store: Store, export: SubjectExport) -> bytes:
    """An evidence set (offline_set) for an export: one bundle per chain the events are in, each proving its
    chain's entries included and complete as of the latest checkpoint."""
    checkpoint = store.latest_checkpoint()
    if checkpoint is None:
        raise NotFoundError("no signed checkpoint")
    bundles = [json.loads(export_evidence(store, s, size=checkpoint.size)) for s in export.subjects]
    return canonical_bytes(
        {
            "format": "lineage-ledger-evidence-set/1",
            "scope": {"kind": SUBJECT_EVIDENCE_SCOPE, "fingerprint": export.fingerprint, "subjects": export.subjects},
            "tree_size": checkpoint.size,
            "bundles": bundles,
        }
    )
