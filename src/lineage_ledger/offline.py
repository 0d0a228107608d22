"""Offline verification of evidence bundles: one file, the standard library and ``cryptography``, nothing else.

An auditor can copy this file out of the package and run it (``python offline.py BUNDLE --key KEY``): it
imports no other module of lineage_ledger, so it re-implements, from the fixed formats, exactly what it
needs to check:

* the C2SP signed note of the checkpoint (Ed25519; key id = first 4 bytes of SHA-256(name || 0x0A || 0x01
  || public key)) and its tlog-checkpoint text (origin, tree size, base64 root);
* optionally, a witness policy: C2SP tlog-cosignature ``cosignature/v1`` lines on the checkpoint by at
  least k of n given witness keys (key id with 0x04; 8-byte timestamp then the Ed25519 signature over
  ``cosignature/v1\ntime <t>\n`` and the checkpoint text);
* RFC 9162 (section 2.1.3.2) inclusion proofs of the subject's entries and of the checkpoint's seal entry;
* the subject-map proof under the seal's ``block.subjects_root``: key = SHA-256(subject), leaf node =
  SHA-256(0x10 || key || SHA-256(head || count(8) || index(8))), interior = SHA-256(0x11 || left || right),
  empty = 32 zero bytes, siblings from the root downwards;
* the per-subject hash chain (``prev`` links) and that it is the whole chain the map names (head, count,
  head index), so the history is complete as of the checkpoint, or provably empty;
* each event's producer batch: the statement, the event's RFC 9162 path in the batch, the Ed25519 signature
  over the DSSE pre-authentication encoding, the producer key and its validity window at ``recorded_at``;
* each producer key against its own key entries in the log (registration, and revocation if any), each
  with an inclusion proof in the same checkpoint: the key's public key and window are the log's, not the
  bundle's say-so;
* when the log key was rotated, the chain from the trusted key to the key that signed the checkpoint: each
  ``log_key`` entry (included in the checkpoint) carries a note ``lineage-ledger/log-key-rotation/v1``,
  origin, its index, the retiring key, the new key, signed by both keys; the chain starts after the last
  rotation to the trusted key (the original key: from the first) and each step must retire the key before.

Hashes are always taken over the bytes the bundle carries (an entry's text, the event's exact slice of it),
never over a re-serialised copy.

It stays one module, longer than the package's others, on purpose: an auditor copies one file beside the
bundle, and a split would make the verifier a package again.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_KEY_WARNING",
    "TRUSTED_KEY_ENV_VAR",
    "BundleEvent",
    "BundleReport",
    "main",
    "verify_bundle",
]

BUNDLE_FORMAT: Final = "lineage-ledger-evidence/1"
"""The ``format`` field of the bundles this module checks."""

BUNDLE_KEY_WARNING: Final = "key taken from the bundle: only proves internal consistency"
"""The warning a report carries when no log key was given and the bundle's own copy was used."""

TRUSTED_KEY_ENV_VAR: Final = "LINEAGE_TRUSTED_KEY"
"""The environment variable the command-line verifiers read the log's trusted verifier key from (a key
string or a file holding one) when no ``--key`` is given."""

_BATCH_PAYLOAD_TYPE: Final = "application/vnd.lineage-ledger.batch.v1+json"
_ZERO_HEX: Final = "0" * 64
_EMPTY: Final = bytes(32)
_MAX_SAFE_INTEGER: Final = 2**53 - 1
_HEX_DIGITS: Final = frozenset("0123456789abcdef")
_DECIMAL_DIGITS: Final = frozenset("0123456789")
_SIGNATURE_LINE_PREFIX: Final = "— "
_ROTATION_HEADER: Final = "lineage-ledger/log-key-rotation/v1"
_ED25519: Final = 0x01
_MAP_LEAF_PREFIX: Final = b"\x10"
_MAP_INTERIOR_PREFIX: Final = b"\x11"
"""The subject map's node prefixes, as core/smt_nodes.py defines them (this file imports nothing of the package;
tests/test_offline_isolation.py checks the two agree)."""
_COSIGNATURE_V1: Final = 0x04
_SUBJECT_FIELD: Final = {
    "token": ("token:", "token_id"),
    "policy": ("policy:", "policy_id"),
    "data": ("asset:", "asset_id"),
}


@dataclass(frozen=True, slots=True)
class BundleEvent:
    """One entry of the subject's history as the bundle shows it (checked or not: see the report's problems)."""

    index: int
    event_type: str
    occurred_at: str
    verdict: str
    producer: str
    resource: str | None = None
    outcome: str | None = None
    parent: str | None = None
    """The token a birth names as its parent (refresh, rotation or exchange)."""

    def to_json(self) -> dict[str, Any]:
        """A plain dict; ``resource``, ``outcome`` and ``parent`` only when the event has them."""
        out: dict[str, Any] = {
            "index": self.index,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at,
            "verdict": self.verdict,
            "producer": self.producer,
        }
        if self.resource is not None:
            out["resource"] = self.resource
        if self.outcome is not None:
            out["outcome"] = self.outcome
        if self.parent is not None:
            out["parent"] = self.parent
        return out


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What an evidence bundle proves.

    ``ok`` and ``complete`` are True only when every check passed: then ``events`` are all of the subject's
    entries as of the checkpoint of ``tree_size`` (none at all when ``count`` is 0), each committed by the
    checkpoint and, for events, signed by its producer. ``revoked`` is True when that complete history holds
    a REVOKED event the ledger judged "ok". ``problems`` name each failed check and where it failed.
    ``key_source`` is "given" when the caller supplied the log key, "bundle" when the bundle's own copy was
    used (see ``warnings``: that proves only that the bundle is internally consistent).
    """

    ok: bool
    subject: str | None
    tree_size: int | None
    origin: str | None
    count: int
    events: tuple[BundleEvent, ...]
    revoked: bool
    complete: bool
    problems: tuple[str, ...]
    key_source: str
    warnings: tuple[str, ...] = ()
    witnesses: tuple[str, ...] = ()
    """The witnesses (of those given) whose cosignatures on the checkpoint verified."""

    def to_json(self) -> dict[str, Any]:
        """A plain dict of the report."""
        return {
            "ok": self.ok,
            "complete": self.complete,
            "revoked": self.revoked,
            "subject": self.subject,
            "tree_size": self.tree_size,
            "origin": self.origin,
            "count": self.count,
            "key_source": self.key_source,
            "events": [event.to_json() for event in self.events],
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "witnesses": list(self.witnesses),
        }


class _Malformed(Exception):
    """A check failed; the message says why (the caller knows where)."""


def _fail(reason: str) -> NoReturn:
    raise _Malformed(reason)


# Parsing ---------------------------------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _fail(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_number(text: str) -> NoReturn:
    _fail(f"non-integer number {text}")


def _parse_json(text: str) -> Any:
    """Strict JSON: no duplicate keys, no floats, no NaN or Infinity."""
    try:
        return json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_float=_reject_number,
            parse_constant=_reject_number,
        )
    except (ValueError, RecursionError) as e:
        _fail(f"not valid JSON ({e})")


def _canonical(value: Any) -> str:
    """Canonical JSON (RFC 8785 for this domain: integers only, keys in UTF-16 order)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            _fail(f"integer {value} is outside +-(2^53-1)")
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_canonical(item) for item in value) + "]"
    if isinstance(value, dict):
        try:
            keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        except UnicodeEncodeError:
            _fail("an object key holds a lone surrogate")
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _canonical(value[k]) for k in keys) + "}"
    _fail(f"a {type(value).__name__} has no canonical JSON form")


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        _fail(f"{what} is not valid UTF-8 (a lone surrogate)")


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(f"{what} must be a JSON object")
    return value


def _get(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        _fail(f"field {name!r} is missing")
    return obj[name]


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        _fail(f"{what} must be a string")
    return value


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_SAFE_INTEGER:
        _fail(f"{what} must be an integer in [{minimum}, 2^53-1], got {value!r}")
    return value


def _hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX_DIGITS:
        _fail(f"{what} must be 64 lowercase hex digits")
    return bytes.fromhex(value)


def _hash_list(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list):
        _fail(f"{what} must be a list of hashes")
    return [_hex32(item, f"{what}[{i}]") for i, item in enumerate(value)]


def _b64(value: Any, what: str) -> bytes:
    """Canonical base64 only, so that no two encodings of different text carry the same bytes."""
    if not isinstance(value, str):
        _fail(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        _fail(f"{what} is not valid base64")
    if base64.b64encode(raw).decode("ascii") != value:
        _fail(f"{what} is not canonical base64")
    return raw


def _hlc(value: Any, what: str) -> str:
    """An HLC reading: 19 digits, a dot, 5 digits, so that text order is time order."""
    if (
        not isinstance(value, str)
        or len(value) != 25
        or value[19] != "."
        or not set(value[:19] + value[20:]) <= _DECIMAL_DIGITS
    ):
        _fail(f"{what} must be an HLC reading '<19 digits>.<5 digits>', got {value!r}")
    return value


# Hashing and proofs ----------------------------------------------------------------------------------------


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data)


def _root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root RFC 9162 section 2.1.3.2 computes from a leaf hash and its audit path (bottom-up)."""
    if not 0 <= index < size:
        _fail(f"leaf index {index} is not inside a tree of {size} leaves")
    if len(leaf) != 32 or any(len(sibling) != 32 for sibling in path):
        _fail("every hash of an inclusion proof is 32 bytes")
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            _fail("the inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            node = _sha256(b"\x01" + sibling + node)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = _sha256(b"\x01" + node + sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        _fail("the inclusion path is shorter than the tree is deep")
    return node


def _check_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    if len(root) != 32 or _root_from_inclusion(index, size, leaf, path) != root:
        _fail(f"the inclusion proof of index {index} does not lead to the checkpoint root")


def _map_value_hash(head: bytes, count: int, index: int) -> bytes:
    return _sha256(head + count.to_bytes(8, "big") + index.to_bytes(8, "big"))


def _map_root_from_proof(
    key: bytes, siblings: Sequence[bytes], terminal: tuple[bytes, bytes, int, int] | None
) -> bytes:
    """The subject-map root a proof leads to; ``terminal`` is (leaf key, head, count, index) or None."""
    depth = len(siblings)
    if depth > 256:
        _fail(f"the proof has {depth} siblings; a path has at most 256")
    path = int.from_bytes(key, "big")
    if terminal is None:
        node = _EMPTY
    else:
        leaf_key, head, count, index = terminal
        if depth and (int.from_bytes(leaf_key, "big") ^ path) >> (256 - depth):
            _fail(f"the terminal leaf at depth {depth} holds a key that is not on this key's path")
        node = _sha256(_MAP_LEAF_PREFIX + leaf_key + _map_value_hash(head, count, index))
    if depth and siblings[-1] == _EMPTY:
        _fail("the proof's last sibling is empty, so its terminal is not where the map keeps it")
    for level in range(depth - 1, -1, -1):
        if (path >> (255 - level)) & 1:
            node = _sha256(_MAP_INTERIOR_PREFIX + siblings[level] + node)
        else:
            node = _sha256(_MAP_INTERIOR_PREFIX + node + siblings[level])
    return node


def _pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# Signed notes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _NoteKey:
    name: str
    key_id: int
    public_key: bytes


def _note_key_id(name: str, public_key: bytes, kind: int = _ED25519) -> int:
    digest = _sha256(name.encode("utf-8") + b"\n" + bytes([kind]) + public_key)
    return int.from_bytes(digest[:4], "big")


def _check_key_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() or ord(c) < 0x20 for c in name):
        _fail(f"{name!r} is not a valid key name")


def _parse_note_key(text: str, kind: int = _ED25519) -> _NoteKey:
    """A C2SP verifier key ``<name>+<8 hex key id>+<base64(kind || public key)>``, its key id checked; kind
    0x01 for a note signer (the log), 0x04 for a cosignature/v1 cosigner (a witness)."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        _fail("a verifier key is <name>+<key id>+<base64 key>")
    name, key_id_hex, encoded = parts
    _check_key_name(name)
    if len(key_id_hex) != 8 or not set(key_id_hex.lower()) <= _HEX_DIGITS:
        _fail("the key id must be 8 hex digits")
    raw = _b64(encoded, "the key")
    if len(raw) != 33 or raw[0] != kind:
        _fail(f"the key must be 0x{kind:02x} followed by a 32-byte Ed25519 public key")
    key = _NoteKey(name, int(key_id_hex, 16), raw[1:])
    if _note_key_id(name, key.public_key, kind) != key.key_id:
        _fail("the key id does not match the key name and public key")
    return key


def _note_text(note: str, key: _NoteKey | None) -> tuple[str, str | None]:
    """Split a signed note; return its text and, if the signature by ``key`` is absent or bad, why.

    Lines by other keys (witnesses) are ignored, as the signed-note spec requires. Without a key the text
    is returned with the reason it is unsigned, so the rest of the bundle can still be examined.
    """
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        _fail("the note holds ASCII control characters other than newline")
    split = note.rfind("\n\n")
    if split < 0:
        _fail("no blank line separates the note text from its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        _fail("the signature lines must end with a newline")
    message = _utf8(text, "the note text")
    found = False
    for number, line in enumerate(block[:-1].split("\n")):
        if not line.startswith(_SIGNATURE_LINE_PREFIX):
            _fail(f"signature line {number} does not start with an em dash and a space")
        name, _, encoded = line[len(_SIGNATURE_LINE_PREFIX) :].partition(" ")
        raw = _b64(encoded, f"signature line {number}")
        if len(raw) < 5:
            _fail(f"signature line {number} is too short")
        if key is None or name != key.name or int.from_bytes(raw[:4], "big") != key.key_id:
            continue
        if not _ed25519_verify(key.public_key, raw[4:], message):
            return text, f"the signature by the log key {key.name}+{key.key_id:08x} does not verify"
        found = True
    if key is None:
        return text, "its signature cannot be checked without a usable log key"
    if not found:
        return text, f"the note carries no signature by the log key {key.name}+{key.key_id:08x}"
    return text, None


def _cosigners(note: str, text: str, witnesses: Sequence[_NoteKey]) -> list[str]:
    """The names of ``witnesses`` with a valid cosignature/v1 line on the note (whose text is ``text``)."""
    found: list[str] = []
    for number, line in enumerate(note[len(text) + 1 : -1].split("\n")):
        name, _, encoded = line[len(_SIGNATURE_LINE_PREFIX) :].partition(" ")
        raw = _b64(encoded, f"signature line {number}")
        key = next((w for w in witnesses if w.name == name and w.key_id == int.from_bytes(raw[:4], "big")), None)
        if key is None or name in found:
            continue
        timestamp = int.from_bytes(raw[4:12], "big")
        message = b"cosignature/v1\ntime %d\n" % timestamp + _utf8(text, "the note text")
        if len(raw) != 76 or timestamp >= 2**63 or not _ed25519_verify(key.public_key, raw[12:], message):
            _fail(f"the cosignature by witness {name}+{key.key_id:08x} does not verify")
        found.append(name)
    return found


def _parse_checkpoint_text(text: str) -> tuple[str, int, bytes]:
    """Origin, tree size and root hash of C2SP tlog-checkpoint text."""
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        _fail(f"the checkpoint text needs origin, size and root lines, got {len(lines)}")
    origin, size_line, root_line = lines[:3]
    if not origin:
        _fail("the checkpoint origin line is empty")
    if (
        not 0 < len(size_line) <= 20
        or not set(size_line) <= _DECIMAL_DIGITS
        or (size_line[0] == "0" and size_line != "0")
    ):
        _fail("the checkpoint size line is not a decimal integer without leading zeros")
    root = _b64(root_line, "the checkpoint root line")
    if len(root) != 32:
        _fail("the checkpoint root must be 32 bytes")
    if any(not line for line in lines[3:]):
        _fail("the checkpoint has an empty extension line")
    return origin, int(size_line), root


# The bundle ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Head:
    """What the subject map holds for a subject: its chain's head leaf hash, entry count and head index."""

    leaf: bytes
    count: int
    index: int


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the chain and completeness checks need of one bundle entry."""

    index: int
    leaf: bytes
    prev: str | None


class _Audit:
    """One pass over a bundle, collecting every problem instead of stopping at the first."""

    def __init__(self, data: bytes, log_key: str | None, witness_keys: Sequence[str], quorum: int | None) -> None:
        self.data = data
        self.given_key = log_key
        self.witness_keys = witness_keys
        self.quorum = len(set(witness_keys)) if quorum is None else quorum
        self.witnesses: list[str] = []
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.subject: str | None = None
        self.tree_size: int | None = None
        self.origin: str | None = None
        self.root: bytes | None = None
        self.subjects_root: bytes | None = None
        self.events: list[BundleEvent] = []
        self.producer_keys: dict[str, Any] = {}

    def problem(self, where: str, reason: str) -> None:
        self.problems.append(f"{where}: {reason}")

    def report(self, key_source: str, count: int) -> BundleReport:
        ok = not self.problems
        revoked = ok and any(e.event_type == "REVOKED" and e.verdict == "ok" for e in self.events)
        return BundleReport(
            ok=ok,
            subject=self.subject,
            tree_size=self.tree_size,
            origin=self.origin,
            count=count,
            events=tuple(self.events),
            revoked=revoked,
            complete=ok,
            problems=tuple(self.problems),
            key_source=key_source,
            warnings=tuple(self.warnings),
            witnesses=tuple(self.witnesses),
        )

    def run(self) -> BundleReport:
        key_source = "bundle" if self.given_key is None else "given"
        try:
            text = self.data.decode("utf-8")
            bundle = _object(_parse_json(text), "the bundle")
        except (UnicodeDecodeError, _Malformed) as e:
            reason = "not valid UTF-8" if isinstance(e, UnicodeDecodeError) else str(e)
            self.problem("bundle", reason)
            return self.report(key_source, 0)
        self.header(bundle)
        key = self.log_key(bundle)
        rotations = self.rotations(bundle, key)
        self.checkpoint(bundle, rotations[-1][4] if rotations else key)
        for index, leaf, path, origin, _ in rotations:
            where = f"log key rotation at index {index}"
            if self.origin is not None and origin != self.origin:
                self.problem(where, f"it names the log {origin!r}, not the checkpoint's {self.origin!r}")
            try:
                if self.root is not None and self.tree_size is not None:
                    _check_inclusion(index, self.tree_size, leaf, path, self.root)
            except _Malformed as e:
                self.problem(where, str(e))
        self.seal(bundle)
        proven, head = self.map_proof(bundle)
        try:
            self.producer_keys = _object(_get(bundle, "producer_keys"), "producer_keys")
        except _Malformed as e:
            self.problem("producer_keys", str(e))
        for key_id in sorted(self.producer_keys):
            self.key_history(key_id)
        entries = self.entries(bundle)
        if proven:
            self.completeness(head, entries)
        count = len(entries) if not proven else 0 if head is None else head.count
        return self.report(key_source, count)

    def header(self, bundle: dict[str, Any]) -> None:
        try:
            if _get(bundle, "format") != BUNDLE_FORMAT:
                _fail(f"format is {bundle['format']!r}, not {BUNDLE_FORMAT!r}")
        except _Malformed as e:
            self.problem("bundle", str(e))
        try:
            self.subject = _str(_get(bundle, "subject"), "subject")
        except _Malformed as e:
            self.problem("bundle", str(e))
        try:
            self.tree_size = _int(_get(bundle, "tree_size"), "tree_size", 1)
        except _Malformed as e:
            self.problem("bundle", str(e))

    def log_key(self, bundle: dict[str, Any]) -> _NoteKey | None:
        if self.given_key is not None:
            try:
                key = _parse_note_key(self.given_key)
            except _Malformed as e:
                self.problem("log key", f"the given key is not a note verifier key: {e}")
                return None
            if bundle.get("log_key") != self.given_key.strip():
                self.warnings.append("the bundle names another log key than the one given; the given key was used")
            return key
        self.warnings.append(BUNDLE_KEY_WARNING)
        try:
            return _parse_note_key(_str(_get(bundle, "log_key"), "log_key"))
        except _Malformed as e:
            self.problem("log key", f"the bundle's log_key is not a note verifier key: {e}")
            return None

    def rotations(
        self, bundle: dict[str, Any], key: _NoteKey | None
    ) -> list[tuple[int, bytes, list[bytes], str, _NoteKey]]:
        """The log key rotations from ``key`` on, each checked against the key it retires: (index, leaf,
        inclusion path, origin, new key). An unreadable or forged rotation is a problem and ends the chain."""
        parsed = []
        try:
            items = bundle.get("log_key_rotations", [])
            if not isinstance(items, list):
                _fail("log_key_rotations must be a list")
            for n, raw in enumerate(items):
                item = _object(raw, f"log_key_rotations[{n}]")
                index = _int(_get(item, "index"), "index")
                text = _str(_get(item, "entry"), "entry")
                entry = _object(_parse_json(text), "the rotation entry")
                if _canonical(entry) != text or entry.get("type") != "log_key" or entry.get("index") != index:
                    _fail(f"the entry at index {index} is not a canonical log_key entry at its index")
                note = _str(_get(entry, "rotation"), "rotation")
                lines = _note_text(note, None)[0][:-1].split("\n")
                if len(lines) != 5 or lines[0] != _ROTATION_HEADER or lines[2] != str(index):
                    _fail(f"the rotation at index {index} is not a {_ROTATION_HEADER} statement of its index")
                path = _hash_list(_get(item, "inclusion"), "inclusion")
                leaf = _leaf_hash(_utf8(text, "the rotation entry"))
                parsed.append((index, leaf, path, lines[1], _parse_note_key(lines[3]), _parse_note_key(lines[4]), note))
        except _Malformed as e:
            self.problem("log key rotations", str(e))
            return []
        if key is None:
            return []
        start = max((n + 1 for n, p in enumerate(parsed) if p[5] == key), default=0)
        chain: list[tuple[int, bytes, list[bytes], str, _NoteKey]] = []
        current = key
        for index, leaf, path, origin, old, new, note in parsed[start:]:
            where = f"log key rotation at index {index}"
            reasons = [
                None if old == current else "it retires another key than the log key before it",
                _note_text(note, current)[1],
                _note_text(note, new)[1],
            ]
            if any(reasons):
                self.problem(where, "; ".join(r for r in reasons if r))
                return chain
            chain.append((index, leaf, path, origin, new))
            current = new
        return chain

    def checkpoint(self, bundle: dict[str, Any], key: _NoteKey | None) -> None:
        try:
            note = _str(_get(bundle, "checkpoint"), "checkpoint")
            text, bad_signature = _note_text(note, key)
            if bad_signature is not None:
                self.problem("checkpoint", bad_signature)
            self.origin, size, self.root = _parse_checkpoint_text(text)
        except _Malformed as e:
            self.problem("checkpoint", str(e))
            return
        self.witness_policy(note, text)
        if self.tree_size is not None and size != self.tree_size:
            self.problem("checkpoint", f"it is of size {size}, but the bundle says tree_size {self.tree_size}")

    def witness_policy(self, note: str, text: str) -> None:
        if not self.witness_keys and not self.quorum:
            return
        try:
            keys = [_parse_note_key(k, _COSIGNATURE_V1) for k in self.witness_keys]
            if self.quorum > len(keys):
                _fail(f"a quorum of {self.quorum} asked of {len(keys)} witness keys")
            self.witnesses = _cosigners(note, text, keys)
        except _Malformed as e:
            self.problem("witnesses", str(e))
            return
        if len(self.witnesses) < self.quorum:
            self.problem(
                "witnesses",
                f"the checkpoint is cosigned by {len(self.witnesses)} of the given witnesses, the policy needs "
                f"{self.quorum}",
            )

    def seal(self, bundle: dict[str, Any]) -> None:
        try:
            seal = _object(_get(bundle, "seal"), "seal")
            index = _int(_get(seal, "index"), "seal.index")
            if self.tree_size is not None and index != self.tree_size - 1:
                _fail(f"the seal is at index {index}, not {self.tree_size - 1}, the last entry of the checkpoint")
            text = _str(_get(seal, "entry"), "seal.entry")
            body = _utf8(text, "the seal entry")
            entry = _object(_parse_json(text), "the seal entry")
            if _canonical(entry) != text:
                _fail("the seal entry is not canonical JSON")
            if entry.get("type") != "seal":
                _fail(f"the entry at index {index} is not a seal entry (type {entry.get('type')!r})")
            if entry.get("index") != index:
                _fail(f"the seal entry says index {entry.get('index')!r}, but it sits at index {index}")
            block = _object(_get(entry, "block"), "the seal's block")
            subjects_root = _hex32(_get(block, "subjects_root"), "block.subjects_root")
            path = _hash_list(_get(seal, "inclusion"), "seal.inclusion")
            if self.root is not None and self.tree_size is not None:
                _check_inclusion(index, self.tree_size, _leaf_hash(body), path, self.root)
        except _Malformed as e:
            self.problem("seal", str(e))
            return
        self.subjects_root = subjects_root

    def map_proof(self, bundle: dict[str, Any]) -> tuple[bool, _Head | None]:
        """Whether the map proof holds, and what it proves: the subject's head, or None for its absence."""
        try:
            proof = _object(_get(bundle, "map_proof"), "map_proof")
            key = _hex32(_get(proof, "key"), "map_proof.key")
            if self.subject is not None and key != _sha256(_utf8(self.subject, "the subject")):
                _fail("its key is not SHA-256 of the bundle's subject")
            siblings = _hash_list(_get(proof, "siblings"), "map_proof.siblings")
            raw = _get(proof, "terminal")
            terminal: tuple[bytes, bytes, int, int] | None = None
            if raw is not None:
                leaf = _object(raw, "map_proof.terminal")
                count = _int(_get(leaf, "count"), "terminal.count", 1)
                terminal = (
                    _hex32(_get(leaf, "key"), "terminal.key"),
                    _hex32(_get(leaf, "head"), "terminal.head"),
                    count,
                    _int(_get(leaf, "index"), "terminal.index", count - 1),
                )
            if self.subjects_root is None:
                _fail("there is no proven subjects_root to check it against")
            if _map_root_from_proof(key, siblings, terminal) != self.subjects_root:
                _fail("it does not lead to the seal's subjects_root")
        except _Malformed as e:
            self.problem("map proof", str(e))
            return False, None
        if terminal is None or terminal[0] != key:
            return True, None
        return True, _Head(terminal[1], terminal[2], terminal[3])

    def entries(self, bundle: dict[str, Any]) -> list[_Entry | None]:
        """Each item checked on its own, then the chain links between neighbours; None for an unreadable item."""
        try:
            items = _get(bundle, "entries")
            if not isinstance(items, list):
                _fail("entries must be a list")
        except _Malformed as e:
            self.problem("bundle", str(e))
            return []
        checked = [self.entry(position, item) for position, item in enumerate(items)]
        for position, current in enumerate(checked):
            if current is None or current.prev is None:
                continue
            where = self.where(position, current.index)
            if position == 0:
                if current.prev != _ZERO_HEX:
                    self.problem(where, "the first entry's prev is not 64 zeros: the chain does not start here")
                continue
            previous = checked[position - 1]
            if previous is None:
                continue
            if current.prev != previous.leaf.hex():
                self.problem(where, "its prev is not the leaf hash of the previous entry: the chain is broken")
            if current.index <= previous.index:
                self.problem(where, f"it follows index {previous.index}: the entries are out of order")
        return checked

    @staticmethod
    def where(position: int, index: int | None) -> str:
        return f"entries[{position}]" + ("" if index is None else f" (index {index})")

    def entry(self, position: int, item: Any) -> _Entry | None:
        where = self.where(position, None)
        try:
            obj = _object(item, where)
            index = _int(_get(obj, "index"), "index")
            where = self.where(position, index)
            text = _str(_get(obj, "entry"), "entry")
            body = _utf8(text, "the entry")
            leaf = _leaf_hash(body)
        except _Malformed as e:
            self.problem(where, str(e))
            return None
        prev: str | None = None
        try:
            path = _hash_list(_get(obj, "inclusion"), "inclusion")
            if self.root is not None and self.tree_size is not None:
                _check_inclusion(index, self.tree_size, leaf, path, self.root)
        except _Malformed as e:
            self.problem(where, str(e))
        try:
            entry = _object(_parse_json(text), "the entry")
            if _canonical(entry) != text:
                _fail("the entry is not canonical JSON")
            if entry.get("index") != index:
                _fail(f"the entry says index {entry.get('index')!r}, but its proof is for index {index}")
            prev = _str(_get(entry, "prev"), "prev")
            if entry.get("type") != "event":
                _fail(f"it is a {entry.get('type')!r} entry, not an event of the subject")
            event_bytes = self.event_bytes(body, entry)
            event = self.event(where, entry, index)
            if event is not None:
                self.batch(where, obj, entry, event_bytes)
        except _Malformed as e:
            self.problem(where, str(e))
        return _Entry(index, leaf, prev)

    @staticmethod
    def event_bytes(body: bytes, entry: dict[str, Any]) -> bytes:
        """The event's exact bytes inside the entry: between ``"event":`` and the last ``,"index":``."""
        envelope = _str(_get(entry, "envelope"), "envelope")
        start = len(b'{"envelope":"' + envelope.encode() + b'","event":')
        end = body.rfind(b',"index":')
        if not body.startswith(b'{"envelope":"' + envelope.encode() + b'","event":') or end < start:
            _fail("the event is not where an event entry keeps it")
        event_bytes = body[start:end]
        if _parse_json(event_bytes.decode("utf-8", errors="replace")) != entry.get("event"):
            _fail("the event's bytes are not the entry's event")
        return event_bytes

    def event(self, where: str, entry: dict[str, Any], index: int) -> BundleEvent | None:
        event = _object(_get(entry, "event"), "event")
        kind = event.get("kind")
        if kind not in _SUBJECT_FIELD:
            _fail(f"the event's kind {kind!r} is not token, policy or data")
        prefix, field = _SUBJECT_FIELD[kind]
        subject = prefix + _str(_get(event, field), field)
        payload = event.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        resource, outcome, parent = payload.get("resource"), payload.get("outcome"), payload.get("parent_token_id")
        summary = BundleEvent(
            index=index,
            event_type=_str(_get(event, "event_type"), "event_type"),
            occurred_at=_str(_get(event, "occurred_at"), "occurred_at"),
            verdict=_str(_get(entry, "verdict"), "verdict"),
            producer=_str(_get(entry, "producer"), "producer"),
            resource=resource if isinstance(resource, str) else None,
            outcome=outcome if isinstance(outcome, str) else None,
            parent=parent if isinstance(parent, str) else None,
        )
        self.events.append(summary)
        if self.subject is not None and subject != self.subject:
            self.problem(where, f"its event is of subject {subject!r}, not the bundle's subject")
        return summary

    def batch(self, where: str, item: dict[str, Any], entry: dict[str, Any], event_bytes: bytes) -> None:
        """The producer's signature over the batch that carried the event, and the event's path in it."""
        where = f"{where} batch"
        try:
            batch = _object(_get(item, "batch"), "batch")
            producer = _str(_get(entry, "producer"), "producer")
            key_id = _str(_get(entry, "key_id"), "key_id")
            position = _int(_get(entry, "position"), "position")
            recorded_at = _hlc(_get(entry, "recorded_at"), "recorded_at")
            payload = _b64(_get(batch, "payload"), "payload")
            signature = _b64(_get(batch, "signature"), "signature")
            message = _pae(_BATCH_PAYLOAD_TYPE, payload)
            if _sha256(message).hex() != entry.get("envelope"):
                _fail("the payload is not the envelope the entry names")
            statement_text = payload.decode("utf-8", errors="replace")
            statement = _object(_parse_json(statement_text), "the statement")
            if _canonical(statement) != statement_text or _utf8(statement_text, "the statement") != payload:
                _fail("the statement is not canonical JSON")
            if statement.get("v") != 1:
                _fail(f"statement version {statement.get('v')!r} is not 1")
            if statement.get("producer") != producer or statement.get("key_id") != key_id:
                _fail("the statement's producer or key_id is not the entry's")
            if _get(batch, "key_id") != key_id:
                _fail("the batch's key_id is not the entry's")
            count = _int(_get(statement, "count"), "statement.count", 1)
            if _get(batch, "size") != count or _get(batch, "position") != position:
                _fail("the batch's size or position is not the statement's count or the entry's position")
            batch_root = _hex32(_get(statement, "root"), "statement.root")
            path = _hash_list(_get(batch, "path"), "path")
            leaf = _leaf_hash(event_bytes)
            sealed = _object(_get(entry, "event"), "event").get("personal")
            if isinstance(sealed, dict) and _root_from_inclusion(position, count, leaf, path) != batch_root:
                # personal fields sealed at ingest: the producer signed the plaintext, whose leaf the ledger
                # recorded (docs/privacy.md)
                leaf = _hex32(_get(sealed, "signed"), "event.personal.signed")
            if _root_from_inclusion(position, count, leaf, path) != batch_root:
                _fail(f"the event's path at position {position} does not lead to the signed batch root")
        except _Malformed as e:
            self.problem(where, str(e))
            return
        self.producer_signature(where, key_id, producer, recorded_at, signature, message)

    def key_history(self, key_id: str) -> None:
        """A producer key is what the log's own key entries say: each entry included in the checkpoint, its
        change naming this key, and the key's window exactly the registration's, closed by a revocation."""
        where = f"producer key {key_id!r}"
        try:
            key = _object(self.producer_keys[key_id], where)
            fields = {"producer", "public_key", "valid_from", "valid_until", "revoked_at", "entries"}
            if set(key) != fields:
                _fail(f"fields are {sorted(key)}, expected {sorted(fields)}")
            changes = _get(key, "entries")
            if not isinstance(changes, list) or not changes:
                _fail("not proven: the bundle holds none of its key entries")
            claimed = {name: key.get(name) for name in ("producer", "public_key", "valid_from", "valid_until")}
            revoked_at = None
            for n, raw in enumerate(changes):
                item = _object(raw, f"key entry {n}")
                index = _int(_get(item, "index"), "index")
                text = _str(_get(item, "entry"), "entry")
                entry = _object(_parse_json(text), "the key entry")
                if _canonical(entry) != text or entry.get("type") != "key" or entry.get("index") != index:
                    _fail(f"entry at index {index} is not a canonical key entry at its index")
                if self.root is not None and self.tree_size is not None:
                    path = _hash_list(_get(item, "inclusion"), "inclusion")
                    _check_inclusion(index, self.tree_size, _leaf_hash(_utf8(text, "key entry")), path, self.root)
                change = _object(_get(entry, "change"), "change")
                if change.get("key_id") != key_id:
                    _fail(f"the key entry at index {index} is about another key")
                if n == 0 and change.get("action") != "register":
                    _fail("its first key entry is not its registration")
                if change.get("action") == "register":
                    if n != 0:
                        _fail("registered twice")
                    for name, value in claimed.items():
                        if change.get(name) != value:
                            _fail(f"{name} {value!r} is not what its registration at index {index} says")
                elif change.get("action") == "revoke":
                    revoked_at = change.get("revoked_at")
                else:
                    _fail(f"unknown key change {change.get('action')!r}")
            if key.get("revoked_at") != revoked_at:
                _fail(f"revoked_at {key.get('revoked_at')!r} is not what its key entries say ({revoked_at!r})")
        except _Malformed as e:
            self.problem(where, str(e))

    def producer_signature(
        self, where: str, key_id: str, producer: str, recorded_at: str, signature: bytes, message: bytes
    ) -> None:
        try:
            if key_id not in self.producer_keys:
                _fail(f"the bundle holds no producer key {key_id!r}")
            key = _object(self.producer_keys[key_id], f"producer key {key_id!r}")
            if key.get("producer") != producer:
                _fail(f"producer key {key_id!r} belongs to {key.get('producer')!r}, not {producer!r}")
            public_key = _hex32(_get(key, "public_key"), "public_key")
            if not _ed25519_verify(public_key, signature, message):
                _fail(f"the batch signature does not verify under producer key {key_id!r}")
            valid_from = _hlc(_get(key, "valid_from"), "valid_from")
            ends = [
                (_hlc(key[name], name), name) for name in ("valid_until", "revoked_at") if key.get(name) is not None
            ]
            if recorded_at < valid_from:
                _fail(
                    f"recorded_at {recorded_at} is before key {key_id!r} is valid ({valid_from}): "
                    "outside the key's validity window"
                )
            for end, name in ends:
                if recorded_at >= end:
                    _fail(
                        f"recorded_at {recorded_at} is not before the key's {name} {end}: "
                        "outside the key's validity window"
                    )
        except _Malformed as e:
            self.problem(where, str(e))

    def completeness(self, head: _Head | None, entries: list[_Entry | None]) -> None:
        """The bundle's entries are the whole chain the map names: same count, same head, same head index."""
        if head is None:
            if entries:
                self.problem(
                    "completeness", f"the map proves the subject has no entries, but the bundle holds {len(entries)}"
                )
            return
        if len(entries) != head.count:
            self.problem(
                "completeness", f"the map says the subject has {head.count} entries, the bundle holds {len(entries)}"
            )
        last = entries[-1] if entries else None
        if last is None:
            return
        if last.leaf != head.leaf:
            self.problem("completeness", "the last entry is not the head of the subject's chain the map names")
        if last.index != head.index:
            self.problem("completeness", f"the last entry is at index {last.index}, the map's head at {head.index}")


def verify_bundle(
    data: bytes,
    *,
    log_key: str | None = None,
    witness_keys: Sequence[str] = (),
    witness_quorum: int | None = None,
) -> BundleReport:
    """Check an evidence bundle offline and say what it proves; never raises for bad input.

    ``log_key`` is the log's note verifier key (``<name>+<key id>+<base64>``) from a source the caller
    trusts; it takes precedence over the copy in the bundle. Without it the bundle's own copy is used, and
    the report warns that this proves only internal consistency. With ``witness_keys`` (cosigner verifier
    keys ``<name>+<key id>+<base64(0x04 || key)>``) the checkpoint must also carry valid cosignatures by at
    least ``witness_quorum`` of them (default: all).
    """
    return _Audit(bytes(data), log_key, tuple(witness_keys), witness_quorum).run()


# Stand-alone use -------------------------------------------------------------------------------------------


def _render(report: BundleReport) -> str:
    lines = []
    if report.ok:
        entries = f"{report.count} entr{'y' if report.count == 1 else 'ies'}"
        what = entries if report.count else "no entries (proven absent)"
        lines.append(
            f"OK: complete history of {report.subject} as of checkpoint {report.origin} size {report.tree_size}: "
            + what
            + ("; REVOKED" if report.revoked else "")
        )
    else:
        problems = len(report.problems)
        lines.append(f"FAILED: {report.subject} ({problems} problem{'' if problems == 1 else 's'})")
    for e in report.events:
        detail = " ".join(x for x in (e.resource, e.outcome) if x)
        row = f"  {e.index:>8}  {e.occurred_at}  {e.event_type:<14} {e.verdict:<10} {e.producer}  {detail}"
        lines.append(row.rstrip())
    lines.extend(f"problem: {p}" for p in report.problems)
    lines.extend(f"warning: {w}" for w in report.warnings)
    return "\n".join(lines)


def _key_argument(value: str) -> str:
    """An inline verifier key, or the content of the file naming one."""
    try:
        _parse_note_key(value)
    except _Malformed:
        with open(value, encoding="utf-8") as f:
            return f.read(4096).strip()
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python offline.py BUNDLE --key KEY [--json]``: 0 when the bundle verifies, 1 when not, 2 for
    unusable arguments (an unreadable file, or no trusted key: ``--key`` or ``$LINEAGE_TRUSTED_KEY``)."""
    parser = argparse.ArgumentParser(prog="lineage-evidence-verify", description="Check an evidence bundle offline.")
    parser.add_argument("file", help="the bundle ('-' for standard input)")
    parser.add_argument(
        "--key",
        help=f"the log's note verifier key, or a file holding it; else ${TRUSTED_KEY_ENV_VAR}. Required: the key "
        "inside the bundle is not trusted",
    )
    parser.add_argument("--witness-key", action="append", default=[], help="a witness's verifier key; repeatable")
    parser.add_argument("--witness-quorum", type=int, help="cosignatures required (default: every --witness-key)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    given = args.key or os.environ.get(TRUSTED_KEY_ENV_VAR, "").strip()
    if not given:
        print(
            f"error: no trusted log key: give --key KEY (the log's verifier key, from a copy kept apart from the "
            f"ledger) or set ${TRUSTED_KEY_ENV_VAR}; the key inside the bundle cannot vouch for the bundle",
            file=sys.stderr,
        )
        return 2
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                data = f.read()
        key = _key_argument(given)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = verify_bundle(data, log_key=key, witness_keys=args.witness_key, witness_quorum=args.witness_quorum)
    print(json.dumps(report.to_json()) if args.json else _render(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
