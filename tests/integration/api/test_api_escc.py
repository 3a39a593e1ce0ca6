"""ESCC and NOMS over HTTP: a withdrawn escc-grade finding leaves no trace in any output."""

from __future__ import annotations

from typing import Any

import httpx
from api_support import example, post_json, put_json

from fhir_app.fhir import codes


def resources(fhir: httpx.Client, rtype: str, **params: str) -> list[dict[str, Any]]:
    """The current resources of a search."""
    response = fhir.get(rtype, params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def outputs(fhir: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every current output of patient p16, by id."""
    found: dict[str, dict[str, Any]] = {}
    for rtype in ("Observation", "RiskAssessment", "DiagnosticReport"):
        for resource in resources(fhir, rtype, subject="Patient/p16", _count="100"):
            if "meta" in resource and codes.BASE in str(resource["meta"].get("profile")):
                found[resource["id"]] = resource
    return found


def escc_codes(resource: dict[str, Any]) -> list[str]:
    """The ESCC grades an output states in a component."""
    return [
        c["valueCodeableConcept"]["coding"][0]["code"]
        for c in resource.get("component", [])
        if c["code"]["coding"][0]["code"] in (codes.ESCC_GRADE, codes.NOMS_NEUROLOGIC)
        and "valueCodeableConcept" in c
    ]


def test_an_escc_finding_entered_in_error_removes_its_grade_from_every_output(
    fhir: httpx.Client,
) -> None:
    bundle = example("patient-16-high-grade-escc.json")
    post_json(fhir, "", bundle).raise_for_status()
    before = outputs(fhir)
    [noms] = [r for r in before.values() if r["id"].startswith("noms-")]
    assert escc_codes(noms) == ["3"]
    assert any("ESCC grade 3" in str(r) for r in before.values() if not r["id"].startswith("noms"))

    escc = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "p16-escc")
    response = put_json(fhir, "Observation/p16-escc", {**escc, "status": "entered-in-error"})
    assert response.status_code == 200, response.text

    after = outputs(fhir)
    assert set(after) == set(before)
    for resource in after.values():
        # Grade 3 was stated only by the withdrawn finding: no output says it any more.
        assert "ESCC grade 3" not in str(resource), resource["id"]
        assert "3" not in escc_codes(resource), resource["id"]
    [noms_after] = [r for r in after.values() if r["id"].startswith("noms-")]
    assert noms_after["meta"]["versionId"] == "2"
    assert escc_codes(noms_after) == ["1a"]  # L2's grade is now the highest
    assert "highest ESCC grade 1a (low grade) at L2" in noms_after["valueString"]
    [report] = [r for r in after.values() if r["resourceType"] == "DiagnosticReport"]
    assert "ESCC grade 1a (low grade)" in report["conclusion"]
    assert report["conclusion"].endswith(noms_after["valueString"])


def test_myelopathy_entered_in_error_and_the_noms_inputs_of_a_patient_without_levels(
    fhir: httpx.Client,
) -> None:
    bundle = example("patient-16-high-grade-escc.json")
    post_json(fhir, "", bundle).raise_for_status()
    myelopathy = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "p16-myelopathy"
    )
    put_json(
        fhir, "Observation/p16-myelopathy", {**myelopathy, "status": "entered-in-error"}
    ).raise_for_status()
    [noms] = resources(
        fhir, "Observation", subject="Patient/p16", code=f"{codes.CS_SPINE_FINDING}|noms-inputs"
    )
    assert all(c["code"]["coding"][0]["code"] != codes.MYELOPATHY for c in noms["component"])
    assert "myelopathy not reported" in noms["valueString"]

    # Every level finding withdrawn: the NOMS inputs are withdrawn with the report.
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation" and "bodySite" in resource:
            fhir.delete(f"Observation/{resource['id']}").raise_for_status()
    [gone] = resources(
        fhir, "Observation", subject="Patient/p16", code=f"{codes.CS_SPINE_FINDING}|noms-inputs"
    )
    assert gone["status"] == "entered-in-error"
