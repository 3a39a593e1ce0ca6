"""Input Conditions of CONTRACT 3 (v2) for the tests: mCODE primary and secondary cancer conditions.

Written from the contract and the mCODE STU profiles' canonical URLs, not from the code's tables.
The primary carries the contract's `primary-tumor` coding directly (the ConceptMaps that add it to
ICD-10-CM / SNOMED diagnoses are another package's concern).
"""

from __future__ import annotations

from typing import Any

from fhir_app.fhir.samples import level_site

MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition"
PRIMARY_PROFILE = f"{MCODE}/mcode-primary-cancer-condition"
SECONDARY_PROFILE = f"{MCODE}/mcode-secondary-cancer-condition"
PRIMARY_TUMOR = "https://fhir-app.org/fhir/CodeSystem/primary-tumor"
SNOMED = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def _status(system: str, code: str | None) -> dict[str, Any]:
    return {} if code is None else {"coding": [{"system": system, "code": code}]}


def primary_condition(
    condition_id: str,
    patient: str,
    primary: str,
    *,
    recorded: str = "2024-01-10",
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    profile: bool = True,
) -> dict[str, Any]:
    """An mCODE primary cancer condition whose code carries the `primary-tumor` coding."""
    out: dict[str, Any] = {
        "resourceType": "Condition",
        "id": condition_id,
        # Only the contract's coding: a diagnosis code beside it would be mapped by the shipped
        # ConceptMaps too, and must then agree (test_condition_twins has the standard-coded form).
        "code": {"coding": [{"system": PRIMARY_TUMOR, "code": primary}], "text": primary},
        "subject": {"reference": f"Patient/{patient}"},
        "recordedDate": recorded,
    }
    if profile:
        out["meta"] = {"profile": [PRIMARY_PROFILE]}
    if clinical is not None:
        out["clinicalStatus"] = _status(CLINICAL, clinical)
    if verification is not None:
        out["verificationStatus"] = _status(VERIFICATION, verification)
    return out


def secondary_condition(
    condition_id: str,
    patient: str,
    *levels: str,
    recorded: str = "2024-03-01",
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    profile: bool = True,
    snomed_bone: bool = True,
) -> dict[str, Any]:
    """A secondary malignant neoplasm of bone (SNOMED 94222008) at the given vertebral levels."""
    code = "94222008" if snomed_bone else "94381002"  # 94381002: secondary neoplasm of liver
    out: dict[str, Any] = {
        "resourceType": "Condition",
        "id": condition_id,
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "recordedDate": recorded,
    }
    if levels:
        out["bodySite"] = [level_site(label) for label in levels]
    if profile:
        out["meta"] = {"profile": [SECONDARY_PROFILE]}
    if clinical is not None:
        out["clinicalStatus"] = _status(CLINICAL, clinical)
    if verification is not None:
        out["verificationStatus"] = _status(VERIFICATION, verification)
    return out
