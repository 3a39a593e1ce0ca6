"""The clinical flow over HTTP: a transaction in, outputs searched, read, versioned, withdrawn."""

from __future__ import annotations

from typing import Any

import httpx
from api_support import example, issues_text, post_json, put_json, row_counts, snapshot
from sqlalchemy import Engine

from fhir_app.domain.levels import LEVEL_BY_LABEL
from fhir_app.fhir import codes
from fhir_app.fhir.samples import observation, transaction


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle's entries."""
    return [e["resource"] for e in bundle.get("entry", [])]


def risk_assessments(fhir: httpx.Client, patient: str) -> dict[str, dict[str, Any]]:
    """The patient's RiskAssessments by id."""
    response = fhir.get("RiskAssessment", params={"patient": patient})
    assert response.status_code == 200, response.text
    return {r["id"]: r for r in entries(response.json())}


def level_of(risk: dict[str, Any]) -> str:
    """The SNOMED code of the vertebral level a RiskAssessment is about."""
    for extension in risk["extension"]:
        if extension["url"] == codes.EXT_VERTEBRAL_LEVEL:
            code: str = extension["valueCodeableConcept"]["coding"][0]["code"]
            return code
    raise AssertionError("RiskAssessment without a vertebral level")


def test_transaction_then_search_read_and_history(fhir: httpx.Client, base_url: str) -> None:
    response = post_json(fhir, "", example("patient-03-unstable.json"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    answer = response.json()
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 9

    found = fhir.get("RiskAssessment", params={"patient": "p03"})
    assert found.status_code == 200
    searchset = found.json()
    assert searchset["type"] == "searchset"
    assert searchset["total"] == 1
    links = {link["relation"]: link["url"] for link in searchset["link"]}
    assert links["self"].startswith(f"{base_url}/RiskAssessment?patient=p03")
    assert "next" not in links
    [entry] = searchset["entry"]
    risk = entry["resource"]
    assert entry["fullUrl"] == f"{base_url}/RiskAssessment/{risk['id']}"
    assert entry["search"] == {"mode": "match"}
    assert risk["subject"]["reference"] == "Patient/p03"
    assert risk["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "unstable"

    # `subject` with a reference finds the same.
    by_subject = fhir.get("RiskAssessment", params={"subject": "Patient/p03"}).json()
    assert [e["resource"]["id"] for e in by_subject["entry"]] == [risk["id"]]

    read = fhir.get(f"RiskAssessment/{risk['id']}")
    assert read.status_code == 200
    assert read.headers["etag"] == 'W/"1"'
    assert read.headers["last-modified"].endswith(" GMT")
    assert read.json() == risk

    history = fhir.get(f"RiskAssessment/{risk['id']}/_history").json()
    assert history["type"] == "history"
    assert history["total"] == 1
    assert history["entry"][0]["resource"] == risk
    assert history["entry"][0]["response"]["etag"] == 'W/"1"'

    vread = fhir.get(f"RiskAssessment/{risk['id']}/_history/1")
    assert vread.status_code == 200
    assert vread.json() == risk

    report = fhir.get("DiagnosticReport", params={"subject": "Patient/p03"}).json()
    assert report["total"] == 1
    provenance = fhir.get("Provenance", params={"patient": "p03"}).json()
    assert provenance["total"] == 1
    targets = {t["reference"] for t in provenance["entry"][0]["resource"]["target"]}
    assert f"RiskAssessment/{risk['id']}/_history/1" in targets

    sins_code = f"{codes.CS_SINS}|sins-total"
    scores = fhir.get("Observation", params={"subject": "Patient/p03", "code": sins_code}).json()
    assert scores["total"] == 1
    assert scores["entry"][0]["resource"]["valueInteger"] == 18


def test_update_makes_a_new_version_and_amends_the_outputs(fhir: httpx.Client) -> None:
    bundle = example("patient-03-unstable.json")
    post_json(fhir, "", bundle).raise_for_status()
    [before] = risk_assessments(fhir, "p03").values()

    pain = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "p03-pain")
    pain["valueCodeableConcept"]["coding"][0]["code"] = "pain-free"
    response = put_json(fhir, "Observation/p03-pain", pain)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"].endswith("/fhir/Observation/p03-pain/_history/2")
    assert response.json()["meta"]["versionId"] == "2"

    [after] = risk_assessments(fhir, "p03").values()
    assert after["id"] == before["id"]
    assert after["meta"]["versionId"] == "2"
    assert after["status"] == "amended"
    assert after["prediction"][0]["rationale"] != before["prediction"][0]["rationale"]
    history = fhir.get(f"RiskAssessment/{after['id']}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert fhir.get(f"RiskAssessment/{after['id']}/_history/1").json() == before

    # Sending the same content again changes nothing: same version, no new outputs.
    again = put_json(fhir, "Observation/p03-pain", pain)
    assert again.status_code == 200
    assert again.headers["etag"] == 'W/"2"'
    assert risk_assessments(fhir, "p03")[after["id"]]["meta"]["versionId"] == "2"


def test_delete_rederives_and_withdraws(fhir: httpx.Client) -> None:
    post_json(fhir, "", example("patient-08-several-levels.json")).raise_for_status()
    before = risk_assessments(fhir, "p08")
    assert len(before) == 3
    assert all(r["status"] != "entered-in-error" for r in before.values())

    # p08-t11 is the only finding of T11: its outputs are withdrawn, the others stay.
    response = fhir.delete("Observation/p08-t11")
    assert response.status_code == 204
    assert response.content == b""
    gone = fhir.get("Observation/p08-t11")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"

    after = risk_assessments(fhir, "p08")
    [t11_risk] = [r for r in after.values() if level_of(r) == LEVEL_BY_LABEL["T11"].snomed]
    assert t11_risk["status"] == "entered-in-error"
    assert t11_risk["meta"]["versionId"] == "2"
    for rid, risk in after.items():
        if rid != t11_risk["id"]:
            assert risk == before[rid]
    history = fhir.get("Observation/p08-t11/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]


def test_entered_in_error_rederives_without_the_finding(fhir: httpx.Client) -> None:
    bundle = example("patient-03-unstable.json")
    post_json(fhir, "", bundle).raise_for_status()
    [before] = risk_assessments(fhir, "p03").values()

    pain = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "p03-pain")
    response = put_json(fhir, "Observation/p03-pain", {**pain, "status": "entered-in-error"})
    assert response.status_code == 200, response.text

    [after] = risk_assessments(fhir, "p03").values()
    assert after["meta"]["versionId"] == "2"
    assert after["status"] != "entered-in-error"  # the level still has other findings
    score = fhir.get(
        "Observation", params={"subject": "Patient/p03", "code": f"{codes.CS_SINS}|sins-total"}
    ).json()["entry"][0]["resource"]
    # Pain is unknown now: the total widens to a range instead of scoring 0.
    assert "valueRange" in score
    assert before["prediction"][0]["rationale"] != after["prediction"][0]["rationale"]


def test_transaction_with_a_bad_entry_changes_nothing(fhir: httpx.Client, engine: Engine) -> None:
    post_json(fhir, "", example("patient-01-stable-blastic.json")).raise_for_status()
    counts_before, rows_before = row_counts(engine), snapshot(engine)

    bundle = example("patient-02-potentially-unstable.json")
    bundle["entry"][3]["resource"]["status"] = "not-a-status"
    response = post_json(fhir, "", bundle)

    assert response.status_code == 422, response.text
    text = issues_text(response.json())
    assert "Bundle.entry[3]" in text
    assert "status" in text
    assert row_counts(engine) == counts_before
    assert snapshot(engine) == rows_before


def test_batch_answers_each_entry(fhir: httpx.Client, engine: Engine) -> None:
    bundle = example("patient-02-potentially-unstable.json")
    bundle["type"] = "batch"
    bundle["entry"][3]["resource"]["status"] = "not-a-status"
    response = post_json(fhir, "", bundle)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses[:3] == ["201 Created"] * 3
    assert statuses[3].startswith("422")
    assert "status" in issues_text(answer["entry"][3]["response"]["outcome"])
    assert fhir.get("Observation/p02-primary").status_code == 200
    assert fhir.get("Observation/p02-t7").status_code == 404


def test_transaction_of_posts_resolves_full_urls(fhir: httpx.Client) -> None:
    finding = observation(
        "ignored", "px", "appearance", "lytic", level="L2", effective="2025-01-01"
    )
    finding.pop("id")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f1c1b2e-55f4-4bfa-9c5c-0d7f4d1f3a11",
                "resource": finding,
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    response = post_json(fhir, "", bundle)
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"]
    assert location.startswith("Observation/")
    assert fhir.get(location.removesuffix("/_history/1")).status_code == 200
    assert len(risk_assessments(fhir, "px")) == 1


def test_put_entries_are_idempotent(fhir: httpx.Client, engine: Engine) -> None:
    bundle = example("patient-01-stable-blastic.json")
    post_json(fhir, "", bundle).raise_for_status()
    rows = snapshot(engine)
    again = post_json(fhir, "", example("patient-01-stable-blastic.json"))
    assert again.status_code == 200
    assert {e["response"]["status"] for e in again.json()["entry"]} == {"200 OK"}
    assert snapshot(engine) == rows


def test_prefer_return_shapes_transaction_entries(fhir: httpx.Client) -> None:
    minimal = post_json(
        fhir, "", transaction([example_patient("pm")]), Prefer="return=minimal"
    ).json()
    assert "resource" not in minimal["entry"][0]
    assert minimal["entry"][0]["response"]["location"] == "Patient/pm/_history/1"
    outcome = post_json(
        fhir, "", transaction([example_patient("po")]), Prefer="return=OperationOutcome"
    ).json()
    assert outcome["entry"][0]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def example_patient(patient_id: str) -> dict[str, Any]:
    """A minimal Patient."""
    return {"resourceType": "Patient", "id": patient_id, "gender": "female"}
