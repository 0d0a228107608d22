"""The spool: records come back in order, commits survive reopening, torn tails are cut, nothing is shared.

Torn tails are made the way SIGKILL makes them: a file cut at every byte of its last record, or extended by
zeros (what a filesystem can show after losing a write's data but not its size).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage_ledger.emitter.spool import DeadLetter, DiskSpool, MemorySpool
from lineage_ledger.emitter.spool_records import encode_records
from lineage_ledger.errors import StoreError

RECORDS = [f'{{"n":{i},"pad":"{"x" * (i % 7)}"}}'.encode() for i in range(20)]


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def _read_all(spool: DiskSpool | MemorySpool, start: int | None = None) -> list[bytes]:
    out: list[bytes] = []
    position = spool.committed if start is None else start
    while (batch := spool.read(position, 3, 1 << 20)) is not None:
        assert batch.start == position
        out.extend(batch.records)
        position = batch.end
    assert position == spool.end
    return out


def test_records_come_back_in_order_and_commits_survive_reopening(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    ends = [spool.append(RECORDS[i : i + 5]) for i in range(0, 20, 5)]
    assert spool.pending == 20
    assert _read_all(spool) == RECORDS
    spool.commit(ends[1], 10)
    assert (spool.committed, spool.pending) == (ends[1], 10)
    spool.close()
    reopened = DiskSpool(tmp_path)
    assert (reopened.committed, reopened.pending, reopened.end) == (ends[1], 10, ends[-1])
    assert _read_all(reopened) == RECORDS[10:]
    reopened.commit(ends[0], 5)  # an older position changes nothing
    assert reopened.committed == ends[1]
    reopened.close()


def test_read_respects_the_record_and_byte_limits(tmp_path: Path) -> None:
    with_limits = DiskSpool(tmp_path)
    with_limits.append(RECORDS)
    batch = with_limits.read(0, 4, 1 << 20)
    assert batch is not None
    assert batch.records == tuple(RECORDS[:4])
    small = with_limits.read(0, 100, len(RECORDS[0]) + 1)
    assert small is not None
    assert small.records == (RECORDS[0],)
    tiny = with_limits.read(0, 100, 1)  # one record is always returned, however large
    assert tiny is not None
    assert tiny.records == (RECORDS[0],)
    assert with_limits.read(with_limits.end, 10, 100) is None
    with_limits.close()


def test_a_tail_torn_at_any_byte_is_cut_off_and_appending_continues(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    spool = DiskSpool(seed)
    spool.append(RECORDS[:3])
    spool.append([RECORDS[3]])
    spool.close()
    segment = _segments(seed)[0].read_bytes()
    whole = len(encode_records(RECORDS[:3]))
    for cut in range(whole, len(segment)):
        directory = tmp_path / f"cut-{cut}"
        directory.mkdir()
        (directory / _segments(seed)[0].name).write_bytes(segment[:cut])
        torn = DiskSpool(directory)
        assert torn.end == whole
        assert torn.pending == 3
        assert _read_all(torn) == RECORDS[:3]
        torn.append([b'{"after":"crash"}'])
        assert _read_all(torn) == [*RECORDS[:3], b'{"after":"crash"}']
        torn.close()
        assert DiskSpool(directory).pending == 4  # and the file is clean for the next opener


def test_zeros_and_garbage_after_the_last_record_are_cut_off(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append(RECORDS[:2])
    spool.close()
    segment = _segments(tmp_path)[0]
    good = segment.stat().st_size
    for tail in (b"\0" * 4096, b"\xff" * 12, encode_records([b"x"])[:-1] + b"y"):
        with segment.open("ab") as f:
            f.write(tail)
        again = DiskSpool(tmp_path)
        assert again.end == good
        assert _read_all(again) == RECORDS[:2]
        again.close()
        assert segment.stat().st_size == good


def test_segments_roll_and_wholly_committed_ones_are_deleted(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, segment_bytes=100)
    ends = [spool.append([r]) for r in RECORDS]
    assert len(_segments(tmp_path)) > 3
    assert _read_all(spool) == RECORDS
    spool.commit(ends[9], 10)
    remaining = _segments(tmp_path)
    assert all(int(p.stem) + p.stat().st_size > ends[9] or p == remaining[-1] for p in remaining)
    assert int(remaining[0].stem) <= ends[9]
    spool.close()
    reopened = DiskSpool(tmp_path, segment_bytes=100)
    assert _read_all(reopened) == RECORDS[10:]
    reopened.commit(reopened.end, 10)
    assert len(_segments(tmp_path)) == 1
    reopened.close()


def test_a_corrupt_record_inside_an_older_segment_is_kept_aside(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, segment_bytes=100)
    for r in RECORDS[:10]:
        spool.append([r])
    spool.close()
    first = _segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[-2] ^= 0xFF  # the last record of the first segment
    first.write_bytes(bytes(data))
    reopened = DiskSpool(tmp_path, segment_bytes=100)
    back = _read_all(reopened)
    reopened.close()
    assert len(back) == 9
    assert back == [r for r in RECORDS[:10] if r in back]
    quarantined = list(tmp_path.glob("corrupt-*.bin"))
    assert len(quarantined) == 1
    assert quarantined[0].stat().st_size > 0


def test_a_lost_or_torn_committed_file_replays_from_the_start(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    end = spool.append(RECORDS[:4])
    spool.commit(end, 4)
    spool.close()
    (tmp_path / "committed").write_bytes(b"\x01\x02\x03")
    again = DiskSpool(tmp_path)
    assert again.committed == 0
    assert _read_all(again) == RECORDS[:4]
    again.close()


def test_only_one_spool_may_use_a_directory(tmp_path: Path) -> None:
    first = DiskSpool(tmp_path)
    with pytest.raises(StoreError, match="in use"):
        DiskSpool(tmp_path)
    first.close()
    DiskSpool(tmp_path).close()


def test_files_are_private_to_the_owner(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "spool")
    spool.append([b"{}"])
    spool.dead_letter([DeadLetter("InputError", "bad", "events[0]", None, b"{}")])
    spool.close()
    assert (tmp_path / "spool").stat().st_mode & 0o077 == 0
    for path in (tmp_path / "spool").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path.name


def test_dead_letters_are_json_lines_with_the_event_embedded(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.dead_letter(
        [
            DeadLetter("ConflictError", "other bytes", None, "id-1", b'{"a":1}'),
            DeadLetter("InputError", "not an event", "event.kind"),
        ]
    )
    spool.close()
    lines = [json.loads(line) for line in (tmp_path / "dead-letters.jsonl").read_text().splitlines()]
    assert lines == [
        {"error": "ConflictError", "event_id": "id-1", "field": None, "reason": "other bytes", "event": {"a": 1}},
        {"error": "InputError", "event_id": None, "field": "event.kind", "reason": "not an event"},
    ]


def test_append_rejects_empty_and_oversized_records(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    with pytest.raises(StoreError):
        spool.append([b""])
    with pytest.raises(StoreError):
        spool.append([b"x" * (1024 * 1024 + 1)])
    assert spool.end == 0
    assert os.path.getsize(_segments(tmp_path)[0]) == 0
    spool.close()


def test_memory_spool_has_the_same_order_and_a_bound() -> None:
    spool = MemorySpool(capacity=5)
    assert spool.room() == 5
    assert not spool.durable
    end = spool.append(RECORDS[:3])
    assert spool.room() == 2
    assert _read_all(spool) == RECORDS[:3]
    spool.commit(end - 1, 2)
    assert spool.pending == 1
    assert _read_all(spool) == RECORDS[2:3]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 4)),
            st.tuples(st.just("commit"), st.integers(0, 6)),
            st.tuples(st.just("reopen"), st.just(0)),
        ),
        max_size=25,
    )
)
def test_the_disk_spool_behaves_like_a_list_with_a_committed_prefix(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]
) -> None:
    directory = tmp_path_factory.mktemp("model")
    spool = DiskSpool(directory, segment_bytes=64)
    model: list[bytes] = []
    committed = 0  # records
    ends: list[int] = []  # the end position after each record
    n = 0
    for op, arg in steps:
        if op == "append":
            new = [f'{{"n":{n + i}}}'.encode() for i in range(arg)]
            n += arg
            end = spool.append(new)
            model += new
            ends += [end - len(encode_records(new[i + 1 :])) for i in range(arg)]
        elif op == "commit" and model:
            upto = min(committed + arg, len(model))
            if upto > committed:
                spool.commit(ends[upto - 1], upto - committed)
                committed = upto
        elif op == "reopen":
            spool.close()
            spool = DiskSpool(directory, segment_bytes=64)
        assert spool.pending == len(model) - committed
        assert _read_all(spool) == model[committed:]
    spool.close()


def _keyed(n: int, body: str = "a") -> bytes:
    return f'{{"body":"{body}","event_id":"id-{n}"}}'.encode()


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_records_are_keyed_by_event_id_while_unacknowledged(kind: str, tmp_path: Path) -> None:
    spool: DiskSpool | MemorySpool = DiskSpool(tmp_path) if kind == "disk" else MemorySpool(100)
    spool.append([_keyed(0), _keyed(1)])
    fresh, absorbed = spool.absent([_keyed(1), _keyed(2), _keyed(2), _keyed(0, "other"), b'{"no":"id"}'])
    # id-1 is held with these bytes, id-2 repeats within the call; other bytes under a held id are kept
    # (the ledger judges them), and a record without an event_id is not keyed.
    assert (fresh, absorbed) == ([_keyed(2), _keyed(0, "other"), b'{"no":"id"}'], 2)
    end = spool.append(fresh)
    first = spool.read(spool.committed, 2, 1 << 20)
    assert first is not None
    spool.commit(first.end, 2)  # id-0 and id-1 acknowledged: emitting them again is a new record
    assert spool.absent([_keyed(0), _keyed(1), _keyed(2)]) == ([_keyed(0), _keyed(1)], 1)
    assert spool.end == end
    spool.close()


def test_the_keys_of_unacknowledged_records_survive_reopening(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    ends = [spool.append([_keyed(n)]) for n in range(4)]
    spool.commit(ends[1], 2)
    spool.close()
    reopened = DiskSpool(tmp_path)
    assert reopened.absent([_keyed(n) for n in range(4)]) == ([_keyed(0), _keyed(1)], 2)
    reopened.close()


def test_a_wholly_acknowledged_spool_gives_its_disk_space_back(tmp_path: Path) -> None:
    """Without waiting for a segment to fill: once a few MiB are acknowledged (or a write was refused, see
    test_spool_full.py), the spool starts a new segment and deletes the old one."""
    spool = DiskSpool(tmp_path)
    records = [b'{"pad":"' + b"x" * 64 * 1024 + b'"}'] * 80  # 5 MiB
    end = spool.append(records)
    spool.commit(end - 1, len(records) - 1)  # not everything yet: nothing to give back
    assert [p.stat().st_size for p in _segments(tmp_path)] == [end]
    spool.commit(end, 1)
    assert [(p.name, p.stat().st_size) for p in _segments(tmp_path)] == [(f"{end:020d}.seg", 0)]
    assert spool.append([RECORDS[0]]) > end
    spool.close()
