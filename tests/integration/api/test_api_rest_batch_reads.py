"""GET (and HEAD) entries of batches and transactions (issue 12, FHIR R4 http.html#transaction),
on SQLite and on PostgreSQL: read, vread, history, search, compartment search and $everything,
each answered like the route; an entry the server cannot answer gets its own OperationOutcome.
The two official R4 batch examples are answered on every entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_support import example, post_json, put_json, snapshot
from sqlalchemy import Engine

from fhir_app.fhir.samples import patient

DATA = Path(__file__).resolve().parent / "data"


def official(name: str) -> dict[str, Any]:
    """One of the official FHIR R4 batch examples (data/README.md)."""
    document: dict[str, Any] = orjson.loads((DATA / name).read_bytes())
    return document


def reads(*urls: str, kind: str = "batch", method: str = "GET") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"request": {"method": method, "url": url}} for url in urls],
    }


def answered(fhir: httpx.Client, bundle: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    response = post_json(fhir, "", bundle, **headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entry"]
    assert len(entries) == len(bundle["entry"])
    return entries


@pytest.fixture
def stored(fhir: httpx.Client) -> httpx.Client:
    post_json(fhir, "", example("patient-01-stable-blastic.json")).raise_for_status()
    return fhir


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_read_entries_are_answered_like_the_routes(stored: httpx.Client, kind: str) -> None:
    urls = [
        "Observation/p01-primary",
        "Observation/p01-primary/_history/1",
        "Observation/p01-primary/_history",
        "Observation?patient=p01",
        "/Patient/p01/RiskAssessment",
        "Patient/p01/$everything?_count=5",
        "Observation/_history?_count=2",
        "_history?_count=2",
    ]
    entries = answered(stored, reads(*urls, kind=kind))
    for url, entry in zip(urls, entries, strict=True):
        assert entry["response"]["status"] == "200 OK", (url, entry)
        route = stored.get(url.lstrip("/"))
        assert route.status_code == 200
        resource = entry["resource"]
        expected = route.json()
        if resource["resourceType"] == "Bundle":
            assert resource["type"] == expected["type"]
            assert [e.get("fullUrl") for e in resource["entry"]] == [
                e.get("fullUrl") for e in expected["entry"]
            ]
        else:
            assert resource == expected
            assert entry["response"]["etag"] == route.headers["etag"]


def test_head_entries_have_no_resource(stored: httpx.Client) -> None:
    [entry] = answered(stored, reads("Observation/p01-primary", method="HEAD"))
    assert entry["response"]["status"] == "200 OK"
    assert "resource" not in entry


def test_conditional_read_entries_are_answered_like_the_route(stored: httpx.Client) -> None:
    route = stored.get("Observation/p01-primary")
    current, modified = route.headers["etag"], route.json()["meta"]["lastUpdated"]
    conditions: list[tuple[dict[str, str], str]] = [
        ({"ifNoneMatch": current}, "304 Not Modified"),
        ({"ifNoneMatch": 'W/"999"'}, "200 OK"),
        ({"ifNoneMatch": "*"}, "304 Not Modified"),
        ({"ifModifiedSince": "2099-01-01T00:00:00Z"}, "304 Not Modified"),
        ({"ifModifiedSince": modified}, "304 Not Modified"),
        ({"ifModifiedSince": "2000-01-01T00:00:00+01:00"}, "200 OK"),
        # If-None-Match decides when both are sent (RFC 9110 13.1.3), as on the route.
        ({"ifNoneMatch": 'W/"999"', "ifModifiedSince": "2099-01-01T00:00:00Z"}, "200 OK"),
    ]
    for method in ("GET", "HEAD"):
        bundle = reads(*["Observation/p01-primary"] * len(conditions), method=method)
        for entry, (condition, _) in zip(bundle["entry"], conditions, strict=True):
            entry["request"].update(condition)
        for entry, (condition, status) in zip(answered(stored, bundle), conditions, strict=True):
            assert entry["response"]["status"] == status, (condition, entry)
            assert entry["response"]["etag"] == current
            if status.startswith("304") or method == "HEAD":
                assert "resource" not in entry
            else:
                assert entry["resource"] == route.json()
    # The route answers the same conditions alike.
    assert (
        stored.get("Observation/p01-primary", headers={"If-None-Match": current}).status_code == 304
    )


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("Observation/missing", "404"),
        ("MedicationStatement?patient=example", "404"),
        ("Observation/bad%20id", "400"),
        ("Observation?unknown-parameter=1", "400"),
        ("Observation/p01-primary/_history/9", "404"),
        ("Observation/p01-primary/something/else", "400"),
        ("", "400"),
        ("http://elsewhere.example/fhir/Observation/p01-primary", "400"),
    ],
)
def test_entries_that_cannot_be_answered_get_their_own_outcome(
    stored: httpx.Client, url: str, status: str
) -> None:
    bundle = reads("Observation/p01-primary", url)
    first, second = answered(stored, bundle)
    assert first["response"]["status"] == "200 OK"
    assert second["response"]["status"] == status, second
    assert second["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_a_metadata_entry_is_the_capability_statement(stored: httpx.Client) -> None:
    route = stored.get("metadata").json()
    for url in ("metadata", "/metadata"):
        [entry] = answered(stored, reads(url))
        assert entry["response"]["status"] == "200 OK", entry
        statement = entry["resource"]
        assert statement["resourceType"] == "CapabilityStatement"
        assert statement["rest"] == route["rest"]


def test_an_absolute_url_of_this_server_is_read(stored: httpx.Client, base_url: str) -> None:
    [entry] = answered(stored, reads(f"{base_url}/Observation/p01-primary"))
    assert entry["response"]["status"] == "200 OK"


def test_reads_in_a_transaction_see_its_writes(fhir: httpx.Client) -> None:
    bundle = example("patient-01-stable-blastic.json")
    bundle["entry"].append({"request": {"method": "GET", "url": "DiagnosticReport?patient=p01"}})
    response = post_json(fhir, "", bundle)
    assert response.status_code == 200, response.text
    last = response.json()["entry"][-1]
    assert last["response"]["status"] == "200 OK"
    assert last["resource"]["total"] == 1


def test_a_failed_read_does_not_fail_a_transaction(fhir: httpx.Client) -> None:
    bundle = example("patient-01-stable-blastic.json")
    bundle["entry"].insert(0, {"request": {"method": "GET", "url": "Observation/missing"}})
    response = post_json(fhir, "", bundle)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"] == "404"
    assert fhir.get("Observation/p01-primary").status_code == 200


def test_reads_store_nothing(stored: httpx.Client, engine: Engine) -> None:
    before = snapshot(engine)
    answered(stored, reads("Observation/p01-primary", "Observation?patient=p01", "_history"))
    assert snapshot(engine) == before


# --------------------------------------------------------------------------- official examples


def example_patient(fhir: httpx.Client) -> None:
    """Patient/example and a blood pressure Observation of it (LOINC 55284-4, an Observation
    outside this contract: stored and otherwise ignored)."""
    put_json(
        fhir, "Patient/example", patient("example", "Chalmers", "Peter", "1974-12-25", "male")
    ).raise_for_status()
    blood_pressure = {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "55284-4"}]},
        "subject": {"reference": "Patient/example"},
        "effectiveDateTime": "2016-05-01",
    }
    put_json(fhir, "Observation/bp", blood_pressure).raise_for_status()


def test_the_official_simple_summary_batch(fhir: httpx.Client) -> None:
    example_patient(fhir)
    bundle = official("Bundle-bundle-request-simplesummary.json")
    patient_entry, conditions, medications, observations = answered(
        fhir, bundle, Prefer="handling=lenient"
    )
    assert patient_entry["response"]["status"] == "200 OK"
    assert patient_entry["resource"]["id"] == "example"
    # Types this server does not hold: a 404 for that entry, not for the batch.
    assert medications["response"]["status"] == "404"
    assert medications["response"]["outcome"]["resourceType"] == "OperationOutcome"
    # Condition is an input type (CONTRACT 3, v2): searched like the others.
    assert conditions["response"]["status"] == "200 OK", conditions
    assert observations["response"]["status"] == "200 OK", observations
    found = [e["resource"]["id"] for e in observations["resource"]["entry"]]
    assert found == ["bp"]


def test_the_official_medications_and_allergies_batch(fhir: httpx.Client) -> None:
    example_patient(fhir)
    bundle = official("Bundle-bundle-request-medsallergies.json")
    patient_entry, *others = answered(fhir, bundle)
    assert patient_entry["response"]["status"] == "200 OK"
    assert patient_entry["resource"]["id"] == "example"
    for other in others:
        response = other["response"]
        if response["status"] != "200 OK":
            assert response["outcome"]["resourceType"] == "OperationOutcome", other
    statuses = [other["response"]["status"] for other in others]
    # MedicationStatement and AllergyIntolerance are not held here: 404 for those entries.
    assert statuses[0] == statuses[1] == statuses[3] == "404"
    # Condition?patient=example&_list=$current-problems: `_list` is not a parameter this server
    # supports, and without `Prefer: handling=lenient` an unknown parameter is that entry's 400.
    assert statuses[2] == "400", others[2]
    assert "_list" in others[2]["response"]["outcome"]["issue"][0]["diagnostics"]
