"""FHIR dates as ranges: a value stands for every instant of its precision (search.html#date).

`2024` is [2024-01-01, 2025-01-01), `2024-05-01T10:00` is that minute, a Period is
[start, end of its end's precision). Ranges are half-open and in UTC; a date or a time without a
zone is read as UTC (the server's zone). An open Period end reaches `END_OF_TIME`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

START_OF_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)
END_OF_TIME: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

_DATE_TIME = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


class InvalidDate(ValueError):
    """A text that is not a FHIR date, dateTime or instant."""


def _next_month(moment: datetime) -> datetime:
    return (
        moment.replace(year=moment.year + 1, month=1)
        if moment.month == 12
        else (moment.replace(month=moment.month + 1))
    )


def date_range(text: str) -> tuple[datetime, datetime]:
    """The [low, high) range of a FHIR date / dateTime / instant text, in UTC."""
    found = _DATE_TIME.fullmatch(text.strip())
    if found is None:
        raise InvalidDate(f"{text!r} is not a FHIR date or dateTime")
    part = found.groupdict()
    try:
        if part["month"] is None:
            low = datetime(int(part["year"]), 1, 1, tzinfo=UTC)
            return low, low.replace(year=low.year + 1)
        if part["day"] is None:
            low = datetime(int(part["year"]), int(part["month"]), 1, tzinfo=UTC)
            return low, _next_month(low)
        day = datetime(int(part["year"]), int(part["month"]), int(part["day"]), tzinfo=UTC)
        if part["hour"] is None:
            return day, day + timedelta(days=1)
        fraction = part["fraction"] or ""
        local = day.replace(
            hour=int(part["hour"]),
            minute=int(part["minute"]),
            second=int(part["second"] or 0),
            microsecond=int((fraction + "000000")[:6]),
        )
    except ValueError as exc:  # e.g. month 13, day 31 of April, year 0
        raise InvalidDate(f"{text!r} is not a valid date: {exc}") from exc
    zone = part["zone"]
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        local = local - sign * offset  # to UTC
    if part["second"] is None:
        step = timedelta(minutes=1)
    elif not fraction:
        step = timedelta(seconds=1)
    else:
        # Beyond microseconds the store cannot tell instants apart.
        step = timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    return local, local + step


def period_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """The range of a Period: from its start's low to its end's high; open ends stay open."""
    low = date_range(start)[0] if start else START_OF_TIME
    high = date_range(end)[1] if end else END_OF_TIME
    return low, high
