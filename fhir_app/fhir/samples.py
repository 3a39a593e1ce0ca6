"""Builders for contract-conformant input resources (CONTRACT.md section 3).

Used by examples/, the tests and the bench population generator, so that every producer of sample
input speaks the contract the same way. Plain dicts, ready for orjson.
"""

from __future__ import annotations

import uuid
from typing import Any

from fhir_app.domain.levels import LEVEL_BY_LABEL
from fhir_app.fhir import codes
from fhir_app.fhir.inputs import JsonObject

# Where each finding code lives and which value[x] carries it.
SPINE = codes.CS_SPINE_FINDING


def coding(system: str, code: str, display: str | None = None) -> JsonObject:
    """A Coding."""
    out: JsonObject = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str | None = None) -> JsonObject:
    """A CodeableConcept with one coding."""
    return {"coding": [coding(system, code, display)]}


def level_site(label: str) -> JsonObject:
    """The bodySite CodeableConcept of a vertebral level (`T12`)."""
    level = LEVEL_BY_LABEL[label]
    return concept(codes.SNOMED, level.snomed, f"{label} vertebra")


SIDE_CODES = {
    "left": (codes.SNOMED, codes.SNOMED_LEFT, "Left"),
    "right": (codes.SNOMED, codes.SNOMED_RIGHT, "Right"),
    "both": (codes.SNOMED, codes.SNOMED_BILATERAL, "Right and left"),
    "none": (codes.CS_SINS, "no-posterolateral", "No posterolateral involvement"),
}
SIGNAL_CODES = {
    "hyper": codes.RADLEX_HYPER,
    "iso": codes.RADLEX_ISO,
    "hypo": codes.RADLEX_HYPO,
}


def finding_value(kind: str, value: Any) -> tuple[JsonObject, JsonObject]:
    """(code, value[x] element) of one finding, by the short kind names used in samples.

    Kinds: appearance, pain, alignment, height_loss, involvement, posterior (left/right/both/none),
    contrast, treated, ct (mean HU), t1 / t2 (hyper/iso/hypo, t2 also 'heterogeneous'),
    and sins:<component> with a sins answer code; escc (an ESCC grade, `2`), myelopathy (bool).
    """
    if kind == "escc":
        return concept(SPINE, codes.ESCC_GRADE, "Epidural spinal cord compression grade"), {
            "valueCodeableConcept": concept(codes.CS_ESCC, value)
        }
    if kind == "ct":
        quantity = {"value": value, "unit": "HU", "system": codes.UCUM, "code": codes.UNIT_HU}
        return concept(codes.DCM, codes.DCM_ATTENUATION, "Attenuation Coefficient"), {
            "valueQuantity": quantity
        }
    if kind in ("t1", "t2"):
        code = codes.DCM_T1 if kind == "t1" else codes.DCM_T2
        signals = ["hyper", "hypo"] if value == "heterogeneous" else [value]
        value_cc = {"coding": [coding(codes.RADLEX, SIGNAL_CODES[s]) for s in signals]}
        return concept(codes.DCM, code), {"valueCodeableConcept": value_cc}
    if kind.startswith("sins:"):
        return concept(codes.CS_SINS, kind[5:]), {
            "valueCodeableConcept": concept(codes.CS_SINS, value)
        }
    simple = {
        "appearance": (codes.LESION_APPEARANCE, "cc"),
        "pain": (codes.PAIN_CHARACTER, "cc"),
        "alignment": (codes.SPINAL_ALIGNMENT, "cc"),
        "height_loss": (codes.HEIGHT_LOSS, "pct"),
        "involvement": (codes.BODY_INVOLVEMENT, "pct"),
        "posterior": (codes.POSTERIOR_ELEMENT, "side"),
        "contrast": (codes.CONTRAST_ENHANCEMENT, "bool"),
        "treated": (codes.TREATED_LESION, "bool"),
        "myelopathy": (codes.MYELOPATHY, "bool"),
    }
    code, shape = simple[kind]
    if shape == "cc":
        element: JsonObject = {"valueCodeableConcept": concept(codes.CS_SINS, value)}
    elif shape == "pct":
        element = {
            "valueQuantity": {
                "value": value,
                "unit": "%",
                "system": codes.UCUM,
                "code": codes.UNIT_PERCENT,
            }
        }
    elif shape == "side":
        element = {"valueCodeableConcept": concept(*SIDE_CODES[value])}
    else:
        element = {"valueBoolean": bool(value)}
    return concept(SPINE, code), element


def observation(
    obs_id: str,
    patient: str,
    kind: str,
    value: Any,
    *,
    level: str | None,
    effective: str,
    status: str = "final",
    study: str | None = None,
    method: str | None = None,
) -> JsonObject:
    """A standalone finding Observation; `method` `mean` / `max` says what a CT attenuation is."""
    code, element = finding_value(kind, value)
    out: JsonObject = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": status,
        "category": [
            concept(
                "http://terminology.hl7.org/CodeSystem/observation-category", "imaging", "Imaging"
            )
        ],
        "code": code,
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": effective,
        **element,
    }
    if method is not None:
        out["method"] = concept(codes.SNOMED, *CT_STATISTIC[method])
    if level is not None:
        out["bodySite"] = level_site(level)
    if study is not None:
        out["derivedFrom"] = [{"reference": f"ImagingStudy/{study}"}]
    return out


# The DICOM region-of-interest modifiers (CID 7464) a CT attenuation's method may carry.
CT_STATISTIC = {
    "mean": (codes.SNOMED_MEAN, "Mean"),
    "max": (codes.SNOMED_MAXIMUM, "Maximum"),
}


def lesion_panel(
    obs_id: str,
    patient: str,
    level: str,
    findings: list[tuple[str, Any]],
    *,
    effective: str,
    status: str = "final",
    study: str | None = None,
) -> JsonObject:
    """A `vertebral-lesion` panel with one component per finding."""
    components = []
    for kind, value in findings:
        code, element = finding_value(kind, value)
        components.append({"code": code, **element})
    out: JsonObject = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": status,
        "code": concept(SPINE, codes.VERTEBRAL_LESION, "Vertebral lesion"),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": effective,
        "bodySite": level_site(level),
        "component": components,
    }
    if study is not None:
        out["derivedFrom"] = [{"reference": f"ImagingStudy/{study}"}]
    return out


def primary_tumor(obs_id: str, patient: str, code: str, *, effective: str) -> JsonObject:
    """The patient's known primary tumour."""
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": concept(SPINE, codes.PRIMARY_TUMOR, "Primary tumour"),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": effective,
        "valueCodeableConcept": concept(codes.CS_PRIMARY_TUMOR, code),
    }


def imaging_study(
    study_id: str, patient: str, modality: str, *, started: str, uid: str
) -> JsonObject:
    """An ImagingStudy with one series of the modality and its DICOM Study Instance UID."""
    return {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "status": "available",
        "identifier": [{"system": codes.DICOM_UID, "value": f"urn:oid:{uid}"}],
        "subject": {"reference": f"Patient/{patient}"},
        "started": started,
        "series": [
            {
                "uid": f"{uid}.1",
                "modality": coding(codes.DCM, modality),
                "bodySite": coding(codes.SNOMED, "421060004", "Spinal structure"),
            }
        ],
    }


def patient(patient_id: str, family: str, given: str, birth_date: str, gender: str) -> JsonObject:
    """A minimal Patient."""
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth_date,
    }


def _url(resource: JsonObject) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def transaction(resources: list[JsonObject]) -> JsonObject:
    """A transaction Bundle that PUTs every resource at its id (idempotent on resend)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, _url(r))}",
                "resource": r,
                "request": {"method": "PUT", "url": _url(r)},
            }
            for r in resources
        ],
    }
