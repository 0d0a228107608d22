"""Which Kafka partition, and which ledger shard, a subject's events go to. Pure functions, no I/O.

A subject's events must stay in order, so they all travel under one message key and land on one partition:
Kafka's default partitioner picks ``toPositive(murmur2(key)) % numPartitions``, reproduced here bit for bit
(``murmur2`` is ``org.apache.kafka.common.utils.Utils.murmur2``), so a key lands where the Java client and
librdkafka's ``murmur2``/``murmur2_random`` partitioners put it (librdkafka's default, ``consistent_random``,
hashes with CRC32 instead: give the partition explicitly or set ``partitioner``). A shard owns the
partitions ``p`` with ``p % shards == shard``; with ``partitions`` a multiple of ``shards`` every shard owns
the same number of partitions, and a subject's shard follows from its partition.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping
from typing import Final

from lineage_ledger.errors import InputError

__all__ = ["local_tokens", "murmur2", "partition_for", "shard_of", "shard_test", "subject_key"]

_SEED: Final = 0x9747B28C
_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF
_SUBJECT_KINDS: Final = ("token:", "asset:", "policy:")


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit MurmurHash2 of ``data`` (seed 0x9747b28c), as the signed int Java returns."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for (word,) in struct.iter_unpack("<I", data[:whole]):
        k = (word * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a keyed record: ``(murmur2(key) & 0x7fffffff) % n``."""
    if partitions < 1:
        raise InputError("partitions", f"{partitions} partitions; a topic has at least one")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def subject_key(subject: str) -> bytes:
    """The Kafka message key of a ledger subject (model.subject_of).

    ``token:<fingerprint>`` is keyed by the fingerprint alone (as ``token_id`` appears in the events);
    ``asset:<id>`` and ``policy:<id>`` by the whole subject, so an asset and a policy with the same id do not
    share a key. UTF-8 bytes. InputError for anything else.
    """
    kind = next((k for k in _SUBJECT_KINDS if subject.startswith(k)), None)
    if kind is None or len(subject) == len(kind):
        raise InputError("subject", f"{subject[:80]!r} is not 'token:<id>', 'asset:<id>' or 'policy:<id>'")
    key = subject[len(kind) :] if kind == "token:" else subject
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError("subject", "holds a lone surrogate, which is not valid UTF-8") from e


def shard_of(subject: str, partitions: int, shards: int) -> int:
    """The shard that owns ``subject``: its partition modulo ``shards``.

    ``partitions`` must be a positive multiple of ``shards`` (InputError otherwise), so each partition, and
    with it each subject, belongs to exactly one shard and the shards own equal numbers of partitions.
    """
    if shards < 1 or partitions < 1 or partitions % shards:
        raise InputError(
            "shards", f"{partitions} partitions cannot be split evenly over {shards} shards; use a divisor"
        )
    return partition_for(subject_key(subject), partitions) % shards


def shard_test(meta: Mapping[str, str]) -> tuple[int, Callable[[str], int]] | None:
    """For the settings of one shard of a sharded ledger (``shard_index``, ``shard_count``,
    ``shard_partitions``): its index and the shard of any subject (cached: a subject's events come in runs);
    None for any other log."""
    if "shard_index" not in meta:
        return None
    shard, shards, partitions = int(meta["shard_index"]), int(meta["shard_count"]), int(meta["shard_partitions"])

    @functools.lru_cache(maxsize=1 << 18)
    def home(subject: str) -> int:
        return shard_of(subject, partitions, shards)

    return shard, home


def local_tokens(meta: Mapping[str, str]) -> Callable[[str], bool] | None:
    """For the settings of one shard (see ``shard_test``), a test of whether a token's events belong in that
    shard; None for any other log."""
    test = shard_test(meta)
    if test is None:
        return None
    shard, home = test

    def local(token_id: str) -> bool:
        return home("token:" + token_id) == shard

    return local
