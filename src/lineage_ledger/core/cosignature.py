"""C2SP tlog-cosignature (Ed25519, ``cosignature/v1``) and the request body of C2SP tlog-witness.

Pure: no I/O. Formats, exactly as https://c2sp.org/tlog-cosignature and https://c2sp.org/tlog-witness give them:

- a cosignature is a signed-note signature line ``— <name> <base64(key id || timestamp || signature)>``:
  4-byte key id, then the ``timestamped_signature``: an 8-byte big-endian POSIX timestamp (seconds) and the
  64-byte Ed25519 signature;
- key id: the first 4 bytes of SHA-256(name || 0x0A || 0x04 || 32-byte public key);
- the signed message: ``cosignature/v1\\ntime <timestamp>\\n`` followed by the whole checkpoint note text
  (its last newline included, no signature line);
- cosigner verifier key (vkey) ``<name>+<8 hex key id>+<base64(0x04 || public key)>``;
- add-checkpoint request body: ``old <size>\\n``, up to 63 lines of one base64 consistency-proof hash each,
  an empty line, then the signed checkpoint.

Errors raised here never contain private key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from lineage_ledger.core.crypto import ED25519_PUBLIC_KEY_SIZE, Signer, verify_ed25519
from lineage_ledger.core.note import Checkpoint, NoteVerifier, note_signatures, open_note
from lineage_ledger.errors import InputError, KeyringError, SignatureError

__all__ = [
    "COSIGNATURE_TYPE",
    "MAX_PROOF_LINES",
    "AddCheckpoint",
    "Cosignature",
    "CosignerVerifier",
    "WitnessPolicy",
    "cosign",
    "cosignature_message",
    "cosigner_key_id",
    "format_add_checkpoint",
    "parse_add_checkpoint",
    "parse_cosigner_key",
    "verify_cosignatures",
]

COSIGNATURE_TYPE: Final = 0x04
"""Signature type byte tlog-cosignature assigns to Ed25519 ``cosignature/v1``."""

MAX_PROOF_LINES: Final = 63
"""Most consistency-proof lines an add-checkpoint request may carry (tlog-witness)."""

_HEADER: Final = "cosignature/v1\n"
_MAX_TIMESTAMP: Final = 2**63 - 1
_SIGNATURE_SIZE: Final = 8 + 64
_KEY_ID_HEX: Final = re.compile(r"[0-9a-f]{8}")
_OLD_SIZE: Final = re.compile(r"old (0|[1-9][0-9]{0,19})")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, field: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise InputError(field, "not valid base64") from None
    if _b64(raw) != text:
        raise InputError(field, "not canonical base64")
    return raw


def cosigner_key_id(name: str, public_key: bytes) -> int:
    """The cosignature/v1 key id: the first 4 bytes, big-endian, of SHA-256(name || 0x0A || 0x04 || key)."""
    # NoteVerifier checks the name and key size; its own key id (type 0x01) is of no use here.
    NoteVerifier.from_public_key(name, public_key)
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_TYPE]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True, slots=True)
class CosignerVerifier:
    """A trusted witness (cosigner) key: its name, its cosignature/v1 key id and its Ed25519 public key.

    Construction checks the name, the key size and that ``key_id`` is the key id of the name and key.
    """

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        expected = cosigner_key_id(self.name, self.public_key)
        if isinstance(self.key_id, bool) or not isinstance(self.key_id, int) or self.key_id != expected:
            raise InputError("key_id", f"is not the cosigner key id of this name and public key ({expected:08x})")

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> CosignerVerifier:
        """The verifier of ``public_key`` under ``name``, its key id computed."""
        return cls(name, cosigner_key_id(name, public_key), public_key)

    def __str__(self) -> str:
        """The vkey ``<name>+<8 hex key id>+<base64(0x04 || public key)>``."""
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([COSIGNATURE_TYPE]) + self.public_key)}"


def parse_cosigner_key(text: str) -> CosignerVerifier:
    """Parse a cosigner vkey ``<name>+<key id>+<base64(0x04 || key)>``, checking name, type, size and key id."""
    if not isinstance(text, str):
        raise InputError("witness_key", "must be a string")
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise InputError("witness_key", "must be <name>+<key id>+<base64 key>")
    name, key_id_hex, encoded = parts
    if not _KEY_ID_HEX.fullmatch(key_id_hex.lower()):
        raise InputError("witness_key.key_id", "a key id must be 8 hexadecimal digits")
    raw = _unb64(encoded, "witness_key.key")
    if len(raw) != 1 + ED25519_PUBLIC_KEY_SIZE or raw[0] != COSIGNATURE_TYPE:
        raise InputError("witness_key.key", "must be 0x04 (cosignature/v1) followed by a 32-byte Ed25519 public key")
    try:
        return CosignerVerifier(name, int(key_id_hex, 16), raw[1:])
    except InputError as e:
        raise InputError(f"witness_key.{e.field}", e.reason) from None


def cosignature_message(text: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: header line, time line, then the checkpoint note text."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise InputError("timestamp", f"must be an integer between 0 and {_MAX_TIMESTAMP}")
    Checkpoint.from_text(text)
    return f"{_HEADER}time {timestamp}\n{text}".encode()


def cosign(text: str, signer: Signer, timestamp: int) -> str:
    """The cosignature/v1 signature line of ``signer`` over checkpoint note ``text`` at ``timestamp``.

    The signature is checked before it is returned, so a faulty signer cannot hand out a bad cosignature.
    """
    if timestamp == 0:
        raise InputError("timestamp", "a witness cosignature must not omit its timestamp (0)")
    verifier = CosignerVerifier.from_public_key(signer.name, signer.public_key)
    message = cosignature_message(text, timestamp)
    signature = signer.sign(message)
    try:
        verify_ed25519(signer.public_key, signature, message)
    except SignatureError as e:
        raise SignatureError(f"cosigner {verifier.name} produced a signature that does not verify") from e
    raw = verifier.key_id.to_bytes(4, "big") + timestamp.to_bytes(8, "big") + signature
    return f"— {verifier.name} {_b64(raw)}\n"


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified cosignature: whose, when (POSIX seconds), and its signature line as it appeared."""

    verifier: CosignerVerifier
    timestamp: int
    line: str


def verify_cosignatures(note: str | bytes, witnesses: Sequence[CosignerVerifier]) -> list[Cosignature]:
    """The cosignatures by ``witnesses`` on a signed checkpoint, each verified, one per witness, in note order.

    Lines by other keys (the log, unknown witnesses) are ignored, as the signed-note spec requires; the log's
    own signature is not checked here. Raises :class:`SignatureError` if a line matching a given witness's
    name and key id does not verify (the note is then malformed), :class:`InputError` if the note is not
    well formed.
    """
    known: dict[tuple[str, int], CosignerVerifier] = {}
    for given in witnesses:
        if (given.name, given.key_id) in known and known[(given.name, given.key_id)] != given:
            raise KeyringError(f"two witness keys share name {given.name} and key id {given.key_id:08x}")
        known[(given.name, given.key_id)] = given
    text, signatures = note_signatures(note)
    Checkpoint.from_text(text)
    found: dict[CosignerVerifier, Cosignature] = {}
    for name, key_id, raw in signatures:
        witness = known.get((name, key_id))
        if witness is None:
            continue
        where = f"the cosignature by witness {name}+{key_id:08x}"
        if len(raw) != _SIGNATURE_SIZE:
            raise SignatureError(f"{where} is {len(raw)} bytes, not a timestamped Ed25519 signature")
        timestamp = int.from_bytes(raw[:8], "big")
        if timestamp > _MAX_TIMESTAMP:
            raise SignatureError(f"{where} has a timestamp above 2^63 - 1")
        try:
            verify_ed25519(witness.public_key, raw[8:], cosignature_message(text, timestamp))
        except SignatureError as e:
            raise SignatureError(f"{where} does not verify") from e
        line = f"— {name} {_b64(key_id.to_bytes(4, 'big') + raw)}\n"
        found.setdefault(witness, Cosignature(witness, timestamp, line))
    return list(found.values())


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """A trust policy for checkpoints: the log's key, plus ``quorum`` of these witnesses' cosignatures."""

    witnesses: tuple[CosignerVerifier, ...]
    quorum: int

    def __post_init__(self) -> None:
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int) or self.quorum < 0:
            raise InputError("witness_quorum", "must be a non-negative integer")
        if self.quorum > len(set(self.witnesses)):
            raise InputError(
                "witness_quorum", f"{self.quorum} cosignatures asked of {len(set(self.witnesses))} witness keys"
            )

    def check(self, note: str | bytes, log: NoteVerifier) -> tuple[Checkpoint, list[Cosignature]]:
        """The checkpoint and its valid cosignatures, if the log signed it and at least ``quorum`` witnesses
        cosigned it; :class:`SignatureError` says which is missing."""
        text, _ = open_note(note, [log])
        cosignatures = verify_cosignatures(note, self.witnesses)
        if len(cosignatures) < self.quorum:
            raise SignatureError(
                f"the checkpoint carries {len(cosignatures)} valid cosignatures of the given witnesses, "
                f"the policy needs {self.quorum}"
            )
        return Checkpoint.from_text(text), cosignatures


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """An add-checkpoint request: the witness's last size as the client believes it, the consistency proof
    from that size, and the signed checkpoint."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


def format_add_checkpoint(request: AddCheckpoint) -> bytes:
    """The request body of ``POST <prefix>/add-checkpoint``."""
    if len(request.proof) > MAX_PROOF_LINES:
        raise InputError("proof", f"more than {MAX_PROOF_LINES} hashes")
    lines = [f"old {request.old_size}\n", *(f"{_b64(h)}\n" for h in request.proof)]
    return ("".join(lines) + "\n" + request.note).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint body strictly; :class:`InputError` (a 400) names what is wrong.

    The checkpoint note's signatures are not checked here.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("body", "not valid UTF-8") from None
    head, blank, note = text.partition("\n\n")
    if not blank:
        raise InputError("body", "no empty line separates the old size and proof from the checkpoint")
    lines = head.split("\n")
    m = _OLD_SIZE.fullmatch(lines[0])
    if m is None:
        raise InputError("old", "the first line must be 'old <size>', a decimal size without leading zeros")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise InputError("proof", f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for i, line in enumerate(lines[1:]):
        raw = _unb64(line, f"proof[{i}]")
        if len(raw) != 32:
            raise InputError(f"proof[{i}]", "a proof hash must be 32 bytes")
        proof.append(raw)
    return AddCheckpoint(int(m.group(1)), tuple(proof), note)
