"""The outputs derived from Conditions are valid R4 (CONTRACT 3 and 4, v2).

R4's Observation.derivedFrom takes no Condition: the SINS, classification and NOMS Observations
leave the Condition out there, the RiskAssessment's basis and the Provenance reference it.
"""

from __future__ import annotations

import pytest
from support.conditions import primary_condition, secondary_condition
from support.validator import errors, require_medplum, validate_with_medplum

from fhir_app.fhir import samples
from fhir_app.service import assess

INPUTS = [
    samples.lesion_panel("v-l1", "v", "L1", [("appearance", "lytic")], effective="2024-03-01"),
    primary_condition("v-primary", "v", "thyroid"),
    secondary_condition("v-met", "v", "L4"),  # L4 known from the Condition alone
]
OUTPUTS = assess((r["id"], r) for r in INPUTS).outputs
PRIMARY = "Condition/v-primary/_history/1"
SECONDARY = "Condition/v-met/_history/1"


def test_conditions_are_referenced_where_r4_allows() -> None:
    for resource in OUTPUTS:
        derived = [r["reference"] for r in resource.get("derivedFrom", [])]
        assert not [r for r in derived if r.startswith("Condition/")], resource["id"]
    risks = {r["id"][:7]: r for r in OUTPUTS if r["resourceType"] == "RiskAssessment"}
    assert {PRIMARY, SECONDARY} <= {b["reference"] for b in risks["risk-l4"]["basis"]}
    assert PRIMARY in {b["reference"] for b in risks["risk-l1"]["basis"]}
    assert SECONDARY not in {b["reference"] for b in risks["risk-l1"]["basis"]}
    (provenance,) = [r for r in OUTPUTS if r["resourceType"] == "Provenance"]
    assert {PRIMARY, SECONDARY} <= {e["what"]["reference"] for e in provenance["entity"]}


@pytest.mark.node
def test_outputs_from_conditions_validate_with_medplum_without_remarks_on_references() -> None:
    require_medplum()
    results = validate_with_medplum(OUTPUTS)
    for resource, issues in zip(OUTPUTS, results, strict=True):
        assert errors(issues) == [], resource["id"]
        assert [i for i in issues if "Invalid reference" in str(i.get("details"))] == []
