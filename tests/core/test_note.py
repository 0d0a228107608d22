"""Tests for lineage_ledger.core.note: Go's signed-note vector byte for byte, malformed input, tampering."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core.crypto import Ed25519Signer, Signer
from lineage_ledger.core.note import (
    MAX_NOTE_SIGNATURES,
    MAX_TREE_SIZE,
    Checkpoint,
    NoteVerifier,
    note_key_id,
    open_note,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
    signer_key,
    verifier_key,
)
from lineage_ledger.errors import InputError, KeyringError, SignatureError

VECTOR_PATH = Path(__file__).resolve().parents[1] / "vectors" / "c2sp-signed-note.json"

# The example in c2sp.org/tlog-checkpoint.
SPEC_ROOT = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
SPEC_CHECKPOINT_TEXT = f"example.com/behind-the-sofa\n20852163\n{SPEC_ROOT}\n"

ALICE = Ed25519Signer("alice.example/log", bytes([1]) * 32)
BOB = Ed25519Signer("bob.example/witness", bytes([2]) * 32)
ALICE_VERIFIER = NoteVerifier.from_public_key(ALICE.name, ALICE.public_key)
BOB_VERIFIER = NoteVerifier.from_public_key(BOB.name, BOB.public_key)
# The base64 part of the vector's signer key; tests check no error message echoes it.
GO_SEED = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = "lineage.example/log\n3\n" + base64.b64encode(bytes(32)).decode() + "\n"


@functools.cache
def _vector() -> dict[str, str]:
    if not VECTOR_PATH.is_file():
        pytest.fail(f"missing test vector {VECTOR_PATH}")
    loaded: dict[str, str] = {k: v for k, v in json.loads(VECTOR_PATH.read_text("utf-8")).items() if isinstance(v, str)}
    return loaded


def _signature_line(name: str, key_id: int, signature: bytes) -> str:
    return f"— {name} {base64.b64encode(key_id.to_bytes(4, 'big') + signature).decode()}\n"


class TestGoVector:
    def test_sign_reproduces_signed_note(self) -> None:
        vector = _vector()
        signer = parse_signer_key(vector["signer_key"])
        assert sign_note(vector["text"], [signer]) == vector["signed_note"]

    def test_open_with_verifier_key(self) -> None:
        vector = _vector()
        verifier = parse_verifier_key(vector["verifier_key"])
        text, verified = open_note(vector["signed_note"], [verifier])
        assert text == vector["text"]
        assert verified == [verifier]

    def test_open_bytes(self) -> None:
        vector = _vector()
        verifier = parse_verifier_key(vector["verifier_key"])
        assert open_note(vector["signed_note"].encode(), [verifier])[0] == vector["text"]

    def test_key_strings_round_trip(self) -> None:
        vector = _vector()
        signer = parse_signer_key(vector["signer_key"])
        verifier = parse_verifier_key(vector["verifier_key"])
        assert signer.name == verifier.name == "PeterNeumann"
        assert signer.public_key == verifier.public_key
        assert verifier.key_id == 0xC74F20A3
        assert note_key_id(signer.name, signer.public_key) == 0xC74F20A3
        assert signer_key(signer.name, signer.private_seed()) == vector["signer_key"]
        assert verifier_key(signer.name, signer.public_key) == vector["verifier_key"]
        assert str(verifier) == vector["verifier_key"]

    def test_key_id_is_the_spec_hash(self) -> None:
        vector = _vector()
        verifier = parse_verifier_key(vector["verifier_key"])
        digest = hashlib.sha256(b"PeterNeumann\n\x01" + verifier.public_key).digest()
        assert verifier.key_id == int.from_bytes(digest[:4], "big")

    def test_every_changed_text_character_fails_signature(self) -> None:
        vector = _vector()
        verifier = parse_verifier_key(vector["verifier_key"])
        text, signature_block = vector["text"], vector["signed_note"][len(vector["text"]) :]
        for i, char in enumerate(text[:-1]):
            replacement = " " if char == "\n" else ("x" if char != "x" else "y")
            tampered = text[:i] + replacement + text[i + 1 :] + signature_block
            with pytest.raises(SignatureError):
                open_note(tampered, [verifier])

    @given(data=st.data())
    def test_any_byte_flip_is_rejected(self, data: st.DataObject) -> None:
        vector = _vector()
        verifier = parse_verifier_key(vector["verifier_key"])
        note = bytearray(vector["signed_note"].encode())
        index = data.draw(st.integers(0, len(note) - 1))
        note[index] ^= data.draw(st.integers(1, 255))
        with pytest.raises((InputError, SignatureError)):
            open_note(bytes(note), [verifier])


class TestSignAndOpen:
    def test_round_trip_with_two_signers(self) -> None:
        note = sign_note(TEXT, [ALICE, BOB])
        assert note.startswith(TEXT + "\n— alice.example/log ")
        assert open_note(note, [ALICE_VERIFIER, BOB_VERIFIER]) == (TEXT, [ALICE_VERIFIER, BOB_VERIFIER])
        assert open_note(note, [BOB_VERIFIER]) == (TEXT, [BOB_VERIFIER])

    @pytest.mark.parametrize("text", ["\n", "a\n\nb\n", "a\n\n", "\u00e9t\u00e9 \u2014 \ufffd\n", "a\x7f\n"])
    def test_text_round_trips(self, text: str) -> None:
        assert open_note(sign_note(text, [ALICE]), [ALICE_VERIFIER]) == (text, [ALICE_VERIFIER])

    def test_duplicate_verifiers_are_reported_once(self) -> None:
        note = sign_note(TEXT, [ALICE])
        assert open_note(note, [ALICE_VERIFIER, ALICE_VERIFIER])[1] == [ALICE_VERIFIER]

    def test_unknown_signatures_are_ignored(self) -> None:
        note = sign_note(TEXT, [BOB, ALICE])
        assert open_note(note, [ALICE_VERIFIER]) == (TEXT, [ALICE_VERIFIER])

    def test_no_known_signer_is_rejected(self) -> None:
        with pytest.raises(SignatureError):
            open_note(sign_note(TEXT, [BOB]), [ALICE_VERIFIER])

    def test_no_verifiers_is_rejected(self) -> None:
        with pytest.raises(SignatureError):
            open_note(sign_note(TEXT, [ALICE]), [])

    def test_same_name_other_key_is_ignored(self) -> None:
        impostor = Ed25519Signer(ALICE.name, bytes([9]) * 32)
        with pytest.raises(SignatureError):
            open_note(sign_note(TEXT, [impostor]), [ALICE_VERIFIER])

    def test_same_key_id_other_name_is_ignored(self) -> None:
        signature = ALICE.sign(TEXT.encode())
        note = TEXT + "\n" + _signature_line("mallory.example", ALICE_VERIFIER.key_id, signature)
        with pytest.raises(SignatureError):
            open_note(note, [ALICE_VERIFIER])

    def test_a_bad_signature_by_a_known_key_rejects_the_note(self) -> None:
        good = sign_note(TEXT, [ALICE, BOB])
        forged = good + _signature_line(BOB.name, BOB_VERIFIER.key_id, bytes(64))
        with pytest.raises(SignatureError):
            open_note(forged, [ALICE_VERIFIER, BOB_VERIFIER])
        assert open_note(forged, [ALICE_VERIFIER])[1] == [ALICE_VERIFIER]

    @pytest.mark.parametrize("signature", [b"\x00", bytes(63), bytes(65)])
    def test_wrong_length_signature_by_a_known_key_is_rejected(self, signature: bytes) -> None:
        note = TEXT + "\n" + _signature_line(ALICE.name, ALICE_VERIFIER.key_id, signature)
        with pytest.raises(SignatureError):
            open_note(note, [ALICE_VERIFIER])

    def test_conflicting_verifiers_are_a_keyring_error(self) -> None:
        first, second = _colliding_public_keys("collide")
        verifiers = [NoteVerifier.from_public_key("collide", key) for key in (first, second)]
        assert verifiers[0].key_id == verifiers[1].key_id
        with pytest.raises(KeyringError):
            open_note(sign_note(TEXT, [ALICE]), verifiers)

    def test_up_to_the_limit_of_signatures_is_accepted(self) -> None:
        note = sign_note(TEXT, [ALICE])
        unknown = "".join(_signature_line(f"u{i}", i, bytes(64)) for i in range(MAX_NOTE_SIGNATURES - 1))
        assert open_note(note + unknown, [ALICE_VERIFIER])[1] == [ALICE_VERIFIER]
        with pytest.raises(InputError):
            open_note(note + unknown + _signature_line("one-more", 0, bytes(64)), [ALICE_VERIFIER])


def _colliding_public_keys(name: str) -> tuple[bytes, bytes]:
    # A birthday search over 32-bit key ids: about 80,000 hashes.
    seen: dict[int, bytes] = {}
    counter = 0
    while True:
        key = counter.to_bytes(32, "big")
        key_id = note_key_id(name, key)
        if key_id in seen:
            return seen[key_id], key
        seen[key_id] = key
        counter += 1


_SIG = base64.b64encode(bytes(68)).decode()  # key id 0 and a 64-byte signature


@pytest.mark.parametrize(
    ("note", "field"),
    [
        pytest.param("", "note", id="empty"),
        pytest.param("text\n", "note", id="no-signatures"),
        pytest.param("text\n\n", "note", id="empty-signature-block"),
        pytest.param(f"text\n— k {_SIG}\n", "note", id="no-blank-line"),
        pytest.param(f"text\n\n— k {_SIG}", "note", id="no-final-newline"),
        pytest.param(f"text\n\n— k {_SIG}\n\n", "note", id="trailing-blank-line"),
        pytest.param(f"text\n\n- k {_SIG}\n", "note.signatures[0]", id="hyphen-not-em-dash"),
        pytest.param(f"text\n\n—k {_SIG}\n", "note.signatures[0]", id="no-space-after-dash"),
        pytest.param("text\n\n— k\n", "note.signatures[0]", id="no-signature"),
        pytest.param(f"text\n\n—  {_SIG}\n", "note.signatures[0]", id="empty-name"),
        pytest.param(f"text\n\n— a+b {_SIG}\n", "note.signatures[0]", id="plus-in-name"),
        pytest.param(f"text\n\n— a\u00a0b {_SIG}\n", "note.signatures[0]", id="unicode-space-in-name"),
        pytest.param(f"text\n\n— k {_SIG} \n", "note.signatures[0]", id="trailing-space"),
        pytest.param("text\n\n— k AAAA!AAA\n", "note.signatures[0]", id="not-base64"),
        pytest.param(f"text\n\n— k {_SIG.rstrip('=')}\n", "note.signatures[0]", id="missing-padding"),
        pytest.param("text\n\n— k AAAAAAB=\n", "note.signatures[0]", id="non-canonical-base64"),
        pytest.param("text\n\n— k AAAAAA==\n", "note.signatures[0]", id="key-id-only"),
        pytest.param(f"text\n\n— k {_SIG}\n— k\n", "note.signatures[1]", id="second-line-bad"),
        pytest.param(f"te\txt\n\n— k {_SIG}\n", "note", id="tab-in-text"),
        pytest.param(f"text\r\n\n— k {_SIG}\n", "note", id="carriage-return"),
        pytest.param(f"te\x00xt\n\n— k {_SIG}\n", "note", id="nul"),
        pytest.param(f"te\udc80xt\n\n— k {_SIG}\n", "note", id="lone-surrogate"),
        pytest.param(b"te\xffxt\n\n\xe2\x80\x94 k " + _SIG.encode() + b"\n", "note", id="invalid-utf8"),
        pytest.param(b"text\n\n\xe2\x80 k " + _SIG.encode() + b"\n", "note", id="truncated-em-dash"),
    ],
)
def test_malformed_notes(note: str | bytes, field: str) -> None:
    with pytest.raises(InputError) as info:
        open_note(note, [ALICE_VERIFIER])
    assert info.value.field == field


class TestSignNoteInput:
    @pytest.mark.parametrize("text", ["", "no newline", "tab\there\n", "cr\r\n", "nul\x00\n", "\udc80\n"], ids=repr)
    def test_rejects_invalid_text(self, text: str) -> None:
        with pytest.raises(InputError) as info:
            sign_note(text, [ALICE])
        assert info.value.field == "text"

    def test_rejects_no_signers(self) -> None:
        with pytest.raises(InputError) as info:
            sign_note(TEXT, [])
        assert info.value.field == "signers"

    @pytest.mark.parametrize("name", ["a b", "a+b", "tab\t", "nbsp\u00a0"])
    def test_rejects_invalid_signer_name(self, name: str) -> None:
        with pytest.raises(InputError) as info:
            sign_note(TEXT, [Ed25519Signer(name, bytes(32))])
        assert info.value.field == "signers[0].name"

    def test_rejects_the_same_key_twice(self) -> None:
        with pytest.raises(InputError) as info:
            sign_note(TEXT, [ALICE, BOB, ALICE])
        assert info.value.field == "signers[2]"

    def test_rejects_a_faulty_signer(self) -> None:
        class FaultySigner:
            name = "faulty.example"
            public_key = ALICE.public_key

            def sign(self, message: bytes) -> bytes:
                return bytes(64)

        signer: Signer = FaultySigner()
        with pytest.raises(SignatureError):
            sign_note(TEXT, [signer])


class TestKeyStrings:
    @pytest.mark.parametrize(
        ("text", "field"),
        [
            ("", "verifier_key"),
            ("PeterNeumann", "verifier_key"),
            ("PeterNeumann+c74f20a3", "verifier_key"),
            ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "verifier_key.name"),
            ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "verifier_key.name"),
            ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "verifier_key.key_id"),
            ("PeterNeumann+c74f20ag+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "verifier_key.key_id"),
            ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "verifier_key.key_id"),
            ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW=", "verifier_key.key"),
            ("PeterNeumann+c74f20a3+Alpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "verifier_key.key"),
            ("PeterNeumann+c74f20a3+Gpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "verifier_key.key"),
            ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n", "verifier_key.key"),
        ],
    )
    def test_malformed_verifier_keys(self, text: str, field: str) -> None:
        with pytest.raises(InputError) as info:
            parse_verifier_key(text)
        assert info.value.field == field

    def test_uppercase_key_id_is_accepted_as_go_does(self) -> None:
        verifier = parse_verifier_key("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
        assert verifier.key_id == 0xC74F20A3

    @pytest.mark.parametrize(
        ("text", "field"),
        [
            ("", "signer_key"),
            ("PeterNeumann+c74f20a3+" + GO_SEED, "signer_key"),
            ("PRIVATE+KEY+PeterNeumann+c74f20a4+" + GO_SEED, "signer_key.key_id"),
            ("PRIVATE+KEY+Peter+c74f20a3+" + GO_SEED, "signer_key.key_id"),
            ("PRIVATE+KEY+PeterNeumann+c74f20a3+" + "Ao" + GO_SEED[2:], "signer_key.key"),
            ("PRIVATE+KEY+PeterNeumann+c74f20a3+" + GO_SEED[:-2], "signer_key.key"),
        ],
    )
    def test_malformed_signer_keys_do_not_leak_the_key(self, text: str, field: str) -> None:
        with pytest.raises(InputError) as info:
            parse_signer_key(text)
        assert info.value.field == field
        assert GO_SEED[:20] not in str(info.value)
        assert info.value.__cause__ is None

    def test_verifier_checks_its_key_id(self) -> None:
        with pytest.raises(InputError) as info:
            NoteVerifier(ALICE.name, ALICE_VERIFIER.key_id ^ 1, ALICE.public_key)
        assert info.value.field == "key_id"

    @pytest.mark.parametrize(("name", "key"), [("", bytes(32)), ("a+b", bytes(32)), ("k", bytes(31))])
    def test_note_key_id_validates(self, name: str, key: bytes) -> None:
        with pytest.raises(InputError):
            note_key_id(name, key)


class TestCheckpoint:
    def test_spec_example(self) -> None:
        checkpoint = Checkpoint.from_text(SPEC_CHECKPOINT_TEXT)
        assert checkpoint.origin == "example.com/behind-the-sofa"
        assert checkpoint.size == 20852163
        assert checkpoint.root_hash == base64.b64decode(SPEC_ROOT)
        assert checkpoint.extensions == ()
        assert checkpoint.to_text() == SPEC_CHECKPOINT_TEXT

    def test_extensions(self) -> None:
        text = SPEC_CHECKPOINT_TEXT + "ext one\n— not a signature\n"
        checkpoint = Checkpoint.from_text(text)
        assert checkpoint.extensions == ("ext one", "— not a signature")
        assert checkpoint.to_text() == text

    def test_empty_tree_and_maximum_size(self) -> None:
        root = base64.b64encode(hashlib.sha256(b"").digest()).decode()
        assert Checkpoint.from_text(f"log\n0\n{root}\n").size == 0
        assert Checkpoint.from_text(f"log\n{MAX_TREE_SIZE}\n{root}\n").size == MAX_TREE_SIZE

    def test_signed_checkpoint_round_trip(self) -> None:
        checkpoint = Checkpoint("lineage.example/log", 7, hashlib.sha256(b"root").digest())
        text, verified = open_note(sign_note(checkpoint.to_text(), [ALICE]), [ALICE_VERIFIER])
        assert Checkpoint.from_text(text) == checkpoint
        assert verified == [ALICE_VERIFIER]

    @pytest.mark.parametrize(
        ("text", "field", "line"),
        [
            ("", "checkpoint", None),
            ("log\n1\n", "checkpoint", None),
            ("log\n1\nAAAA", "checkpoint", None),
            (SPEC_CHECKPOINT_TEXT[:-1], "checkpoint", None),
            ("\n1\n" + SPEC_ROOT + "\n", "checkpoint.origin", 1),
            ("lo\tg\n1\n" + SPEC_ROOT + "\n", "checkpoint.origin", 1),
            ("log\n\n" + SPEC_ROOT + "\n", "checkpoint.size", 2),
            ("log\n01\n" + SPEC_ROOT + "\n", "checkpoint.size", 2),
            ("log\n-1\n" + SPEC_ROOT + "\n", "checkpoint.size", 2),
            ("log\n+1\n" + SPEC_ROOT + "\n", "checkpoint.size", 2),
            ("log\n 1\n" + SPEC_ROOT + "\n", "checkpoint.size", 2),
            ("log\n1_0\n" + SPEC_ROOT + "\n", "checkpoint.size", 2),
            ("log\n\u0661\n" + SPEC_ROOT + "\n", "checkpoint.size", 2),
            ("log\n18446744073709551616\n" + SPEC_ROOT + "\n", "checkpoint.size", 2),
            ("log\n1\n\n", "checkpoint.root_hash", 3),
            ("log\n1\nnot base64!\n", "checkpoint.root_hash", 3),
            ("log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n", "checkpoint.root_hash", 3),
            ("log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n", "checkpoint.root_hash", 3),
            ("log\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", "checkpoint.root_hash", 3),
            ("log\n1\n" + base64.b64encode(bytes(33)).decode() + "\n", "checkpoint.root_hash", 3),
            ("log\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n", "checkpoint.root_hash", 3),
            (SPEC_CHECKPOINT_TEXT + "\n", "checkpoint.extensions[0]", 4),
            (SPEC_CHECKPOINT_TEXT + "ext\n\n", "checkpoint.extensions[1]", 5),
            (SPEC_CHECKPOINT_TEXT + "e\x01xt\n", "checkpoint.extensions[0]", 4),
        ],
    )
    def test_malformed_text(self, text: str, field: str, line: int | None) -> None:
        with pytest.raises(InputError) as info:
            Checkpoint.from_text(text)
        assert info.value.field == field
        if line is not None:
            assert info.value.reason.startswith(f"line {line}:")

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"origin": ""}, "checkpoint.origin"),
            ({"origin": "a\nb"}, "checkpoint.origin"),
            ({"size": -1}, "checkpoint.size"),
            ({"size": MAX_TREE_SIZE + 1}, "checkpoint.size"),
            ({"size": True}, "checkpoint.size"),
            ({"size": 1.0}, "checkpoint.size"),
            ({"root_hash": bytes(31)}, "checkpoint.root_hash"),
            ({"root_hash": bytearray(32)}, "checkpoint.root_hash"),
            ({"extensions": ["ext"]}, "checkpoint.extensions"),
            ({"extensions": ("",)}, "checkpoint.extensions[0]"),
            ({"extensions": ("ok", "a\nb")}, "checkpoint.extensions[1]"),
        ],
    )
    def test_construction_validates(self, kwargs: dict[str, object], field: str) -> None:
        fields: dict[str, object] = {"origin": "log", "size": 1, "root_hash": bytes(32), "extensions": ()}
        fields.update(kwargs)
        with pytest.raises(InputError) as info:
            Checkpoint(**fields)  # type: ignore[arg-type]
        assert info.value.field == field

    @given(
        origin=st.text(st.characters(min_codepoint=0x20, codec="utf-8"), min_size=1),
        size=st.integers(0, MAX_TREE_SIZE),
        root_hash=st.binary(min_size=32, max_size=32),
        extensions=st.lists(st.text(st.characters(min_codepoint=0x20, codec="utf-8"), min_size=1), max_size=3),
    )
    def test_text_round_trip(self, origin: str, size: int, root_hash: bytes, extensions: list[str]) -> None:
        checkpoint = Checkpoint(origin, size, root_hash, tuple(extensions))
        assert Checkpoint.from_text(checkpoint.to_text()) == checkpoint
