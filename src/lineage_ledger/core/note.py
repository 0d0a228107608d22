"""C2SP signed notes with Ed25519 keys, and C2SP tlog checkpoints.

Pure: no I/O. Formats, exactly as outside verifiers (Go's golang.org/x/mod/sumdb/note) check them:

- signed note (https://c2sp.org/signed-note): the text (valid UTF-8, no ASCII control characters but
  newline, ending in a newline), a blank line, then one line per signature:
  ``— <key name> <base64(4-byte big-endian key id || 64-byte Ed25519 signature of the text)>``.
- key id: the first 4 bytes, big-endian, of SHA-256(key name || 0x0A || 0x01 || 32-byte public key).
- verifier key ``<name>+<8 hex key id>+<base64(0x01 || public key)>``; signer key
  ``PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || seed)>``.
- checkpoint (https://c2sp.org/tlog-checkpoint): note text of origin, tree size in decimal, base64 root
  hash, then optional non-empty extension lines.

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

from lineage_ledger.core.crypto import (
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SEED_SIZE,
    Ed25519Signer,
    Signer,
    verify_ed25519,
)
from lineage_ledger.errors import InputError, KeyringError, SignatureError

__all__ = [
    "ED25519_SIGNATURE_TYPE",
    "MAX_NOTE_SIGNATURES",
    "MAX_TREE_SIZE",
    "Checkpoint",
    "NoteVerifier",
    "note_key_id",
    "note_signatures",
    "open_note",
    "parse_signer_key",
    "parse_verifier_key",
    "sign_note",
    "signer_key",
    "verifier_key",
]

ED25519_SIGNATURE_TYPE: Final = 0x01
"""Signature type byte the signed-note spec assigns to Ed25519."""

MAX_NOTE_SIGNATURES: Final = 100
"""Most signature lines :func:`open_note` reads; the spec requires accepting at least 16."""

MAX_TREE_SIZE: Final = 2**64 - 1

_SIGNATURE_LINE_PREFIX: Final = "— "
_KEY_ID_SIZE: Final = 4
_HASH_SIZE: Final = 32
_CONTROL_CHARACTER: Final = re.compile(r"[\x00-\x1f]")
_CONTROL_CHARACTER_BUT_NEWLINE: Final = re.compile(r"[\x00-\x09\x0b-\x1f]")
_KEY_ID_HEX: Final = re.compile(r"[0-9a-fA-F]{8}")
_TREE_SIZE: Final = re.compile(r"0|[1-9][0-9]{0,19}")


def _check_utf8(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(field, "not valid UTF-8 (contains a lone surrogate)") from None


def _check_key_name(name: object, field: str) -> str:
    if not isinstance(name, str) or not name:
        raise InputError(field, "a key name must be a non-empty string")
    _check_utf8(name, field)
    if "+" in name:
        raise InputError(field, "a key name must not contain '+'")
    if any(c.isspace() for c in name):
        raise InputError(field, "a key name must not contain spaces")
    if _CONTROL_CHARACTER.search(name):
        raise InputError(field, "a key name must not contain control characters")
    return name


def _check_public_key(public_key: object, field: str) -> bytes:
    if not isinstance(public_key, bytes) or len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise InputError(field, f"an Ed25519 public key must be {ED25519_PUBLIC_KEY_SIZE} bytes")
    return public_key


def _decode_base64(text: str, field: str) -> bytes:
    # Only the canonical encoding is accepted, so that no two different notes or keys carry the same bytes;
    # otherwise flipping the unused low bits of the last character would leave a signature valid.
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise InputError(field, "not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise InputError(field, "not canonical base64")
    return raw


def _encode_base64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _parse_key_id(text: str, field: str) -> int:
    if not _KEY_ID_HEX.fullmatch(text):
        raise InputError(field, "a key id must be 8 hexadecimal digits")
    return int(text, 16)


def note_key_id(name: str, public_key: bytes) -> int:
    """Return the signed-note key id of an Ed25519 key.

    That is the first 4 bytes, big-endian, of SHA-256(name || 0x0A || 0x01 || 32-byte public key).
    """
    _check_key_name(name, "name")
    _check_public_key(public_key, "public_key")
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + public_key)
    return int.from_bytes(digest.digest()[:_KEY_ID_SIZE], "big")


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted Ed25519 note key: its name, its key id and its 32-byte public key.

    Construction checks that the name is valid and that ``key_id`` is the key id of the name and key.
    """

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name, "name")
        _check_public_key(self.public_key, "public_key")
        expected = note_key_id(self.name, self.public_key)
        if isinstance(self.key_id, bool) or not isinstance(self.key_id, int) or self.key_id != expected:
            raise InputError("key_id", f"is not the key id of this name and public key ({expected:08x})")

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> NoteVerifier:
        """Return the verifier for ``public_key`` under ``name``, computing its key id."""
        return cls(name, note_key_id(name, public_key), public_key)

    def __str__(self) -> str:
        return verifier_key(self.name, self.public_key)


def verifier_key(name: str, public_key: bytes) -> str:
    """Return the verifier key string ``<name>+<8 lowercase hex key id>+<base64(0x01 || public key)>``."""
    key_id = note_key_id(name, public_key)
    return f"{name}+{key_id:08x}+{_encode_base64(bytes([ED25519_SIGNATURE_TYPE]) + public_key)}"


def signer_key(name: str, seed: bytes) -> str:
    """Return the signer key string ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``.

    The result is a secret: it belongs in a key file or a secret store, never in the ledger database.
    """
    _check_key_name(name, "name")
    if not isinstance(seed, bytes) or len(seed) != ED25519_SEED_SIZE:
        raise InputError("seed", f"an Ed25519 seed must be {ED25519_SEED_SIZE} bytes")
    key_id = note_key_id(name, Ed25519Signer(name, seed).public_key)
    return f"PRIVATE+KEY+{name}+{key_id:08x}+{_encode_base64(bytes([ED25519_SIGNATURE_TYPE]) + seed)}"


def parse_verifier_key(text: str) -> NoteVerifier:
    """Parse a verifier key string, checking its name, algorithm byte, key size and key id."""
    if not isinstance(text, str):
        raise InputError("verifier_key", "must be a string")
    # The name cannot hold '+', but the base64 key can, so split at most twice.
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise InputError("verifier_key", "must be <name>+<key id>+<base64 key>")
    name, key_id_hex, key_b64 = parts
    _check_key_name(name, "verifier_key.name")
    key_id = _parse_key_id(key_id_hex, "verifier_key.key_id")
    raw = _decode_base64(key_b64, "verifier_key.key")
    if len(raw) != 1 + ED25519_PUBLIC_KEY_SIZE or raw[0] != ED25519_SIGNATURE_TYPE:
        raise InputError("verifier_key.key", "must be 0x01 followed by a 32-byte Ed25519 public key")
    public_key = raw[1:]
    if note_key_id(name, public_key) != key_id:
        raise InputError("verifier_key.key_id", "does not match the key name and public key")
    return NoteVerifier(name, key_id, public_key)


def parse_signer_key(text: str) -> Ed25519Signer:
    """Parse a signer key string into a signer, checking its name, algorithm byte and key id."""
    if not isinstance(text, str):
        raise InputError("signer_key", "must be a string")
    parts = text.split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise InputError("signer_key", "must be PRIVATE+KEY+<name>+<key id>+<base64 key>")
    name, key_id_hex, key_b64 = parts[2:]
    _check_key_name(name, "signer_key.name")
    key_id = _parse_key_id(key_id_hex, "signer_key.key_id")
    raw = _decode_base64(key_b64, "signer_key.key")
    if len(raw) != 1 + ED25519_SEED_SIZE or raw[0] != ED25519_SIGNATURE_TYPE:
        raise InputError("signer_key.key", "must be 0x01 followed by a 32-byte Ed25519 seed")
    signer = Ed25519Signer(name, raw[1:])
    if note_key_id(name, signer.public_key) != key_id:
        raise InputError("signer_key.key_id", "does not match the key name and public key")
    return signer


def _check_note_text(text: object, field: str) -> str:
    if not isinstance(text, str):
        raise InputError(field, "must be a string")
    _check_utf8(text, field)
    if not text.endswith("\n"):
        raise InputError(field, "must end with a newline")
    if _CONTROL_CHARACTER_BUT_NEWLINE.search(text):
        raise InputError(field, "must not contain ASCII control characters other than newline")
    return text


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """Return ``text`` signed by every signer in ``signers``, in order, as a C2SP signed note.

    Each signature is checked before it is used, so a faulty signer (a KMS returning garbage, a fault
    during signing) cannot produce a note that its own verifier key rejects.
    """
    _check_note_text(text, "text")
    if not signers:
        raise InputError("signers", "at least one signer is required")
    message = text.encode("utf-8")
    seen: set[tuple[str, int]] = set()
    lines: list[str] = []
    for i, signer in enumerate(signers):
        name = _check_key_name(signer.name, f"signers[{i}].name")
        key_id = note_key_id(name, _check_public_key(signer.public_key, f"signers[{i}].public_key"))
        if (name, key_id) in seen:
            raise InputError(f"signers[{i}]", f"key {name}+{key_id:08x} signs twice")
        seen.add((name, key_id))
        signature = signer.sign(message)
        try:
            verify_ed25519(signer.public_key, signature, message)
        except SignatureError as e:
            raise SignatureError(f"signer {name}+{key_id:08x} produced a signature that does not verify") from e
        encoded = _encode_base64(key_id.to_bytes(_KEY_ID_SIZE, "big") + signature)
        lines.append(f"{_SIGNATURE_LINE_PREFIX}{name} {encoded}\n")
    return text + "\n" + "".join(lines)


def _index_verifiers(verifiers: Sequence[NoteVerifier]) -> dict[tuple[str, int], NoteVerifier]:
    known: dict[tuple[str, int], NoteVerifier] = {}
    for i, verifier in enumerate(verifiers):
        if not isinstance(verifier, NoteVerifier):
            raise InputError(f"verifiers[{i}]", "must be a NoteVerifier")
        key = (verifier.name, verifier.key_id)
        if key in known and known[key] != verifier:
            raise KeyringError(f"two different verifier keys share name {key[0]} and key id {key[1]:08x}")
        known[key] = verifier
    return known


def _parse_signature_lines(block: str) -> list[tuple[str, int, bytes]]:
    lines = block[:-1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise InputError("note", f"more than {MAX_NOTE_SIGNATURES} signature lines")
    signatures: list[tuple[str, int, bytes]] = []
    for i, line in enumerate(lines):
        field = f"note.signatures[{i}]"
        if not line.startswith(_SIGNATURE_LINE_PREFIX):
            raise InputError(field, "a signature line must start with an em dash (U+2014) and a space")
        name, space, encoded = line[len(_SIGNATURE_LINE_PREFIX) :].partition(" ")
        if not space:
            raise InputError(field, "a signature line must be '— <key name> <base64 signature>'")
        _check_key_name(name, field)
        raw = _decode_base64(encoded, field)
        if len(raw) <= _KEY_ID_SIZE:
            raise InputError(field, "a signature must hold a 4-byte key id and at least one byte")
        signatures.append((name, int.from_bytes(raw[:_KEY_ID_SIZE], "big"), raw[_KEY_ID_SIZE:]))
    return signatures


def note_signatures(note: str | bytes) -> tuple[str, list[tuple[str, int, bytes]]]:
    """Split a signed note, checking only its form: its text, and each signature line's key name, key id
    and signature bytes, in note order. Nothing is verified; :func:`open_note` does that. Other signature
    types (cosignatures) come out the same way, their bytes uninterpreted. Raises :class:`InputError`."""
    if isinstance(note, bytes | bytearray):
        try:
            note = bytes(note).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("note", "not valid UTF-8") from None
    elif isinstance(note, str):
        _check_utf8(note, "note")
    else:
        raise InputError("note", "must be str or bytes")
    if _CONTROL_CHARACTER_BUT_NEWLINE.search(note):
        raise InputError("note", "must not contain ASCII control characters other than newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise InputError("note", "no blank line separates the text from the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise InputError("note", "the signature lines must be non-empty and end with a newline")
    return text, _parse_signature_lines(block)


def open_note(note: str | bytes, verifiers: Sequence[NoteVerifier]) -> tuple[str, list[NoteVerifier]]:
    """Verify a signed note; return its text and the verifiers whose signatures verified, in note order.

    Signature lines by keys not in ``verifiers`` (matched on name and key id) are ignored, as the spec
    requires. Raises :class:`InputError` if the note is malformed, and :class:`SignatureError` if a
    signature by a known key fails or no known key signed the note. The returned text must not be trusted
    on any other path.
    """
    known = _index_verifiers(verifiers)
    text, signatures = note_signatures(note)
    message = text.encode("utf-8")
    verified: list[NoteVerifier] = []
    for name, key_id, signature in signatures:
        verifier = known.get((name, key_id))
        if verifier is None:
            continue
        try:
            verify_ed25519(verifier.public_key, signature, message)
        except SignatureError as e:
            raise SignatureError(f"the signature by known key {name}+{key_id:08x} does not verify") from e
        if verifier not in verified:
            verified.append(verifier)
    if not verified:
        raise SignatureError("the note carries no signature by a known key")
    return text, verified


def _check_line(value: object, field: str, line: int | None = None) -> str:
    where = "" if line is None else f"line {line}: "
    if not isinstance(value, str):
        raise InputError(field, f"{where}must be a string")
    if not value:
        raise InputError(field, f"{where}must not be empty")
    _check_utf8(value, field)
    if _CONTROL_CHARACTER.search(value):
        raise InputError(field, f"{where}must not contain newlines or ASCII control characters")
    return value


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head as C2SP tlog-checkpoint note text: origin, tree size, root hash, extensions.

    Construction validates every field, so any instance renders to text that :meth:`from_text` accepts
    and maps back to an equal instance.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint.origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise InputError("checkpoint.size", "must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise InputError("checkpoint.size", f"must be between 0 and {MAX_TREE_SIZE}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != _HASH_SIZE:
            raise InputError("checkpoint.root_hash", f"must be {_HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise InputError("checkpoint.extensions", "must be a tuple of strings")
        for i, extension in enumerate(self.extensions):
            _check_line(extension, f"checkpoint.extensions[{i}]")

    def to_text(self) -> str:
        """Return the checkpoint's note text, ending in a newline."""
        lines = [self.origin, str(self.size), _encode_base64(self.root_hash), *self.extensions]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text strictly; :class:`InputError` names the field and line at fault."""
        if not isinstance(text, str):
            raise InputError("checkpoint", "must be a string")
        if not text.endswith("\n"):
            raise InputError("checkpoint", "must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise InputError("checkpoint", f"needs origin, size and root hash lines, got {len(lines)} lines")
        origin_line, size_line, root_line, *extension_lines = lines
        origin = _check_line(origin_line, "checkpoint.origin", 1)
        if not _TREE_SIZE.fullmatch(size_line):
            raise InputError("checkpoint.size", "line 2: must be a decimal integer without leading zeros")
        size = int(size_line)
        if size > MAX_TREE_SIZE:
            raise InputError("checkpoint.size", f"line 2: must be at most {MAX_TREE_SIZE}")
        try:
            root_hash = _decode_base64(root_line, "checkpoint.root_hash")
        except InputError as e:
            raise InputError(e.field, f"line 3: {e.reason}") from None
        if len(root_hash) != _HASH_SIZE:
            raise InputError("checkpoint.root_hash", f"line 3: must decode to {_HASH_SIZE} bytes")
        extensions = tuple(
            _check_line(line, f"checkpoint.extensions[{i}]", 4 + i) for i, line in enumerate(extension_lines)
        )
        return cls(origin, size, root_hash, extensions)
