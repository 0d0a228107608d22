"""Receipts and the log's signed promises: what a producer holds to prove the ledger accepted an event.

Pure: no I/O. A promise is signed by the log key over the DSSE v1 pre-authentication encoding (PAE) of a
canonical JSON payload, with payload type :data:`PROMISE_PAYLOAD_TYPE`. Its payload says: the entries
``first .. first + count - 1`` of log ``log`` have the leaf hashes whose RFC 9162 root is ``leaves_root``,
the whole log at size ``first + count`` has root ``tree_root``, and a signed checkpoint covering them will
be published by ``deadline`` (an HLC reading). docs/formats.md gives the bytes, with a golden vector.

Domain separation: the signed bytes start with ``DSSEv1`` and the promise's payload type, which no batch
envelope carries (producers sign ``application/vnd.lineage-ledger.batch.v1+json``), and they never end in
a newline (canonical JSON escapes control characters), which every signed-note text, and so every
checkpoint, must. A promise signature can therefore never be replayed as a checkpoint or an envelope.

This module imports nothing from the write path, so producers (emitter, Kafka producer) load only it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from lineage_ledger.core.crypto import Signer, dsse_verify, pae, verify_ed25519
from lineage_ledger.core.encoding import MAX_SAFE_INTEGER, canonical_bytes, decode_canonical, decode_json
from lineage_ledger.core.merkle import node_hash, root_from_inclusion, root_of
from lineage_ledger.core.note import NoteVerifier, note_key_id
from lineage_ledger.errors import InputError, SignatureError

__all__ = [
    "PROMISE_PAYLOAD_TYPE",
    "Promise",
    "PromisedPath",
    "PromisedRange",
    "Receipt",
    "SavedReceipt",
    "SignedPromise",
    "promise_path",
    "sign_promise",
]

PROMISE_PAYLOAD_TYPE: Final = "application/vnd.lineage-ledger.promise.v1+json"
"""The DSSE payload type of a signed promise; nothing else the ledger or a producer signs uses it."""

_HLC: Final = re.compile(r"[0-9]{19}\.[0-9]{5}")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_FIELDS: Final = ("count", "deadline", "first", "leaves_root", "log", "tree_root")


@dataclass(frozen=True, slots=True)
class Promise:
    """The log's promise about the entries ``first .. first + count - 1`` (see the module docstring).

    Construction checks every field, so any instance encodes to a payload :meth:`from_payload` accepts.
    """

    log: str
    first: int
    count: int
    leaves_root: bytes
    tree_root: bytes
    deadline: str

    def __post_init__(self) -> None:
        if not isinstance(self.log, str) or not self.log:
            raise InputError("promise.log", "must be a non-empty string")
        for name in ("first", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INTEGER:
                raise InputError(f"promise.{name}", f"must be an integer in 0 .. {MAX_SAFE_INTEGER}")
        if self.count < 1 or self.first + self.count > MAX_SAFE_INTEGER:
            raise InputError("promise.count", "must be at least 1, and first + count within 2**53 - 1")
        for name in ("leaves_root", "tree_root"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise InputError(f"promise.{name}", "must be a 32-byte hash")
        if not isinstance(self.deadline, str) or not _HLC.fullmatch(self.deadline):
            raise InputError("promise.deadline", "must be an HLC reading <19 digits>.<5 digits>")

    @property
    def size(self) -> int:
        """The tree size the promise's ``tree_root`` is the root of: ``first + count``."""
        return self.first + self.count

    def covers(self, index: int) -> bool:
        """True if entry ``index`` is one of the promised entries."""
        return self.first <= index < self.first + self.count

    def payload(self) -> bytes:
        """The canonical JSON payload that is signed."""
        return canonical_bytes(
            {
                "count": self.count,
                "deadline": self.deadline,
                "first": self.first,
                "leaves_root": self.leaves_root.hex(),
                "log": self.log,
                "tree_root": self.tree_root.hex(),
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Promise:
        """Parse a payload strictly: canonical bytes, exactly the known fields, each well formed."""
        obj = decode_canonical(payload, field="promise.payload")
        if not isinstance(obj, dict) or tuple(sorted(obj)) != _FIELDS:
            raise InputError("promise.payload", f"must be an object with exactly the fields {', '.join(_FIELDS)}")
        for name in ("leaves_root", "tree_root"):
            if not isinstance(obj[name], str) or not _HEX64.fullmatch(obj[name]):
                raise InputError(f"promise.{name}", "must be 64 lowercase hex digits")
        return cls(
            log=obj["log"],
            first=obj["first"],
            count=obj["count"],
            leaves_root=bytes.fromhex(obj["leaves_root"]),
            tree_root=bytes.fromhex(obj["tree_root"]),
            deadline=obj["deadline"],
        )


@dataclass(frozen=True, slots=True)
class SignedPromise:
    """A promise with the log key's signature: ``signature`` is Ed25519 over
    PAE(:data:`PROMISE_PAYLOAD_TYPE`, ``payload``); ``key_name`` and ``key_id`` name the log key as its
    checkpoints' signed-note lines do."""

    payload: bytes
    key_name: str
    key_id: int
    signature: bytes

    def promise(self) -> Promise:
        """The promise, parsed (not verified: see :meth:`verify`)."""
        return Promise.from_payload(self.payload)

    def verify(self, verifier: NoteVerifier) -> Promise:
        """Return the promise if the signature verifies under the log key ``verifier``; else SignatureError."""
        if (self.key_name, self.key_id) != (verifier.name, verifier.key_id):
            raise SignatureError(
                f"the promise is signed by {self.key_name}+{self.key_id:08x}, not by the log key "
                f"{verifier.name}+{verifier.key_id:08x}"
            )
        dsse_verify(verifier.public_key, PROMISE_PAYLOAD_TYPE, self.payload, self.signature)
        return self.promise()

    def to_json(self) -> dict[str, Any]:
        """The wire form, a DSSE envelope: payload and signature in standard base64, keyid as
        ``<key name>+<8 hex digits>``."""
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": PROMISE_PAYLOAD_TYPE,
            "signatures": [
                {"keyid": f"{self.key_name}+{self.key_id:08x}", "sig": base64.b64encode(self.signature).decode("ascii")}
            ],
        }

    def to_bytes(self) -> bytes:
        """The wire form as canonical JSON (what the store keeps)."""
        return canonical_bytes(self.to_json())

    @classmethod
    def from_json(cls, obj: object) -> SignedPromise:
        """Parse the wire form (a dict, or its JSON bytes/text); InputError names what is wrong."""
        if isinstance(obj, bytes | str):
            obj = decode_json(obj.encode("utf-8") if isinstance(obj, str) else obj, field="promise")
        if not isinstance(obj, dict):
            raise InputError("promise", "must be a JSON object")
        if obj.get("payloadType") != PROMISE_PAYLOAD_TYPE:
            raise InputError("promise.payloadType", f"must be {PROMISE_PAYLOAD_TYPE!r}")
        sigs = obj.get("signatures")
        if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
            raise InputError("promise.signatures", "must hold exactly one signature")
        keyid = sigs[0].get("keyid")
        name, plus, hex_id = keyid.rpartition("+") if isinstance(keyid, str) else ("", "", "")
        if not plus or not name or not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise InputError("promise.signatures[0].keyid", "must be <key name>+<8 lowercase hex digits>")
        return cls(
            payload=_unbase64(obj.get("payload"), "promise.payload"),
            key_name=name,
            key_id=int(hex_id, 16),
            signature=_unbase64(sigs[0].get("sig"), "promise.signatures[0].sig"),
        )


def _unbase64(value: object, field_name: str) -> bytes:
    if not isinstance(value, str):
        raise InputError(field_name, "must be a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise InputError(field_name, "not valid base64") from None
    return raw


def sign_promise(promise: Promise, signer: Signer) -> SignedPromise:
    """Sign ``promise`` with the log key; the signature is checked before it is returned, so a faulty
    signer cannot hand out a promise its own key rejects."""
    payload = promise.payload()
    message = pae(PROMISE_PAYLOAD_TYPE, payload)
    signature = signer.sign(message)
    try:
        verify_ed25519(signer.public_key, signature, message)
    except SignatureError as e:
        raise SignatureError(f"log key {signer.name} produced a promise signature that does not verify") from e
    return SignedPromise(payload, signer.name, note_key_id(signer.name, signer.public_key), signature)


class PromisedRange:
    """A signed promise with the leaf hashes it covers: the source of each receipt's path (built on first use).

    The leaves are trusted as given (the writer hands over its own, a reader the stored ones)."""

    __slots__ = ("leaves", "levels", "promise", "signed")

    def __init__(self, signed: SignedPromise, leaves: Sequence[bytes], promise: Promise | None = None) -> None:
        self.signed = signed
        self.promise = promise if promise is not None else signed.promise()
        """The promise, parsed (``signed`` holds its bytes)."""
        self.leaves = list(leaves)
        self.levels: dict[tuple[int, int], bytes] | None = None

    @classmethod
    def create(cls, promise: Promise, leaves: Sequence[bytes], signer: Signer) -> PromisedRange:
        """Sign ``promise``, whose ``leaves_root`` must be the root of ``leaves``."""
        if len(leaves) != promise.count or root_of(leaves) != promise.leaves_root:
            raise InputError("promise.leaves_root", "is not the root of the promised leaves")
        return cls(sign_promise(promise, signer), leaves, promise)

    def path(self, index: int) -> list[bytes]:
        """RFC 9162 audit path of log entry ``index`` within the promised range's tree (PATH(m, D[n]) of
        RFC 9162 section 2.1.3.1; subtree hashes are computed once and shared by every path)."""
        promise = self.promise
        if not promise.covers(index):
            raise InputError("index", f"entry {index} is not in the promised range {promise.first}..")
        if self.levels is None:
            self.levels = {}
        memo = self.levels
        leaves = self.leaves

        def mth(lo: int, hi: int) -> bytes:
            if hi - lo == 1:
                return leaves[lo]
            got = memo.get((lo, hi))
            if got is None:
                k = _split(hi - lo)
                got = memo[(lo, hi)] = node_hash(mth(lo, lo + k), mth(lo + k, hi))
            return got

        out: list[bytes] = []
        m, lo, hi = index - promise.first, 0, promise.count
        while hi - lo > 1:
            k = _split(hi - lo)
            if m < lo + k:
                out.append(mth(lo + k, hi))
                hi = lo + k
            else:
                out.append(mth(lo, lo + k))
                lo += k
        out.reverse()
        return out


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where RFC 9162 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


class PromisedPath:
    """A signed promise with one entry's audit path, as a producer receives it over the wire."""

    __slots__ = ("index", "signed", "steps")

    def __init__(self, signed: SignedPromise, index: int, steps: Sequence[bytes]) -> None:
        self.signed = signed
        self.index = index
        self.steps = list(steps)

    def path(self, index: int) -> list[bytes]:
        """The audit path received for entry ``index``."""
        if index != self.index:
            raise InputError("index", f"this path is entry {self.index}'s, not {index}'s")
        return list(self.steps)


def promise_path(promise: Promise, index: int, leaf: bytes, path: Sequence[bytes]) -> None:
    """Return if ``path`` proves that entry ``index`` has leaf hash ``leaf`` among the promised entries;
    else raise InputError (the receipt does not match its promise)."""
    if not promise.covers(index):
        raise InputError("receipt.index", f"entry {index} is not in the promised range")
    try:
        root = root_from_inclusion(leaf, index - promise.first, promise.count, path)
    except ValueError as e:
        raise InputError("receipt.path", str(e)) from None
    if root != promise.leaves_root:
        raise InputError("receipt.path", "does not lead from the leaf to the promised leaves_root")


@dataclass(frozen=True, slots=True)
class Receipt:
    """Where one event of a batch landed, and (from a ledger that signs them) the log's promise about it."""

    event_id: str
    index: int
    verdict: str
    duplicate: bool
    """True when the event was already in the log with the same bytes (nothing was written for it)."""
    leaf: bytes = b""
    """The entry's RFC 9162 leaf hash (empty when the ledger gave no promise, as a Kafka queue does not)."""
    promised: PromisedRange | PromisedPath | None = field(default=None, compare=False)
    """The signed promise covering the entry, with what its audit path is built from."""

    def to_json(self) -> dict[str, Any]:
        """The receipt as a producer saves it (and as the HTTP API answers it): the promise and the leaf's
        audit path within the promised range are included when there is a promise."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "index": self.index,
            "verdict": self.verdict,
            "duplicate": self.duplicate,
        }
        if self.promised is not None:
            out["leaf"] = self.leaf.hex()
            out["path"] = [h.hex() for h in self.promised.path(self.index)]
            out["promise"] = self.promised.signed.to_json()
        return out


@dataclass(frozen=True, slots=True)
class SavedReceipt:
    """A receipt as a producer keeps it (:meth:`Receipt.to_json`), parsed back: enough to check later that
    the ledger still holds the entry it promised."""

    event_id: str
    index: int
    leaf: bytes
    path: tuple[bytes, ...]
    signed: SignedPromise

    @classmethod
    def from_json(cls, obj: object) -> SavedReceipt:
        """Parse a saved receipt (a dict, or its JSON text); InputError names what is missing or malformed."""
        if isinstance(obj, bytes | str):
            obj = decode_json(obj.encode("utf-8") if isinstance(obj, str) else obj, field="receipt")
        if not isinstance(obj, dict):
            raise InputError("receipt", "must be a JSON object")
        if "promise" not in obj:
            raise InputError("receipt.promise", "missing: the receipt carries no signed promise to check")
        event_id, index = obj.get("event_id"), obj.get("index")
        if not isinstance(event_id, str):
            raise InputError("receipt.event_id", "must be a string")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_SAFE_INTEGER:
            raise InputError("receipt.index", "must be a non-negative integer")
        leaf = obj.get("leaf")
        if not isinstance(leaf, str) or not _HEX64.fullmatch(leaf):
            raise InputError("receipt.leaf", "must be 64 lowercase hex digits")
        path = obj.get("path")
        if not isinstance(path, list) or not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in path):
            raise InputError("receipt.path", "must be a list of 64-hex-digit hashes")
        return cls(
            event_id,
            index,
            bytes.fromhex(leaf),
            tuple(bytes.fromhex(h) for h in path),
            SignedPromise.from_json(obj["promise"]),
        )

    def verify(self, verifier: NoteVerifier) -> Promise:
        """Check the promise's signature under the log key and that the receipt's leaf is among the promised
        entries at its index; return the promise. Raises SignatureError or InputError."""
        promise = self.signed.verify(verifier)
        promise_path(promise, self.index, self.leaf, self.path)
        return promise
