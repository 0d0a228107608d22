"""The witness's decision on an add-checkpoint request (C2SP tlog-witness), apart from HTTP.

Each refusal is an error whose class the HTTP layer maps to the status the spec gives:

=============================  ======  ===========================================================
error                          status  when
=============================  ======  ===========================================================
InputError                     400     malformed body; old size above the checkpoint size
UnknownLogError                404     the checkpoint's origin is not a log this witness follows
SignatureError                 403     no valid signature by a trusted key of that log
StaleSizeError                 409     the old size is not the size this witness last cosigned
VerificationError              422     bad consistency proof, different root for the same size,
                                       a non-empty proof from size 0, a size-0 tree not empty
=============================  ======  ===========================================================
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lineage_ledger.core.cosignature import CosignerVerifier, cosign, parse_add_checkpoint
from lineage_ledger.core.crypto import Signer
from lineage_ledger.core.merkle import verify_consistency
from lineage_ledger.core.note import Checkpoint, NoteVerifier, note_signatures, open_note
from lineage_ledger.errors import ConflictError, InputError, NotFoundError, VerificationError
from lineage_ledger.witness.state import WitnessRecord, WitnessState

__all__ = ["EMPTY_ROOT", "StaleSizeError", "UnknownLogError", "Witness", "WitnessedLog"]

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root hash of the empty tree (RFC 6962 section 2.1)."""


class UnknownLogError(NotFoundError):
    """The checkpoint's origin is not one this witness is configured for (404)."""


class StaleSizeError(ConflictError):
    """The request's old size is not the size of the latest checkpoint this witness cosigned (409).

    ``size`` is that size, which the response carries so the client can retry with the right proof."""

    def __init__(self, size: int) -> None:
        super().__init__(f"this witness last cosigned this log at size {size}")
        self.size = size


@dataclass(frozen=True, slots=True)
class WitnessedLog:
    """A log the witness follows: its origin and the keys it trusts to sign that log's checkpoints."""

    origin: str
    keys: tuple[NoteVerifier, ...]


class Witness:
    """Cosigns checkpoints that extend, consistently, the latest one it cosigned for the same log."""

    def __init__(
        self,
        signer: Signer,
        logs: Sequence[WitnessedLog],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.verifier = CosignerVerifier.from_public_key(signer.name, signer.public_key)
        self._logs: Mapping[str, WitnessedLog] = {log.origin: log for log in logs}
        self.state = state
        self._clock = clock

    def add_checkpoint(self, body: bytes) -> str:
        """Check an add-checkpoint request body and, if the checkpoint may be cosigned, record it and
        return the response body: this witness's cosignature line. Raises as the module table says."""
        request = parse_add_checkpoint(body)
        text, signatures = note_signatures(request.note)
        origin = text.split("\n", 1)[0]
        log = self._logs.get(origin)
        if log is None:
            raise UnknownLogError(f"this witness does not follow the log {origin!r}")
        checkpoint = Checkpoint.from_text(text)
        open_note(request.note, log.keys)  # SignatureError: 403
        trusted = {(key.name, key.key_id) for key in log.keys}
        # what the witness keeps and serves: the text, the log signatures it verified, its own cosignature
        kept = (
            text
            + "\n"
            + "".join(
                f"— {name} {base64.b64encode(key_id.to_bytes(4, 'big') + sig).decode('ascii')}\n"
                for name, key_id, sig in signatures
                if (name, key_id) in trusted
            )
        )
        if request.old_size > checkpoint.size:
            raise InputError("old", f"old size {request.old_size} is above the checkpoint size {checkpoint.size}")

        def decide(current: WitnessRecord | None) -> WitnessRecord:
            known = 0 if current is None else current.size
            if request.old_size != known:
                raise StaleSizeError(known)
            if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
                raise VerificationError("a checkpoint of size 0 must have the root of the empty tree")
            if request.old_size == 0:
                if request.proof:
                    raise VerificationError("a consistency proof from size 0 must be empty")
            else:
                root = EMPTY_ROOT if current is None else current.root
                verify_consistency(known, checkpoint.size, root, checkpoint.root_hash, request.proof)
            timestamp = max(1, int(self._clock()))
            line = cosign(text, self.signer, timestamp)
            return WitnessRecord(checkpoint.size, checkpoint.root_hash, kept + line)

        record = self.state.advance(origin, decide)
        return record.note[len(kept) :]

    def latest(self, origin_hash: str) -> str:
        """The latest checkpoint cosigned for the log whose origin hashes (SHA-256, lowercase hex) to
        ``origin_hash``, with the log's signatures and this witness's cosignature; NotFoundError if none."""
        for origin in self._logs:
            if hashlib.sha256(origin.encode("utf-8")).hexdigest() == origin_hash:
                record = self.state.get(origin)
                if record is not None:
                    return record.note
                break
        raise NotFoundError("this witness has cosigned no checkpoint of that log")
