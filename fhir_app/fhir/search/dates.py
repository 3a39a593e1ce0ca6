"""FHIR dates as ranges: a value stands for every instant of its precision (search.html#date).

`2024` is [2024-01-01, 2025-01-01), `2024-05-01T10:00` is that minute, a Period is
[start, end of its end's precision). Ranges are half-open and in UTC; a date or a time without a
zone is read as UTC (the server's zone). An open Period end reaches `END_OF_TIME`.

The calendar ends inside FHIR's: `9999-12-31T23:00:00-05:00` is in the year 10000 in UTC, and
`0001-01-01T00:00:00+01:00` in the year 0. Ranges are clamped to what the store holds,
[`START_OF_TIME`, `END_OF_TIME`], and never empty: a value beyond an end is that end's first or
last microsecond, so it is still indexed and found (by `eq`, `ge`, `le`... of the same value).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from typing import Final

# What the store holds (and Python's datetime): 0001-01-01T00:00Z to 9999-12-31T23:59:59.999999Z.
START_OF_TIME: Final = datetime.min.replace(tzinfo=UTC)
END_OF_TIME: Final = datetime.max.replace(tzinfo=UTC)
_TICK: Final = timedelta(microseconds=1)
_SPAN: Final = END_OF_TIME - START_OF_TIME

# FHIR R4 datatypes: a zone is Z or +/-hh:mm within -13:59..+14:00 (the hour 14 only as 14:00).
_DATE_TIME = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00))?)?)?)?"
)


class InvalidDate(ValueError):
    """A text that is not a FHIR date, dateTime or instant."""


def _clamped(low: timedelta, high: timedelta) -> tuple[datetime, datetime]:
    """[low, high), given as offsets from START_OF_TIME (timedeltas do not overflow where
    datetimes would), within [START_OF_TIME, END_OF_TIME] and at least a microsecond wide."""
    low = min(max(low, timedelta(0)), _SPAN - _TICK)
    high = max(min(high, _SPAN), low + _TICK)
    return START_OF_TIME + low, START_OF_TIME + high


def in_utc(moment: datetime) -> datetime:
    """An aware datetime in UTC, clamped to [START_OF_TIME, END_OF_TIME] when its UTC time is
    outside Python's calendar (`9999-12-31T23:00-05:00`); a naive one is taken as UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    offset = moment.utcoffset() or timedelta(0)
    since_start = moment.replace(tzinfo=None) - datetime.min - offset
    return START_OF_TIME + min(max(since_start, timedelta(0)), _SPAN)


def date_range(text: str) -> tuple[datetime, datetime]:
    """The [low, high) range of a FHIR date / dateTime / instant text, in UTC (clamped to what
    the store holds, see the module's docstring)."""
    found = _DATE_TIME.fullmatch(text.strip())
    if found is None:
        raise InvalidDate(f"{text!r} is not a FHIR date or dateTime")
    part = found.groupdict()
    year = int(part["year"])
    fraction = part["fraction"] or ""
    try:
        if part["month"] is None:
            local = datetime(year, 1, 1)
            step = timedelta(days=366 if calendar.isleap(year) else 365)
        elif part["day"] is None:
            month = int(part["month"])
            local = datetime(year, month, 1)
            step = timedelta(days=calendar.monthrange(year, month)[1])
        else:
            local = datetime(year, int(part["month"]), int(part["day"]))
            step = timedelta(days=1)
            if part["hour"] is not None:
                local = local.replace(
                    hour=int(part["hour"]),
                    minute=int(part["minute"]),
                    second=min(int(part["second"] or 0), 59),
                    microsecond=int((fraction + "000000")[:6]),
                )
                if part["second"] is None:
                    step = timedelta(minutes=1)
                elif part["second"] == "60":
                    # A leap second (the R4 regex allows it): the last instant of its minute.
                    local = local.replace(second=59, microsecond=999999)
                    step = timedelta(microseconds=1)
                elif not fraction:
                    step = timedelta(seconds=1)
                else:
                    # Beyond microseconds the store cannot tell instants apart.
                    step = timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    except ValueError as exc:  # e.g. month 13, day 31 of April, year 0
        raise InvalidDate(f"{text!r} is not a valid date: {exc}") from exc
    low = local - datetime.min
    zone = part["zone"]
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        low -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))  # to UTC
    return _clamped(low, low + step)


def period_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """The range of a Period: from its start's low to its end's high; open ends stay open."""
    low = date_range(start)[0] if start else START_OF_TIME
    high = date_range(end)[1] if end else END_OF_TIME
    return low, high
