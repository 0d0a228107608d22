"""Tests for lineage_ledger.core.routing: keys land on the partition Kafka's own partitioner picks."""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core.model import TokenEvent, read_event, subject_of
from lineage_ledger.core.routing import murmur2, partition_for, shard_of, subject_key
from lineage_ledger.errors import InputError
from tests.conftest import token_events

# Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2
# (https://github.com/apache/kafka/blob/trunk/clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java):
# cases.put("21".getBytes(), -973932308) ... the signed ints Utils.murmur2 returns.
KAFKA_UTILS_TEST: Final = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]
# librdkafka, src/rdmurmur2.c, unittest_murmur2 ("java_murmur2_results", as int32 bit patterns): they add the
# tail lengths Kafka's cases lack (1 and 3 trailing bytes) and the empty key.
LIBRDKAFKA_TEST: Final = [
    (b"kafka", 0xD067CF64),
    (b"giberish123456789", 0x8F552B0C),
    (b"1234", 0x9FC97B14),
    (b"234", 0xE7C009CA),
    (b"34", 0x873930DA),
    (b"4", 0x5A4B5CA1),
    (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 0x78424F1C),
    (b"reAmbleWillBeRemoved,ThePrePartThatIs", 0x4A62B377),
    (b"eAmbleWillBeRemoved,ThePrePartThatIs", 0xE0E4E09E),
    (b"AmbleWillBeRemoved,ThePrePartThatIs", 0x62B8B43F),
    (b"", 0x106E08D9),
]


class TestMurmur2:
    @pytest.mark.parametrize(("data", "expected"), KAFKA_UTILS_TEST)
    def test_kafka_vectors(self, data: bytes, expected: int) -> None:
        assert murmur2(data) == expected

    @pytest.mark.parametrize(("data", "bits"), LIBRDKAFKA_TEST)
    def test_librdkafka_vectors(self, data: bytes, bits: int) -> None:
        assert murmur2(data) & 0xFFFFFFFF == bits
        assert murmur2(data) == bits - (1 << 32) if bits >> 31 else bits

    @given(st.binary(max_size=64))
    def test_a_signed_32_bit_int(self, data: bytes) -> None:
        assert -(2**31) <= murmur2(data) < 2**31


class TestPartitionFor:
    def test_to_positive_not_abs(self) -> None:
        """Kafka's toPositive clears the sign bit: murmur2("foobar") = -790332482 -> 1357151166."""
        assert partition_for(b"foobar", 10) == 1357151166 % 10 == 6
        assert partition_for(b"foobar", 1000) == 166  # abs() would give 482

    @pytest.mark.parametrize(("data", "expected"), KAFKA_UTILS_TEST)
    def test_vectors(self, data: bytes, expected: int) -> None:
        for partitions in (1, 3, 12, 64):
            assert partition_for(data, partitions) == (expected & 0x7FFFFFFF) % partitions

    @given(st.binary(max_size=40), st.integers(1, 10_000))
    def test_in_range(self, key: bytes, partitions: int) -> None:
        assert 0 <= partition_for(key, partitions) < partitions

    @pytest.mark.parametrize("partitions", [0, -1])
    def test_no_partitions(self, partitions: int) -> None:
        with pytest.raises(InputError) as info:
            partition_for(b"k", partitions)
        assert info.value.field == "partitions"


FP: Final = "ab" * 32


class TestSubjectKey:
    @pytest.mark.parametrize(
        ("subject", "key"),
        [
            (f"token:{FP}", FP.encode()),
            (f"token:eu-1:{FP}", f"eu-1:{FP}".encode()),
            ("asset:s3://bucket/key", b"asset:s3://bucket/key"),
            ("policy:default", b"policy:default"),
            ("asset:caf\u00e9", "asset:caf\u00e9".encode()),
        ],
    )
    def test_keys(self, subject: str, key: bytes) -> None:
        assert subject_key(subject) == key

    def test_keyed_like_the_events_token_id(self) -> None:
        for data in token_events(5):
            event = read_event(data)
            assert isinstance(event, TokenEvent)
            assert subject_key(subject_of(event)) == event.token_id.encode()

    @pytest.mark.parametrize("subject", ["", "token:", "asset:", "user:x", "asset", "Token:ab", "asset:\ud800"])
    def test_refused(self, subject: str) -> None:
        with pytest.raises(InputError) as info:
            subject_key(subject)
        assert info.value.field == "subject"


class TestShardOf:
    @given(st.text(min_size=1, max_size=20), st.sampled_from([(12, 1), (12, 3), (12, 4), (12, 12), (64, 8)]))
    def test_follows_the_partition(self, name: str, sizes: tuple[int, int]) -> None:
        partitions, shards = sizes
        subject = f"asset:{name}"
        try:
            key = subject_key(subject)
        except InputError:
            return  # a lone surrogate
        shard = shard_of(subject, partitions, shards)
        assert shard == partition_for(key, partitions) % shards
        assert 0 <= shard < shards

    def test_a_token_follows_its_fingerprint(self) -> None:
        assert shard_of(f"token:{FP}", 12, 4) == partition_for(FP.encode(), 12) % 4

    @pytest.mark.parametrize(("partitions", "shards"), [(12, 5), (10, 4), (12, 0), (0, 1), (3, 6), (-4, 2)])
    def test_uneven_split_refused(self, partitions: int, shards: int) -> None:
        with pytest.raises(InputError) as info:
            shard_of("policy:p", partitions, shards)
        assert info.value.field == "shards"
