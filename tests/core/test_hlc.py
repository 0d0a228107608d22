"""Tests for lineage_ledger.core.hlc: the fixed-width text form and Kulkarni et al.'s 2014 HLC algorithm.

The reference model below is the paper's algorithm (Kulkarni, Demirbas, Madappa, Avva, Leone: "Logical
Physical Clocks", OPODIS 2014, Figure 5), written out independently of the module under test:

    send or local event:  l' := l; l := max(l', pt); c := c + 1 if l == l' else 0
    receive of (l.m, c.m): l' := l; l := max(l', l.m, pt)
                           c := max(c, c.m) + 1  if l == l' == l.m
                                c + 1            if l == l'
                                c.m + 1          if l == l.m
                                0                otherwise
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lineage_ledger.core.hlc import HLC_PATTERN, HybridClock, Reading, format_reading, parse_reading
from lineage_ledger.errors import InputError

MAX_NS = 10**19 - 1
MAX_COUNTER = 99_999
FIXED = re.compile(r"[0-9]{19}\.[0-9]{5}")

physical_ns = st.integers(min_value=0, max_value=MAX_NS)
counters = st.integers(min_value=0, max_value=MAX_COUNTER)


@dataclass
class PaperClock:
    """Kulkarni et al. 2014, Figure 5, with no counter bound (tests keep counters small)."""

    l: int = 0  # noqa: E741 - the paper's name
    c: int = 0

    def send(self, pt: int) -> tuple[int, int]:
        old = self.l
        self.l = max(old, pt)
        self.c = self.c + 1 if self.l == old else 0
        return self.l, self.c

    def receive(self, pt: int, lm: int, cm: int) -> tuple[int, int]:
        old = self.l
        self.l = max(old, lm, pt)
        if self.l == old == lm:
            self.c = max(self.c, cm) + 1
        elif self.l == old:
            self.c = self.c + 1
        elif self.l == lm:
            self.c = cm + 1
        else:
            self.c = 0
        return self.l, self.c


class FakeClock:
    """A physical clock the test sets by hand."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _scripted(readings: list[int]) -> Callable[[], int]:
    it: Iterator[int] = iter(readings)
    return lambda: next(it)


class TestTextForm:
    def test_architecture_example(self) -> None:
        assert parse_reading("1763891234123456789.00002") == Reading(1763891234123456789, 2)
        assert format_reading(1763891234123456789, 2) == "1763891234123456789.00002"
        assert str(Reading(5, 7)) == "0000000000000000005.00007"

    @given(physical_ns, counters)
    def test_round_trip_and_fixed_width(self, ns: int, counter: int) -> None:
        text = format_reading(ns, counter)
        assert len(text) == 25
        assert FIXED.fullmatch(text)
        assert re.search(HLC_PATTERN, text)
        assert parse_reading(text) == Reading(ns, counter)
        assert str(parse_reading(text)) == text

    @given(physical_ns, counters, physical_ns, counters)
    def test_text_order_is_numeric_order(self, a_ns: int, a_c: int, b_ns: int, b_c: int) -> None:
        a, b = format_reading(a_ns, a_c), format_reading(b_ns, b_c)
        assert (a < b) == ((a_ns, a_c) < (b_ns, b_c))
        assert (a == b) == ((a_ns, a_c) == (b_ns, b_c))
        assert (a < b) == (Reading(a_ns, a_c) < Reading(b_ns, b_c))

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "1.1",
            "176389123412345678.00002",  # 18 digits
            "17638912341234567890.00002",  # 20 digits
            "1763891234123456789.0002",
            "1763891234123456789.000002",
            "1763891234123456789,00002",
            "1763891234123456789.0000a",
            " 1763891234123456789.00002",
            "1763891234123456789.00002 ",
            "1763891234123456789.00002\n",
            "+763891234123456789.00002",
            "-763891234123456789.00002",
            "١٧٦٣٨٩١٢٣٤١٢٣٤٥٦٧٨٩.00002",  # Arabic-Indic digits: int() would take them
            "1763891234123456789",
        ],
    )
    def test_rejects_malformed(self, text: str) -> None:
        with pytest.raises(InputError) as info:
            parse_reading(text, field="event.occurred_at")
        assert info.value.field == "event.occurred_at"

    @given(st.text(max_size=30))
    def test_parses_only_fixed_width_text(self, text: str) -> None:
        if FIXED.fullmatch(text):
            assert str(parse_reading(text)) == text
        else:
            with pytest.raises(InputError):
                parse_reading(text)

    @pytest.mark.parametrize("value", [None, 1763891234123456789, b"1763891234123456789.00002"])
    def test_rejects_non_strings(self, value: Any) -> None:
        with pytest.raises(InputError) as info:
            parse_reading(value)
        assert info.value.field == "hlc"


class TestReserve:
    def test_fresh_physical_time_starts_counter_at_zero(self) -> None:
        clock = HybridClock(FakeClock(1_000))
        assert clock.reserve(3) == [format_reading(1_000, c) for c in range(3)]
        assert clock.last == Reading(1_000, 2)

    @given(
        st.lists(
            st.tuples(st.integers(min_value=0, max_value=50), st.integers(min_value=1, max_value=5)),
            min_size=1,
            max_size=40,
        )
    )
    def test_strictly_increasing_and_matches_the_paper(self, calls: list[tuple[int, int]]) -> None:
        # Small physical values so the clock often stands still or goes backwards between calls.
        clock = HybridClock(_scripted([pt for pt, _ in calls]))
        paper = PaperClock()
        seen: list[str] = []
        for pt, count in calls:
            got = clock.reserve(count)
            assert len(got) == count
            expected = [format_reading(*paper.send(pt)) for _ in range(count)]
            assert got == expected
            for text in got:
                assert FIXED.fullmatch(text)
                assert parse_reading(text).physical_ns >= pt  # l >= pt always (the paper's Theorem 1)
            seen.extend(got)
        assert seen == sorted(seen)
        assert len(set(seen)) == len(seen)

    def test_clock_going_backwards(self) -> None:
        clock = HybridClock(_scripted([100, 50, 50, 10, 101]))
        out = [clock.now() for _ in range(5)]
        assert out == [
            format_reading(100, 0),
            format_reading(100, 1),
            format_reading(100, 2),
            format_reading(100, 3),
            format_reading(101, 0),
        ]

    def test_now_after_last(self) -> None:
        clock = HybridClock(FakeClock(10), last=Reading(20, 4))
        assert clock.now() == format_reading(20, 5)

    def test_counter_overflow_stays_monotonic(self) -> None:
        clock = HybridClock(FakeClock(7))
        out = clock.reserve(MAX_COUNTER + 3)
        assert out[: MAX_COUNTER + 1] == [format_reading(7, c) for c in range(MAX_COUNTER + 1)]
        assert all(FIXED.fullmatch(t) for t in out)
        assert all(a < b for a, b in itertools.pairwise(out))
        assert parse_reading(out[-1]).physical_ns > 7

    def test_counter_overflow_across_calls(self) -> None:
        clock = HybridClock(FakeClock(7), last=Reading(7, MAX_COUNTER - 1))
        a, b, c = clock.now(), clock.now(), clock.now()
        assert a == format_reading(7, MAX_COUNTER)
        assert a < b < c
        assert FIXED.fullmatch(b)
        assert FIXED.fullmatch(c)

    def test_overflowed_clock_then_catches_up_with_physical_time(self) -> None:
        phys = FakeClock(7)
        clock = HybridClock(phys, last=Reading(7, MAX_COUNTER))
        a = clock.now()
        phys.now = 1_000
        b = clock.now()
        assert a < b == format_reading(1_000, 0)


class TestObserve:
    # (local l, local c, physical now, remote l.m, remote c.m) -> (l, c) by the paper's receive rule
    @pytest.mark.parametrize(
        ("l0", "c0", "pt", "lm", "cm", "expected"),
        [
            pytest.param(10, 3, 5, 20, 7, (20, 8), id="remote ahead: l = l.m, c = c.m + 1"),
            pytest.param(30, 3, 5, 20, 7, (30, 4), id="local ahead: c = c + 1"),
            pytest.param(10, 3, 40, 20, 7, (40, 0), id="physical ahead: c = 0"),
            pytest.param(20, 3, 5, 20, 7, (20, 8), id="l == l.m: c = max(c, c.m) + 1 (remote larger)"),
            pytest.param(20, 9, 5, 20, 7, (20, 10), id="l == l.m: c = max(c, c.m) + 1 (local larger)"),
            pytest.param(20, 2, 20, 20, 2, (20, 3), id="all three equal"),
            pytest.param(20, 2, 20, 10, 50, (20, 3), id="pt == l > l.m: c = c + 1"),
            pytest.param(10, 2, 20, 20, 50, (20, 51), id="pt == l.m > l: c = c.m + 1"),
        ],
    )
    def test_receive_rule(self, l0: int, c0: int, pt: int, lm: int, cm: int, expected: tuple[int, int]) -> None:
        clock = HybridClock(FakeClock(pt), last=Reading(l0, c0), max_offset_ns=1_000)
        assert clock.observe(format_reading(lm, cm)) is True
        assert clock.last == Reading(*expected)
        paper = PaperClock(l0, c0)
        assert paper.receive(pt, lm, cm) == expected

    def test_refuses_remote_beyond_max_offset(self) -> None:
        clock = HybridClock(FakeClock(1_000), last=Reading(900, 4), max_offset_ns=100)
        assert clock.observe(format_reading(1_101, 0)) is False
        assert clock.last == Reading(900, 4)
        assert clock.now() == format_reading(1_000, 0)

    def test_accepts_remote_exactly_at_max_offset(self) -> None:
        clock = HybridClock(FakeClock(1_000), max_offset_ns=100)
        assert clock.observe(format_reading(1_100, 6)) is True
        assert clock.last == Reading(1_100, 7)

    def test_default_max_offset_is_a_minute(self) -> None:
        minute = 60 * 10**9
        clock = HybridClock(FakeClock(10**18))
        assert clock.observe(format_reading(10**18 + minute + 1, 0)) is False
        assert clock.observe(format_reading(10**18 + minute, 0)) is True

    def test_readings_after_observe_are_later_than_the_remote(self) -> None:
        clock = HybridClock(FakeClock(5), max_offset_ns=1_000)
        remote = format_reading(500, 42)
        assert clock.observe(remote)
        assert clock.now() > remote
        assert clock.reserve(2)[0] > remote

    def test_counter_overflow_on_receive_stays_monotonic(self) -> None:
        clock = HybridClock(FakeClock(5), max_offset_ns=1_000)
        remote = format_reading(500, MAX_COUNTER)
        assert clock.observe(remote)
        merged = str(clock.last)
        assert merged > remote
        assert FIXED.fullmatch(merged)
        assert clock.now() > merged

    def test_malformed_remote(self) -> None:
        clock = HybridClock(FakeClock(5))
        with pytest.raises(InputError) as info:
            clock.observe("yesterday")
        assert info.value.field == "hlc"

    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("send"), st.integers(0, 60), st.integers(1, 3)),
                st.tuples(st.just("recv"), st.integers(0, 60), st.tuples(st.integers(0, 90), st.integers(0, 20))),
            ),
            min_size=1,
            max_size=40,
        )
    )
    def test_matches_the_paper_and_never_goes_back(self, ops: list[tuple[Any, ...]]) -> None:
        max_offset = 15
        phys = FakeClock(0)
        clock = HybridClock(phys, max_offset_ns=max_offset)
        paper = PaperClock()
        handed_out: list[str] = []
        for op, pt, arg in ops:
            phys.now = pt
            before = clock.last
            if op == "send":
                got = clock.reserve(arg)
                assert got == [format_reading(*paper.send(pt)) for _ in range(arg)]
                handed_out.extend(got)
                assert clock.last.physical_ns >= pt
            else:
                lm, cm = arg
                accepted = clock.observe(format_reading(lm, cm))
                assert accepted == (lm - pt <= max_offset)
                if accepted:
                    assert clock.last == Reading(*paper.receive(pt, lm, cm))
                    assert clock.last > Reading(lm, cm)
                    assert clock.last > before
                    assert clock.last.physical_ns >= pt
                else:
                    assert clock.last == before
        assert handed_out == sorted(handed_out)
        assert len(set(handed_out)) == len(handed_out)
