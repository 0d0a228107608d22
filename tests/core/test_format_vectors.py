"""docs/formats.md's golden vectors: the library builds each value again from the documented inputs, and the
documented bytes are checked independently (hashlib, the json module, cryptography, hashes built by hand)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lineage_ledger import Ledger
from lineage_ledger.core import smt
from lineage_ledger.core.crypto import BATCH_PAYLOAD_TYPE, Ed25519Signer, pae
from lineage_ledger.core.entry import (
    ArchiveChange,
    BlockHeader,
    archive_entry_bytes,
    decode_entry,
    event_entry_bytes,
    header_hash,
    seal_entry_bytes,
)
from lineage_ledger.core.envelope import open_envelope, seal_batch
from lineage_ledger.core.merkle import leaf_hash
from lineage_ledger.core.note import Checkpoint, sign_note, verifier_key
from lineage_ledger.ledger.evidence import export_evidence
from lineage_ledger.offline import verify_bundle

DOC = (Path(__file__).resolve().parents[2] / "docs" / "formats.md").read_text("utf-8")
SEED = bytes(range(32))
TOKEN = "ab" * 32
ORIGIN = "example.com/token-log"


def _block(name: str) -> str:
    """The body of the fenced block whose info string ends in ``name`` (without the fence's last newline)."""
    found = re.findall(rf"^```\w+ {re.escape(name)}\n(.*?)^```$", DOC, flags=re.S | re.M)
    assert len(found) == 1, f"docs/formats.md must hold exactly one {name} block"
    body: str = found[0]
    return body


def _line(name: str) -> bytes:
    text = _block(name)
    assert text.endswith("\n"), name
    assert "\n" not in text[:-1], f"{name} is one line"
    return text[:-1].encode()


def _json(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(_block(name))
    return value


def _canonical(value: object) -> bytes:
    """Canonical JSON by the standard library: sorted keys, no whitespace, no escaping beyond JSON's own."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leaf(data: bytes) -> str:
    return _sha(b"\x00" + data)


def _node(left: str, right: str) -> str:
    return _sha(b"\x01" + bytes.fromhex(left) + bytes.fromhex(right))


def test_the_common_seed_gives_the_documented_public_key() -> None:
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    assert public.hex() in DOC
    assert Ed25519Signer("x", SEED).public_key == public


def test_the_event_entry_vector() -> None:
    event = _line("vector-event")
    entry = _line("vector-event-entry")
    digest = _json("vector-envelope")["digest"]
    built = event_entry_bytes(
        index=0,
        recorded_at="1763891234200000000.00000",
        prev=bytes(32),
        producer="svc-a",
        key_id="svc-a-2026",
        envelope=bytes.fromhex(digest),
        position=0,
        verdict="ok",
        event=event,
    )
    assert built == entry
    # independently: the entry is the canonical JSON of the documented object, holding the event unchanged
    parsed = json.loads(entry)
    assert _canonical(parsed) == entry
    assert _canonical(json.loads(event)) == event
    assert parsed["event"] == json.loads(event)
    assert sorted(parsed) == [
        "envelope",
        "event",
        "index",
        "key_id",
        "position",
        "prev",
        "producer",
        "recorded_at",
        "type",
        "v",
        "verdict",
    ]
    assert (parsed["index"], parsed["prev"], parsed["type"], parsed["v"]) == (0, "0" * 64, "event", 1)
    assert f"entry_leaf = {_leaf(entry)}" in DOC
    assert leaf_hash(entry).hex() == _leaf(entry)


def test_the_envelope_vector() -> None:
    event = _line("vector-event")
    payload = _line("vector-envelope-payload")
    documented_pae = _line("vector-envelope-pae")
    vector = _json("vector-envelope")
    signer = Ed25519Signer("svc-a-2026", SEED)
    opened = open_envelope(seal_batch([event], producer="svc-a", key_id="svc-a-2026", signer=signer))
    assert opened.payload == payload
    assert opened.digest.hex() == vector["digest"]
    assert opened.signature.hex() == vector["signature"]
    # independently: the statement's root over one event is that event's leaf hash
    statement = json.loads(payload)
    assert _canonical(statement) == payload
    assert statement == {"count": 1, "key_id": "svc-a-2026", "producer": "svc-a", "root": _leaf(event), "v": 1}
    # the PAE built by hand from the DSSE definition, its hash the digest, the signature checked by cryptography
    kind = b"application/vnd.lineage-ledger.batch.v1+json"
    assert len(kind) == 44
    assert BATCH_PAYLOAD_TYPE.encode() == kind
    by_hand = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)
    assert by_hand == documented_pae == pae(BATCH_PAYLOAD_TYPE, payload)
    assert _sha(by_hand) == vector["digest"]
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    public.verify(bytes.fromhex(vector["signature"]), by_hand)  # raises if it does not verify


def test_the_seal_vector() -> None:
    entry = _line("vector-event-entry")
    seal = _line("vector-seal-entry")
    vector = _json("vector-seal")
    map_root = _json("vector-map")["root"]
    header = BlockHeader(
        number=0,
        first=0,
        last=0,
        root=_leaf(entry),  # a block of one entry: its root is that entry's leaf hash
        prev_header="0" * 64,
        hlc_first="1763891234200000000.00000",
        hlc_last="1763891234200000000.00000",
        subjects_root=map_root,
    )
    built = seal_entry_bytes(index=1, recorded_at="1763891234300000000.00000", prev=bytes(32), header=header)
    assert built == seal
    assert header_hash(header).hex() == vector["header_hash"]
    # independently: canonical bytes, the header's hash over its own canonical bytes, the leaf hash
    parsed = json.loads(seal)
    assert _canonical(parsed) == seal
    assert sorted(parsed) == ["block", "index", "prev", "recorded_at", "type", "v"]
    assert sorted(parsed["block"]) == [
        "first",
        "hlc_first",
        "hlc_last",
        "last",
        "number",
        "prev_header",
        "root",
        "subjects_root",
    ]
    assert _sha(_canonical(parsed["block"])) == vector["header_hash"]
    assert _leaf(seal) == vector["seal_leaf"]


def test_the_archive_entry_vector() -> None:
    documented = _line("vector-archive-entry")
    parsed = json.loads(documented)
    assert _canonical(parsed) == documented
    change = parsed["change"]
    assert change["sha256"] == _sha(b"an archive file")
    assert change["root"] == _node(_leaf(_line("vector-event-entry")), _json("vector-seal")["seal_leaf"])
    assert _leaf(documented) == _json("vector-archive")["leaf"]
    built = archive_entry_bytes(
        index=2,
        recorded_at="1763891234400000000.00000",
        prev=bytes(32),
        change=ArchiveChange(
            action="archive",
            first=0,
            last=1,
            file=change["file"],
            bytes=4096,
            sha256=change["sha256"],
            root=change["root"],
        ),
    )
    assert built == documented
    assert decode_entry(documented).index == 2


def test_the_subject_map_vector() -> None:
    vector = _json("vector-map")
    entry = _line("vector-event-entry")
    head = smt.SubjectHead(head=bytes.fromhex(_leaf(entry)), count=1, index=0)
    head2 = smt.SubjectHead(head=bytes([0x11]) * 32, count=3, index=7)
    key, key2 = smt.key_of(vector["subject"]), smt.key_of(vector["subject2"])
    assert (key.hex(), key2.hex()) == (vector["key"], vector["key2"])
    assert (head.value_hash().hex(), head2.value_hash().hex()) == (vector["value_hash"], vector["value_hash2"])
    assert smt.root_of({key: head}).hex() == vector["root"]
    assert smt.root_of({key: head, key2: head2}).hex() == vector["root2"]
    # independently, from the layout the doc gives
    assert vector["subject"] == "token:" + TOKEN
    assert _sha(vector["subject"].encode()) == vector["key"]
    assert _sha(vector["subject2"].encode()) == vector["key2"]
    value = bytes.fromhex(_leaf(entry)) + (1).to_bytes(8, "big") + (0).to_bytes(8, "big")
    value2 = bytes([0x11]) * 32 + (3).to_bytes(8, "big") + (7).to_bytes(8, "big")
    assert (_sha(value), _sha(value2)) == (vector["value_hash"], vector["value_hash2"])
    leaf1 = hashlib.sha256(b"\x10" + key + bytes.fromhex(vector["value_hash"])).digest()
    leaf2 = hashlib.sha256(b"\x10" + key2 + bytes.fromhex(vector["value_hash2"])).digest()
    assert leaf1.hex() == vector["root"]  # one leaf: the root is the leaf node itself
    assert key[0] >> 7 == 1
    assert key2[0] >> 7 == 0
    assert _sha(b"\x11" + leaf2 + leaf1) == vector["root2"]


def test_the_checkpoint_vector() -> None:
    note = _block("vector-checkpoint")
    key = _line("vector-verifier-key").decode()
    entry_leaf = _leaf(_line("vector-event-entry"))
    seal_leaf = _json("vector-seal")["seal_leaf"]
    root = bytes.fromhex(_node(entry_leaf, seal_leaf))
    signer = Ed25519Signer(ORIGIN, SEED)
    text = Checkpoint(ORIGIN, 2, root).to_text()
    assert sign_note(text, [signer]) == note
    assert verifier_key(ORIGIN, signer.public_key) == key
    # independently: the text's lines, the key id, the signature line, the verifier key
    assert text == f"{ORIGIN}\n2\n{base64.b64encode(root).decode()}\n"
    body, separator, signatures = note.partition("\n\n")
    assert body + "\n" == text
    assert separator
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    key_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + public).digest()[:4]
    encoded = base64.b64encode(b"\x01" + public).decode()
    assert key == f"{ORIGIN}+{key_id.hex()}+{encoded}"
    prefix = f"\u2014 {ORIGIN} "
    assert signatures.startswith(prefix)
    assert signatures.endswith("\n")
    assert signatures.count("\n") == 1
    raw = base64.b64decode(signatures[len(prefix) : -1], validate=True)
    assert raw[:4] == key_id
    assert len(raw) == 68
    Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], text.encode())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bundle docs/formats.md describes, exported from a ledger built as it says."""
    ticks = itertools.count()
    path = tmp_path_factory.mktemp("vector") / "ledger.db"
    ledger = Ledger.create(
        f"sqlite:///{path}",
        Ed25519Signer(ORIGIN, SEED),
        origin=ORIGIN,
        clock=lambda: 1763891234200000000 + next(ticks) * 1000,
    )
    producer = Ed25519Signer("svc-a-2026", bytes(range(32, 64)))
    try:
        ledger.register_key("svc-a", "svc-a-2026", producer.public_key)
        ledger.append(seal_batch([_line("vector-event")], producer="svc-a", key_id="svc-a-2026", signer=producer))
        ledger.seal()
        return export_evidence(ledger.store, TOKEN)
    finally:
        ledger.close()


def test_the_evidence_bundle_vector(bundle: bytes) -> None:
    documented = _json("vector-evidence")
    assert bundle == _canonical(documented)
    stated = re.search(r"It is ([0-9,]+) bytes of\s+canonical JSON with SHA-256 `([0-9a-f]{64})`", DOC)
    assert stated, "the bundle's size and hash are stated"
    assert len(bundle) == int(stated.group(1).replace(",", ""))
    assert _sha(bundle) == stated.group(2)


def _root_from_path(index: int, size: int, leaf: str, path: list[str]) -> str:
    """RFC 9162 section 2.1.3.2, written here apart from the library."""
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        assert sn != 0
        if fn & 1 or fn == sn:
            node = _node(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            node = _node(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return node


def test_the_evidence_bundle_checks_out_by_hand() -> None:
    """The documented bundle's proofs lead to its signed checkpoint, with no library code in the loop."""
    documented = _json("vector-evidence")
    assert documented["format"] == "lineage-ledger-evidence/1"
    assert documented["subject"] == "token:" + TOKEN
    note = documented["checkpoint"]
    text, _, signature_line = note.partition("\n\n")
    origin, size, root_b64 = text.split("\n")
    assert origin == ORIGIN
    assert int(size) == documented["tree_size"] == 3
    root = base64.b64decode(root_b64).hex()
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    raw = base64.b64decode(signature_line.removeprefix(f"\u2014 {ORIGIN} ").rstrip("\n"))
    public.verify(raw[4:], (text + "\n").encode())
    [item] = documented["entries"]
    entry = item["entry"].encode()
    assert json.loads(entry)["event"] == json.loads(_line("vector-event"))
    assert _root_from_path(item["index"], 3, _leaf(entry), item["inclusion"]) == root
    seal = documented["seal"]
    assert _root_from_path(seal["index"], 3, _leaf(seal["entry"].encode()), seal["inclusion"]) == root
    [key_entry] = documented["producer_keys"]["svc-a-2026"]["entries"]
    assert _root_from_path(key_entry["index"], 3, _leaf(key_entry["entry"].encode()), key_entry["inclusion"]) == root
    # the map proof: the token's leaf, one sibling, up to the seal's subjects_root
    proof = documented["map_proof"]
    terminal = proof["terminal"]
    assert terminal["head"] == _leaf(entry)
    assert (terminal["count"], terminal["index"]) == (1, 1)
    value = bytes.fromhex(terminal["head"]) + (1).to_bytes(8, "big") + (1).to_bytes(8, "big")
    leaf = _sha(b"\x10" + bytes.fromhex(terminal["key"]) + hashlib.sha256(value).digest())
    [sibling] = proof["siblings"]
    key_bit = bytes.fromhex(proof["key"])[0] >> 7
    pair = (sibling, leaf) if key_bit else (leaf, sibling)
    subjects_root = _sha(b"\x11" + bytes.fromhex(pair[0]) + bytes.fromhex(pair[1]))
    assert json.loads(seal["entry"])["block"]["subjects_root"] == subjects_root
    # and the stand-alone verifier accepts it under the trusted key
    key = _line("vector-verifier-key").decode()
    report = verify_bundle(_canonical(documented), log_key=key)
    assert report.ok, report.problems
    assert report.complete
    assert report.key_source == "given"
    assert (report.subject, report.count) == ("token:" + TOKEN, 1)
