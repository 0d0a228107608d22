"""Signed promises: the golden vector of docs/receipts.md, domain separation, and receipt paths."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lineage_ledger.core.crypto import BATCH_PAYLOAD_TYPE, Ed25519Signer, dsse_verify
from lineage_ledger.core.merkle import leaf_hash, root_of
from lineage_ledger.core.note import NoteVerifier, open_note
from lineage_ledger.core.receipt import (
    PROMISE_PAYLOAD_TYPE,
    Promise,
    PromisedRange,
    SavedReceipt,
    SignedPromise,
    promise_path,
    sign_promise,
)
from lineage_ledger.errors import InputError, LedgerError, SignatureError

DOC = Path(__file__).resolve().parents[2] / "docs" / "receipts.md"


def _vector() -> dict[str, object]:
    found = re.search(r"```json promise-vector\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert found, "docs/receipts.md lost its golden vector"
    vector: dict[str, object] = json.loads(found.group(1))
    return vector


def _promise(v: dict[str, object]) -> Promise:
    leaves = [bytes.fromhex(h) for h in v["leaves"]]  # type: ignore[attr-defined]
    return Promise(
        log=str(v["key_name"]),
        first=int(v["first"]),  # type: ignore[call-overload]
        count=len(leaves),
        leaves_root=root_of(leaves),
        tree_root=bytes.fromhex(str(v["tree_root"])),
        deadline=str(v["deadline"]),
    )


def test_the_golden_vector_of_the_docs_holds() -> None:
    v = _vector()
    seed = bytes.fromhex(str(v["seed"]))
    # the documented inputs, derived here from their stated definitions
    assert v["leaves"] == [leaf_hash(bytes([i])).hex() for i in range(3)]
    assert v["tree_root"] == hashlib.sha256(b"tree").hexdigest()
    promise = _promise(v)
    assert promise.leaves_root.hex() == v["leaves_root"]
    assert promise.payload() == str(v["payload"]).encode()
    # the signed bytes, built here by hand from the DSSE definition, not by the code under test
    kind = PROMISE_PAYLOAD_TYPE.encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(promise.payload()), promise.payload())
    assert hashlib.sha256(pae).hexdigest() == v["pae_sha256"]
    assert Ed25519PrivateKey.from_private_bytes(seed).sign(pae).hex() == v["signature"]

    signer = Ed25519Signer(str(v["key_name"]), seed)
    assert signer.public_key.hex() == v["public_key"]
    signed = sign_promise(promise, signer)
    assert signed.signature.hex() == v["signature"]
    wire = signed.to_json()
    assert wire["signatures"] == [
        {
            "keyid": f"{v['key_name']}+{v['key_id']}",
            "sig": base64.b64encode(bytes.fromhex(str(v["signature"]))).decode(),
        }
    ]
    verifier = NoteVerifier.from_public_key(str(v["key_name"]), signer.public_key)
    assert SignedPromise.from_json(json.dumps(wire)).verify(verifier) == promise


def test_a_promise_signature_is_neither_an_envelope_nor_a_checkpoint_signature() -> None:
    v = _vector()
    signer = Ed25519Signer(str(v["key_name"]), bytes.fromhex(str(v["seed"])))
    signed = sign_promise(_promise(v), signer)
    with pytest.raises(SignatureError):
        dsse_verify(signer.public_key, BATCH_PAYLOAD_TYPE, signed.payload, signed.signature)
    # as a signed note: the payload text with the promise's signature on a note line
    key_id = NoteVerifier.from_public_key(signer.name, signer.public_key).key_id
    line = base64.b64encode(key_id.to_bytes(4, "big") + signed.signature).decode()
    note = signed.payload.decode() + "\n\n— " + signer.name + " " + line + "\n"
    with pytest.raises(SignatureError):
        open_note(note, [NoteVerifier.from_public_key(signer.name, signer.public_key)])


def test_a_changed_payload_or_another_key_fails_verification() -> None:
    v = _vector()
    signer = Ed25519Signer(str(v["key_name"]), bytes.fromhex(str(v["seed"])))
    verifier = NoteVerifier.from_public_key(signer.name, signer.public_key)
    signed = sign_promise(_promise(v), signer)
    moved = SignedPromise(
        signed.payload.replace(b'"first":40', b'"first":41'), signed.key_name, signed.key_id, signed.signature
    )
    with pytest.raises(SignatureError):
        moved.verify(verifier)
    other = Ed25519Signer(signer.name, bytes(32))
    with pytest.raises(SignatureError, match="not by the log key"):
        sign_promise(_promise(v), other).verify(verifier)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 17])
def test_every_receipt_path_leads_to_the_promised_root(count: int) -> None:
    leaves = [leaf_hash(b"entry %d" % i) for i in range(count)]
    first = 100
    promise = Promise("log.example", first, count, root_of(leaves), b"\x07" * 32, "1763891294123456789.00000")
    promised = PromisedRange.create(promise, leaves, Ed25519Signer("log.example", bytes(32)))
    for i, leaf in enumerate(leaves):
        promise_path(promise, first + i, leaf, promised.path(first + i))
        with pytest.raises(InputError):
            promise_path(promise, first + i, leaf_hash(b"another entry"), promised.path(first + i))
    with pytest.raises(InputError):
        promise_path(promise, first + count, leaves[0], [])


def test_a_saved_receipt_round_trips_and_checks() -> None:
    from lineage_ledger.core.receipt import Receipt

    signer = Ed25519Signer("log.example", bytes(32))
    verifier = NoteVerifier.from_public_key(signer.name, signer.public_key)
    leaves = [leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")]
    promise = Promise("log.example", 7, 3, root_of(leaves), b"\x07" * 32, "1763891294123456789.00000")
    promised = PromisedRange.create(promise, leaves, signer)
    receipt = Receipt("ev-1", 8, "ok", False, leaves[1], promised)
    saved = SavedReceipt.from_json(json.dumps(receipt.to_json()))
    assert saved.verify(verifier) == promise
    tampered = receipt.to_json() | {"leaf": leaves[2].hex()}
    with pytest.raises(InputError, match=r"receipt\.path"):
        SavedReceipt.from_json(tampered).verify(verifier)
    with pytest.raises(InputError, match=r"receipt\.promise"):
        SavedReceipt.from_json({"event_id": "ev-1", "index": 8})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"count": 0}, "promise.count"),
        ({"first": -1}, "promise.first"),
        ({"deadline": "soon"}, "promise.deadline"),
        ({"tree_root": b"short"}, "promise.tree_root"),
        ({"log": ""}, "promise.log"),
    ],
)
def test_a_malformed_promise_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    fields: dict[str, object] = {
        "log": "l",
        "first": 0,
        "count": 1,
        "leaves_root": b"\x00" * 32,
        "tree_root": b"\x00" * 32,
        "deadline": "1763891294123456789.00000",
    }
    with pytest.raises(LedgerError) as caught:
        Promise(**(fields | change))  # type: ignore[arg-type]
    assert isinstance(caught.value, InputError)
    assert caught.value.field == field
