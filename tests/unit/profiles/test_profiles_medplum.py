"""The independent validator (node + @medplum/core) against profiles/: it accepts resources that
follow the contract and refuses broken ones, so a test that relies on it can fail.

All resources go through one validator run per module (node start-up and loading the definitions
cost about a second; each resource about a millisecond).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from profile_examples import INVALID, VALID
from support.validator import errors, validate_results, validate_with_medplum

from fhir_app.fhir import codes

pytestmark = pytest.mark.node

Json = dict[str, Any]
REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def verdicts() -> dict[str, list[Json]]:
    """The issues of every example, valid and broken, by name, from one validator run."""
    names = [*VALID, *INVALID]
    resources = [*(make() for make in VALID.values()), *(r for r, _, _ in INVALID.values())]
    return dict(zip(names, validate_with_medplum(resources), strict=True))


@pytest.mark.parametrize("name", list(VALID))
def test_valid_examples_are_accepted(verdicts: dict[str, list[Json]], name: str) -> None:
    assert errors(verdicts[name]) == []
    # The profile was looked at: an unknown or mismatched profile would have left an issue.
    assert verdicts[name] == []


@pytest.mark.parametrize("name", list(INVALID))
def test_broken_examples_are_refused_for_the_right_reason(
    verdicts: dict[str, list[Json]], name: str
) -> None:
    _, profile, expression = INVALID[name]
    found = errors(verdicts[name])
    assert found, f"{name} was accepted"
    assert any(i["profile"] == profile and i["expression"] == expression for i in found), found


def test_a_base_violation_is_reported_once_not_again_per_profile(
    verdicts: dict[str, list[Json]],
) -> None:
    status = [
        i for i in verdicts["risk-without-status"] if i["expression"] == "RiskAssessment.status"
    ]
    assert len(status) == 1
    assert status[0]["profile"] is None
    assert status[0]["details"] == "Missing required property"


def test_a_foreign_profile_is_a_warning_not_an_error() -> None:
    resource = VALID["finding"]()
    resource["meta"]["profile"].append("http://hl7.org/fhir/us/core/StructureDefinition/x")
    (issues,) = validate_with_medplum([resource])
    assert errors(issues) == []
    assert [i["severity"] for i in issues] == ["warning"]


def test_results_keep_input_order_and_identity() -> None:
    resources = [VALID["sins-score"](), INVALID["risk-without-status"][0], VALID["finding"]()]
    results = validate_results(resources)
    assert [(r["index"], r["resourceType"], r["id"], r["valid"]) for r in results] == [
        (0, "Observation", "sins-t12-example", True),
        (1, "RiskAssessment", "risk-t12-example", False),
        (2, "Observation", "finding-1", True),
    ]


def test_not_a_resource_is_refused() -> None:
    (unknown, no_type) = validate_with_medplum([{"resourceType": "Nonsense"}, {"id": "x"}])
    assert errors(unknown)
    assert errors(no_type)


def test_every_artefact_in_profiles_is_valid_r4() -> None:
    artefacts = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((REPO_ROOT / "profiles").glob("*-*.json"))
    ]
    for artefact, issues in zip(artefacts, validate_with_medplum(artefacts), strict=True):
        assert errors(issues) == [], artefact["id"]


def test_the_example_inputs_conform_to_the_input_profiles() -> None:
    # examples/ holds the project's sample feeds; each input must fit its input profile.
    inputs: list[Json] = []
    for path in sorted((REPO_ROOT / "examples").glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            profile = input_profile(resource)
            if profile is not None:
                resource.setdefault("meta", {})["profile"] = [profile]
                inputs.append(resource)
    if not inputs:
        pytest.skip("examples/ holds no input bundles")
    for resource, issues in zip(inputs, validate_with_medplum(inputs), strict=True):
        assert issues == [], (resource["resourceType"], resource.get("id"), issues)


def input_profile(resource: Json) -> str | None:
    """The input profile a received resource should fit, by type and code."""
    if resource["resourceType"] == "ImagingStudy":
        return codes.PROFILE_IMAGING_STUDY
    if resource["resourceType"] != "Observation":
        return None
    panel = {"system": codes.CS_SPINE_FINDING, "code": codes.VERTEBRAL_LESION}
    if any(
        c.get("system") == panel["system"] and c.get("code") == panel["code"]
        for c in resource["code"].get("coding", [])
    ):
        return codes.PROFILE_LESION_PANEL
    return codes.PROFILE_INPUT_OBSERVATION
