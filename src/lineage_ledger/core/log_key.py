"""Rotation of a log's checkpoint signing key: the signed statement and the chain of keys it builds.

Pure: no I/O. A rotation is a ``log_key`` entry in the log itself (subject ``ledger:log-key``) whose
``rotation`` field is a C2SP signed note over this text (one item per line, each ending in a newline)::

    lineage-ledger/log-key-rotation/v1
    <origin of the log>
    <log index of the log_key entry that carries this note>
    <verifier key of the key being retired>
    <verifier key of the key taking over>

signed by the retiring key (its authority) and by the new key (proof that its holder agreed). Checkpoints
stay standard signed notes under one key: a checkpoint of tree size ``s`` is signed by the key named by the
last rotation among entries ``0 .. s-1``, or by the log's original key when there is none. A verifier that
trusts any one key of the chain follows the rotations from it, each signed by the key it retires, and so
checks every later checkpoint; the entries themselves are committed by those checkpoints.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from lineage_ledger.core.crypto import Signer
from lineage_ledger.core.note import NoteVerifier, open_note, parse_verifier_key, sign_note
from lineage_ledger.errors import InputError, LedgerError, SignatureError

__all__ = [
    "LOG_KEY_SUBJECT",
    "ROTATION_HEADER",
    "KeyChain",
    "Rotation",
    "open_rotation",
    "rotation_text",
    "sign_rotation",
]

LOG_KEY_SUBJECT: Final = "ledger:log-key"
"""The chain of a log's signing-key rotations."""
ROTATION_HEADER: Final = "lineage-ledger/log-key-rotation/v1"
"""First line of a rotation statement."""


@dataclass(frozen=True, slots=True)
class Rotation:
    """One checked rotation: at log index ``index`` the log key ``old`` hands over to ``new``."""

    index: int
    old: NoteVerifier
    new: NoteVerifier


def rotation_text(origin: str, index: int, old: NoteVerifier, new: NoteVerifier) -> str:
    """The text a rotation note signs (see the module docstring)."""
    return f"{ROTATION_HEADER}\n{origin}\n{index}\n{old}\n{new}\n"


def sign_rotation(origin: str, index: int, old: Signer, new: Signer) -> str:
    """The rotation note by which ``old`` hands the log ``origin`` over to ``new`` at ``index``.

    InputError if the two are the same key: a rotation must change the key."""
    old_key = NoteVerifier.from_public_key(old.name, old.public_key)
    new_key = NoteVerifier.from_public_key(new.name, new.public_key)
    if old_key == new_key:
        raise InputError("new key", "is the current log key: a rotation needs another key")
    return sign_note(rotation_text(origin, index, old_key, new_key), [old, new])


def open_rotation(note: str, *, origin: str, index: int, current: NoteVerifier) -> Rotation:
    """Check the rotation note of the ``log_key`` entry at ``index`` of log ``origin`` while ``current`` is the
    log key, and return the rotation. SignatureError if ``current`` did not sign it (a forged rotation) or
    the new key did not; InputError if it is malformed or names another log, index or retiring key."""
    text, _ = open_note(note, [current])
    lines = text[:-1].split("\n")
    if len(lines) != 5 or lines[0] != ROTATION_HEADER:
        raise InputError("rotation", f"is not a {ROTATION_HEADER} statement of five lines")
    _, named_origin, named_index, old_text, new_text = lines
    if named_origin != origin:
        raise InputError("rotation", f"names the log {named_origin!r}, not {origin!r}")
    if named_index != str(index):
        raise InputError("rotation", f"names log index {named_index!r}, but it sits at index {index}")
    if old_text != str(current):
        raise InputError("rotation", f"retires the key {old_text}, but the log key at index {index} is {current}")
    new = parse_verifier_key(new_text)
    if new == current:
        raise InputError("rotation", "hands the log over to the key it retires")
    try:
        open_note(note, [new])
    except SignatureError as e:
        raise SignatureError(f"the rotation at index {index} is not signed by its new key {new}") from e
    return Rotation(index, current, new)


class KeyChain:
    """The keys of one log in order: its original key, then each checked rotation.

    Built from the log's original verifier key and its ``log_key`` entries' rotation notes in log order;
    raises at the first rotation that does not check out (see :func:`open_rotation`), so a chain that exists
    is one every step of which was signed by the key it retires.
    """

    def __init__(self, original: NoteVerifier, origin: str, rotations: Sequence[tuple[int, str]] = ()) -> None:
        self.original = original
        self.origin = origin
        self.rotations: list[Rotation] = []
        for index, note in rotations:
            self.add(index, note)

    @property
    def current(self) -> NoteVerifier:
        """The key that signs the log's checkpoints from the last rotation on."""
        return self.rotations[-1].new if self.rotations else self.original

    def verifiers(self) -> list[NoteVerifier]:
        """Every key of the chain, oldest first."""
        return [self.original, *(r.new for r in self.rotations)]

    def add(self, index: int, note: str) -> Rotation:
        """Check and append the rotation note of the ``log_key`` entry at ``index`` (after every earlier one)."""
        if self.rotations and index <= self.rotations[-1].index:
            raise InputError("rotation", f"at index {index} does not follow the rotation at {self.rotations[-1].index}")
        try:
            rotation = open_rotation(note, origin=self.origin, index=index, current=self.current)
        except SignatureError as e:
            raise SignatureError(f"the log key rotation at index {index} is rejected: {e}") from e
        except InputError as e:
            raise InputError(e.field, f"the log key rotation at index {index} is rejected: {e.reason}") from e
        self.rotations.append(rotation)
        return rotation

    def verifier_for(self, size: int) -> NoteVerifier:
        """The key that signs a checkpoint of tree size ``size``: the last rotation before ``size`` names it."""
        position = bisect_left([r.index for r in self.rotations], size)
        return self.rotations[position - 1].new if position else self.original

    def since(self, trusted: NoteVerifier) -> int:
        """The tree size from which ``trusted`` (a key of this chain) vouches for checkpoints: 0 for the
        original key, else one past the rotation that introduced it. LedgerError if it is not in the chain."""
        if trusted == self.original:
            return 0
        for rotation in self.rotations:
            if rotation.new == trusted:
                return rotation.index + 1
        raise LedgerError(f"the key {trusted} is not one of this log's keys ({', '.join(map(str, self.verifiers()))})")
