"""`Patient/{id}/$everything`, compartment search and `$validate` (issue 12), on SQLite and on
PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_support import example, post_json, put_json, row_counts
from fhirpy import SyncFHIRClient
from sqlalchemy import Engine

from fhir_app.fhir.samples import observation


@pytest.fixture
def two_patients(fhir: httpx.Client) -> httpx.Client:
    for name in ("patient-01-stable-blastic.json", "patient-03-unstable.json"):
        post_json(fhir, "", example(name)).raise_for_status()
    return fhir


def everything_pages(fhir: httpx.Client, url: str) -> list[list[str]]:
    pages: list[list[str]] = []
    following: str | None = url
    while following is not None:
        response = fhir.get(following)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset"
        pages.append([e["fullUrl"].split("/fhir/", 1)[1] for e in bundle["entry"]])
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        following = nxt[0].split("/fhir/", 1)[1] if nxt else None
        assert len(pages) < 50
    return pages


def test_everything_holds_the_patient_its_inputs_and_outputs(two_patients: httpx.Client) -> None:
    pages = everything_pages(two_patients, "Patient/p03/$everything")
    found = [url for page in pages for url in page]
    assert "Patient/p03" in found
    assert "ImagingStudy/p03-ct" in found
    assert "Observation/p03-align" in found
    types = {url.split("/")[0] for url in found}
    assert {"RiskAssessment", "DiagnosticReport", "Provenance"} <= types
    assert not any("p01" in url for url in found)
    for url in found:
        resource = two_patients.get(url).json()
        if resource["resourceType"] != "Patient":
            assert (resource.get("subject") or resource.get("patient") or {}).get(
                "reference", ""
            ).endswith("p03") or resource["resourceType"] == "Provenance"


def test_everything_pages_without_repeats_under_writes(two_patients: httpx.Client) -> None:
    whole = [
        u
        for page in everything_pages(two_patients, "Patient/p03/$everything?_count=500")
        for u in page
    ]
    first = two_patients.get("Patient/p03/$everything", params={"_count": 4}).json()
    seen = [e["fullUrl"].split("/fhir/", 1)[1] for e in first["entry"]]
    put_json(
        two_patients,
        "Observation/p03-extra",
        observation("p03-extra", "p03", "pain", "mechanical", level=None, effective="2025-02-01"),
    )
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    for page in everything_pages(two_patients, nxt.split("/fhir/", 1)[1]):
        assert len(page) <= 4
        seen.extend(page)
    assert len(seen) == len(set(seen))
    assert set(whole) <= set(seen)


def test_everything_count_zero_is_the_total_only(two_patients: httpx.Client) -> None:
    """`_count=0` as in a search (search.html#count): the total, no entries, no `next`."""
    whole = [u for page in everything_pages(two_patients, "Patient/p03/$everything") for u in page]
    for query, expected in (
        ({"_count": "0"}, len(whole)),
        ({"_count": "0", "_type": "Patient,ImagingStudy"}, 2),
    ):
        response = two_patients.get("Patient/p03/$everything", params=query)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset"
        assert bundle["total"] == expected
        assert "entry" not in bundle
        assert [item["relation"] for item in bundle["link"]] == ["self"]


def test_everything_of_an_unknown_patient_is_404(two_patients: httpx.Client) -> None:
    for query in ({}, {"_count": "0"}, {"_type": "Condition"}):
        response = two_patients.get("Patient/nope/$everything", params=query)
        assert response.status_code == 404, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "not-found"
    # Known, but nothing of the asked types or since then: an empty page, not a 404.
    only = two_patients.get("Patient/p03/$everything", params={"_type": "Condition"})
    assert only.status_code == 200, only.text
    later = two_patients.get("Patient/p03/$everything", params={"_since": "2999-01-01T00:00:00Z"})
    assert later.status_code == 200, later.text
    assert "entry" not in later.json() or later.json()["entry"] == []


def test_everything_of_a_patient_without_a_patient_resource(fhir: httpx.Client) -> None:
    """A Patient resource is optional: an id with inputs in its compartment is a patient."""
    finding = observation("px-1", "px", "pain", "mechanical", level=None, effective="2025-01-01")
    put_json(fhir, "Observation/px-1", finding).raise_for_status()
    assert fhir.get("Patient/px").status_code == 404
    response = fhir.get("Patient/px/$everything")
    assert response.status_code == 200, response.text
    urls = [e["fullUrl"].split("/fhir/", 1)[1] for e in response.json()["entry"]]
    assert "Observation/px-1" in urls
    assert "Patient/px" not in urls


def test_everything_type_and_since(two_patients: httpx.Client) -> None:
    only = two_patients.get("Patient/p03/$everything", params={"_type": "Patient,ImagingStudy"})
    assert only.status_code == 200, only.text
    urls = sorted(e["fullUrl"].split("/fhir/", 1)[1] for e in only.json()["entry"])
    assert urls == ["ImagingStudy/p03-ct", "Patient/p03"]
    future = two_patients.get("Patient/p03/$everything", params={"_since": "2999-01-01T00:00:00Z"})
    assert future.json()["entry"] == []
    assert (
        two_patients.get("Patient/p03/$everything", params={"_type": "Encounter"}).status_code
        == 400
    )
    assert two_patients.get("Patient/p03/$everything", params={"_page": "x"}).status_code == 400
    assert two_patients.get("Patient/nobody/$everything").status_code == 404


def test_compartment_search(two_patients: httpx.Client) -> None:
    answer = two_patients.get("Patient/p03/RiskAssessment")
    assert answer.status_code == 200, answer.text
    plain = two_patients.get("RiskAssessment", params={"patient": "p03"}).json()
    assert answer.json()["total"] == plain["total"] > 0
    ids = {e["resource"]["id"] for e in answer.json()["entry"]}
    assert ids == {e["resource"]["id"] for e in plain["entry"]}
    coded = two_patients.get(
        "Patient/p03/Observation", params={"code": "http://loinc.org|nothing"}
    ).json()
    assert coded["total"] == 0  # the other parameters apply too
    assert two_patients.get("Patient/p03/Encounter").status_code == 404


# --------------------------------------------------------------------------- $validate


def finding() -> dict[str, Any]:
    return observation("v1", "p1", "appearance", "lytic", level="L1", effective="2025-01-01")


def outcome(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


def errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in body["issue"] if i["severity"] in ("error", "fatal")]


def test_validate_a_valid_resource(fhir: httpx.Client, engine: Engine) -> None:
    before = row_counts(engine)
    body = outcome(post_json(fhir, "Observation/$validate", finding()))
    assert errors(body) == []
    assert body["issue"][0]["severity"] == "information"
    wrapped = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": finding()}],
    }
    assert errors(outcome(post_json(fhir, "Observation/$validate", wrapped))) == []
    assert errors(outcome(post_json(fhir, "Observation/v1/$validate", finding()))) == []
    assert row_counts(engine) == before  # nothing stored


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"status": "not-a-status"}, "status"),
        ({"effectiveDateTime": "yesterday"}, "effective"),
        ({"subject": None}, "subject"),
    ],
)
def test_validate_reports_r4_errors(
    fhir: httpx.Client, engine: Engine, change: dict[str, Any], where: str
) -> None:
    before = row_counts(engine)
    body = outcome(post_json(fhir, "Observation/$validate", {**finding(), **change}))
    found = errors(body)
    assert found, body
    assert any(where in " ".join(i.get("expression", [])) + i.get("diagnostics", "") for i in found)
    assert row_counts(engine) == before


def test_validate_reports_contract_violations_a_write_would_refuse(fhir: httpx.Client) -> None:
    broken = finding()
    del broken["bodySite"]  # a finding of this contract needs its level (CONTRACT 3)
    assert post_json(fhir, "Observation", broken).status_code == 422
    body = outcome(post_json(fhir, "Observation/$validate", broken))
    assert errors(body)


def test_validate_refusals(fhir: httpx.Client) -> None:
    # Output types are never written: validating one says so.
    derived = outcome(
        post_json(
            fhir, "RiskAssessment/$validate", {"resourceType": "RiskAssessment", "status": "final"}
        )
    )
    assert errors(derived)
    other_id = outcome(post_json(fhir, "Observation/v2/$validate", finding()))
    assert errors(other_id)
    mismatched = outcome(post_json(fhir, "ImagingStudy/$validate", finding()))
    assert errors(mismatched)
    no_resource = post_json(fhir, "Observation/$validate", {"resourceType": "Parameters"})
    assert no_resource.status_code == 400
    assert (
        fhir.post(
            "Observation/$validate", content=b"{", headers={"Content-Type": "application/fhir+json"}
        ).status_code
        == 400
    )
    assert post_json(fhir, "Encounter/$validate", finding()).status_code == 404


def test_validate_refuses_a_profile_it_cannot_check(fhir: httpx.Client) -> None:
    """R4 Resource-validate: "If a profile is nominated, and the server cannot validate against
    the nominated profile, it SHALL return an error"; the base R4 profile is checked."""
    base = "http://hl7.org/fhir/StructureDefinition/Observation"
    own = "https://fhir-app.org/fhir/StructureDefinition/spine-finding-observation"

    def parameters(profile: str) -> dict[str, Any]:
        return {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": finding()},
                {"name": "profile", "valueUri": profile},
            ],
        }

    for profile in ("http://x", own, "http://hl7.org/fhir/StructureDefinition/Patient"):
        for url, body in (
            (f"Observation/$validate?profile={profile}", finding()),
            ("Observation/$validate", parameters(profile)),
            (f"Observation/v1/$validate?profile={profile}", finding()),
        ):
            response = post_json(fhir, url, body)
            assert response.status_code == 400, (url, response.text)
            answer = response.json()
            assert answer["resourceType"] == "OperationOutcome"
            assert answer["issue"][0]["code"] == "not-supported"
            assert profile in answer["issue"][0]["diagnostics"]
    for profile in (base, f"{base}|4.0.1"):
        assert not errors(
            outcome(post_json(fhir, f"Observation/$validate?profile={profile}", finding()))
        )
        assert not errors(outcome(post_json(fhir, "Observation/$validate", parameters(profile))))


def test_fhirpy_is_valid(base_url: str) -> None:
    client = SyncFHIRClient(base_url)
    assert client.resource("Observation", **finding()).is_valid()
    assert not client.resource("Observation", **{**finding(), "status": "nope"}).is_valid()
