"""Twins (issue 11, CONTRACT 3 and 3a): the same clinical facts as Conditions coded with the
contract's codes and with standard codes give identical derived results.

The standard-coded twin is what an EHR sends: an mCODE primary cancer condition coded ICD-10-CM
C34.90 with ICD-O-3 morphology 8041/3 (small cell carcinoma) in the mCODE histology extension, and
an mCODE secondary cancer condition of bone whose bodySite is the SNOMED CT vertebral body
structure (L1 vertebral body 61032001, CONTRACT 2a). The shipped ConceptMaps add the contract's
codings; the inbound mapping reads them as if they had come so. Every path (REST, bulk, Spark,
`$assess`) maps inputs through `service.mapped`, so `assess` is the whole of the comparison.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from support.conditions import PRIMARY_PROFILE, primary_condition, secondary_condition

from fhir_app.fhir import samples
from fhir_app.service import assess

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
HISTOLOGY = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
L1_VERTEBRAL_BODY = "61032001"


def _lesion() -> dict[str, Any]:
    return samples.lesion_panel(
        "tw-t7",
        "tw",
        "T7",
        [("appearance", "blastic"), ("pain", "mechanical"), ("height_loss", 20)],
        effective="2024-03-01T10:00:00Z",
    )


def contract_coded() -> list[dict[str, Any]]:
    return [
        _lesion(),
        primary_condition("tw-primary", "tw", "lung-small-cell"),
        secondary_condition("tw-met", "tw", "L1"),
    ]


def standard_coded() -> list[dict[str, Any]]:
    primary: dict[str, Any] = {
        "resourceType": "Condition",
        "id": "tw-primary",
        "meta": {"profile": [PRIMARY_PROFILE]},
        "extension": [
            {
                "url": HISTOLOGY,
                "valueCodeableConcept": {
                    "coding": [
                        {"system": ICDO3, "code": "8041/3", "display": "Small cell carcinoma"}
                    ]
                },
            }
        ],
        "clinicalStatus": primary_condition("x", "tw", "breast")["clinicalStatus"],
        "verificationStatus": primary_condition("x", "tw", "breast")["verificationStatus"],
        "code": {"coding": [{"system": ICD10CM, "code": "C34.90"}]},
        "subject": {"reference": "Patient/tw"},
        "recordedDate": "2024-01-10",
    }
    secondary = secondary_condition("tw-met", "tw")
    secondary["bodySite"] = [{"coding": [{"system": SNOMED, "code": L1_VERTEBRAL_BODY}]}]
    return [_lesion(), primary, secondary]


def outputs(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = assess(((r["id"], r) for r in resources), now=NOW)
    assert result.rejections == []
    return result.outputs


def test_standard_coded_conditions_derive_what_contract_coded_ones_do() -> None:
    contract, standard = outputs(contract_coded()), outputs(standard_coded())
    assert standard == contract
    # Not a vacuous equality: both hold T7 (62487009) and L1 (66794005), the known primary.
    levels = sorted(
        r["bodySite"]["coding"][0]["code"]
        for r in contract
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "sins-total"
    )
    assert levels == ["62487009", "66794005"]
    known = {
        c["valueCodeableConcept"]["coding"][0]["code"]
        for r in contract
        if r["resourceType"] == "Observation"
        for c in r.get("component", [])
        if c["code"]["coding"][0]["code"] == "primary-tumor"
    }
    assert known == {"lung-small-cell"}
