"""The compact form of stored entries (SQLite's store layout 2): bodies that give back the exact bytes.

An entry's canonical bytes are the log; the store keeps them in a smaller form and rebuilds them on every
read, byte for byte, so the leaf hash recomputed from what a read returns is the check that the rebuild is
right (``lineage verify`` recomputes every leaf, and every checkpoint covers the leaves).

What the compact form leaves out is what other columns already hold. An event entry (core.entry) repeats
its envelope's digest, producer and key id (the envelope row has them), its own index, prev hash and
verdict (columns of the entry row) and, inside the producer's event, its event id and subject id (the
event_id column, the subject table). The rest (the event's position, the HLC reading, the event with those
two values replaced by the bytes 0x01 and 0x02, which canonical JSON never holds unescaped) is compressed
with zstd under a dictionary trained on the ledger's own entries and stored in the ledger.

The stored body's first byte says which form it is in:

* ``{``: the canonical bytes as they are;
* 0x00: the compact form, not compressed (before a dictionary exists);
* 0x01, then the dictionary id (one byte): the compact form, compressed with that dictionary;
* 0x02: the canonical bytes as they are (a body that does not start with ``{``).

Signed promises (one per write, a few hundred bytes of base64 and hex) are compressed the same way under
a dictionary of their own (ids from 128), trained on the ledger's first promises; the first byte is ``{``
(as they are), 0x02 (as they are, not starting with ``{``) or 0x01 and the dictionary id.

Each body is written in its compact form only when it is a JSON object that the form gives back exactly
(checked field by field against the columns it is rebuilt from); any other body is stored as it is.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from typing import Final

import zstandard

from lineage_ledger.core.entry import ZERO_HASH, event_entry_bytes

__all__ = [
    "PROMISE_DICTIONARY",
    "PROMISE_DICTIONARY_BYTES",
    "BodyCodec",
    "Envelope",
    "event_id_key",
    "event_id_text",
    "train_dictionary",
]

Envelope = tuple[bytes, str, str]
"""An envelope as an event entry names it: digest, producer, key id."""

_PLAIN: Final = 0x00
_PACKED: Final = 0x01
_VERBATIM: Final = 0x02
_EVENT_HEAD: Final = b'{"envelope":"'
_EVENT_AT: Final = len(_EVENT_HEAD) + 64 + len(b'","event":')
_EVENT_ID_MARK: Final = b"\x01"
_SUBJECT_MARK: Final = b"\x02"
_LEVEL: Final = 1
"""zstd level: measured on the demo workload, 68 bytes per entry at levels 1, 3 and 9; 3 takes a fifth
longer than 1, 9 five times as long."""
DICTIONARY_BYTES: Final = 16384
PROMISE_DICTIONARY: Final = 128
"""The id of the first dictionary for signed promises (those of bodies are 1 to 127)."""
PROMISE_DICTIONARY_BYTES: Final = 4096
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def event_id_key(event_id: str | None) -> bytes | str | None:
    """How an event id is stored: the 16 bytes of a UUID written in its canonical lowercase form, else the
    text itself (``event_id_text`` gives the text back)."""
    if event_id is not None and len(event_id) == 36 and _UUID.match(event_id):
        return bytes.fromhex(event_id.replace("-", ""))
    return event_id


def event_id_text(stored: object) -> str | None:
    """The event id a stored value (``event_id_key``) stands for."""
    if stored is None or isinstance(stored, str):
        return stored
    if isinstance(stored, bytes) and len(stored) == 16:
        h = stored.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return f"#{stored!r}"  # not a value the store writes: shown as it is, so verify reports it


def _subject_id(subject: str) -> bytes | None:
    """The part of a subject that its entries' events repeat (the token, asset or policy id)."""
    _, sep, rest = subject.partition(":")
    return rest.encode() if sep and len(rest) >= 8 else None


def train_dictionary(samples: Sequence[bytes], size: int = DICTIONARY_BYTES) -> bytes | None:
    """A zstd dictionary of ``size`` bytes trained on ``samples``, as it is stored (followed by the CRC-32 of
    its bytes), or None when they cannot train one."""
    try:
        data = bytes(zstandard.train_dictionary(size, list(samples)).as_bytes())
        return data + zlib.crc32(data).to_bytes(4, "big")
    except zstandard.ZstdError:
        return None


class BodyCodec:
    """Encodes entry bodies (and signed promises) to their stored form and back (see the module docstring).
    Holds the ledger's dictionaries: ids below PROMISE_DICTIONARY are the bodies', the others the promises'.
    Not thread-safe for encoding (the one writer encodes), safe for decoding."""

    def __init__(self, load: Callable[[int], bytes | None] | None = None) -> None:
        self._compress: tuple[int, zstandard.ZstdCompressor] | None = None
        self._promises: tuple[int, zstandard.ZstdCompressor] | None = None
        self._decompress: dict[int, zstandard.ZstdDecompressor] = {}
        self._load = load
        """Reads a stored dictionary by id: one stored after this codec was made is loaded on first use."""

    @property
    def trained(self) -> bool:
        """Whether bodies are compressed (a dictionary is in use for writing)."""
        return self._compress is not None

    @property
    def promises_trained(self) -> bool:
        """Whether promises are compressed (a dictionary is in use for writing them)."""
        return self._promises is not None

    def add_dictionary(self, dict_id: int, stored: bytes, *, for_writing: bool = True) -> None:
        """Use a stored dictionary (as train_dictionary returns it): for reading, and for writing if it is the
        newest. A dictionary whose bytes do not match their CRC-32 is not used: what it compressed does not
        decode, even where the changed bytes are ones no body refers to, so verify reports any change."""
        data, crc = stored[:-4], stored[-4:]
        if not 0 < dict_id < 256 or zlib.crc32(data).to_bytes(4, "big") != crc:
            return  # not written by this store: bodies naming it fail to decode and verify reports them
        try:
            d = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
            self._decompress[dict_id] = zstandard.ZstdDecompressor(dict_data=d)
            if for_writing:
                c = zstandard.ZstdCompressor(level=_LEVEL, dict_data=d, write_checksum=False, write_dict_id=False)
                if dict_id >= PROMISE_DICTIONARY:
                    if self._promises is None or dict_id > self._promises[0]:
                        self._promises = (dict_id, c)
                elif self._compress is None or dict_id > self._compress[0]:
                    self._compress = (dict_id, c)
        except zstandard.ZstdError:
            self._decompress.pop(dict_id, None)  # damaged: bodies naming it fail to decode

    def drop_dictionary(self, dict_id: int) -> None:
        """Stop using a dictionary (one added for a write that was not committed)."""
        self._decompress.pop(dict_id, None)
        if self._compress is not None and self._compress[0] == dict_id:
            self._compress = None
        if self._promises is not None and self._promises[0] == dict_id:
            self._promises = None

    def encode_promise(self, promise: bytes) -> bytes:
        """The stored form of a signed promise: compressed once a promise dictionary is in use."""
        if promise[:1] != b"{":
            return bytes([_VERBATIM]) + promise
        if self._promises is None:
            return promise
        dict_id, compressor = self._promises
        return bytes([_PACKED, dict_id]) + compressor.compress(promise)

    def decode_promise(self, stored: bytes) -> bytes:
        """The promise a stored form stands for (a damaged one comes back as stored: verify rejects it)."""
        head = stored[:1]
        if head == bytes([_VERBATIM]):
            return stored[1:]
        if head != bytes([_PACKED]) or len(stored) < 3:
            return stored
        decompressor = self._decompressor(stored[1])
        if decompressor is None:
            return stored
        try:
            return bytes(decompressor.decompress(stored[2:]))
        except zstandard.ZstdError:
            return stored

    def _decompressor(self, dict_id: int) -> zstandard.ZstdDecompressor | None:
        found = self._decompress.get(dict_id)
        if found is None and self._load is not None:
            data = self._load(dict_id)
            if data is not None:
                self.add_dictionary(dict_id, data, for_writing=False)
                found = self._decompress.get(dict_id)
        return found

    def compact(
        self,
        body: bytes,
        index: int,
        subject: str,
        event_id: str | None,
        prev: bytes,
        verdict: str,
        env: Envelope | None,
    ) -> bytes | None:
        """The compact form of an entry body (not yet compressed), or None if it has none."""
        if body[:1] != b"{":
            return None  # not an entry's canonical JSON: kept as it is
        if body.startswith(_EVENT_HEAD) and env is not None:
            # the body must be exactly what event_entry_bytes writes from the form and these columns
            digest, producer, key_id = env
            at = body.rfind(b',"index":')
            head = b',"index":%d,"key_id":"%s","position":' % (index, key_id.encode())
            if at <= _EVENT_AT or not body.startswith(head, at):
                return None
            comma = body.find(b",", at + len(head))
            position = body[at + len(head) : comma]
            middle = b',"prev":"%s","producer":"%s","recorded_at":"' % (prev.hex().encode(), producer.encode())
            end = b'","type":"event","v":1,"verdict":"%s"}' % verdict.encode()
            recorded_at = body[comma + len(middle) : len(body) - len(end)]
            event = body[_EVENT_AT:at]
            if (
                not position.isdigit()
                or (position[:1] == b"0" and position != b"0")
                or not body.startswith(middle, comma)
                or not body.endswith(end)
                or comma + len(middle) > len(body) - len(end)
                or recorded_at.strip(b"0123456789.")
                or body[13:_EVENT_AT] != digest.hex().encode() + b'","event":'
                or _EVENT_ID_MARK in event
                or _SUBJECT_MARK in event
            ):
                return None  # not as event_entry_bytes writes it with these columns: kept as it is
            if event_id is not None and len(event_id) >= 8:
                event = event.replace(event_id.encode(), _EVENT_ID_MARK)
            own = _subject_id(subject)
            if own is not None:
                event = event.replace(own, _SUBJECT_MARK)
            return b"E" + position + b"," + recorded_at + b"," + event
        return b"O" + body

    def _rebuild(
        self,
        compact: bytes,
        index: int,
        subject: str,
        event_id: str | None,
        prev: bytes,
        verdict: str,
        env: Envelope | None,
    ) -> bytes:
        if compact[:1] == b"O":
            return compact[1:]
        if compact[:1] != b"E" or env is None:
            raise ValueError("not a compact entry")
        position, recorded_at, event = compact[1:].split(b",", 2)
        if event_id is not None:
            event = event.replace(_EVENT_ID_MARK, event_id.encode())
        own = _subject_id(subject)
        if own is not None:
            event = event.replace(_SUBJECT_MARK, own)
        digest, producer, key_id = env
        return event_entry_bytes(
            index=index,
            recorded_at=recorded_at.decode(),
            prev=prev,
            producer=producer,
            key_id=key_id,
            envelope=digest,
            position=int(position),
            verdict=verdict,
            event=event,
        )

    def encode(
        self,
        body: bytes,
        index: int,
        subject: str,
        event_id: str | None,
        prev: bytes,
        verdict: str,
        env: Envelope | None,
    ) -> tuple[bytes, bytes | None]:
        """The stored form of ``body``, and its compact form (a sample for training) if it has one."""
        # compact() takes only a body that event_entry_bytes (or, for other entries, the body itself) gives back
        # from that form and these columns, field by field; tests rebuild every form and compare the bytes
        compact = self.compact(body, index, subject, event_id, prev, verdict, env)
        if compact is None:
            return (body if body[:1] == b"{" else bytes([_VERBATIM]) + body), None
        if self._compress is None:
            return bytes([_PLAIN]) + compact, compact
        dict_id, compressor = self._compress
        return bytes([_PACKED, dict_id]) + compressor.compress(compact), compact

    def decode(
        self,
        stored: bytes,
        index: int,
        subject: str,
        event_id: str | None,
        prev: bytes | None,
        verdict: str,
        env: Envelope | None,
    ) -> bytes:
        """The canonical bytes a stored body stands for. A body that cannot be rebuilt (a damaged row or
        dictionary) comes back as the stored bytes, which verify then finds do not hash to the leaf."""
        head = stored[:1]
        if head == b"{":
            return stored
        try:
            if head == bytes([_VERBATIM]):
                return stored[1:]
            if head == bytes([_PLAIN]):
                compact = stored[1:]
            elif head == bytes([_PACKED]) and len(stored) > 2:
                decompressor = self._decompressor(stored[1])
                if decompressor is None:
                    return stored
                compact = decompressor.decompress(stored[2:])
            else:
                return stored
            return self._rebuild(compact, index, subject, event_id, prev or ZERO_HASH, verdict, env)
        except (ValueError, UnicodeDecodeError, zstandard.ZstdError):
            return stored
