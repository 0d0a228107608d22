"""Instants as people and programs write them, read into the ledger's time (HLC readings, nanoseconds).

One parser for every time argument of the CLI (``--at``, ``--start``, ``--end``) and every time query
parameter of the HTTP service, so both accept and reject exactly the same text:

* an HLC reading, ``"<19 digits>.<5 digits>"`` (what events and entries carry), taken as it is;
* RFC 3339 / ISO 8601 with a zone: ``2026-12-01T09:30:00Z``, ``2026-12-01T10:30:00.123456789+01:00``
  (``T`` or a space between date and time; up to nine fraction digits, so nanoseconds survive);
* a plain date, ``2026-12-01``: midnight UTC at its start;
* epoch time with an explicit unit: ``1796117400s``, ``1796117400000ms``, ``1796117400000000us``,
  ``1796117400000000000ns``;
* bare epoch digits, whose unit follows from their magnitude (``MAGNITUDE_RULE``): below 10^11 seconds,
  below 10^14 milliseconds, below 10^17 microseconds, otherwise nanoseconds. 10^11 seconds is the year 5138
  and 10^11 milliseconds is March 1973, so any instant from 1973 to 5138 reads unambiguously.

Anything else (a date-time without a zone, text, a negative number, an instant outside 1970..2286, where
nanoseconds stop fitting the reading's 19 digits) is an InputError naming the field. Pure: no clock, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from lineage_ledger.core.hlc import format_reading
from lineage_ledger.errors import InputError

__all__ = [
    "ACCEPTED_FORMS",
    "MAGNITUDE_RULE",
    "Instant",
    "format_rfc3339",
    "parse_instant",
]

MAGNITUDE_RULE: Final = (
    "bare digits below 10^11 are seconds, below 10^14 milliseconds, below 10^17 microseconds, otherwise nanoseconds"
)
ACCEPTED_FORMS: Final = (
    "an RFC 3339 time with a zone (2026-12-01T09:30:00Z), a date (2026-12-01, midnight UTC), epoch time "
    "with a unit (1796117400s, ...ms, ...us, ...ns) or bare digits (" + MAGNITUDE_RULE + "), or an HLC "
    "reading '<19 digits>.<5 digits>'"
)
"""What ``parse_instant`` accepts, as an error message and a help text say it."""

_MAX_NS: Final = 10**19 - 1
_MAX_COUNTER: Final = 99_999
_HLC_RE: Final = re.compile(r"([0-9]{19})\.([0-9]{5})")
_EPOCH_RE: Final = re.compile(r"([0-9]{1,20})(s|ms|us|ns)?")
_UNIT_NS: Final = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_DATE_RE: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DATETIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?"
)
_DAY_NS: Final = 86_400 * 10**9


@dataclass(frozen=True, slots=True)
class Instant:
    """An instant in nanoseconds since the epoch, with the HLC counter if it was given as a reading."""

    ns: int
    counter: int | None = None

    def reading(self) -> str:
        """The HLC reading of the instant's start (counter 0 unless the input named one): the lower bound of
        a window, and its exclusive upper bound."""
        return format_reading(self.ns, 0 if self.counter is None else self.counter)

    def reading_through(self) -> str:
        """The last HLC reading within the instant (counter 99999 unless the input named one): what "as of"
        compares against, so events that occurred in that very nanosecond count."""
        return format_reading(self.ns, _MAX_COUNTER if self.counter is None else self.counter)

    def rfc3339(self) -> str:
        """The instant as RFC 3339 UTC (see ``format_rfc3339``)."""
        return format_rfc3339(self.ns)


def parse_instant(value: str | int, *, field: str) -> Instant:
    """Read ``value`` as an instant; an int is nanoseconds. InputError naming ``field`` if it is none of the
    forms the module docstring lists."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(field, f"{value!r} is not a time; give {ACCEPTED_FORMS}")
    if isinstance(value, int):
        return Instant(_in_range(value, field, str(value)))
    text = value.strip()
    if m := _HLC_RE.fullmatch(text):
        return Instant(int(m.group(1)), int(m.group(2)))
    if m := _EPOCH_RE.fullmatch(text):
        number, unit = int(m.group(1)), m.group(2)
        return Instant(_in_range(number * _UNIT_NS[unit or _unit_of(number)], field, value))
    if m := _DATE_RE.fullmatch(text):
        return Instant(_in_range(_date(m.groups(), field, value) * _DAY_NS, field, value))
    if m := _DATETIME_RE.fullmatch(text):
        return Instant(_in_range(_datetime_ns(m.groups(), field, value), field, value))
    raise InputError(field, f"{value!r} is not a time; give {ACCEPTED_FORMS}")


def format_rfc3339(ns: int) -> str:
    """``ns`` as RFC 3339 UTC: ``2026-12-01T09:30:00Z``, with as many fraction digits as it needs (up to 9)."""
    seconds, frac = divmod(ns, 10**9)
    days, second = divmod(seconds, 86_400)
    year, month, day = _civil(days)
    text = f"{year:04d}-{month:02d}-{day:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def _unit_of(number: int) -> str:
    if number < 10**11:
        return "s"
    if number < 10**14:
        return "ms"
    if number < 10**17:
        return "us"
    return "ns"


def _in_range(ns: int, field: str, value: str) -> int:
    if not 0 <= ns <= _MAX_NS:
        raise InputError(field, f"{value!r} is outside 1970-01-01 .. 2286-11-20, the range of ledger time")
    return ns


def _date(parts: tuple[str | None, ...], field: str, value: str) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date; InputError if there is no such date."""
    year, month, day = (int(p or 0) for p in parts[:3])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    length = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if not (1 <= month <= 12 and 1 <= day <= length[month - 1]):
        raise InputError(field, f"{value!r} is not a calendar date")
    # days_from_civil (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms")
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of days since 1970-01-01 (civil_from_days, the inverse of ``_date``)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


def _datetime_ns(parts: tuple[str | None, ...], field: str, value: str) -> int:
    days = _date(parts, field, value)
    hour, minute, second = (int(p or 0) for p in parts[3:6])
    fraction, zulu, sign, off_h, off_m = parts[6:]
    if zulu is None and sign is None:
        raise InputError(
            field, f"{value!r} has no zone; add Z for UTC or an offset such as +01:00 (times are never local)"
        )
    if hour > 23 or minute > 59 or second > 59:
        raise InputError(field, f"{value!r} is not a time of day (hours 00-23, minutes and seconds 00-59)")
    offset = 0
    if sign is not None:
        oh, om = int(off_h or 0), int(off_m or 0)
        if oh > 23 or om > 59:
            raise InputError(field, f"{value!r} has an offset outside -23:59..+23:59")
        offset = (oh * 60 + om) * 60 * (1 if sign == "+" else -1)
    seconds = hour * 3600 + minute * 60 + second - offset
    frac_ns = int((fraction or "").ljust(9, "0")) if fraction else 0
    return days * _DAY_NS + seconds * 10**9 + frac_ns
