"""The search table's pure parts: date ranges, index rows, request parsing, declarations."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_app.fhir.samples import imaging_study, observation, patient
from fhir_app.fhir.search import (
    PARAMETERS,
    DateValue,
    ReferenceValue,
    SearchError,
    StringValue,
    TokenValue,
    index_rows,
    parse_search,
    search_declarations,
    shaped,
)
from fhir_app.fhir.search.dates import END_OF_TIME, START_OF_TIME, InvalidDate, date_range
from fhir_app.fhir.search.index import reference_target, values_at


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type, misc]


# --- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2024", at(2024, 1, 1), at(2025, 1, 1)),
        ("2024-12", at(2024, 12, 1), at(2025, 1, 1)),
        ("2024-02", at(2024, 2, 1), at(2024, 3, 1)),
        ("2024-02-29", at(2024, 2, 29), at(2024, 3, 1)),
        ("2024-05-01T10:30", at(2024, 5, 1, 10, 30), at(2024, 5, 1, 10, 31)),
        ("2024-05-01T10:30:15Z", at(2024, 5, 1, 10, 30, 15), at(2024, 5, 1, 10, 30, 16)),
        ("2024-05-01T10:30:15+02:00", at(2024, 5, 1, 8, 30, 15), at(2024, 5, 1, 8, 30, 16)),
        (
            "2024-05-01T10:30:15.25Z",
            at(2024, 5, 1, 10, 30, 15, 250000),
            at(2024, 5, 1, 10, 30, 15, 260000),
        ),
    ],
    ids=["year", "december", "month", "leap-day", "minute", "second", "zone", "fraction"],
)
def test_a_date_is_the_range_of_its_precision(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize("text", ["", "24", "2024-13", "2024-02-30", "2024-05-01T25:00", "May"])
def test_what_is_not_a_date_is_refused(text: str) -> None:
    with pytest.raises(InvalidDate):
        date_range(text)


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)))
def test_finer_precisions_lie_within_coarser_ones(moment: datetime) -> None:
    texts = [
        f"{moment:%Y}",
        f"{moment:%Y-%m}",
        f"{moment:%Y-%m-%d}",
        f"{moment:%Y-%m-%dT%H:%M}",
        f"{moment:%Y-%m-%dT%H:%M:%S}Z",
    ]
    ranges = [date_range(text) for text in texts]
    for (outer_low, outer_high), (inner_low, inner_high) in itertools.pairwise(ranges):
        assert outer_low <= inner_low < inner_high <= outer_high


# --- index rows --------------------------------------------------------------------------------


def test_an_input_finding_is_indexed_by_its_elements() -> None:
    finding = observation(
        "f1", "p1", "appearance", "lytic", level="L1", effective="2025-01-01", study="s1"
    )
    finding["identifier"] = [{"system": "urn:feed", "value": "7"}]
    rows = index_rows(finding)
    tokens = {(p, s) for p, s, _ in rows.tokens}
    assert ("status", "") in tokens
    assert ("identifier", "urn:feed") in tokens
    assert ("code", finding["code"]["coding"][0]["system"]) in tokens
    assert ("category", "http://terminology.hl7.org/CodeSystem/observation-category") in tokens
    assert set(rows.references) == {
        ("subject", "Patient", "p1"),
        ("derived-from", "ImagingStudy", "s1"),
    }
    assert rows.dates == (("date", at(2025, 1, 1), at(2025, 1, 2)),)


def test_periods_strings_and_modalities() -> None:
    study = imaging_study("s1", "p1", "CT", started="2025-01-01T08:00:00Z", uid="1.2.3")
    rows = index_rows(study)
    assert ("modality", "http://dicom.nema.org/resources/ontology/DCM", "CT") in rows.tokens
    person = patient("p1", "Müller", "Ånna", "1960-04", "female")
    names = index_rows(person).strings
    assert ("family", "muller", "Müller") in names
    assert ("name", "anna", "Ånna") in names
    period = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "effectivePeriod": {"start": "2024-01-01"},
    }
    assert index_rows(period).dates == (("date", at(2024, 1, 1), END_OF_TIME),)
    ended = {**period, "effectivePeriod": {"end": "2024-01"}}
    assert index_rows(ended).dates == (("date", START_OF_TIME, at(2024, 2, 1)),)


@pytest.mark.parametrize(
    ("reference", "target"),
    [
        ("Patient/p1", ("Patient", "p1")),
        ("RiskAssessment/r1/_history/3", ("RiskAssessment", "r1")),
        ("https://host/fhir/Observation/o.1", ("Observation", "o.1")),
        ("#device", None),
        ("urn:uuid:0c5a7e0e-41b5-4d3c-8f3c-6a8a7b1f0d11", None),
        ("not a reference", None),
    ],
)
def test_reference_targets(reference: str, target: tuple[str, str] | None) -> None:
    assert reference_target({"reference": reference}) == target


def test_a_choice_element_is_read_whatever_its_type() -> None:
    resource = {"resourceType": "RiskAssessment", "occurrenceDateTime": "2024"}
    assert values_at(resource, "RiskAssessment.occurrence") == ["2024"]
    assert values_at(resource, "RiskAssessment.occurrenceless") == []


def test_a_subject_group_is_indexed_as_a_group() -> None:
    rows = index_rows({"resourceType": "Observation", "subject": {"reference": "Group/p02"}})
    assert rows.references == (("subject", "Group", "p02"),)


# --- requests --------------------------------------------------------------------------------


def parse(rtype: str, *items: tuple[str, str], lenient: bool = False) -> Any:
    return parse_search(rtype, items, default_count=20, max_count=50, lenient=lenient)


def test_comma_is_or_and_repetition_is_and() -> None:
    query = parse("Observation", ("patient", "a,b"), ("patient", "c"))
    first, second = query.clauses
    assert first.values == (ReferenceValue(None, "a"), ReferenceValue(None, "b"))
    assert second.values == (ReferenceValue(None, "c"),)


@pytest.mark.parametrize(
    ("item", "value"),
    [
        (("code", "s|c"), TokenValue("s", "c")),
        (("code", "|c"), TokenValue("", "c")),
        (("code", "c"), TokenValue(None, "c")),
        (("code", "s|"), TokenValue("s", None)),
        (("code", "a\\,b"), TokenValue(None, "a,b")),
        (("_id", "x|y"), TokenValue(None, "x|y")),
        (("subject:Patient", "p1"), ReferenceValue("Patient", "p1")),
        (("subject", "Group/g1"), ReferenceValue("Group", "g1")),
        (("date", "ge2024-05"), DateValue("ge", at(2024, 5, 1), at(2024, 6, 1))),
        (("date", "2024"), DateValue("eq", at(2024, 1, 1), at(2025, 1, 1))),
    ],
)
def test_values_by_type(item: tuple[str, str], value: Any) -> None:
    (clause,) = parse("Observation", item).clauses
    assert clause.values == (value,)


@pytest.mark.parametrize(
    ("item", "value"),
    [
        (("name", "MÜL"), StringValue("start", "mul")),
        (("name:contains", "ll"), StringValue("contains", "ll")),
        (("name:exact", "Müller"), StringValue("exact", "Müller")),
    ],
)
def test_string_values(item: tuple[str, str], value: Any) -> None:
    (clause,) = parse("Patient", item).clauses
    assert clause.values == (value,)


@pytest.mark.parametrize(
    "item",
    [
        ("code:exact", "x"),
        ("code:text", "x"),
        ("subject:Medication", "x"),
        ("subject:Patient", "Group/g"),
        ("subject", "not/a/reference!"),
        ("date", "ap2024"),
        ("date", "xx2024"),
        ("date", "2024-13"),
        ("date:missing", "maybe"),
        ("_sort", "code"),
        ("_count", "-1"),
        ("_total", "some"),
        ("_totalMethod", "accurate"),
        ("_summary", "short"),
        ("_elements", "a.b"),
        ("_include", "*"),
        ("_include", "Observation:code"),
        ("_include", "DiagnosticReport:result"),
        ("_include", "DiagnosticReport:result:Patient"),
        ("_revinclude", "DiagnosticReport:subject"),
        ("_revinclude", "Nothing:target"),
        ("code", ","),
    ],
)
def test_what_cannot_run_is_400_even_lenient(item: tuple[str, str]) -> None:
    with pytest.raises(SearchError) as raised:
        parse("Observation", item, lenient=True)
    assert raised.value.status == 400
    assert raised.value.issues[0].expression


def test_unknown_parameters_are_400_when_strict_and_ignored_when_lenient() -> None:
    with pytest.raises(SearchError, match="colour"):
        parse("Observation", ("colour", "blue"), ("code", "x"))
    query = parse("Observation", ("colour", "blue"), ("code", "x"), lenient=True)
    assert query.used == (("code", "x"),)
    # Declared elsewhere is not declared here.
    with pytest.raises(SearchError):
        parse("Provenance", ("subject", "Patient/p1"))
    with pytest.raises(SearchError):
        parse("RiskAssessment", ("identifier", "x"))


def test_result_parameters() -> None:
    query = parse(
        "DiagnosticReport",
        ("_sort", "-date,_lastUpdated"),
        ("_count", "500"),
        ("_total", "none"),
        ("_include", "DiagnosticReport:result"),
        ("_revinclude:iterate", "Provenance:target"),
        ("_format", "json"),
        ("_summary", ""),
    )
    assert query.sort == (("date", True), ("_lastUpdated", False))
    assert query.count == 50
    assert not query.counts_total
    assert [(i.source, i.parameter.name, i.reverse, i.iterate) for i in query.includes] == [
        ("DiagnosticReport", "result", False, False),
        ("Provenance", "target", True, True),
    ]
    assert [name for name, _ in query.used] == [
        "_sort",
        "_total",
        "_include",
        "_revinclude:iterate",
    ]
    assert parse("Observation", ("_summary", "count")).page_size == 0
    # fhirpy's count(): `_count=0&_totalMethod=count`.
    counted = parse("Observation", ("_count", "0"), ("_totalMethod", "count"))
    assert counted.total == "accurate"
    assert counted.page_size == 0
    assert not parse("Observation", ("_totalMethod", "none")).counts_total


def test_summary_and_elements_do_not_combine() -> None:
    with pytest.raises(SearchError):
        parse("Observation", ("_summary", "true"), ("_elements", "status"))


def test_a_type_without_parameters_cannot_be_searched() -> None:
    with pytest.raises(SearchError):
        parse("Medication")


# --- shaping and declarations ------------------------------------------------------------------


def test_subsets_are_tagged() -> None:
    finding = observation("f1", "p1", "appearance", "lytic", level="L1", effective="2025-01-01")
    finding["text"] = {"status": "generated", "div": "<div>x</div>"}
    elements = shaped(finding, None, ("status",))
    assert set(elements) == {"resourceType", "id", "meta", "status", "code"}  # code: 1..1
    assert elements["meta"]["tag"][0]["code"] == "SUBSETTED"
    summary = shaped(finding, "true", ())
    assert "bodySite" not in summary
    assert "code" in summary
    assert "subject" in summary
    data = shaped(finding, "data", ())
    assert "text" not in data
    assert "bodySite" in data
    text = shaped(finding, "text", ())
    assert "text" in text
    assert "status" in text
    assert "code" in text  # mandatory, like status
    assert "bodySite" not in text
    assert shaped(finding, None, ()) is finding
    assert shaped(finding, "false", ()) is finding


@pytest.mark.parametrize("rtype", sorted(PARAMETERS))
def test_the_declarations_are_the_table(rtype: str) -> None:
    declared = search_declarations(rtype)
    names = [p["name"] for p in declared["searchParam"]]
    table = [p.name for p in PARAMETERS[rtype]]
    assert names[: len(table)] == table
    assert set(names[len(table) :]) == {
        "_count",
        "_total",
        "_totalMethod",
        "_summary",
        "_elements",
        "_sort",
    }
    for include in declared.get("searchInclude", []):
        source, name = include.split(":")
        assert source == rtype
        parse(rtype, ("_include", include))
        assert any(p.name == name and p.type == "reference" for p in PARAMETERS[rtype])
    for include in declared.get("searchRevInclude", []):
        parse(rtype, ("_revinclude", include))


def test_provenance_is_revincluded_by_every_type() -> None:
    for rtype in PARAMETERS:
        assert "Provenance:target" in search_declarations(rtype).get("searchRevInclude", [])


def test_dates_in_index_rows_are_aware() -> None:
    rows = index_rows({"resourceType": "Provenance", "recorded": "2024-05-01T10:00:00+01:00"})
    ((_, low, high),) = rows.dates
    assert low.tzinfo is not None
    assert high - low == timedelta(seconds=1)
