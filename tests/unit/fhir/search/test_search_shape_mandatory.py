"""`_elements` keeps the mandatory elements of every type the server returns (search.html#elements:
"Servers SHOULD always return mandatory elements whether they are requested or not"), read from the
vendored R4 JSON schema."""

from __future__ import annotations

import pytest

from fhir_app.fhir.search import shaped
from fhir_app.fhir.search.parameters import SERVED_TYPES
from fhir_app.fhir.search.shape import mandatory_elements

# FHIR R4 (4.0.1) resource pages: the top-level elements with min >= 1.
R4_MANDATORY = {
    "Observation": {"status", "code"},
    "ImagingStudy": {"status", "subject"},
    "Patient": set(),
    "Condition": {"subject"},
    "RiskAssessment": {"status", "subject"},
    "DiagnosticReport": {"status", "code"},
    "Provenance": {"target", "recorded", "agent"},
    "AuditEvent": {"type", "recorded", "agent", "source"},
}


@pytest.mark.parametrize("rtype", [*SERVED_TYPES, "AuditEvent"])
def test_the_mandatory_elements_are_r4s(rtype: str) -> None:
    assert mandatory_elements(rtype) == R4_MANDATORY[rtype]


@pytest.mark.parametrize("rtype", [*SERVED_TYPES, "AuditEvent"])
def test_elements_keeps_the_mandatory_elements(rtype: str) -> None:
    resource = {
        "resourceType": rtype,
        "id": "x",
        "meta": {"versionId": "1"},
        "text": {"status": "generated", "div": "<div/>"},
        **{name: f"value of {name}" for name in R4_MANDATORY[rtype]},
    }
    subset = shaped(resource, None, ("text",))
    assert set(subset) == {"resourceType", "id", "meta", "text", *R4_MANDATORY[rtype]}
    assert subset["meta"]["tag"][-1]["code"] == "SUBSETTED"
    narrow = shaped(resource, None, ("id",))
    assert "text" not in narrow
    assert set(R4_MANDATORY[rtype]) <= set(narrow)
