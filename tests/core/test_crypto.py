"""Tests for lineage_ledger.core.crypto against published vectors and tampering invariants."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core import crypto
from lineage_ledger.core.crypto import (
    BATCH_PAYLOAD_TYPE,
    Ed25519Signer,
    Signer,
    dsse_sign,
    dsse_verify,
    pae,
    token_fingerprint,
    verify_ed25519,
)
from lineage_ledger.errors import InputError, SignatureError

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

# github.com/secure-systems-lab/dsse protocol.md, "Test Vectors": payload type, body, PAE, and the
# reference implementation's ECDSA P-256 key and signature over that PAE.
DSSE_SPEC_TYPE = "http://example.com/HelloWorld"
DSSE_SPEC_BODY = b"hello world"
DSSE_SPEC_PAE = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
DSSE_SPEC_X = 46950820868899156662930047687818585632848591499744589407958293238635476079160
DSSE_SPEC_Y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
DSSE_SPEC_SIG = "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="

# RFC 4231 section 4.2, test case 1: HMAC-SHA-256 with key 0x0b * 20 over "Hi There".
RFC4231_KEY = b"\x0b" * 20
RFC4231_DATA = "Hi There"
RFC4231_HMAC_SHA256 = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"

SIGNER = Ed25519Signer("producer.example/a", bytes(range(32)))


class TestEd25519Signer:
    def test_rfc8032_public_key_and_signature(self) -> None:
        signer = Ed25519Signer("rfc8032", RFC8032_SEED)
        assert signer.public_key == RFC8032_PUBLIC
        assert signer.sign(b"") == RFC8032_SIGNATURE

    def test_rfc8032_signature_verifies(self) -> None:
        verify_ed25519(RFC8032_PUBLIC, RFC8032_SIGNATURE, b"")

    def test_is_a_signer(self) -> None:
        signer: Signer = SIGNER
        assert signer.name == "producer.example/a"
        assert len(signer.public_key) == 32

    def test_seed_is_not_an_attribute_and_not_in_repr(self) -> None:
        seed = bytes(range(32))
        assert not hasattr(SIGNER, "seed")
        assert not hasattr(SIGNER, "__dict__")
        assert seed.hex() not in repr(SIGNER)
        assert SIGNER.private_seed() == seed

    def test_generate_gives_fresh_keys(self) -> None:
        first, second = Ed25519Signer.generate("k"), Ed25519Signer.generate("k")
        assert first.public_key != second.public_key
        verify_ed25519(first.public_key, first.sign(b"m"), b"m")

    @pytest.mark.parametrize(
        ("name", "seed", "field"),
        [
            ("", bytes(32), "name"),
            ("k", bytes(31), "seed"),
            ("k", bytes(33), "seed"),
            ("k", "0" * 32, "seed"),
        ],
    )
    def test_rejects_bad_construction(self, name: str, seed: bytes, field: str) -> None:
        with pytest.raises(InputError) as info:
            Ed25519Signer(name, seed)
        assert info.value.field == field


class TestVerifyEd25519:
    def test_accepts_valid(self) -> None:
        verify_ed25519(SIGNER.public_key, SIGNER.sign(b"batch"), b"batch")

    def test_rejects_other_message(self) -> None:
        with pytest.raises(SignatureError):
            verify_ed25519(SIGNER.public_key, SIGNER.sign(b"batch"), b"batch!")

    def test_rejects_other_key(self) -> None:
        other = Ed25519Signer("other", bytes(32))
        with pytest.raises(SignatureError):
            verify_ed25519(other.public_key, SIGNER.sign(b"batch"), b"batch")

    @pytest.mark.parametrize("length", [0, 63, 65])
    def test_rejects_signature_of_wrong_length(self, length: int) -> None:
        with pytest.raises(SignatureError):
            verify_ed25519(SIGNER.public_key, bytes(length), b"batch")

    @pytest.mark.parametrize("length", [0, 31, 33])
    def test_rejects_public_key_of_wrong_length(self, length: int) -> None:
        with pytest.raises(InputError) as info:
            verify_ed25519(bytes(length), SIGNER.sign(b"batch"), b"batch")
        assert info.value.field == "public_key"

    def test_public_key_cache_is_bounded(self) -> None:
        verify_ed25519(SIGNER.public_key, SIGNER.sign(b"x"), b"x")
        info = crypto._parsed_public_key.cache_info()
        assert info.maxsize is not None
        assert 0 < info.currsize <= info.maxsize


class TestPae:
    def test_dsse_spec_vector(self) -> None:
        assert pae(DSSE_SPEC_TYPE, DSSE_SPEC_BODY) == DSSE_SPEC_PAE

    def test_dsse_spec_signature_covers_our_pae(self) -> None:
        # The reference implementation's signature in the spec verifies over the bytes we produce.
        public_key = ec.EllipticCurvePublicNumbers(DSSE_SPEC_X, DSSE_SPEC_Y, ec.SECP256R1()).public_key()
        raw = base64.b64decode(DSSE_SPEC_SIG)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public_key.verify(der, pae(DSSE_SPEC_TYPE, DSSE_SPEC_BODY), ec.ECDSA(hashes.SHA256()))

    @pytest.mark.parametrize(
        ("payload_type", "payload", "expected"),
        [
            ("", b"", b"DSSEv1 0  0 "),
            ("t", b"\x00\xff", b"DSSEv1 1 t 2 \x00\xff"),
            # LEN counts bytes of the UTF-8 encoding, not characters.
            ("\u00e9", b"x", b"DSSEv1 2 \xc3\xa9 1 x"),
            ("a b", b"1 2 3", b"DSSEv1 3 a b 5 1 2 3"),
        ],
    )
    def test_definition(self, payload_type: str, payload: bytes, expected: bytes) -> None:
        assert pae(payload_type, payload) == expected

    def test_rejects_unencodable_type(self) -> None:
        with pytest.raises(InputError) as info:
            pae("\udc80", b"")
        assert info.value.field == "payload_type"


class TestDsse:
    def test_round_trip(self) -> None:
        payload = b'{"count":1}'
        signature = dsse_sign(SIGNER, BATCH_PAYLOAD_TYPE, payload)
        assert len(signature) == 64
        dsse_verify(SIGNER.public_key, BATCH_PAYLOAD_TYPE, payload, signature)

    def test_signature_is_over_pae(self) -> None:
        payload = b'{"count":1}'
        signature = dsse_sign(SIGNER, BATCH_PAYLOAD_TYPE, payload)
        verify_ed25519(SIGNER.public_key, signature, pae(BATCH_PAYLOAD_TYPE, payload))

    def test_rejects_other_payload_type(self) -> None:
        signature = dsse_sign(SIGNER, BATCH_PAYLOAD_TYPE, b"{}")
        with pytest.raises(SignatureError):
            dsse_verify(SIGNER.public_key, "application/vnd.other+json", b"{}", signature)

    def test_kms_signer_plugs_in(self) -> None:
        class RemoteSigner:
            """Stands in for a KMS: it exposes no private key, only name, public key and sign."""

            name = "kms.example/key-1"

            def __init__(self) -> None:
                self._inner = Ed25519Signer("inner", bytes([7]) * 32)
                self.public_key = self._inner.public_key

            def sign(self, message: bytes) -> bytes:
                return self._inner.sign(message)

        signer: Signer = RemoteSigner()
        signature = dsse_sign(signer, BATCH_PAYLOAD_TYPE, b"{}")
        dsse_verify(signer.public_key, BATCH_PAYLOAD_TYPE, b"{}", signature)

    @given(payload=st.binary(min_size=1, max_size=256), data=st.data())
    def test_any_payload_byte_flip_is_rejected(self, payload: bytes, data: st.DataObject) -> None:
        signature = dsse_sign(SIGNER, BATCH_PAYLOAD_TYPE, payload)
        index = data.draw(st.integers(0, len(payload) - 1))
        mask = data.draw(st.integers(1, 255))
        tampered = bytearray(payload)
        tampered[index] ^= mask
        with pytest.raises(SignatureError):
            dsse_verify(SIGNER.public_key, BATCH_PAYLOAD_TYPE, bytes(tampered), signature)

    @given(payload=st.binary(max_size=64), index=st.integers(0, 63), mask=st.integers(1, 255))
    def test_any_signature_byte_flip_is_rejected(self, payload: bytes, index: int, mask: int) -> None:
        signature = bytearray(dsse_sign(SIGNER, BATCH_PAYLOAD_TYPE, payload))
        signature[index] ^= mask
        with pytest.raises(SignatureError):
            dsse_verify(SIGNER.public_key, BATCH_PAYLOAD_TYPE, payload, bytes(signature))

    @given(payload=st.binary(max_size=64), extra=st.binary(min_size=1, max_size=8))
    def test_appended_bytes_are_rejected(self, payload: bytes, extra: bytes) -> None:
        signature = dsse_sign(SIGNER, BATCH_PAYLOAD_TYPE, payload)
        with pytest.raises(SignatureError):
            dsse_verify(SIGNER.public_key, BATCH_PAYLOAD_TYPE, payload + extra, signature)


class TestTokenFingerprint:
    def test_rfc4231_vector(self) -> None:
        assert token_fingerprint(RFC4231_KEY, RFC4231_DATA) == RFC4231_HMAC_SHA256

    def test_region_prefix(self) -> None:
        assert token_fingerprint(RFC4231_KEY, RFC4231_DATA, "eu-west-1") == f"eu-west-1:{RFC4231_HMAC_SHA256}"

    def test_str_is_hashed_as_utf8(self) -> None:
        secret = bytes(16)
        assert token_fingerprint(secret, "t\u00f6ken") == token_fingerprint(secret, "t\u00f6ken".encode())

    def test_depends_on_secret(self) -> None:
        assert token_fingerprint(bytes(16), "tok") != token_fingerprint(bytes(15) + b"\x01", "tok")

    @pytest.mark.parametrize("region", ["", "EU", "eu_west", "eu west", "a" * 33, "eu:1", "eu\n", "\u00e9u"])
    def test_rejects_bad_region(self, region: str) -> None:
        with pytest.raises(InputError) as info:
            token_fingerprint(bytes(16), "tok", region)
        assert info.value.field == "region"

    @pytest.mark.parametrize("region", ["a", "eu-west-1", "0", "a" * 32])
    def test_accepts_good_region(self, region: str) -> None:
        assert token_fingerprint(bytes(16), "tok", region).startswith(f"{region}:")

    @pytest.mark.parametrize("secret", [b"", bytes(15), "x" * 32])
    def test_rejects_short_secret(self, secret: bytes) -> None:
        with pytest.raises(InputError) as info:
            token_fingerprint(secret, "tok")
        assert info.value.field == "secret"

    @pytest.mark.parametrize("token", ["", b"", "\udc80secret-bearer"])
    def test_rejects_bad_token_without_echoing_it(self, token: str | bytes) -> None:
        with pytest.raises(InputError) as info:
            token_fingerprint(bytes(16), token)
        assert info.value.field == "raw_token"
        assert "secret-bearer" not in str(info.value)
        assert info.value.__cause__ is None
