"""DOMAIN.md 4a (v2) over HTTP: the derivation reads the patient's own Patient resource.

On the persistent path the Patient is one of the stored inputs of the patient (a write of it
derives the patient again); on `$assess` it comes from the same Bundle.
"""

from __future__ import annotations

from typing import Any

import httpx
from api_support import example, post_json, put_json

from fhir_app.fhir import codes


def _classification(fhir: httpx.Client, patient: str) -> dict[str, Any]:
    response = fhir.get(
        "Observation",
        params={"patient": patient, "code": f"{codes.CS_SPINE_FINDING}|lesion-classification"},
    )
    assert response.status_code == 200, response.text
    (entry,) = response.json()["entry"]
    resource: dict[str, Any] = entry["resource"]
    return resource


def _likely(classification: dict[str, Any]) -> list[str]:
    return [
        c["valueCodeableConcept"]["coding"][0]["code"]
        for c in classification["component"]
        if c["code"]["coding"][0]["code"] == codes.LIKELY_PRIMARY
    ]


def _without_patient(bundle: dict[str, Any]) -> dict[str, Any]:
    return {
        **bundle,
        "entry": [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"],
    }


def test_the_stored_patient_filters_the_likely_primaries(fhir: httpx.Client) -> None:
    bundle = example("patient-14-primary-in-context.json")
    (patient,) = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    post_json(fhir, "", _without_patient(bundle)).raise_for_status()
    before = _classification(fhir, "p14")
    # No Patient yet: nothing filtered, the childhood tumours marked as of unknown age.
    assert "prostate" in _likely(before)
    assert "neuroblastoma" in _likely(before)
    assert before["meta"]["versionId"] == "1"

    put_json(fhir, "Patient/p14", patient).raise_for_status()
    after = _classification(fhir, "p14")
    assert after["meta"]["versionId"] == "2"
    likely = _likely(after)
    assert likely[0] == "breast"
    for left_out in ("prostate", "testis-seminoma", "neuroblastoma", "medulloblastoma"):
        assert left_out not in likely
    notes = " ".join(n["text"] for n in after["note"])
    assert "Left out for a female patient: prostate, testis-seminoma" in notes

    # A changed Patient derives again; a deleted one leaves nothing filtered.
    put_json(fhir, "Patient/p14", {**patient, "gender": "male"}).raise_for_status()
    assert "prostate" in _likely(_classification(fhir, "p14"))
    assert fhir.delete("Patient/p14").status_code == 204
    final = _classification(fhir, "p14")
    assert "neuroblastoma" in _likely(final)


def test_assess_reads_the_patient_of_the_same_bundle(fhir: httpx.Client) -> None:
    bundle = example("patient-14-primary-in-context.json")
    with_patient = post_json(fhir, "$assess", bundle).json()
    without = post_json(fhir, "$assess", _without_patient(bundle)).json()

    def likely(answer: dict[str, Any]) -> list[str]:
        (cls,) = [
            e["resource"]
            for e in answer["entry"]
            if e["resource"]["resourceType"] == "Observation"
            and e["resource"]["code"]["coding"][0]["code"] == "lesion-classification"
        ]
        return _likely(cls)

    assert "prostate" not in likely(with_patient)
    assert "prostate" in likely(without)
