"""Tests for lineage_ledger.core.entry: entry bytes are the canonical JSON of the entry object, and read back."""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec
import pytest
import rfc8785
from hypothesis import assume, example, given
from hypothesis import strategies as st

from lineage_ledger.core.encoding import MAX_SAFE_INTEGER, canonical_bytes
from lineage_ledger.core.entry import (
    BLOCKS_SUBJECT,
    KEY_ID_PATTERN,
    PRODUCER_PATTERN,
    ZERO_HASH,
    BlockHeader,
    EventEntry,
    KeyChange,
    KeyEntry,
    SealEntry,
    decode_entry,
    event_entry_bytes,
    header_hash,
    key_entry_bytes,
    producer_subject,
    seal_entry_bytes,
)
from lineage_ledger.core.hlc import format_reading
from lineage_ledger.core.lifecycle import RULES
from lineage_ledger.errors import InputError

HLC_A: Final = "1763891234123456789.00002"
HLC_B: Final = "1763891234999999999.00000"

_CHARS = st.characters(codec="utf-8")
_KEYS = st.text(st.one_of(_CHARS, st.sampled_from(["\ue000", "\uffff", "\U0001f600", "\U00010000"])), max_size=5)
_INTS = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | _INTS | st.text(_CHARS, max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=15,
)
EVENT_OBJECTS = st.dictionaries(_KEYS, _JSON, max_size=6)
INDICES = st.integers(0, MAX_SAFE_INTEGER)
HASHES = st.binary(min_size=32, max_size=32)
HLCS = st.builds(format_reading, st.integers(0, 10**19 - 1), st.integers(0, 99_999))
VERDICTS = st.sampled_from(["ok", *RULES])
# Exactly what the patterns admit under Python's re.match/re.search, which is how the code checks them.
PRODUCERS = st.from_regex(PRODUCER_PATTERN)
KEY_IDS = st.from_regex(KEY_ID_PATTERN)
HEX32 = HASHES.map(bytes.hex)

HEADERS = st.builds(
    BlockHeader,
    number=INDICES,
    first=INDICES,
    last=INDICES,
    root=HEX32,
    prev_header=HEX32,
    hlc_first=HLCS,
    hlc_last=HLCS,
    subjects_root=HEX32,
)


def _header(**changes: Any) -> BlockHeader:
    fields: dict[str, Any] = {
        "number": 3,
        "first": 100,
        "last": 199,
        "root": "11" * 32,
        "prev_header": "22" * 32,
        "hlc_first": HLC_A,
        "hlc_last": HLC_B,
        "subjects_root": "33" * 32,
    }
    fields.update(changes)
    return BlockHeader(**fields)


class TestEventEntry:
    @given(
        index=INDICES,
        recorded_at=HLCS,
        prev=HASHES,
        producer=PRODUCERS,
        key_id=KEY_IDS,
        envelope=HASHES,
        position=st.integers(0, 9_999),
        verdict=VERDICTS,
        event=EVENT_OBJECTS,
    )
    @example(
        index=0,
        recorded_at=HLC_A,
        prev=ZERO_HASH,
        producer="a",
        key_id="A",
        envelope=bytes(range(32)),
        position=0,
        verdict="ok",
        event={"\ue000": 1, "\U0001f600": {"\uffff": [], "\U00010000": None}, "type": "shadow", "v": 9},
    )
    def test_bytes_are_canonical_and_read_back(
        self,
        index: int,
        recorded_at: str,
        prev: bytes,
        producer: str,
        key_id: str,
        envelope: bytes,
        position: int,
        verdict: str,
        event: dict[str, Any],
    ) -> None:
        event_bytes = rfc8785.dumps(event)
        data = event_entry_bytes(
            index=index,
            recorded_at=recorded_at,
            prev=prev,
            producer=producer,
            key_id=key_id,
            envelope=envelope,
            position=position,
            verdict=verdict,
            event=event_bytes,
        )
        expected: dict[str, Any] = {
            "envelope": envelope.hex(),
            "event": event,
            "index": index,
            "key_id": key_id,
            "position": position,
            "prev": prev.hex(),
            "producer": producer,
            "recorded_at": recorded_at,
            "type": "event",
            "v": 1,
            "verdict": verdict,
        }
        assert data == rfc8785.dumps(expected)
        assert data == canonical_bytes(expected)

        entry = decode_entry(data)
        assert isinstance(entry, EventEntry)
        assert bytes(entry.event) == event_bytes
        assert entry.index == index
        assert entry.recorded_at == recorded_at
        assert entry.prev == prev.hex()
        assert entry.producer == producer
        assert entry.key_id == key_id
        assert entry.envelope == envelope.hex()
        assert entry.position == position
        assert entry.verdict == verdict
        assert entry.v == 1

    def test_first_prev_is_64_zeros(self) -> None:
        assert ZERO_HASH.hex() == "0" * 64  # docs/formats.md, "Event entry"


class TestSealEntry:
    @given(index=INDICES, recorded_at=HLCS, prev=HASHES, header=HEADERS)
    def test_round_trip(self, index: int, recorded_at: str, prev: bytes, header: BlockHeader) -> None:
        data = seal_entry_bytes(index=index, recorded_at=recorded_at, prev=prev, header=header)
        expected: dict[str, Any] = {
            "block": {
                "first": header.first,
                "hlc_first": header.hlc_first,
                "hlc_last": header.hlc_last,
                "last": header.last,
                "number": header.number,
                "prev_header": header.prev_header,
                "root": header.root,
                "subjects_root": header.subjects_root,
            },
            "index": index,
            "prev": prev.hex(),
            "recorded_at": recorded_at,
            "type": "seal",
            "v": 1,
        }
        assert data == rfc8785.dumps(expected)
        entry = decode_entry(data)
        assert entry == SealEntry(block=header, index=index, prev=prev.hex(), recorded_at=recorded_at, v=1)


class TestKeyEntry:
    @pytest.mark.parametrize(
        "change",
        [
            KeyChange(
                action="register", producer="auth-svc", key_id="auth-2025", public_key="ab" * 32, valid_from=HLC_A
            ),
            KeyChange(
                action="register",
                producer="auth-svc",
                key_id="auth:2026+b",
                public_key="cd" * 32,
                valid_from=HLC_A,
                valid_until=HLC_B,
            ),
            KeyChange(
                action="revoke",
                producer="auth-svc",
                key_id="auth-2025",
                public_key="ab" * 32,
                valid_from=HLC_A,
                revoked_at=HLC_B,
            ),
        ],
    )
    def test_round_trip(self, change: KeyChange) -> None:
        prev = hashlib.sha256(b"previous key entry").digest()
        data = key_entry_bytes(index=42, recorded_at=HLC_B, prev=prev, change=change)
        change_object = {
            name: value
            for name, value in {
                "action": change.action,
                "producer": change.producer,
                "key_id": change.key_id,
                "public_key": change.public_key,
                "valid_from": change.valid_from,
                "valid_until": change.valid_until,
                "revoked_at": change.revoked_at,
            }.items()
            if value is not None
        }
        expected: dict[str, Any] = {
            "change": change_object,
            "index": 42,
            "prev": prev.hex(),
            "recorded_at": HLC_B,
            "type": "key",
            "v": 1,
        }
        assert data == rfc8785.dumps(expected)
        entry = decode_entry(data)
        assert entry == KeyEntry(change=change, index=42, prev=prev.hex(), recorded_at=HLC_B, v=1)

    def test_subjects(self) -> None:
        assert producer_subject("auth-svc") == "producer:auth-svc"
        assert BLOCKS_SUBJECT == "ledger:blocks"


class TestHeaderHash:
    @given(HEADERS)
    def test_is_sha256_of_the_canonical_header(self, header: BlockHeader) -> None:
        expected = hashlib.sha256(rfc8785.dumps(msgspec.to_builtins(header))).digest()
        assert header_hash(header) == expected

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("number", 4),
            ("first", 101),
            ("last", 198),
            ("root", "12" * 32),
            ("prev_header", "23" * 32),
            ("hlc_first", "1763891234123456789.00003"),
            ("hlc_last", "1763891234999999998.00000"),
            ("subjects_root", "34" * 32),
        ],
    )
    def test_changes_when_any_field_changes(self, field: str, value: Any) -> None:
        assert header_hash(_header(**{field: value})) != header_hash(_header())

    def test_every_field_is_covered(self) -> None:
        assert set(BlockHeader.__struct_fields__) == {
            "number",
            "first",
            "last",
            "root",
            "prev_header",
            "hlc_first",
            "hlc_last",
            "subjects_root",
        }

    @given(HEADERS, HEADERS)
    def test_distinct_headers_have_distinct_hashes(self, a: BlockHeader, b: BlockHeader) -> None:
        assume(a != b)
        assert header_hash(a) != header_hash(b)


class TestDecodeEntryRejects:
    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\xff",
            b"{}",
            b"[]",
            b'{"type":"nope"}',
            b'{"type":"seal"}',
            rfc8785.dumps({"change": {}, "index": 0, "prev": "00" * 32, "recorded_at": HLC_A, "type": "key", "v": 1}),
            rfc8785.dumps(
                {
                    "block": msgspec.to_builtins(_header()),
                    "index": -1,
                    "prev": "00" * 32,
                    "recorded_at": HLC_A,
                    "type": "seal",
                    "v": 1,
                }
            ),
            rfc8785.dumps(
                {
                    "block": msgspec.to_builtins(_header()),
                    "index": 0,
                    "prev": "00" * 32 + "\n",
                    "recorded_at": HLC_A,
                    "type": "seal",
                    "v": 1,
                }
            ),
            rfc8785.dumps(
                {
                    "block": msgspec.to_builtins(_header(root="AB" * 32)),
                    "index": 0,
                    "prev": "00" * 32,
                    "recorded_at": HLC_A,
                    "type": "seal",
                    "v": 1,
                }
            ),
            rfc8785.dumps(
                {
                    "block": msgspec.to_builtins(_header()),
                    "index": 0,
                    "prev": "00" * 32,
                    "recorded_at": HLC_A + "\n",
                    "type": "seal",
                    "v": 1,
                }
            ),
            rfc8785.dumps(
                {
                    "change": {
                        "action": "register",
                        "producer": "auth-svc\n",
                        "key_id": "k",
                        "public_key": "ab" * 32,
                        "valid_from": HLC_A,
                    },
                    "index": 0,
                    "prev": "00" * 32,
                    "recorded_at": HLC_A,
                    "type": "key",
                    "v": 1,
                }
            ),
        ],
    )
    def test_not_an_entry(self, data: bytes) -> None:
        with pytest.raises(InputError) as info:
            decode_entry(data)
        assert info.value.field == "entry"
