"""Entries: the canonical JSON objects the Merkle log commits to, and the bytes of each kind.

Every entry has ``index`` (its position in the log), ``recorded_at`` (the ledger's HLC reading), ``prev``
(hex leaf hash of the previous entry of the same subject, 64 zeros for the first), ``type`` and ``v``.

* ``event``: the producer's event bytes unchanged under ``event``, plus ``producer``, ``key_id``,
  ``envelope`` (hex SHA-256 of the signed DSSE pre-authentication encoding) and ``position`` (the event's
  leaf in that batch), and ``verdict``: ``"ok"`` or the id of the lifecycle rule the event broke.
* ``seal``: closes a block; ``block`` is the block header (see BlockHeader).
* ``key``: a producer key registered or revoked (see KeyChange).
* ``apikey``: an API key of the HTTP service created, rotated or revoked (see ApiKeyChange).
* ``log_key``: the log's checkpoint signing key handed over to a new key (core.log_key).
* ``erasure``: a data subject's keys destroyed (see Erasure); the subject's personal fields are unreadable.
* ``archive``: a range of entries moved to an archive file, a retention policy set, or an archived range
  expired under that policy (see ArchiveChange and docs/archive.md).

Seals chain under the subject ``ledger:blocks``, key changes under ``producer:<id>``, API key changes under
``apikey:<key id>``, log key rotations under ``ledger:log-key``, erasures under ``erasure:<fingerprint>``,
archive records under ``ledger:archive``, so every chain in the ledger, not only the token chains, is
covered by the Merkle log.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Raw, Struct

from lineage_ledger.core.encoding import canonical_bytes
from lineage_ledger.core.hlc import HLC_PATTERN
from lineage_ledger.core.log_key import LOG_KEY_SUBJECT
from lineage_ledger.errors import InputError

__all__ = [
    "API_KEY_ID_PATTERN",
    "ARCHIVE_SUBJECT",
    "BLOCKS_SUBJECT",
    "ENTRY_VERSION",
    "KEY_ID_PATTERN",
    "PRODUCER_PATTERN",
    "UTC_TIME_PATTERN",
    "ZERO_HASH",
    "ApiKeyChange",
    "ApiKeyEntry",
    "ArchiveChange",
    "ArchiveEntry",
    "BlockHeader",
    "EntryView",
    "Erasure",
    "ErasureEntry",
    "EventEntry",
    "KeyChange",
    "KeyEntry",
    "LogKeyEntry",
    "SealEntry",
    "ShardEntry",
    "StoredEventEntry",
    "apikey_entry_bytes",
    "apikey_subject",
    "archive_entry_bytes",
    "decode_entry",
    "erasure_entry_bytes",
    "erasure_subject",
    "event_entry_bytes",
    "header_hash",
    "key_entry_bytes",
    "log_key_entry_bytes",
    "own_subject",
    "producer_subject",
    "read_event_entry",
    "seal_entry_bytes",
    "shard_entry_bytes",
    "shard_subject",
]

ENTRY_VERSION: Final = 1
ZERO_HASH: Final = bytes(32)
BLOCKS_SUBJECT: Final = "ledger:blocks"
ARCHIVE_SUBJECT: Final = "ledger:archive"
# Producer ids and key ids never need JSON escaping, so event entries can be assembled without an encoder.
# Patterns end in \Z, not $: in Python $ also matches before a trailing newline, which would need escaping.
PRODUCER_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,63}\Z"
KEY_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}\Z"
API_KEY_ID_PATTERN: Final = r"^[0-9a-f]{16}\Z"
"""The public id inside an API key ``llk_<id>_<secret>``."""
UTC_TIME_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z"
"""Wall-clock times of API keys: RFC 3339 UTC to the second, so text order is time order."""

Hex32 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
Hlc = Annotated[str, Meta(pattern=HLC_PATTERN)]
Index = Annotated[int, Meta(ge=0)]
ProducerId = Annotated[str, Meta(pattern=PRODUCER_PATTERN)]
KeyId = Annotated[str, Meta(pattern=KEY_ID_PATTERN)]
ApiKeyId = Annotated[str, Meta(pattern=API_KEY_ID_PATTERN)]
UtcTime = Annotated[str, Meta(pattern=UTC_TIME_PATTERN)]


def producer_subject(producer: str) -> str:
    """The chain of a producer's key changes."""
    return "producer:" + producer


def apikey_subject(key_id: str) -> str:
    """The chain of an API key's changes."""
    return "apikey:" + key_id


class BlockHeader(Struct, frozen=True, kw_only=True):
    """A sealed block: entries ``first``..``last`` and the RFC 9162 root over exactly their leaf hashes.

    ``prev_header`` is the SHA-256 of the previous block's canonical header (64 zeros for block 0), so the
    headers form a chain, and since each header sits in a seal entry, that chain is inside the tree.
    """

    number: Index
    first: Index
    last: Index
    root: Hex32
    prev_header: Hex32
    hlc_first: Hlc
    hlc_last: Hlc
    subjects_root: Hex32
    """Root of the subject map (ledger.completeness) after this block: every subject's chain head."""


class KeyChange(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A producer signing key registered (valid from ``valid_from``) or revoked (from ``revoked_at``)."""

    action: Literal["register", "revoke"]
    producer: ProducerId
    key_id: KeyId
    public_key: Hex32
    valid_from: Hlc
    valid_until: Hlc | None = None
    revoked_at: Hlc | None = None


class ApiKeyChange(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An API key of the HTTP service created, given a new secret, or revoked. Never holds a secret or its hash.

    ``expires_at`` is when the key stops working (None: never); on ``rotate``, ``previous_until`` is until when
    the replaced secret still works (the grace period). Times are UTC_TIME_PATTERN wall-clock times.
    """

    action: Literal["create", "rotate", "revoke"]
    key_id: ApiKeyId
    role: Literal["admin", "auditor", "producer"]
    producer: ProducerId | None = None
    expires_at: UtcTime | None = None
    previous_until: UtcTime | None = None


class ArchiveChange(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A change to where history lives (docs/archive.md), by ``action``:

    * ``policy``: the retention policy named ``policy`` is in force from now: entries stay hot ``hot_days``
      days, archive files count as warm for ``archive_days`` days, and entries are kept ``keep_days`` days.
    * ``archive``: entries ``first`` .. ``last`` (whole sealed blocks) are in the archive file ``file`` (its
      path under the archive location) of ``bytes`` bytes whose SHA-256 is ``sha256``; ``root`` is the
      RFC 9162 root over exactly those entries' leaf hashes, checked against the file before it was recorded.
    * ``expire``: the archived entries ``first`` .. ``last`` of ``file`` are past retention under the policy
      ``policy`` recorded at index ``policy_index``, and their file may be deleted.
    """

    action: Literal["policy", "archive", "expire"]
    policy: str | None = None
    policy_index: Index | None = None
    hot_days: Index | None = None
    archive_days: Index | None = None
    keep_days: Index | None = None
    first: Index | None = None
    last: Index | None = None
    file: str | None = None
    bytes: Index | None = None
    sha256: Hex32 | None = None
    root: Hex32 | None = None


class EventEntry(Struct, frozen=True, kw_only=True, tag_field="type", tag="event"):
    """Typed view of an event entry; ``event`` is the producer's bytes, exactly as committed."""

    envelope: Hex32
    event: Raw
    index: Index
    key_id: str
    position: Index
    prev: Hex32
    producer: str
    recorded_at: Hlc
    v: int
    verdict: str


class SealEntry(Struct, frozen=True, kw_only=True, tag_field="type", tag="seal"):
    """Typed view of a seal entry."""

    block: BlockHeader
    index: Index
    prev: Hex32
    recorded_at: Hlc
    v: int


class KeyEntry(Struct, frozen=True, kw_only=True, tag_field="type", tag="key"):
    """Typed view of a key-change entry."""

    change: KeyChange
    index: Index
    prev: Hex32
    recorded_at: Hlc
    v: int


class ShardEntry(Struct, frozen=True, kw_only=True, tag_field="type", tag="shard"):
    """Typed view of a root-log entry: a shard log's signed checkpoint, recorded in the root log.

    ``checkpoint`` is the shard's C2SP signed note, exactly as the shard signed it; the root log's own
    checkpoints therefore commit to every shard's state. Subject ``shard:<shard>``.
    """

    checkpoint: str
    index: Index
    prev: Hex32
    recorded_at: Hlc
    shard: Index
    v: int


def shard_subject(shard: int) -> str:
    """The chain of a shard's checkpoints in a root log."""
    return f"shard:{shard}"


class ApiKeyEntry(Struct, frozen=True, kw_only=True, tag_field="type", tag="apikey"):
    """Typed view of an API key change entry (subject ``apikey:<key id>``)."""

    change: ApiKeyChange
    index: Index
    prev: Hex32
    recorded_at: Hlc
    v: int


class LogKeyEntry(Struct, frozen=True, kw_only=True, tag_field="type", tag="log_key"):
    """Typed view of a log key rotation entry (subject ``ledger:log-key``); ``rotation`` is the signed note
    core.log_key describes, exactly as signed."""

    index: Index
    prev: Hex32
    recorded_at: Hlc
    rotation: str
    v: int


class Erasure(Struct, frozen=True, kw_only=True):
    """A data subject erased: the keyed fingerprint of the subject (never its identity), the ids of the subject
    keys destroyed, how many entries hold personal fields sealed under them, and why."""

    count: Index
    fingerprint: Hex32
    kids: tuple[Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z")], ...]
    reason: Annotated[str, Meta(min_length=1, max_length=1024)]


class ErasureEntry(Struct, frozen=True, kw_only=True, tag_field="type", tag="erasure"):
    """Typed view of an erasure entry (subject ``erasure:<fingerprint>``)."""

    erasure: Erasure
    index: Index
    prev: Hex32
    recorded_at: Hlc
    v: int


class ArchiveEntry(Struct, frozen=True, kw_only=True, tag_field="type", tag="archive"):
    """Typed view of an archive record (subject ``ledger:archive``)."""

    change: ArchiveChange
    index: Index
    prev: Hex32
    recorded_at: Hlc
    v: int


def erasure_subject(fingerprint: str) -> str:
    """The chain of a data subject's erasures."""
    return "erasure:" + fingerprint


def own_subject(
    entry: KeyEntry | ShardEntry | ApiKeyEntry | LogKeyEntry | ErasureEntry | ArchiveEntry,
) -> tuple[str, str]:
    """What kind of record ``entry`` is, and the subject whose chain it belongs to (as its bytes say)."""
    if isinstance(entry, ErasureEntry):
        return "erasure", erasure_subject(entry.erasure.fingerprint)
    if isinstance(entry, KeyEntry):
        return "key", producer_subject(entry.change.producer)
    if isinstance(entry, ShardEntry):
        return "shard", shard_subject(entry.shard)
    if isinstance(entry, ApiKeyEntry):
        return "apikey", apikey_subject(entry.change.key_id)
    if isinstance(entry, ArchiveEntry):
        return "archive", ARCHIVE_SUBJECT
    return "log_key", LOG_KEY_SUBJECT


EntryView = EventEntry | SealEntry | KeyEntry | ShardEntry | ApiKeyEntry | LogKeyEntry | ErasureEntry | ArchiveEntry
_DECODER = msgspec.json.Decoder(EntryView)


class StoredEventEntry(Struct, frozen=True, kw_only=True):
    """The fields queries read from an event entry the ledger wrote (decoded without pattern checks)."""

    event: Raw
    index: int
    producer: str
    recorded_at: str
    verdict: str


_STORED = msgspec.json.Decoder(StoredEventEntry)


def read_event_entry(data: bytes) -> StoredEventEntry | None:
    """A stored event entry's fields for reading, or None for a seal or key entry.

    For bytes the ledger itself wrote (or that verification checked): skips decode_entry's pattern checks.
    """
    if not data.startswith(b'{"envelope":'):
        return None
    try:
        entry: StoredEventEntry = _STORED.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise InputError("entry", str(e)) from e
    return entry


def decode_entry(data: bytes) -> EntryView:
    """Parse an entry's bytes into its typed view (InputError if they are not an entry)."""
    try:
        entry: EntryView = _DECODER.decode(data)
        return entry
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise InputError("entry", str(e)) from e


def event_entry_bytes(
    *,
    index: int,
    recorded_at: str,
    prev: bytes,
    producer: str,
    key_id: str,
    envelope: bytes,
    position: int,
    verdict: str,
    event: bytes,
) -> bytes:
    """The canonical bytes of an event entry.

    Assembled directly because it is on the ingest hot path; ``event`` must already be canonical and
    ``producer``, ``key_id`` and ``verdict`` must match their patterns (they need no escaping). A property
    test checks the output equals canonical_bytes of the same object.
    """
    return b"".join(
        (
            b'{"envelope":"',
            envelope.hex().encode(),
            b'","event":',
            event,
            b',"index":',
            str(index).encode(),
            b',"key_id":"',
            key_id.encode(),
            b'","position":',
            str(position).encode(),
            b',"prev":"',
            prev.hex().encode(),
            b'","producer":"',
            producer.encode(),
            b'","recorded_at":"',
            recorded_at.encode(),
            b'","type":"event","v":1,"verdict":"',
            verdict.encode(),
            b'"}',
        )
    )


def seal_entry_bytes(*, index: int, recorded_at: str, prev: bytes, header: BlockHeader) -> bytes:
    """The canonical bytes of a seal entry."""
    return canonical_bytes(
        {
            "block": msgspec.to_builtins(header),
            "index": index,
            "prev": prev.hex(),
            "recorded_at": recorded_at,
            "type": "seal",
            "v": ENTRY_VERSION,
        }
    )


def key_entry_bytes(*, index: int, recorded_at: str, prev: bytes, change: KeyChange) -> bytes:
    """The canonical bytes of a key-change entry."""
    return canonical_bytes(
        {
            "change": msgspec.to_builtins(change),
            "index": index,
            "prev": prev.hex(),
            "recorded_at": recorded_at,
            "type": "key",
            "v": ENTRY_VERSION,
        }
    )


def shard_entry_bytes(*, index: int, recorded_at: str, prev: bytes, shard: int, checkpoint: str) -> bytes:
    """The canonical bytes of a root-log entry recording a shard's signed checkpoint."""
    return canonical_bytes(
        {
            "checkpoint": checkpoint,
            "index": index,
            "prev": prev.hex(),
            "recorded_at": recorded_at,
            "shard": shard,
            "type": "shard",
            "v": ENTRY_VERSION,
        }
    )


def header_hash(header: BlockHeader) -> bytes:
    """SHA-256 of the header's canonical bytes: what the next block's ``prev_header`` names."""
    return hashlib.sha256(canonical_bytes(msgspec.to_builtins(header))).digest()


def apikey_entry_bytes(*, index: int, recorded_at: str, prev: bytes, change: ApiKeyChange) -> bytes:
    """The canonical bytes of an API key change entry."""
    return canonical_bytes(
        {
            "change": msgspec.to_builtins(change),
            "index": index,
            "prev": prev.hex(),
            "recorded_at": recorded_at,
            "type": "apikey",
            "v": ENTRY_VERSION,
        }
    )


def log_key_entry_bytes(*, index: int, recorded_at: str, prev: bytes, rotation: str) -> bytes:
    """The canonical bytes of a log key rotation entry."""
    return canonical_bytes(
        {
            "index": index,
            "prev": prev.hex(),
            "recorded_at": recorded_at,
            "rotation": rotation,
            "type": "log_key",
            "v": ENTRY_VERSION,
        }
    )


def erasure_entry_bytes(*, index: int, recorded_at: str, prev: bytes, erasure: Erasure) -> bytes:
    """The canonical bytes of an erasure entry."""
    return canonical_bytes(
        {
            "erasure": msgspec.to_builtins(erasure),
            "index": index,
            "prev": prev.hex(),
            "recorded_at": recorded_at,
            "type": "erasure",
            "v": ENTRY_VERSION,
        }
    )


def archive_entry_bytes(*, index: int, recorded_at: str, prev: bytes, change: ArchiveChange) -> bytes:
    """The canonical bytes of an archive record."""
    return canonical_bytes(
        {
            "change": msgspec.to_builtins(change),
            "index": index,
            "prev": prev.hex(),
            "recorded_at": recorded_at,
            "type": "archive",
            "v": ENTRY_VERSION,
        }
    )
