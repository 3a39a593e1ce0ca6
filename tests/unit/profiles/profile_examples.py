"""Hand-written resources for the profile tests: valid ones that follow CONTRACT.md sections 3 and 4
to the letter, and broken variants that a validator must refuse.

Written out by hand on purpose (not through fhir_app.fhir.outbound), so that the profiles are tested
against the contract, not against the code they are meant to check.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fhir_app.fhir import codes

Json = dict[str, Any]

PATIENT = {"reference": "Patient/p-001"}
T12 = {"coding": [{"system": codes.SNOMED, "code": "23215003"}], "text": "T12 vertebra"}
WHEN = "2024-03-01T10:15:00Z"


def sins(code: str, display: str | None = None) -> Json:
    """A `sins` coding."""
    coding: Json = {"system": codes.CS_SINS, "code": code}
    if display is not None:
        coding["display"] = display
    return coding


def spine(code: str) -> Json:
    """A `spine-finding` coding."""
    return {"system": codes.CS_SPINE_FINDING, "code": code}


def answer(code: str, points: int) -> Json:
    """A determined SINS answer with its points as ordinalValue (CONTRACT 4a)."""
    return {
        "coding": [
            {
                "extension": [{"url": codes.EXT_ORDINAL_VALUE, "valueDecimal": points}],
                **sins(code),
            }
        ]
    }


def sins_score() -> Json:
    """4a, every component determined: T12, total 11, potentially unstable."""
    return {
        "resourceType": "Observation",
        "id": "sins-t12-example",
        "meta": {"versionId": "1", "profile": [codes.PROFILE_SINS]},
        "status": "final",
        "code": {"coding": [sins(codes.SINS_TOTAL, "SINS total score")]},
        "subject": PATIENT,
        "effectiveDateTime": WHEN,
        "valueInteger": 11,
        "interpretation": [{"coding": [sins("potentially-unstable", "Potentially unstable")]}],
        "bodySite": T12,
        "derivedFrom": [{"reference": "Observation/finding-1/_history/1"}],
        "component": [
            {
                "code": {"coding": [sins("location")]},
                "valueCodeableConcept": answer("junctional", 3),
            },
            {"code": {"coding": [sins("pain")]}, "valueCodeableConcept": answer("mechanical", 3)},
            {"code": {"coding": [sins("bone-lesion")]}, "valueCodeableConcept": answer("lytic", 2)},
            {
                "code": {"coding": [sins("alignment")]},
                "valueCodeableConcept": answer("normal-alignment", 0),
            },
            {
                "code": {"coding": [sins("collapse")]},
                "valueCodeableConcept": answer("collapse-lt-50", 2),
            },
            {
                "code": {"coding": [sins("posterolateral")]},
                "valueCodeableConcept": answer("unilateral", 1),
            },
        ],
    }


def open_sins_score() -> Json:
    """4a with open components: a range of points, and no finding at all; a range of totals."""
    resource = sins_score()
    resource["status"] = "preliminary"
    del resource["valueInteger"]
    del resource["interpretation"]
    resource["valueRange"] = {"low": {"value": 6}, "high": {"value": 12}}
    resource["component"][3] = {
        "code": {"coding": [sins("alignment")], "text": "Alignment: no finding"},
        "dataAbsentReason": {
            "coding": [
                {"system": codes.CS_DATA_ABSENT_REASON, "code": "unknown", "display": "Unknown"}
            ]
        },
    }
    resource["component"][4] = {
        "code": {
            "coding": [sins("collapse")],
            "text": "Collapse: collapse < 50% or no collapse with > 50% involved",
        },
        "valueRange": {"low": {"value": 1}, "high": {"value": 2}},
    }
    return resource


def classification() -> Json:
    """4b, a lytic lesion with likely primaries and differential."""
    return {
        "resourceType": "Observation",
        "id": "cls-t12-example",
        "meta": {"profile": [codes.PROFILE_CLASSIFICATION]},
        "status": "final",
        "code": {"coding": [spine(codes.LESION_CLASSIFICATION)]},
        "subject": PATIENT,
        "effectiveDateTime": WHEN,
        "valueCodeableConcept": {"coding": [sins("lytic", "Lytic")]},
        "note": [{"text": "Treated lesion: the appearance says less about the primary."}],
        "bodySite": T12,
        "component": [
            {
                "code": {"coding": [spine(codes.LIKELY_PRIMARY)]},
                "valueCodeableConcept": {
                    "coding": [{"system": codes.CS_PRIMARY_TUMOR, "code": "renal-cell"}]
                },
            },
            {
                "code": {"coding": [spine(codes.LIKELY_PRIMARY)]},
                "valueCodeableConcept": {
                    "coding": [{"system": codes.CS_PRIMARY_TUMOR, "code": "thyroid"}]
                },
            },
            {
                "code": {"coding": [spine(codes.DIFFERENTIAL)]},
                "valueCodeableConcept": {
                    "coding": [{"system": codes.CS_DIFFERENTIAL, "code": "myeloma-plasmacytoma"}]
                },
            },
        ],
    }


def risk_assessment() -> Json:
    """4c, potentially unstable: surgical consultation."""
    return {
        "resourceType": "RiskAssessment",
        "id": "risk-t12-example",
        "meta": {"profile": [codes.PROFILE_RISK]},
        "extension": [
            {
                "url": codes.EXT_VERTEBRAL_LEVEL,
                "valueCodeableConcept": {"coding": [{"system": codes.SNOMED, "code": "23215003"}]},
            }
        ],
        "status": "final",
        "method": {"coding": [sins(codes.SINS_METHOD)]},
        "subject": PATIENT,
        "occurrenceDateTime": WHEN,
        "basis": [
            {"reference": "Observation/sins-t12-example/_history/1"},
            {"reference": "Observation/finding-1/_history/1"},
            {"reference": "ImagingStudy/ct-1/_history/1"},
        ],
        "prediction": [
            {
                "outcome": {"coding": [sins(codes.SPINAL_INSTABILITY)]},
                "qualitativeRisk": {
                    "coding": [
                        sins("potentially-unstable"),
                        {"system": codes.CS_RISK_PROBABILITY, "code": "moderate"},
                    ]
                },
                "rationale": "SINS 11: junctional 3, mechanical pain 3, lytic 2, normal alignment "
                "0, collapse < 50% 2, unilateral 1.",
            }
        ],
        "mitigation": "Surgical consultation recommended: SINS 7 or more at T12",
    }


def report() -> Json:
    """4d."""
    return {
        "resourceType": "DiagnosticReport",
        "id": "report-example",
        "meta": {"profile": [codes.PROFILE_REPORT]},
        "status": "final",
        "code": {
            "coding": [
                {"system": codes.LOINC, "code": codes.LOINC_REPORT},
                spine(codes.ASSESSMENT_REPORT),
            ]
        },
        "subject": PATIENT,
        "effectiveDateTime": WHEN,
        "issued": "2024-03-01T11:00:00.000Z",
        "imagingStudy": [{"reference": "ImagingStudy/ct-1/_history/1"}],
        "result": [
            {"reference": "Observation/sins-t12-example/_history/1"},
            {"reference": "Observation/cls-t12-example/_history/1"},
        ],
        "conclusion": "T12: lytic, SINS 11 (potentially unstable).",
    }


def provenance() -> Json:
    """4e, the processor as a contained Device."""
    return {
        "resourceType": "Provenance",
        "id": "prov-example",
        "meta": {"profile": [codes.PROFILE_PROVENANCE]},
        "contained": [
            {
                "resourceType": "Device",
                "id": "processor",
                "deviceName": [{"name": "fhir-app", "type": "manufacturer-name"}],
                "version": [{"value": "0.1.0"}],
            }
        ],
        "target": [
            {"reference": "Observation/sins-t12-example/_history/1"},
            {"reference": "RiskAssessment/risk-t12-example/_history/1"},
        ],
        "recorded": "2024-03-01T11:00:00.000Z",
        "agent": [{"who": {"reference": "#processor", "display": "fhir-app 0.1.0"}}],
        "entity": [{"role": "source", "what": {"reference": "Observation/finding-1/_history/1"}}],
    }


def height_loss_finding() -> Json:
    """An input finding of a level (CONTRACT 3)."""
    return {
        "resourceType": "Observation",
        "id": "finding-1",
        "meta": {"profile": [codes.PROFILE_INPUT_OBSERVATION]},
        "status": "final",
        "code": {"coding": [spine(codes.HEIGHT_LOSS)]},
        "subject": PATIENT,
        "effectiveDateTime": WHEN,
        "valueQuantity": {
            "value": 30,
            "unit": "%",
            "system": codes.UCUM,
            "code": codes.UNIT_PERCENT,
        },
        "bodySite": T12,
        "derivedFrom": [{"reference": "ImagingStudy/ct-1"}],
    }


def patient_wide_pain() -> Json:
    """A pain-character finding without a level: it applies to every lesion level."""
    return {
        "resourceType": "Observation",
        "id": "pain-1",
        "meta": {"profile": [codes.PROFILE_INPUT_OBSERVATION]},
        "status": "final",
        "code": {"coding": [spine(codes.PAIN_CHARACTER)]},
        "subject": PATIENT,
        "valueCodeableConcept": {"coding": [sins("mechanical")]},
    }


def ct_attenuation() -> Json:
    """A CT attenuation measurement of a level."""
    return {
        "resourceType": "Observation",
        "id": "ct-hu-1",
        "meta": {"profile": [codes.PROFILE_INPUT_OBSERVATION]},
        "status": "final",
        "code": {"coding": [{"system": codes.DCM, "code": codes.DCM_ATTENUATION}]},
        "subject": PATIENT,
        "valueQuantity": {"value": 62, "system": codes.UCUM, "code": codes.UNIT_HU},
        "bodySite": T12,
    }


def lesion_panel() -> Json:
    """A vertebral-lesion panel."""
    return {
        "resourceType": "Observation",
        "id": "panel-1",
        "meta": {"profile": [codes.PROFILE_LESION_PANEL]},
        "status": "final",
        "code": {"coding": [spine(codes.VERTEBRAL_LESION)]},
        "subject": PATIENT,
        "bodySite": T12,
        "component": [
            {
                "code": {"coding": [spine(codes.LESION_APPEARANCE)]},
                "valueCodeableConcept": {"coding": [sins("lytic")]},
            },
            {"code": {"coding": [spine(codes.CONTRAST_ENHANCEMENT)]}, "valueBoolean": True},
        ],
    }


def imaging_study() -> Json:
    """A CT study."""
    return {
        "resourceType": "ImagingStudy",
        "id": "ct-1",
        "meta": {"profile": [codes.PROFILE_IMAGING_STUDY]},
        "status": "available",
        "identifier": [{"system": codes.DICOM_UID, "value": "urn:oid:1.2.840.99999.1"}],
        "subject": PATIENT,
        "started": WHEN,
        "series": [
            {
                "uid": "1.2.840.99999.1.1",
                "modality": {"system": codes.DCM, "code": "CT"},
            }
        ],
    }


VALID: dict[str, Callable[[], Json]] = {
    "sins-score": sins_score,
    "sins-score-open": open_sins_score,
    "lesion-classification": classification,
    "sins-risk-assessment": risk_assessment,
    "vertebral-metastasis-report": report,
    "fhir-app-provenance": provenance,
    "finding": height_loss_finding,
    "finding-pain-without-level": patient_wide_pain,
    "finding-ct-attenuation": ct_attenuation,
    "vertebral-lesion-panel": lesion_panel,
    "spine-imaging-study": imaging_study,
}


def broken(make: Callable[[], Json], change: Callable[[Json], None]) -> Json:
    """A valid example with one change."""
    resource = copy.deepcopy(make())
    change(resource)
    return resource


def _set(path: str, value: Any) -> Callable[[Json], None]:
    def change(resource: Json) -> None:
        *parents, last = path.split(".")
        target: Any = resource
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = value

    return change


def _drop(key: str) -> Callable[[Json], None]:
    def change(resource: Json) -> None:
        del resource[key]

    return change


def _drop_component(index: int) -> Callable[[Json], None]:
    def change(resource: Json) -> None:
        del resource["component"][index]

    return change


OTHER_EXTENSION = [{"url": "https://example.org/fhir/StructureDefinition/x", "valueString": "y"}]

# name -> (resource, the profile the error must come from (None: base R4), the element path)
INVALID: dict[str, tuple[Json, str | None, str]] = {
    "risk-without-status": (
        broken(risk_assessment, _drop("status")),
        None,
        "RiskAssessment.status",
    ),
    "risk-without-level-extension": (
        broken(risk_assessment, _drop("extension")),
        codes.PROFILE_RISK,
        "RiskAssessment.extension",
    ),
    "risk-with-another-extension-only": (
        broken(risk_assessment, _set("extension", OTHER_EXTENSION)),
        codes.PROFILE_RISK,
        "RiskAssessment.extension",
    ),
    "risk-with-wrong-method": (
        broken(risk_assessment, _set("method", {"coding": [sins("pain")]})),
        codes.PROFILE_RISK,
        "RiskAssessment.method",
    ),
    "risk-without-prediction": (
        broken(risk_assessment, _drop("prediction")),
        codes.PROFILE_RISK,
        "RiskAssessment.prediction",
    ),
    "risk-with-probability-over-100": (
        broken(risk_assessment, _set("prediction.0.probabilityDecimal", 120)),
        None,
        "RiskAssessment.prediction[0]",
    ),
    "sins-with-wrong-code": (
        broken(sins_score, _set("code", {"coding": [spine(codes.LESION_CLASSIFICATION)]})),
        codes.PROFILE_SINS,
        "Observation.code",
    ),
    "sins-without-level": (
        broken(sins_score, _drop("bodySite")),
        codes.PROFILE_SINS,
        "Observation.bodySite",
    ),
    "sins-without-a-component": (
        broken(sins_score, _drop_component(5)),
        codes.PROFILE_SINS,
        "Observation.component",
    ),
    "sins-with-a-component-twice": (
        broken(sins_score, _set("component.5.code", {"coding": [sins("pain")]})),
        codes.PROFILE_SINS,
        "Observation.component",
    ),
    "sins-with-a-malformed-profile-url": (
        broken(sins_score, _set("meta.profile", [codes.PROFILE_SINS, "not a canonical"])),
        None,
        "Observation.meta.profile[1]",
    ),
    "classification-with-wrong-code": (
        broken(classification, _set("code", {"coding": [sins(codes.SINS_TOTAL)]})),
        codes.PROFILE_CLASSIFICATION,
        "Observation.code",
    ),
    "report-without-loinc": (
        broken(report, _set("code", {"coding": [spine(codes.ASSESSMENT_REPORT)]})),
        codes.PROFILE_REPORT,
        "DiagnosticReport.code",
    ),
    "report-without-subject": (
        broken(report, _drop("subject")),
        codes.PROFILE_REPORT,
        "DiagnosticReport.subject",
    ),
    "provenance-without-target": (
        broken(provenance, _drop("target")),
        None,
        "Provenance.target",
    ),
    "finding-without-level": (
        broken(height_loss_finding, _drop("bodySite")),
        codes.PROFILE_INPUT_OBSERVATION,
        "Observation",
    ),
    "panel-without-components": (
        broken(lesion_panel, _drop("component")),
        codes.PROFILE_LESION_PANEL,
        "Observation.component",
    ),
    "imaging-study-without-start": (
        broken(imaging_study, _drop("started")),
        codes.PROFILE_IMAGING_STUDY,
        "ImagingStudy.started",
    ),
    "unknown-fhir-app-profile": (
        broken(sins_score, _set("meta.profile", [f"{codes.BASE}/StructureDefinition/nope"])),
        f"{codes.BASE}/StructureDefinition/nope",
        "Observation.meta.profile",
    ),
    "profile-of-another-type": (
        broken(sins_score, _set("meta.profile", [codes.PROFILE_RISK])),
        codes.PROFILE_RISK,
        "Observation.meta.profile",
    ),
}
