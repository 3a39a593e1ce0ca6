"""Condition as an input type over HTTP (CONTRACT 3 and 5, v2), on SQLite and PostgreSQL.

A primary cancer Condition states the known primary exactly as a `primary-tumor` Observation does
(twin patients give the same classification); a secondary cancer Condition of the bone makes its
level appear with every SINS component open but the location; a withdrawn or deleted Condition is
derived away. Also: Observations outside the contract whatever their subject.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_support import issues_text, post_json, put_json
from support.conditions import primary_condition, secondary_condition

from fhir_app.fhir import codes, samples

LEVEL_CODES = {"L1": "66794005", "L3": "36470004", "L4": "11994002"}


def _search(fhir: httpx.Client, rtype: str, **params: str) -> list[dict[str, Any]]:
    response = fhir.get(rtype, params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if "resource" in e]


def _outputs(fhir: httpx.Client, patient: str, code: str) -> list[dict[str, Any]]:
    system = codes.CS_SINS if code == "sins-total" else codes.CS_SPINE_FINDING
    return _search(fhir, "Observation", patient=patient, code=f"{system}|{code}")


def _level_of(resource: dict[str, Any]) -> str:
    if resource["resourceType"] == "RiskAssessment":
        (level,) = [e for e in resource["extension"] if e["url"].endswith("/vertebral-level")]
        code = level["valueCodeableConcept"]["coding"][0]["code"]
    else:
        code = resource["bodySite"]["coding"][0]["code"]
    return next(label for label, snomed in LEVEL_CODES.items() if snomed == code)


def _likely(classification: dict[str, Any]) -> list[str]:
    return [
        c["valueCodeableConcept"]["coding"][0]["code"]
        for c in classification["component"]
        if c["code"]["coding"][0]["code"] == codes.LIKELY_PRIMARY
    ]


def _lesion(patient: str) -> dict[str, Any]:
    return samples.lesion_panel(
        f"{patient}-l1",
        patient,
        "L1",
        [("appearance", "lytic"), ("pain", "mechanical")],
        effective="2024-03-01T10:00:00Z",
    )


def test_a_primary_condition_reads_exactly_like_a_primary_tumor_observation(
    fhir: httpx.Client,
) -> None:
    # renal-cell with a lytic lesion: consistent, listed first; the twins differ only in how the
    # primary is stated.
    primary_obs = samples.primary_tumor("a-primary", "twin-a", "renal-cell", effective="2024-01-10")
    primary_cond = primary_condition("b-primary", "twin-b", "renal-cell", recorded="2024-01-10")
    for patient, primary in (("twin-a", primary_obs), ("twin-b", primary_cond)):
        put_json(fhir, f"Observation/{patient}-l1", _lesion(patient)).raise_for_status()
        without_id = {k: v for k, v in primary.items() if k != "id"}
        created = post_json(fhir, primary["resourceType"], without_id)
        assert created.status_code == 201, created.text
    (a,) = _outputs(fhir, "twin-a", "lesion-classification")
    (b,) = _outputs(fhir, "twin-b", "lesion-classification")
    assert _likely(a)[0] == "renal-cell"
    assert _likely(a) == _likely(b)
    assert a.get("note") == b.get("note")
    assert a["component"] == b["component"]
    assert a["valueCodeableConcept"] == b["valueCodeableConcept"]
    (report_a,) = _search(fhir, "DiagnosticReport", patient="twin-a")
    (report_b,) = _search(fhir, "DiagnosticReport", patient="twin-b")
    assert "renal" in report_a["conclusion"].lower()
    assert report_a["conclusion"] == report_b["conclusion"]
    # The outputs reference the Condition version they were derived from, like any input.
    (condition,) = _search(fhir, "Condition", patient="twin-b")
    reference = f"Condition/{condition['id']}/_history/1"
    (risk_b,) = _search(fhir, "RiskAssessment", patient="twin-b")
    assert reference in [r["reference"] for r in risk_b["basis"]]
    # R4 Observation.derivedFrom takes no Condition: the basis and the Provenance name it.
    assert [r["reference"] for r in b["derivedFrom"]] == ["Observation/twin-b-l1/_history/1"]
    # One Provenance per derivation: the latest names the Condition among its entities.
    provenances = _search(fhir, "Provenance", patient="twin-b")
    provenance = max(provenances, key=lambda p: p["meta"]["lastUpdated"])
    assert reference in [e["what"]["reference"] for e in provenance["entity"]]


def test_condition_create_read_update_delete_and_search(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/p1-l1", _lesion("p1")).raise_for_status()
    condition = primary_condition("p1-primary", "p1", "breast")
    created = put_json(fhir, "Condition/p1-primary", condition)
    assert created.status_code == 201, created.text
    read = fhir.get("Condition/p1-primary")
    assert read.status_code == 200
    assert {k: v for k, v in read.json().items() if k != "meta"} == {
        k: v for k, v in condition.items() if k != "meta"
    }
    assert read.json()["meta"]["profile"] == condition["meta"]["profile"]
    assert [r["id"] for r in _search(fhir, "Condition", patient="p1")] == ["p1-primary"]
    assert [r["id"] for r in _search(fhir, "Condition", subject="Patient/p1")] == ["p1-primary"]
    assert _likely(_outputs(fhir, "p1", "lesion-classification")[0])[0] == "breast"

    # An update to another primary derives again (a new version of the classification).
    updated = put_json(
        fhir, "Condition/p1-primary", primary_condition("p1-primary", "p1", "thyroid")
    )
    assert updated.status_code == 200, updated.text
    (cls,) = _outputs(fhir, "p1", "lesion-classification")
    assert _likely(cls)[0] == "thyroid"
    assert cls["meta"]["versionId"] == "3"  # lesion alone, with breast, with thyroid
    history = fhir.get("Condition/p1-primary/_history").json()
    assert history["total"] == 2

    # Refuted, then deleted: no known primary any more (the row of a lytic lesion, renal first).
    refuted = primary_condition("p1-primary", "p1", "thyroid", verification="refuted")
    put_json(fhir, "Condition/p1-primary", refuted).raise_for_status()
    assert _likely(_outputs(fhir, "p1", "lesion-classification")[0])[0] == "renal-cell"
    put_json(fhir, "Condition/p1-primary", condition).raise_for_status()
    assert _likely(_outputs(fhir, "p1", "lesion-classification")[0])[0] == "breast"
    assert fhir.delete("Condition/p1-primary").status_code == 204
    assert _likely(_outputs(fhir, "p1", "lesion-classification")[0])[0] == "renal-cell"
    assert fhir.get("Condition/p1-primary").status_code == 410


def test_a_secondary_condition_makes_its_level_appear_with_open_components(
    fhir: httpx.Client,
) -> None:
    created = put_json(fhir, "Condition/m1", secondary_condition("m1", "p2", "L3"))
    assert created.status_code == 201, created.text
    (sins,) = _outputs(fhir, "p2", "sins-total")
    assert _level_of(sins) == "L3"
    components = {c["code"]["coding"][0]["code"]: c for c in sins["component"]}
    # L3 is mobile (2 points): the location comes from the level, every other component is open.
    location = components.pop("location")
    assert location["valueCodeableConcept"]["coding"][0]["code"] == "mobile"
    assert set(components) == {
        "pain",
        "bone-lesion",
        "alignment",
        "collapse",
        "posterolateral",
    }
    for component in components.values():
        assert "valueCodeableConcept" not in component
    assert sins["valueRange"] == {"low": {"value": 2}, "high": {"value": 17}}
    (risk,) = _search(fhir, "RiskAssessment", patient="p2")
    assert risk["status"] == "preliminary"
    assert "Condition/m1/_history/1" in [b["reference"] for b in risk["basis"]]

    # A finding of the same level narrows it; the Condition stays in the basis.
    pain = samples.observation("p2-pain", "p2", "pain", "mechanical", level="L3", effective="2024")
    put_json(fhir, "Observation/p2-pain", pain).raise_for_status()
    (sins,) = _outputs(fhir, "p2", "sins-total")
    pain_component = next(c for c in sins["component"] if c["code"]["coding"][0]["code"] == "pain")
    assert pain_component["valueCodeableConcept"]["coding"][0]["code"] == "mechanical"
    assert sins["valueRange"] == {"low": {"value": 5}, "high": {"value": 17}}

    # Moved to L4: L3 keeps its pain finding, L4 appears.
    put_json(fhir, "Condition/m1", secondary_condition("m1", "p2", "L4")).raise_for_status()
    assert sorted(_level_of(s) for s in _outputs(fhir, "p2", "sins-total")) == ["L3", "L4"]
    # Entered in error: L4 is withdrawn (its outputs entered-in-error), L3 stays.
    withdrawn = secondary_condition("m1", "p2", "L4", verification="entered-in-error")
    put_json(fhir, "Condition/m1", withdrawn).raise_for_status()
    statuses = {_level_of(r): r["status"] for r in _search(fhir, "RiskAssessment", patient="p2")}
    assert statuses == {"L3": "preliminary", "L4": "entered-in-error"}
    # A resolved secondary says nothing; a DELETE withdraws.
    resolved = secondary_condition("m1", "p2", "L4", clinical="resolved")
    put_json(fhir, "Condition/m1", resolved).raise_for_status()
    statuses = {_level_of(r): r["status"] for r in _search(fhir, "RiskAssessment", patient="p2")}
    assert statuses["L4"] == "entered-in-error"
    put_json(fhir, "Condition/m1", secondary_condition("m1", "p2", "L4")).raise_for_status()
    statuses = {_level_of(r): r["status"] for r in _search(fhir, "RiskAssessment", patient="p2")}
    assert statuses["L4"] == "preliminary"
    assert fhir.delete("Condition/m1").status_code == 204
    statuses = {_level_of(r): r["status"] for r in _search(fhir, "RiskAssessment", patient="p2")}
    assert statuses == {"L3": "preliminary", "L4": "entered-in-error"}


@pytest.mark.parametrize("bundle_type", ["transaction", "batch"])
def test_conditions_in_a_transaction_and_a_batch(fhir: httpx.Client, bundle_type: str) -> None:
    patient = f"p3-{bundle_type}"
    bundle = samples.transaction(
        [
            _lesion(patient),
            primary_condition(f"{patient}-primary", patient, "thyroid"),
            secondary_condition(f"{patient}-met", patient, "L4"),
        ]
    )
    bundle["type"] = bundle_type
    response = post_json(fhir, "", bundle)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert all(s.startswith("201") for s in statuses), statuses
    assert sorted(_level_of(s) for s in _outputs(fhir, patient, "sins-total")) == ["L1", "L4"]
    for cls in _outputs(fhir, patient, "lesion-classification"):
        if _level_of(cls) == "L1":
            assert _likely(cls)[0] == "thyroid"


def test_a_refused_condition_leaves_nothing(fhir: httpx.Client) -> None:
    raw = primary_condition("bad", "p4", "breast")
    raw["code"]["coding"][0]["code"] = "no-such-primary"
    response = put_json(fhir, "Condition/bad", raw)
    assert response.status_code == 422, response.text
    assert "Condition.code" in issues_text(response.json())
    assert fhir.get("Condition/bad").status_code == 404


def test_assess_reads_conditions(fhir: httpx.Client) -> None:
    bundle = samples.transaction(
        [
            _lesion("p5"),
            primary_condition("p5-primary", "p5", "thyroid"),
            secondary_condition("p5-met", "p5", "L4"),
        ]
    )
    answer = post_json(fhir, "$assess", bundle)
    assert answer.status_code == 200, answer.text
    outputs = [
        e["resource"]
        for e in answer.json()["entry"]
        if e["resource"]["resourceType"] == "Observation"
    ]
    sins = [r for r in outputs if r["code"]["coding"][0]["code"] == "sins-total"]
    assert sorted(_level_of(s) for s in sins) == ["L1", "L4"]
    (cls,) = [
        r
        for r in outputs
        if r["code"]["coding"][0]["code"] == "lesion-classification" and _level_of(r) == "L1"
    ]
    assert _likely(cls)[0] == "thyroid"
    # Nothing stored.
    assert fhir.get("Condition/p5-primary").status_code == 404


# --- Observations outside the contract, whatever their subject (CONTRACT 3, v2) -------------


@pytest.mark.parametrize(
    "subject",
    [{"reference": "#p1"}, {"reference": "Group/101"}, None],
    ids=["contained", "group", "none"],
)
def test_an_observation_outside_the_contract_is_stored_whatever_its_subject(
    fhir: httpx.Client, subject: dict[str, Any] | None
) -> None:
    raw: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "hr",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {
            "value": 72,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    if subject is not None:
        raw["subject"] = subject
    if subject == {"reference": "#p1"}:
        raw["contained"] = [{"resourceType": "Patient", "id": "p1"}]
    stored = put_json(fhir, "Observation/hr", raw)
    assert stored.status_code == 201, stored.text
    read = fhir.get("Observation/hr").json()
    assert {k: v for k, v in read.items() if k != "meta"} == raw
    assert _search(fhir, "Observation", patient="p1") == []
    assert [r["id"] for r in _search(fhir, "Observation", _id="hr")] == ["hr"]


def test_a_contract_finding_without_a_patient_subject_is_refused(fhir: httpx.Client) -> None:
    raw = samples.observation("o1", "p1", "pain", "mechanical", level="L1", effective="2024")
    raw["subject"] = {"reference": "Group/101"}
    response = put_json(fhir, "Observation/o1", raw)
    assert response.status_code == 422, response.text
    assert "Observation.subject" in issues_text(response.json())
