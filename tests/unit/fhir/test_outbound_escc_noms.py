"""ESCC and the NOMS inputs in the outputs (CONTRACT 4b-4f, v2), through the stateless assess."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from support.validator import errors, require_medplum, validate_with_medplum

from fhir_app.domain.levels import VertebralLevel
from fhir_app.fhir import codes, samples
from fhir_app.fhir.outbound import output_id
from fhir_app.service import assess

WHEN = "2025-06-01T10:00:00Z"


def run(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = assess((f"entry[{i}]", r) for i, r in enumerate(resources))
    assert not result.rejections
    return result.outputs


def finding(rid: str, kind: str, value: Any, level: str | None = "T12", **kw: Any) -> Any:
    return samples.observation(rid, "p1", kind, value, level=level, effective=WHEN, **kw)


def noms_of(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    [noms] = [r for r in outputs if r["id"].startswith("noms-")]
    return noms


def component(resource: dict[str, Any], code: str) -> dict[str, Any] | None:
    found = [c for c in resource.get("component", []) if c["code"]["coding"][0]["code"] == code]
    assert len(found) <= 1
    return found[0] if found else None


def of_kind(outputs: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [r for r in outputs if r["id"].startswith(f"{prefix}-")]


def test_without_escc_primary_or_myelopathy_every_input_says_unknown() -> None:
    outputs = run([finding("o1", "appearance", "lytic")])
    noms = noms_of(outputs)
    assert noms["id"] == output_id("noms", "p1", None)
    assert noms["meta"]["profile"] == [codes.PROFILE_NOMS]
    assert noms["status"] == "preliminary"  # the SINS of the only level is open
    neurologic = component(noms, codes.NOMS_NEUROLOGIC)
    assert neurologic is not None
    assert "valueCodeableConcept" not in neurologic
    assert neurologic["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert component(noms, codes.MYELOPATHY) is None
    oncologic = component(noms, codes.NOMS_ONCOLOGIC)
    assert oncologic is not None
    assert oncologic["valueCodeableConcept"]["coding"][0]["code"] == codes.NOMS_NO_KNOWN_PRIMARY
    mechanical = component(noms, codes.NOMS_MECHANICAL)
    assert mechanical is not None
    assert set(mechanical["valueRange"]) == {"low", "high"}
    systemic = component(noms, codes.NOMS_SYSTEMIC)
    assert systemic is not None
    assert systemic["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    [cls] = of_kind(outputs, "cls")
    assert component(cls, codes.ESCC_GRADE) is None
    [risk] = of_kind(outputs, "risk")
    assert "ESCC" not in risk["prediction"][0]["rationale"]
    [report] = of_kind(outputs, "report")
    assert report["result"][-1]["reference"].startswith(f"Observation/{noms['id']}/")


def test_the_level_grade_is_a_classification_component_and_in_the_rationale() -> None:
    outputs = run(
        [
            finding("o1", "appearance", "lytic"),
            finding("o2", "escc", "2"),
            samples.primary_tumor("o3", "p1", "prostate", effective=WHEN),
        ]
    )
    [cls] = of_kind(outputs, "cls")
    escc = component(cls, codes.ESCC_GRADE)
    assert escc is not None
    assert escc["valueCodeableConcept"]["coding"][0] == {
        "system": codes.CS_ESCC,
        "code": "2",
        "display": "Grade 2: spinal cord compression, CSF visible around the cord",
    }
    assert escc["interpretation"][0]["coding"][0]["code"] == "high-grade"
    [risk] = of_kind(outputs, "risk")
    assert "ESCC grade 2 (high grade" in risk["prediction"][0]["rationale"]
    oncologic = component(noms_of(outputs), codes.NOMS_ONCOLOGIC)
    assert oncologic is not None
    assert oncologic["valueCodeableConcept"]["coding"][0]["code"] == "intermediate-or-sensitive"


def test_a_preliminary_myelopathy_makes_the_noms_inputs_preliminary_only() -> None:
    complete = [
        finding("o1", "appearance", "blastic"),
        finding("o2", "pain", "pain-free"),
        finding("o3", "alignment", "normal-alignment"),
        finding("o4", "height_loss", 0),
        finding("o5", "involvement", 10),
        finding("o6", "posterior", "none"),
    ]
    final = run([*complete, finding("m", "myelopathy", True, level=None)])
    assert noms_of(final)["status"] == "final"
    outputs = run([*complete, finding("m", "myelopathy", True, level=None, status="preliminary")])
    assert noms_of(outputs)["status"] == "preliminary"
    [report] = of_kind(outputs, "report")
    assert report["status"] == "final"
    # Myelopathy is about the patient: it never makes a level's SINS preliminary.
    assert all(r["status"] == "final" for r in of_kind(outputs, "sins"))
    myelopathy = component(noms_of(outputs), codes.MYELOPATHY)
    assert myelopathy is not None
    assert myelopathy["valueBoolean"] is True


def test_the_noms_output_belongs_to_the_patient() -> None:
    with pytest.raises(ValueError, match="per patient"):
        output_id("noms", "p1", VertebralLevel.T12)


CASES = [
    [finding("o1", "appearance", "lytic")],
    [finding("o1", "escc", "3"), finding("m", "myelopathy", False, level=None)],
    [
        samples.lesion_panel(
            "o1", "p1", "L4", [("appearance", "mixed"), ("escc", "0")], effective=WHEN
        ),
        samples.primary_tumor("o2", "p1", "lymphoma-hodgkin", effective=WHEN),
    ],
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_outputs_validate_with_fhir_resources(case: int) -> None:
    for resource in run(CASES[case]):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.node
def test_outputs_validate_with_medplum_against_our_profiles() -> None:
    require_medplum()
    outputs = [r for case in CASES for r in run(case)]
    results = validate_with_medplum(outputs)
    bad = {r["id"]: errors(i) for r, i in zip(outputs, results, strict=True) if errors(i)}
    assert bad == {}


@pytest.mark.node
def test_a_noms_output_without_its_systemic_input_breaks_the_profile() -> None:
    require_medplum()
    noms = noms_of(run(CASES[0]))
    noms["component"] = [
        c for c in noms["component"] if c["code"]["coding"][0]["code"] != codes.NOMS_SYSTEMIC
    ]
    [issues] = validate_with_medplum([noms])
    assert errors(issues)
