"""Tests for lineage_ledger.core.cosignature: the cosignature/v1 bytes as the C2SP texts give them, keys,
verification against tampering, the k-of-n policy, and the add-checkpoint request body."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from lineage_ledger.core.cosignature import (
    MAX_PROOF_LINES,
    AddCheckpoint,
    CosignerVerifier,
    WitnessPolicy,
    cosign,
    cosignature_message,
    cosigner_key_id,
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_cosigner_key,
    verify_cosignatures,
)
from lineage_ledger.core.crypto import Ed25519Signer, verify_ed25519
from lineage_ledger.core.note import NoteVerifier, open_note, sign_note
from lineage_ledger.errors import InputError, SignatureError

# The example of c2sp.org/tlog-cosignature ("Ed25519 signed message").
SPEC_TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_MESSAGE = (
    b"cosignature/v1\ntime 1679315147\n"
    b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

LOG = Ed25519Signer("example.com/behind-the-sofa", bytes([7]) * 32)
LOG_KEY = NoteVerifier.from_public_key(LOG.name, LOG.public_key)
WITNESSES = [Ed25519Signer(f"witness.example/w{i}", bytes([40 + i]) * 32) for i in range(3)]
KEYS = [CosignerVerifier.from_public_key(w.name, w.public_key) for w in WITNESSES]


def _cosigned(*witnesses: int, timestamp: int = 1_700_000_000) -> str:
    note = sign_note(SPEC_TEXT, [LOG])
    return note + "".join(cosign(SPEC_TEXT, WITNESSES[i], timestamp) for i in witnesses)


def test_the_signed_message_is_the_spec_example_byte_for_byte() -> None:
    assert cosignature_message(SPEC_TEXT, 1679315147) == SPEC_MESSAGE


def test_the_key_id_uses_the_cosignature_type_byte_0x04() -> None:
    key = WITNESSES[0]
    expected = hashlib.sha256(key.name.encode() + b"\n\x04" + key.public_key).digest()[:4]
    assert cosigner_key_id(key.name, key.public_key) == int.from_bytes(expected, "big")
    assert cosigner_key_id(key.name, key.public_key) != NoteVerifier.from_public_key(key.name, key.public_key).key_id


def test_a_cosignature_line_holds_key_id_timestamp_and_signature_of_the_message() -> None:
    line = cosign(SPEC_TEXT, WITNESSES[0], 1679315147)
    assert line.startswith("— witness.example/w0 ")
    assert line.endswith("\n")
    raw = base64.b64decode(line.split(" ")[2])
    assert len(raw) == 4 + 8 + 64
    assert int.from_bytes(raw[:4], "big") == KEYS[0].key_id
    assert int.from_bytes(raw[4:12], "big") == 1679315147
    verify_ed25519(WITNESSES[0].public_key, raw[12:], SPEC_MESSAGE)


def test_a_zero_timestamp_is_never_signed() -> None:
    with pytest.raises(InputError, match="timestamp"):
        cosign(SPEC_TEXT, WITNESSES[0], 0)


def test_vkey_round_trip_and_type_checks() -> None:
    text = str(KEYS[1])
    assert text.startswith(f"witness.example/w1+{KEYS[1].key_id:08x}+")
    assert base64.b64decode(text.split("+", 2)[2])[0] == 0x04
    assert parse_cosigner_key(text) == KEYS[1]
    note_vkey = str(NoteVerifier.from_public_key(WITNESSES[1].name, WITNESSES[1].public_key))
    with pytest.raises(InputError, match="0x04"):
        parse_cosigner_key(note_vkey)  # a note key (type 0x01) is not a cosigner key
    wrong_id = text.replace(f"+{KEYS[1].key_id:08x}+", "+00000000+")
    with pytest.raises(InputError, match="key_id"):
        parse_cosigner_key(wrong_id)


def test_cosignatures_verify_and_unknown_lines_are_ignored() -> None:
    note = _cosigned(0, 2)
    found = verify_cosignatures(note, KEYS)
    assert [c.verifier for c in found] == [KEYS[0], KEYS[2]]
    assert all(c.timestamp == 1_700_000_000 for c in found)
    assert verify_cosignatures(note, [KEYS[1]]) == []


@pytest.mark.parametrize("tamper", ["text", "timestamp", "signature"])
def test_a_tampered_cosignature_by_a_known_witness_is_refused(tamper: str) -> None:
    note = _cosigned(0)
    line = note.splitlines()[-1]
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    if tamper == "text":
        forged = note.replace("20852163", "20852164")
        resigned = sign_note(forged.split("\n\n", maxsplit=1)[0] + "\n", [LOG])
        forged = forged.replace(note.splitlines()[-2], resigned.splitlines()[-1])
    else:
        raw[11 if tamper == "timestamp" else 40] ^= 1
        forged = note.replace(line, f"— witness.example/w0 {base64.b64encode(bytes(raw)).decode()}")
    with pytest.raises(SignatureError, match=r"witness\.example/w0"):
        verify_cosignatures(forged, KEYS)


def test_extra_signature_lines_in_any_order_still_verify_under_the_log_key() -> None:
    note = _cosigned(0, 1, 2)
    text, signatures = note.split("\n\n", 1)
    lines = signatures.splitlines()
    for seed in range(5):
        shuffled = lines[:]
        random.Random(seed).shuffle(shuffled)
        reordered = text + "\n\n" + "".join(f"{line}\n" for line in shuffled)
        assert open_note(reordered, [LOG_KEY])[1] == [LOG_KEY]
        assert {c.verifier for c in verify_cosignatures(reordered, KEYS)} == set(KEYS)


def test_the_policy_needs_the_log_signature_and_k_of_n_cosignatures() -> None:
    policy = WitnessPolicy(tuple(KEYS), 2)
    checkpoint, cosignatures = policy.check(_cosigned(0, 2), LOG_KEY)
    assert checkpoint.size == 20852163
    assert len(cosignatures) == 2
    with pytest.raises(SignatureError, match=r"1 valid cosignatures .* needs 2"):
        policy.check(_cosigned(1), LOG_KEY)
    with pytest.raises(SignatureError, match=r"1 valid cosignatures .* needs 2"):
        policy.check(_cosigned(1, 1), LOG_KEY)  # one witness twice is one cosignature
    other_log = NoteVerifier.from_public_key(LOG.name, WITNESSES[0].public_key)
    with pytest.raises(SignatureError):
        policy.check(_cosigned(0, 1, 2), other_log)
    with pytest.raises(InputError, match="witness_quorum"):
        WitnessPolicy(tuple(KEYS), 4)


# The example request body of c2sp.org/tlog-witness ("add-checkpoint").
SPEC_REQUEST = """old 20852014
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=

example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=
"""  # noqa: E501 - the spec's lines


def test_the_spec_request_example_parses_and_formats_back_byte_for_byte() -> None:
    request = parse_add_checkpoint(SPEC_REQUEST.encode())
    assert request.old_size == 20852014
    assert request.proof[0] == base64.b64decode("PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=")
    assert len(request.proof) == 4
    assert request.note.startswith("example.com/behind-the-sofa\n20852163\n")
    assert request.note.endswith("=\n")
    assert request.note.count("— ") == 2
    assert format_add_checkpoint(request) == SPEC_REQUEST.encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"old 01\n\nx\n", "old"),
        (b"old -1\n\nx\n", "old"),
        (b"old 3\nnot base64!\n\nx\n", "proof[0]"),
        (b"old 3\n" + base64.b64encode(bytes(31)) + b"\n\nx\n", "proof[0]"),
        (b"old 3\n" + base64.b64encode(bytes(32)) + b"\n", "body"),
        (b"old 3\n" + (base64.b64encode(bytes(32)) + b"\n") * (MAX_PROOF_LINES + 1) + b"\nx\n", "proof"),
        (b"\xff\n\n", "body"),
    ],
)
def test_malformed_request_bodies_are_refused_naming_the_part(body: bytes, field: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_add_checkpoint(body)
    assert caught.value.field == field


def test_a_request_of_63_proof_lines_is_accepted() -> None:
    proof = tuple(bytes([i]) * 32 for i in range(MAX_PROOF_LINES))
    body = format_add_checkpoint(AddCheckpoint(5, proof, "note\n"))
    assert parse_add_checkpoint(body).proof == proof
