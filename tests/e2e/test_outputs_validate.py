"""Every output of every example is valid R4 twice over: fhir.resources and medplum + profiles/."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from support.validator import errors, require_medplum, validate_with_medplum

from fhir_app.fhir.parse import iter_input_resources
from fhir_app.service import assess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def all_outputs() -> list[dict[str, Any]]:
    outputs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES.glob("*.json")):
        result = assess(iter_input_resources(path.read_bytes(), filename_hint=path.name))
        assert not result.rejections, (path.name, result.rejections)
        outputs.extend(result.outputs)
    return outputs


OUTPUTS = all_outputs()


def test_every_kind_of_output_is_there() -> None:
    kinds = {r["resourceType"] for r in OUTPUTS}
    assert kinds == {"Observation", "RiskAssessment", "DiagnosticReport", "Provenance"}
    assert len(OUTPUTS) > 50


@pytest.mark.parametrize("index", range(len(OUTPUTS)))
def test_output_validates_with_fhir_resources(index: int) -> None:
    resource = OUTPUTS[index]
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.node
def test_outputs_validate_with_medplum_against_base_and_profiles() -> None:
    require_medplum()
    results = validate_with_medplum(OUTPUTS)
    bad = {
        f"{r['resourceType']}/{r['id']}": errors(issues)
        for r, issues in zip(OUTPUTS, results, strict=True)
        if errors(issues)
    }
    assert bad == {}
    # Every output claims one of our profiles, so the profile was checked, not only base R4.
    assert all(r["meta"]["profile"] for r in OUTPUTS)


@pytest.mark.node
def test_a_broken_output_fails_the_independent_validator() -> None:
    require_medplum()
    risk = next(r for r in OUTPUTS if r["resourceType"] == "RiskAssessment")
    no_status = copy.deepcopy(risk)
    del no_status["status"]
    no_level = copy.deepcopy(risk)
    del no_level["extension"]
    results = validate_with_medplum([risk, no_status, no_level])
    assert errors(results[0]) == []
    assert errors(results[1]), "a RiskAssessment without status must fail"
    assert errors(results[2]), "a RiskAssessment without the vertebral level must fail"
