"""`POST /fhir/$assess`: a Bundle of inputs in, a collection of outputs back, nothing stored."""

from __future__ import annotations

import httpx
import pytest
from api_support import example, issues_text, post_json, row_counts, snapshot
from sqlalchemy import Engine


@pytest.mark.parametrize("bundle_type", ["transaction", "collection", "batch"])
def test_assess_derives_and_stores_nothing(
    fhir: httpx.Client, engine: Engine, bundle_type: str
) -> None:
    post_json(fhir, "", example("patient-01-stable-blastic.json")).raise_for_status()
    rows = snapshot(engine)

    bundle = example("patient-03-unstable.json")
    bundle["type"] = bundle_type
    response = post_json(fhir, "$assess", bundle)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["resourceType"] == "Bundle"
    assert answer["type"] == "collection"
    kinds = sorted(e["resource"]["resourceType"] for e in answer["entry"])
    assert kinds.count("RiskAssessment") == 1
    assert kinds.count("DiagnosticReport") == 1
    [risk] = [
        e["resource"]
        for e in answer["entry"]
        if e["resource"]["resourceType"] == ("RiskAssessment")
    ]
    assert risk["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "unstable"
    assert snapshot(engine) == rows
    assert fhir.get("RiskAssessment", params={"patient": "p03"}).json()["total"] == 0


def test_assess_matches_what_the_store_derives(fhir: httpx.Client) -> None:
    assessed = post_json(fhir, "$assess", example("patient-02-potentially-unstable.json")).json()
    post_json(fhir, "", example("patient-02-potentially-unstable.json")).raise_for_status()
    stored = fhir.get("RiskAssessment", params={"patient": "p02"}).json()
    [assessed_risk] = [
        e["resource"]
        for e in assessed["entry"]
        if e["resource"]["resourceType"] == "RiskAssessment"
    ]
    [stored_risk] = [e["resource"] for e in stored["entry"]]
    assert assessed_risk["id"] == stored_risk["id"]
    assert assessed_risk["prediction"] == stored_risk["prediction"]


def test_assess_rejects_bad_inputs_naming_the_entries(fhir: httpx.Client, engine: Engine) -> None:
    counts = row_counts(engine)
    bundle = example("patient-03-unstable.json")
    bundle["entry"][4]["resource"]["status"] = "nonsense"
    del bundle["entry"][6]["resource"]["subject"]
    response = post_json(fhir, "$assess", bundle)

    assert response.status_code == 422, response.text
    text = issues_text(response.json())
    assert "Bundle.entry[4]" in text
    assert "Bundle.entry[6]" in text
    assert "Bundle.entry[5]" not in text
    assert row_counts(engine) == counts


def test_assess_takes_a_bundle_only(fhir: httpx.Client) -> None:
    response = post_json(fhir, "$assess", {"resourceType": "Patient", "id": "p1"})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_assess_of_an_empty_bundle_is_an_empty_collection(fhir: httpx.Client) -> None:
    response = post_json(fhir, "$assess", {"resourceType": "Bundle", "type": "collection"})
    assert response.status_code == 200
    assert response.json()["entry"] == []


def test_other_bundle_types_are_refused_at_the_base(fhir: httpx.Client, engine: Engine) -> None:
    rows = snapshot(engine)
    bundle = example("patient-03-unstable.json")
    bundle["type"] = "collection"
    response = post_json(fhir, "", bundle)
    assert response.status_code == 400
    assert "$assess" in issues_text(response.json())
    not_a_bundle = post_json(fhir, "", {"resourceType": "Patient"})
    assert not_a_bundle.status_code == 400
    assert snapshot(engine) == rows
