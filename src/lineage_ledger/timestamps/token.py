"""Checking an RFC 3161 TimeStampToken of a checkpoint offline, against TSA trust anchors the caller gives.

The message imprint of a checkpoint is SHA-256 over the UTF-8 bytes of the checkpoint note's signed text:
the origin line, the tree size line, the root hash line and any extension lines, each ending in a newline,
up to (not including) the blank line that precedes the signature lines. Those are exactly the bytes the
log's Ed25519 signature covers, so signatures and cosignatures added later do not change the imprint.

A token is the DER ``TimeStampToken`` (a CMS ``ContentInfo`` of ``SignedData`` over a ``TSTInfo``), as a
TSA returns it inside its ``TimeStampResp``. The CMS and ASN.1 work is done by rfc3161-client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lineage_ledger.core.note import note_signatures
from lineage_ledger.errors import InputError, SignatureError

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from rfc3161_client import TimeStampResponse

__all__ = [
    "TimestampCheck",
    "checkpoint_imprint",
    "checkpoint_signed_text",
    "load_tsa_anchors",
    "read_token",
    "verify_timestamp",
]

_GRANTED = b"\x30\x03\x02\x01\x00"
"""DER of PKIStatusInfo {status granted(0)}: a stored token is wrapped in a TimeStampResp to be checked."""


def checkpoint_signed_text(note: str) -> bytes:
    """The bytes of a checkpoint note that its log signature covers (the text, ending in a newline)."""
    text, _ = note_signatures(note)
    return text.encode("utf-8")


def checkpoint_imprint(note: str) -> bytes:
    """SHA-256 of :func:`checkpoint_signed_text`: the message imprint a timestamp of the checkpoint carries."""
    return hashlib.sha256(checkpoint_signed_text(note)).digest()


@dataclass(frozen=True, slots=True)
class TimestampCheck:
    """A token that verified: when the TSA says the checkpoint existed (``gen_time``, UTC), the token's serial
    number and the subject of the TSA certificate that signed it."""

    gen_time: datetime
    serial: int
    tsa: str

    def to_json(self) -> dict[str, Any]:
        """A plain dict: ``gen_time`` in RFC 3339, ``serial`` as a decimal string (it may exceed 2^53)."""
        return {
            "gen_time": self.gen_time.isoformat().replace("+00:00", "Z"),
            "serial": str(self.serial),
            "tsa": self.tsa,
        }


def load_tsa_anchors(path: str | Path) -> list[Certificate]:
    """The certificates of a PEM file (the TSA's certificate or the CA certificates its chain ends at).
    InputError naming the file if it cannot be read or holds no certificate."""
    from cryptography import x509

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InputError("tsa_cert", f"cannot read {path}: {e.strerror or e}") from e
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise InputError("tsa_cert", f"{path} holds no PEM certificate: {e}") from e
    return certificates


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def read_token(token: bytes) -> TimeStampResponse:
    """A token as a parsed granted ``TimeStampResp``; SignatureError if it is not a well-formed token."""
    from rfc3161_client import decode_timestamp_response

    body = _GRANTED + bytes(token)
    try:
        return decode_timestamp_response(b"\x30" + _der_length(len(body)) + body)
    except ValueError as e:
        raise SignatureError(f"the timestamp token is not a well-formed RFC 3161 TimeStampToken: {e}") from e


def verify_timestamp(token: bytes, note: str, anchors: Sequence[Certificate]) -> TimestampCheck:
    """Check that ``token`` is a TimeStampToken whose CMS signature chains to one of ``anchors``, by a
    certificate with the critical id-kp-timeStamping extended key usage, over the imprint of ``note``
    (:func:`checkpoint_imprint`, with SHA-256). Raises SignatureError naming what failed."""
    from rfc3161_client import VerificationError as TokenError
    from rfc3161_client import VerifierBuilder

    if not any(anchor.issuer == anchor.subject for anchor in anchors):
        raise InputError("tsa_cert", "no self-signed (root) certificate among the TSA trust anchors")
    response = read_token(token)
    builder = VerifierBuilder()
    for anchor in anchors:  # self-signed ones are roots; others may complete the chain to one
        if anchor.issuer == anchor.subject:
            builder = builder.add_root_certificate(anchor)
        else:
            builder = builder.add_intermediate_certificate(anchor)
    imprint = checkpoint_imprint(note)
    try:
        info = response.tst_info
        algorithm = info.message_imprint.hash_algorithm.dotted_string
        if algorithm != "2.16.840.1.101.3.4.2.1":
            raise SignatureError(f"the timestamp's message imprint uses {algorithm}, not SHA-256")
        if info.message_imprint.message != imprint:
            raise SignatureError("the timestamp is of another message: its imprint is not this checkpoint's")
        builder.build().verify(response, imprint)
    except (TokenError, ValueError) as e:
        raise SignatureError(f"the timestamp token does not verify under the given TSA certificate: {e}") from e
    return TimestampCheck(info.gen_time, info.serial_number, _signer_subject(response))


def _signer_subject(response: TimeStampResponse) -> str:
    from cryptography import x509

    infos = list(response.signed_data.signer_infos)
    for der in response.signed_data.certificates:
        certificate = x509.load_der_x509_certificate(der)
        if infos and certificate.issuer == infos[0].issuer and certificate.serial_number == infos[0].serial_number:
            return certificate.subject.rfc4514_string()
    return infos[0].issuer.rfc4514_string() if infos else ""
