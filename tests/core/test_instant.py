"""core.instant: the one parser of time arguments (CLI and HTTP), table-driven."""

from __future__ import annotations

import calendar
import time

import pytest

from lineage_ledger.core.instant import Instant, format_rfc3339, parse_instant
from lineage_ledger.errors import InputError

S = 10**9
# 2026-12-01T09:30:00Z, computed by the standard library's calendar, not by the module under test
T = calendar.timegm((2026, 12, 1, 9, 30, 0, 0, 0, 0))
MIDNIGHT = calendar.timegm((2026, 12, 1, 0, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-12-01T09:30:00Z", T * S),
        ("2026-12-01t09:30:00z", T * S),
        ("2026-12-01 09:30:00Z", T * S),
        ("2026-12-01T10:30:00+01:00", T * S),
        ("2026-12-01T04:00:00-05:30", T * S),
        ("2026-12-01T09:30:00.5Z", T * S + S // 2),
        ("2026-12-01T09:30:00.000000001Z", T * S + 1),
        ("2026-12-01T09:30:00.123456789Z", T * S + 123_456_789),
        ("2026-12-01", MIDNIGHT * S),
        (str(T), T * S),  # seconds by magnitude
        (f"{T}s", T * S),
        (str(T * 1000), T * S),  # milliseconds by magnitude
        (f"{T * 1000}ms", T * S),
        (str(T * 10**6), T * S),  # microseconds by magnitude
        (f"{T * 10**6}us", T * S),
        (str(T * S), T * S),  # nanoseconds by magnitude
        (f"{T * S}ns", T * S),
        ("5ns", 5),  # a suffix overrides the magnitude rule
        ("5", 5 * S),
        ("9999999999", 9_999_999_999 * S),  # 2286-11-20, the last second of ledger time
        ("100000000000", 100_000_000_000 * 10**6),  # the smallest read as milliseconds
        ("0", 0),
        (" 2026-12-01 ", MIDNIGHT * S),
    ],
)
def test_accepted_forms(text: str, ns: int) -> None:
    got = parse_instant(text, field="--at")
    assert got == Instant(ns)


def test_hlc_readings_keep_their_counter() -> None:
    got = parse_instant(f"{T * S:019d}.00042", field="at")
    assert got == Instant(T * S, 42)
    assert got.reading() == got.reading_through() == f"{T * S:019d}.00042"


def test_a_bare_instant_spans_its_whole_nanosecond() -> None:
    got = parse_instant("2026-12-01T09:30:00Z", field="at")
    assert got.reading() == f"{T * S:019d}.00000"
    assert got.reading_through() == f"{T * S:019d}.99999"


def test_ints_are_nanoseconds() -> None:
    assert parse_instant(T, field="at") == Instant(T)


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "",
        "2026-12-01T09:30:00",  # no zone: never guess local time
        "2026-12-01T25:00:00Z",
        "2026-12-01T09:61:00Z",
        "2026-02-30",
        "2026-13-01",
        "2026-12-01T09:30:00+24:00",
        "2026-12-01T09:30:00.1234567890Z",  # more than nanoseconds
        "-5",
        "1.5",
        "12h",
        "1796117400 s",
        "99999999999",  # read as seconds (below 10^11), past the end of ledger time
        "99999999999999999999",  # 20 digits of nanoseconds: past 2286
        "10000000000000000000ns",
        "1763891234123456789.0002",  # a malformed reading
        "1969-12-31T23:59:59Z",
    ],
)
def test_rejected_forms_name_the_field(text: str) -> None:
    with pytest.raises(InputError) as e:
        parse_instant(text, field="--start")
    assert e.value.field == "--start"


def test_no_zone_says_what_to_add() -> None:
    with pytest.raises(InputError, match="add Z"):
        parse_instant("2026-12-01T09:30:00", field="--at")


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (T * S, "2026-12-01T09:30:00Z"),
        (T * S + 1, "2026-12-01T09:30:00.000000001Z"),
        (T * S + S // 2, "2026-12-01T09:30:00.5Z"),
        (0, "1970-01-01T00:00:00Z"),
    ],
)
def test_format_rfc3339(ns: int, text: str) -> None:
    assert format_rfc3339(ns) == text
    assert parse_instant(text, field="x").ns == ns


def test_calendar_arithmetic_agrees_with_the_standard_library() -> None:
    # every day from 1970 to 2286 (and leap days) round-trips and matches calendar.timegm
    for days in range(0, 115_740, 7):  # up to 2286-11-20, the end of ledger time
        ns = days * 86_400 * S + 3_723 * S
        year, month, day, hour, minute, second = time.gmtime(days * 86_400 + 3_723)[:6]
        text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"
        assert format_rfc3339(ns) == text
        assert parse_instant(text, field="t").ns == ns
    assert parse_instant("2024-02-29", field="t").ns == calendar.timegm((2024, 2, 29, 0, 0, 0, 0, 0, 0)) * S
    assert parse_instant("2000-02-29", field="t").ns == calendar.timegm((2000, 2, 29, 0, 0, 0, 0, 0, 0)) * S
    for bad in ("2100-02-29", "2023-02-29", "2026-04-31", "2026-00-10", "2026-01-00"):
        with pytest.raises(InputError):
            parse_instant(bad, field="t")
