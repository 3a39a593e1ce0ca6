"""Search end to end below HTTP: the table's every parameter, modifiers, OR/AND, _sort, paging,
_total, _elements, _summary, _include/_revinclude, strict/lenient, and the wrong results of
issue 12 as regressions, on SQLite and PostgreSQL (one database per backend and module: the
searches only read).

Every declared parameter is checked against an oracle written in Python over the resources'
content: the search must return exactly the resources of its type the oracle accepts.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool
from support.conditions import CLINICAL, primary_condition, secondary_condition

from fhir_app.api.search import searchset_for
from fhir_app.api.security.guarded import GuardedService
from fhir_app.api.security.principal import Principal
from fhir_app.api.security.scopes import Scopes
from fhir_app.config import Settings
from fhir_app.fhir.samples import imaging_study, observation, patient, transaction
from fhir_app.fhir.search import PARAMETERS, index_rows
from fhir_app.fhir.search.dates import date_range
from fhir_app.service import FhirService, ServiceError
from fhir_app.store import make_engine, migrate, uow_factory

Json = dict[str, Any]
BASE = "https://fhir.example/fhir"
FEED = "urn:feed"
MRN = "urn:mrn"
APPEARANCE = observation("x", "p", "appearance", "lytic", level="L1", effective="2025")["code"]
APPEARANCE_CODE = APPEARANCE["coding"][0]


def note(obs_id: str, subject: str) -> Json:
    """An Observation outside the contract (stored, not a finding) about `subject`."""
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"text": "free-text note"},
        "subject": {"reference": subject},
    }


def data_set() -> list[Json]:
    """Two patients: p1 with two findings (one preliminary, one read from a CT study) and a
    Patient resource; p2 with one finding from an MR study; notes about Group/p02 and
    Patient/p02 (the same id, two types)."""
    f1 = observation(
        "f1", "p1", "appearance", "lytic", level="L1", effective="2025-01-01", study="s1"
    )
    f1["identifier"] = [{"system": FEED, "value": "f1-id"}]
    f2 = observation(
        "f2", "p1", "appearance", "lytic", level="L2", effective="2025-03-15", status="preliminary"
    )
    g1 = observation("g1", "p2", "appearance", "blastic", level="L1", effective="2024-06-10")
    anna = patient("p1", "Müller", "Anna", "1960-04-12", "female")
    anna["identifier"] = [{"system": MRN, "value": "123"}]
    c1 = primary_condition("c1", "p1", "breast", clinical="remission")
    c1["identifier"] = [{"system": FEED, "value": "c1-id"}]
    c1["onsetDateTime"] = "2019-05-02"
    c2 = secondary_condition("c2", "p2", "L3")
    return [
        c1,
        c2,
        anna,
        patient("p2", "Smith", "John", "1950-01-01", "male"),
        imaging_study("s1", "p1", "CT", started="2025-01-01T08:00:00Z", uid="1.2.3"),
        imaging_study("s2", "p2", "MR", started="2024-06-10T08:00:00Z", uid="1.2.4"),
        f1,
        f2,
        g1,
    ]


def _admin(url: URL) -> Any:
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of this module, on each backend."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("search") / "fhir-app.db"
        url = f"sqlite:///{path}"
        migrate(url)
        yield url
        return
    admin: URL = request.getfixturevalue("postgres_admin_url")
    name = f"fhirapp_test_{secrets.token_hex(6)}"
    engine = _admin(admin)
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    url_text = admin.set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url_text)
        yield url_text
    finally:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        engine.dispose()


@pytest.fixture(scope="module")
def searched(database: str) -> Iterator[FhirService]:
    """The service over the data set, stored once."""
    engine = make_engine(database)
    service = FhirService(uow_factory(engine))
    answer = service.transaction(transaction(data_set()))
    assert all(e["response"]["status"].startswith("20") for e in answer["entry"])
    # Stored as the store stores any resource (this branch's input rules refuse a Group subject).
    with service.uow_factory() as uow:
        for resource, owner in (
            (note("grp", "Group/p02"), None),
            (note("pat02", "Patient/p02"), "p02"),
        ):
            uow.resources.write(
                "Observation",
                resource["id"],
                resource,
                patient_id=owner,
                status="final",
                is_output=False,
                index=index_rows(resource),
                now=datetime.now(UTC),
            )
        uow.commit()
    yield service
    engine.dispose()


SETTINGS = Settings(
    database_url="sqlite://", auth_tokens=[], default_page_size=20, max_page_size=50
)


def search(
    service: FhirService, rtype: str, *items: tuple[str, str], lenient: bool = False
) -> Json:
    return searchset_for(service, rtype, items, base=BASE, settings=SETTINGS, lenient=lenient)


def keys(bundle: Json, mode: str = "match") -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    }


def everything(service: FhirService, rtype: str) -> list[Json]:
    bundle = search(service, rtype, ("_count", "50"))
    assert bundle["total"] <= 50
    return [e["resource"] for e in bundle.get("entry", [])]


def first_of(service: FhirService, rtype: str, *items: tuple[str, str]) -> Json:
    entries = search(service, rtype, *items)["entry"]
    resource: Json = entries[0]["resource"]
    return resource


# --- an oracle per row of the table -------------------------------------------------------------


def refs(resource: Json, *path: str) -> set[str]:
    """The `Type/id` of every reference at a path (version-specific ones without the version)."""
    nodes: list[Any] = [resource]
    for part in path:
        nodes = [
            item
            for node in nodes
            if isinstance(node, dict)
            for item in (node.get(part) if isinstance(node.get(part), list) else [node.get(part)])
            if item is not None
        ]
    return {"/".join(n["reference"].split("/")[:2]) for n in nodes if "reference" in n}


def codings(resource: Json, element: str) -> set[tuple[str | None, str | None]]:
    found: set[tuple[str | None, str | None]] = set()
    values = resource.get(element)
    for value in values if isinstance(values, list) else [values]:
        if isinstance(value, dict):
            for c in value.get("coding", [value]):
                found.add((c.get("system"), c.get("code", c.get("value"))))
        elif isinstance(value, str):
            found.add((None, value))
    return found


def in_year(text: str | None, year: int) -> bool:
    return text is not None and date_range(text)[0].year == year


@dataclass(frozen=True)
class Row:
    """A search of one declared parameter and who it must find."""

    rtype: str
    name: str
    value: Callable[[FhirService], str] | str
    oracle: Callable[[Json], bool]


def _report(service: FhirService) -> Json:
    return first_of(service, "DiagnosticReport", ("patient", "p1"))


def _risk(service: FhirService) -> Json:
    return first_of(service, "RiskAssessment", ("patient", "p1"))


def _provenance(service: FhirService) -> Json:
    return first_of(service, "Provenance", ("patient", "p1"))


ROWS = [
    Row("Observation", "_id", "f1", lambda r: r["id"] == "f1"),
    Row("Observation", "_lastUpdated", "ge2000", lambda r: True),
    Row("Observation", "subject", "Patient/p1", lambda r: "Patient/p1" in refs(r, "subject")),
    Row("Observation", "patient", "p2", lambda r: "Patient/p2" in refs(r, "subject")),
    Row(
        "Observation",
        "code",
        f"{APPEARANCE_CODE['system']}|{APPEARANCE_CODE['code']}",
        lambda r: (APPEARANCE_CODE["system"], APPEARANCE_CODE["code"]) in codings(r, "code"),
    ),
    Row("Observation", "identifier", f"{FEED}|f1-id", lambda r: r["id"] == "f1"),
    Row("Observation", "status", "preliminary", lambda r: r["status"] == "preliminary"),
    Row(
        "Observation",
        "category",
        "imaging",
        lambda r: any(code == "imaging" for _, code in codings(r, "category")),
    ),
    Row(
        "Observation",
        "date",
        "2025-03-15",
        lambda r: (r.get("effectiveDateTime") or "").startswith("2025-03-15"),
    ),
    Row(
        "Observation",
        "derived-from",
        "ImagingStudy/s1",
        lambda r: "ImagingStudy/s1" in refs(r, "derivedFrom"),
    ),
    Row("ImagingStudy", "_id", "s2", lambda r: r["id"] == "s2"),
    Row("ImagingStudy", "_lastUpdated", "lt2000", lambda r: False),
    Row("ImagingStudy", "subject", "Patient/p1", lambda r: r["id"] == "s1"),
    Row("ImagingStudy", "patient", "p2", lambda r: r["id"] == "s2"),
    Row("ImagingStudy", "identifier", "urn:oid:1.2.3", lambda r: r["id"] == "s1"),
    Row("ImagingStudy", "status", "available", lambda r: r["status"] == "available"),
    Row("ImagingStudy", "modality", "CT", lambda r: r["id"] == "s1"),
    Row("ImagingStudy", "started", "ge2025", lambda r: r["started"] >= "2025"),
    Row("Patient", "_id", "p2", lambda r: r["id"] == "p2"),
    Row("Patient", "_lastUpdated", "ge2000", lambda r: True),
    Row("Patient", "identifier", f"{MRN}|123", lambda r: r["id"] == "p1"),
    Row("Patient", "gender", "female", lambda r: r["gender"] == "female"),
    Row("Patient", "birthdate", "1960", lambda r: r["birthDate"].startswith("1960")),
    Row("Patient", "name", "mül", lambda r: r["id"] == "p1"),
    Row("Patient", "family", "SMITH", lambda r: r["id"] == "p2"),
    Row("Patient", "given", "anna", lambda r: r["id"] == "p1"),
    Row("RiskAssessment", "_id", lambda s: _risk(s)["id"], lambda r: r["id"] == "<risk>"),
    Row("RiskAssessment", "_lastUpdated", "ge2000", lambda r: True),
    Row("RiskAssessment", "subject", "Patient/p2", lambda r: "Patient/p2" in refs(r, "subject")),
    Row("RiskAssessment", "patient", "p1", lambda r: "Patient/p1" in refs(r, "subject")),
    Row(
        "RiskAssessment",
        "method",
        lambda s: "{}|{}".format(*sorted(codings(_risk(s), "method"))[0]),
        lambda r: bool(codings(r, "method")),
    ),
    Row(
        "RiskAssessment",
        "code",
        lambda s: "{}|{}".format(*sorted(codings(_risk(s), "method"))[0]),
        lambda r: bool(codings(r, "method")),
    ),
    Row("RiskAssessment", "date", "2024", lambda r: in_year(r.get("occurrenceDateTime"), 2024)),
    Row("DiagnosticReport", "_id", lambda s: _report(s)["id"], lambda r: r["id"] == "<report>"),
    Row("DiagnosticReport", "_lastUpdated", "ge2000", lambda r: True),
    Row("DiagnosticReport", "subject", "Patient/p1", lambda r: "Patient/p1" in refs(r, "subject")),
    Row("DiagnosticReport", "patient", "p2", lambda r: "Patient/p2" in refs(r, "subject")),
    Row(
        "DiagnosticReport",
        "code",
        "http://loinc.org|18748-4",
        lambda r: ("http://loinc.org", "18748-4") in codings(r, "code"),
    ),
    Row("DiagnosticReport", "status", "preliminary", lambda r: r["status"] == "preliminary"),
    Row("DiagnosticReport", "date", "le2024-12", lambda r: in_year(r["effectiveDateTime"], 2024)),
    Row("DiagnosticReport", "issued", "ge2000", lambda r: True),
    Row(
        "DiagnosticReport",
        "result",
        lambda s: refs(_report(s), "result").pop(),
        lambda r: "Patient/p1" in refs(r, "subject"),
    ),
    Row("Provenance", "_id", lambda s: _provenance(s)["id"], lambda r: r["id"] == "<provenance>"),
    Row("Provenance", "_lastUpdated", "ge2000", lambda r: True),
    Row(
        "Provenance",
        "patient",
        "p2",
        lambda r: "Observation/g1" in refs(r, "entity", "what"),
    ),
    Row(
        "Provenance",
        "target",
        lambda s: "DiagnosticReport/" + _report(s)["id"],
        lambda r: "Observation/f1" in refs(r, "entity", "what"),
    ),
    Row(
        "Provenance",
        "entity",
        "Observation/g1",
        lambda r: "Observation/g1" in refs(r, "entity", "what"),
    ),
    Row("Provenance", "recorded", "ge2000", lambda r: True),
    Row(
        "Provenance",
        "code",
        "http://terminology.hl7.org/CodeSystem/v3-DataOperation|CREATE",
        lambda r: (
            ("http://terminology.hl7.org/CodeSystem/v3-DataOperation", "CREATE")
            in codings(r, "activity")
        ),
    ),
]
ROWS += [
    Row("Condition", "_id", "c2", lambda r: r["id"] == "c2"),
    Row("Condition", "_lastUpdated", "ge2000", lambda r: True),
    Row("Condition", "subject", "Patient/p1", lambda r: "Patient/p1" in refs(r, "subject")),
    Row("Condition", "patient", "p2", lambda r: "Patient/p2" in refs(r, "subject")),
    Row(
        "Condition",
        "code",
        "http://snomed.info/sct|94222008",
        lambda r: ("http://snomed.info/sct", "94222008") in codings(r, "code"),
    ),
    Row("Condition", "identifier", f"{FEED}|c1-id", lambda r: r["id"] == "c1"),
    Row(
        "Condition",
        "clinical-status",
        f"{CLINICAL}|remission",
        lambda r: (CLINICAL, "remission") in codings(r, "clinicalStatus"),
    ),
    Row(
        "Condition",
        "onset-date",
        "lt2020",
        lambda r: (r.get("onsetDateTime") or "9999") < "2020",
    ),
]


def test_every_row_of_the_table_has_a_case() -> None:
    covered = {(row.rtype, row.name) for row in ROWS}
    declared = {(rtype, p.name) for rtype, params in PARAMETERS.items() for p in params}
    assert declared == covered


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.rtype}-{r.name}" for r in ROWS])
def test_every_declared_parameter_finds_what_it_declares(searched: FhirService, row: Row) -> None:
    value = row.value(searched) if callable(row.value) else row.value
    found = keys(search(searched, row.rtype, (row.name, value)))
    universe = everything(searched, row.rtype)
    if row.name == "_id":
        expected = {f"{row.rtype}/{value}"}
    else:
        expected = {f"{row.rtype}/{r['id']}" for r in universe if row.oracle(r)}
    assert found == expected
    # The value finds something (but where no resource can match, as before 2000).
    assert found or row.value == "lt2000"


@pytest.mark.parametrize(
    ("rtype", "name"),
    sorted(
        {
            (rtype, p.name)
            for rtype in PARAMETERS
            for other in PARAMETERS.values()
            for p in other
            if p.name not in {q.name for q in PARAMETERS[rtype]}
        }
    ),
)
def test_a_parameter_not_declared_for_the_type_is_400_when_strict(
    searched: FhirService, rtype: str, name: str
) -> None:
    with pytest.raises(ServiceError) as raised:
        search(searched, rtype, (name, "x"))
    assert raised.value.status == 400
    lenient = search(searched, rtype, (name, "x"), lenient=True)
    assert name not in lenient["link"][0]["url"]


# --- issue 12: the wrong results, as regressions ---------------------------------------------


def test_id_combined_with_patient(searched: FhirService) -> None:
    assert keys(search(searched, "Observation", ("_id", "f1"), ("patient", "p2"))) == set()
    assert keys(search(searched, "Observation", ("_id", "f1"), ("patient", "p1"))) == {
        "Observation/f1"
    }


def test_comma_is_or(searched: FhirService) -> None:
    found = keys(
        search(
            searched,
            "Observation",
            ("patient", "p1,p2"),
            ("code", "x,{}".format(APPEARANCE_CODE["code"])),
        )
    )
    assert found == {"Observation/f1", "Observation/f2", "Observation/g1"}


def test_a_repeated_parameter_is_and(searched: FhirService) -> None:
    assert keys(search(searched, "Observation", ("patient", "p1"), ("patient", "p2"))) == set()
    both = search(
        searched,
        "Observation",
        ("date", "ge2025-01-01"),
        ("date", "lt2025-02"),
        ("code", APPEARANCE_CODE["code"]),
    )
    assert keys(both) == {"Observation/f1"}


def test_a_reference_parameter_matches_its_type(searched: FhirService) -> None:
    assert keys(search(searched, "Observation", ("subject", "Group/p02"))) == {"Observation/grp"}
    assert keys(search(searched, "Observation", ("subject", "Patient/p02"))) == {
        "Observation/pat02"
    }
    assert keys(search(searched, "Observation", ("subject:Group", "p02"))) == {"Observation/grp"}
    assert keys(search(searched, "Observation", ("subject", "p02"))) == {
        "Observation/grp",
        "Observation/pat02",
    }
    assert keys(search(searched, "Observation", ("patient", "Group/p02"))) == set()
    assert keys(search(searched, "Observation", ("patient", "p02"))) == {"Observation/pat02"}


@pytest.mark.parametrize("rtype", ["RiskAssessment", "DiagnosticReport", "Provenance"])
def test_outputs_declare_no_identifier_search(searched: FhirService, rtype: str) -> None:
    # Outputs carry no business identifier: the declaration went (issue 12).
    assert all("identifier" not in r for r in everything(searched, rtype))
    with pytest.raises(ServiceError):
        search(searched, rtype, ("identifier", "x"))


# --- modifiers and prefixes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-01", {"f1"}),
        ("eq2025-01", {"f1"}),
        ("ne2025-01-01", {"f2", "g1"}),
        ("gt2025-01-01", {"f2"}),
        ("ge2025-01-01", {"f1", "f2"}),
        ("lt2025-01-01", {"g1"}),
        ("le2025-01-01", {"f1", "g1"}),
        ("sa2025-01-01", {"f2"}),
        ("eb2025-01-01", {"g1"}),
        ("2025", {"f1", "f2"}),
        ("2025-01-01T00:00:00Z", set()),
        ("ge2025-03-15T00:00:00+01:00", {"f2"}),
    ],
)
def test_date_prefixes_and_precision(searched: FhirService, value: str, expected: set[str]) -> None:
    found = search(searched, "Observation", ("date", value), ("code", APPEARANCE_CODE["code"]))
    assert keys(found) == {f"Observation/{i}" for i in expected}


def test_missing_and_not(searched: FhirService) -> None:
    no_date = keys(search(searched, "Observation", ("date:missing", "true")))
    assert no_date == {"Observation/grp", "Observation/pat02"}
    with_study = keys(
        search(searched, "Observation", ("derived-from:missing", "false"), ("patient", "p1"))
    )
    assert "Observation/f1" in with_study
    assert "Observation/f2" not in with_study
    not_final = keys(search(searched, "Observation", ("status:not", "final"), ("patient", "p1")))
    preliminary = search(searched, "Observation", ("patient", "p1"), ("status", "preliminary"))
    assert "Observation/f2" in keys(preliminary)
    assert not_final == keys(preliminary)


def test_string_modifiers(searched: FhirService) -> None:
    assert keys(search(searched, "Patient", ("name", "MUELLER"))) == set()
    assert keys(search(searched, "Patient", ("name:contains", "ll"))) == {"Patient/p1"}
    assert keys(search(searched, "Patient", ("family:exact", "Müller"))) == {"Patient/p1"}
    assert keys(search(searched, "Patient", ("family:exact", "müller"))) == set()
    assert keys(search(searched, "Patient", ("name", "jo,an"))) == {"Patient/p1", "Patient/p2"}


def test_token_forms(searched: FhirService) -> None:
    code = APPEARANCE_CODE["code"]
    system = APPEARANCE_CODE["system"]
    assert keys(search(searched, "Observation", ("code", f"|{code}"))) == set()
    assert keys(search(searched, "Observation", ("code", f"{system}|"), ("patient", "p2"))) >= {
        "Observation/g1"
    }
    assert keys(search(searched, "Observation", ("identifier", "f1-id"))) == {"Observation/f1"}
    assert keys(search(searched, "Observation", ("identifier", "other|f1-id"))) == set()


# --- result parameters -----------------------------------------------------------------------


def test_sort(searched: FhirService) -> None:
    code = ("code", APPEARANCE_CODE["code"])

    def order(*items: tuple[str, str]) -> list[str]:
        bundle = search(searched, "Observation", code, *items)
        return [e["resource"]["id"] for e in bundle["entry"]]

    assert order(("_sort", "date")) == ["g1", "f1", "f2"]
    assert order(("_sort", "-date")) == ["f2", "f1", "g1"]
    updated = order(("_sort", "_lastUpdated"))
    assert order(("_sort", "-_lastUpdated")) == list(reversed(updated))
    with pytest.raises(ServiceError):
        search(searched, "Observation", ("_sort", "status"))


def test_count_pages_and_total(searched: FhirService) -> None:
    first = search(searched, "Observation", ("_count", "2"), ("_sort", "_lastUpdated"))
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert len(first["entry"]) == 2
    assert "_count=2" in links["next"]
    assert "_offset=2" in links["next"]
    assert "_sort=_lastUpdated" in links["self"]
    assert "previous" not in links
    second = search(
        searched, "Observation", ("_count", "2"), ("_offset", "2"), ("_sort", "_lastUpdated")
    )
    assert {link["relation"] for link in second["link"]} >= {"previous", "next"}
    assert not keys(first) & keys(second)
    none = search(searched, "Observation", ("_count", "2"), ("_total", "none"))
    assert "total" not in none
    assert any(link["relation"] == "next" for link in none["link"])
    last = search(searched, "Observation", ("_count", "50"), ("_total", "none"))
    assert not any(link["relation"] == "next" for link in last["link"])
    for mode in ("estimate", "accurate"):
        assert search(searched, "Observation", ("_total", mode))["total"] == first["total"]
    count = search(searched, "Observation", ("_summary", "count"))
    assert count["total"] == first["total"]
    assert "entry" not in count


def test_elements_and_summary_are_subsetted(searched: FhirService) -> None:
    elements = search(searched, "Observation", ("_id", "f1"), ("_elements", "status,subject"))
    (resource,) = [e["resource"] for e in elements["entry"]]
    # `code` is mandatory (1..1): kept unasked (search.html#elements).
    assert set(resource) == {"resourceType", "id", "meta", "status", "subject", "code"}
    (only,) = [
        e["resource"]
        for e in search(
            searched, "Observation", ("_id", "f1"), ("_elements", "valueCodeableConcept")
        )["entry"]
    ]
    assert {"status", "code"} <= set(only)
    assert "subject" not in only
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED",
        "display": "subsetted",
    } in resource["meta"]["tag"]
    summary = first_of(searched, "DiagnosticReport", ("patient", "p1"), ("_summary", "true"))
    assert "presentedForm" not in summary
    assert "code" in summary
    data = first_of(searched, "DiagnosticReport", ("patient", "p1"), ("_summary", "data"))
    assert "text" not in data
    assert "presentedForm" in data
    full = first_of(searched, "DiagnosticReport", ("patient", "p1"))
    assert "tag" not in full["meta"]


def test_include_results_and_revinclude_provenance(searched: FhirService) -> None:
    report = _report(searched)
    bundle = search(
        searched,
        "DiagnosticReport",
        ("patient", "p1"),
        ("_include", "DiagnosticReport:result"),
        ("_revinclude", "Provenance:target"),
    )
    assert keys(bundle) == {f"DiagnosticReport/{report['id']}"}
    included = keys(bundle, "include")
    assert refs(report, "result") <= included
    provenance = {k for k in included if k.startswith("Provenance/")}
    assert provenance == {f"Provenance/{_provenance(searched)['id']}"}
    assert bundle["total"] == 1  # includes are not counted
    assert "_include=DiagnosticReport:result" in bundle["link"][0]["url"]


def test_include_iterate(searched: FhirService) -> None:
    items = (("patient", "p1"), ("_include", "DiagnosticReport:result"))
    once = keys(search(searched, "DiagnosticReport", *items), "include")
    iterated = keys(
        search(
            searched, "DiagnosticReport", *items, ("_include:iterate", "Observation:derived-from")
        ),
        "include",
    )
    assert "Observation/f1" not in once
    assert {"Observation/f1", "ImagingStudy/s1"} <= iterated
    assert iterated > once
    with pytest.raises(ServiceError):
        search(searched, "DiagnosticReport", ("_include", "Observation:derived-from"))


def test_include_and_revinclude_by_the_patient_compartment(searched: FhirService) -> None:
    included = search(
        searched, "Observation", ("_id", "f1,g1"), ("_include", "Observation:patient")
    )
    assert keys(included, "include") == {"Patient/p1", "Patient/p2"}
    reverse = search(searched, "Patient", ("_id", "p2"), ("_revinclude", "ImagingStudy:patient"))
    assert keys(reverse, "include") == {"ImagingStudy/s2"}


def test_revinclude_of_results_and_subject_include(searched: FhirService) -> None:
    report = _report(searched)
    result = sorted(refs(report, "result"))[0]
    bundle = search(
        searched,
        "Observation",
        ("_id", result.split("/")[1]),
        ("_revinclude", "DiagnosticReport:result"),
        ("_include", "Observation:subject"),
    )
    assert keys(bundle, "include") == {f"DiagnosticReport/{report['id']}", "Patient/p1"}


# --- security: includes obey the caller's scopes and patient context ----------------------


def caller(scopes: str, patient: str | None) -> Principal:
    return Principal(
        client_id="app",
        subject=None,
        scopes=Scopes.parse(scopes),
        patient=patient,
        scope_context="patient" if patient else "system",
    )


def test_a_patient_context_never_gets_another_patients_resources_by_include(
    searched: FhirService,
) -> None:
    guarded = GuardedService(searched, caller("patient/*.rs", "p1"))
    everyone = search(searched, "Provenance", ("_revinclude", "Provenance:target"))
    assert len(keys(everyone)) == 2
    bundle = search(
        guarded,
        "DiagnosticReport",
        ("_revinclude", "Provenance:target"),
        ("_include", "DiagnosticReport:result"),
    )
    assert keys(bundle) == {f"DiagnosticReport/{_report(searched)['id']}"}
    for entry in bundle["entry"]:
        assert (
            "Patient/p1" in refs(entry["resource"], "subject")
            or entry["resource"]["resourceType"] == "Provenance"
        )
    assert keys(bundle, "include") & {
        f"Provenance/{p['id']}" for p in everything(searched, "Provenance")
    } == {f"Provenance/{_provenance(searched)['id']}"}
    # Asking for the other patient finds nothing, includes neither.
    other = search(
        guarded, "DiagnosticReport", ("patient", "p2"), ("_revinclude", "Provenance:target")
    )
    assert "entry" not in other
    assert other["total"] == 0
    # Provenance of p2 by its target: not visible.
    p2_report = first_of(searched, "DiagnosticReport", ("patient", "p2"))
    hidden = search(guarded, "Provenance", ("target", f"DiagnosticReport/{p2_report['id']}"))
    assert hidden["total"] == 0


def test_includes_need_the_scope_of_their_type(searched: FhirService) -> None:
    guarded = GuardedService(searched, caller("system/DiagnosticReport.rs", None))
    bundle = search(
        guarded,
        "DiagnosticReport",
        ("patient", "p1"),
        ("_revinclude", "Provenance:target"),
        ("_include", "DiagnosticReport:result"),
    )
    assert len(keys(bundle)) == 1
    assert keys(bundle, "include") == set()
    with pytest.raises(ServiceError) as raised:
        search(guarded, "Provenance")
    assert raised.value.status == 403
