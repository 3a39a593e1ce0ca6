"""Valid FHIR dates at the ends of the calendar (0001 and 9999), on SQLite and on PostgreSQL:
written, indexed and found like any other date, in a route, a transaction and a batch; searched
without a 500; and `$validate` answers what the write does. A value whose UTC time lies beyond
the store's calendar (`9999-12-31T23:00:00-05:00`) is clamped to its end (fhir/search/dates.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_support import issues_text, post_json, put_json

from fhir_app.fhir.samples import observation, patient

EDGE_VALUES = [
    "9999",
    "9999-12-31",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:00:00-05:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01",
]


def finding(obs_id: str, effective: str) -> dict[str, Any]:
    return observation(obs_id, "pe", "pain", "mechanical", level=None, effective=effective)


@pytest.fixture
def with_patient(fhir: httpx.Client) -> httpx.Client:
    response = post_json(
        fhir, "", transaction_of(patient("pe", "Edge", "Eve", "1960-01-01", "female"))
    )
    assert response.status_code == 200, response.text
    return fhir


def transaction_of(*resources: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
            for resource in resources
        ],
    }


def found_ids(fhir: httpx.Client, **params: str) -> list[str]:
    response = fhir.get("Observation", params={"patient": "pe", "_count": "50", **params})
    assert response.status_code == 200, response.text
    return sorted(e["resource"]["id"] for e in response.json().get("entry", []))


@pytest.mark.parametrize("effective", EDGE_VALUES)
def test_an_edge_date_is_validated_written_indexed_and_found(
    with_patient: httpx.Client, effective: str
) -> None:
    fhir = with_patient
    resource = finding("pe-edge", effective)
    validated = post_json(fhir, "Observation/$validate", resource)
    assert validated.status_code == 200, validated.text
    assert "valid: the resource would be accepted" in issues_text(validated.json())
    created = put_json(fhir, "Observation/pe-edge", resource)
    assert created.status_code == 201, created.text
    assert found_ids(fhir, date=effective) == ["pe-edge"]
    assert "pe-edge" not in found_ids(fhir, **{"date:missing": "true"})
    later = effective.startswith("9999")
    assert "pe-edge" in found_ids(fhir, date="ge9000" if later else "le0002")
    assert "pe-edge" not in found_ids(fhir, date="lt9000" if later else "gt0002")
    assert "pe-edge" in found_ids(fhir, date=f"ge{effective}")
    assert "pe-edge" in found_ids(fhir, date=f"le{effective}")


def test_an_edge_period_end_is_written_and_found(with_patient: httpx.Client) -> None:
    fhir = with_patient
    resource = finding("pe-period", "2025-01-01")
    del resource["effectiveDateTime"]
    resource["effectivePeriod"] = {"start": "2025-01-01", "end": "9999-12-31T23:59:59Z"}
    response = post_json(fhir, "", transaction_of(resource))
    assert response.status_code == 200, response.text
    assert found_ids(fhir, date="9999-12-31T23:59:59Z") == []  # the period is wider
    assert "pe-period" in found_ids(fhir, date="ge9999-12-31T23:59:59Z")
    assert "pe-period" in found_ids(fhir, date="le2025-06-01")
    assert "pe-period" not in found_ids(fhir, date="lt2025")


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_edge_dates_in_a_bundle(with_patient: httpx.Client, kind: str) -> None:
    resources = [finding(f"pe-b{i}", value) for i, value in enumerate(EDGE_VALUES)]
    response = post_json(with_patient, "", transaction_of(*resources, kind=kind))
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created"] * len(EDGE_VALUES)
    assert found_ids(with_patient, date="ge9999-12-31") == [
        f"pe-b{i}" for i, v in enumerate(EDGE_VALUES) if v.startswith("9999")
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"date": "9999"},
        {"date": "9999-12-31"},
        {"date": "9999-12-31T23:59:59Z"},
        {"date": "le9999-12-31T23:59:59Z"},
        {"date": "gt9999-12-31T23:00:00-05:00"},
        {"date": "0001-01-01T00:00:00+01:00"},
        {"date": "lt0001-01-01T00:00:00+14:00"},
        {"_lastUpdated": "9999-12-31"},
        {"_lastUpdated": "ge0001-01-01T00:00:00+01:00"},
    ],
    ids=lambda params: "-".join(f"{k}={v}" for k, v in params.items()),
)
def test_edge_searches_are_answered(fhir: httpx.Client, params: dict[str, str]) -> None:
    response = fhir.get("Observation", params=params)
    assert response.status_code == 200, response.text
    entry = {"request": {"method": "GET", "url": str(httpx.URL("Observation", params=params))}}
    batch = post_json(fhir, "", {"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["entry"][0]["response"]["status"] == "200 OK"


@pytest.mark.parametrize(
    "url",
    [
        "_history?_since=9999-12-31T23:00:00-05:00",
        "Observation/_history?_since=0001-01-01T00:00:00%2B01:00",
        "Patient/pe/$everything?_since=9999-12-31T23:00:00-05:00",
    ],
)
def test_edge_since_is_answered(with_patient: httpx.Client, url: str) -> None:
    response = with_patient.get(url)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "value", ["2025-01-01T00:00:00-99:00", "2025-01-01T00:00:00+14:30", "2025-01-01T00:00+15:00"]
)
def test_a_zone_outside_fhir_is_refused(fhir: httpx.Client, value: str) -> None:
    response = fhir.get("Observation", params={"date": value})
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
