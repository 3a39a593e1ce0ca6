"""FHIR dates over the whole calendar FHIR allows (years 0001-9999, every valid zone): their
ranges stay within what the store holds, a resource carrying one gets its index row, and the
search parser answers any date value with a range or its own 400 (SearchError), nothing else."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_app.fhir.inbound import parse_fhir_datetime
from fhir_app.fhir.search import SearchError, index_rows, parse_search
from fhir_app.fhir.search.dates import (
    END_OF_TIME,
    START_OF_TIME,
    InvalidDate,
    date_range,
    in_utc,
)
from fhir_app.fhir.search.request import DATE_PREFIXES

# FHIR R4 datatypes: (Z|(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))
zones = st.one_of(
    st.just("Z"),
    st.just("+14:00"),
    st.just("-14:00"),
    st.builds(
        lambda sign, hour, minute: f"{sign}{hour:02d}:{minute:02d}",
        st.sampled_from("+-"),
        st.integers(0, 13),
        st.integers(0, 59),
    ),
)
edge_years = st.one_of(st.integers(1, 9999), st.sampled_from([1, 2, 9998, 9999]))


@st.composite
def fhir_dates(draw: st.DrawFn) -> str:
    """A valid FHIR date, dateTime or instant, of any precision."""
    year = draw(edge_years)
    precision = draw(st.sampled_from(["year", "month", "day", "minute", "second", "fraction"]))
    if precision == "year":
        return f"{year:04d}"
    month = draw(st.integers(1, 12))
    if precision == "month":
        return f"{year:04d}-{month:02d}"
    last = calendar.monthrange(year, month)[1]
    day = draw(st.one_of(st.integers(1, last), st.just(last), st.just(1)))
    text = f"{year:04d}-{month:02d}-{day:02d}"
    if precision == "day":
        return text
    hour = draw(st.one_of(st.integers(0, 23), st.sampled_from([0, 23])))
    minute = draw(st.one_of(st.integers(0, 59), st.sampled_from([0, 59])))
    text += f"T{hour:02d}:{minute:02d}"
    if precision != "minute":
        text += f":{draw(st.integers(0, 59)):02d}"
    if precision == "fraction":
        text += "." + draw(st.text("0123456789", min_size=1, max_size=12))
    return text + draw(zones)


@given(fhir_dates())
def test_every_valid_date_has_a_range_the_store_holds(text: str) -> None:
    low, high = date_range(text)
    assert START_OF_TIME <= low < high <= END_OF_TIME
    assert low.tzinfo is UTC
    assert high.tzinfo is UTC


@given(fhir_dates(), st.sampled_from(["Observation", "Condition", "DiagnosticReport"]))
def test_every_valid_date_is_indexed(text: str, rtype: str) -> None:
    element = {"Observation": "effectiveDateTime", "Condition": "onsetDateTime"}.get(
        rtype, "effectiveDateTime"
    )
    rows = index_rows({"resourceType": rtype, "id": "x", element: text})
    assert [row[1:] for row in rows.dates] == [date_range(text)]
    period = index_rows(
        {"resourceType": "Observation", "effectivePeriod": {"start": text, "end": text}}
    )
    assert len(period.dates) == 1


@given(fhir_dates(), st.sampled_from(DATE_PREFIXES))
def test_every_valid_date_can_be_searched(text: str, prefix: str) -> None:
    query = parse_search("Observation", [("date", prefix + text)], default_count=10, max_count=10)
    value = query.clauses[0].values[0]
    assert (value.low, value.high) == date_range(text)  # type: ignore[union-attr]
    parse_search("Observation", [("_lastUpdated", prefix + text)], default_count=10, max_count=10)


@given(fhir_dates())
def test_every_valid_date_is_read_by_the_inbound_mapping(text: str) -> None:
    moment = parse_fhir_datetime(text, "Observation.effectiveDateTime")
    assert START_OF_TIME <= moment <= END_OF_TIME


@given(st.text(max_size=40))
def test_any_date_value_is_a_range_or_a_400(text: str) -> None:
    status = 200
    try:
        parse_search("Observation", [("date", text)], default_count=10, max_count=10)
    except SearchError as exc:
        status = exc.status
    assert status in (200, 400)


ZONES = [UTC, *(timezone(timedelta(minutes=m)) for m in (-840, -300, 60, 840))]


@given(st.datetimes(timezones=st.sampled_from(ZONES)))
def test_in_utc_never_overflows(moment: datetime) -> None:
    converted = in_utc(moment)
    assert START_OF_TIME <= converted <= END_OF_TIME
    if (
        datetime.min + timedelta(days=1)
        < moment.replace(tzinfo=None)
        < datetime.max - timedelta(days=1)
    ):
        assert converted == moment


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("9999", datetime(9999, 1, 1, tzinfo=UTC), END_OF_TIME),
        ("9999-12", datetime(9999, 12, 1, tzinfo=UTC), END_OF_TIME),
        ("9999-12-31", datetime(9999, 12, 31, tzinfo=UTC), END_OF_TIME),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), END_OF_TIME),
        # Beyond the end in UTC: the last microsecond the store holds.
        ("9999-12-31T23:00:00-05:00", END_OF_TIME - timedelta(microseconds=1), END_OF_TIME),
        # Before the start in UTC: the first microsecond.
        ("0001-01-01T00:00:00+01:00", START_OF_TIME, START_OF_TIME + timedelta(microseconds=1)),
        (
            "0001-01-01T00:30:00-01:00",
            datetime(1, 1, 1, 1, 30, tzinfo=UTC),
            datetime(1, 1, 1, 1, 30, 1, tzinfo=UTC),
        ),
        ("0001", START_OF_TIME, datetime(2, 1, 1, tzinfo=UTC)),
    ],
)
def test_the_ends_of_the_calendar_are_clamped(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-01T00:00:00-99:00",
        "2025-01-01T00:00:00+14:01",
        "2025-01-01T00:00:00+15:00",
        "2025-01-01T00:00:00+10:60",
        "2025-01-01T00:00:00+1000",
        "0000-01-01",
    ],
)
def test_a_zone_or_year_outside_fhir_is_refused(text: str) -> None:
    with pytest.raises(InvalidDate):
        date_range(text)
    with pytest.raises(SearchError):
        parse_search("Observation", [("date", text)], default_count=10, max_count=10)
