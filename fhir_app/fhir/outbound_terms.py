"""Codings and displays of the outputs (CONTRACT.md section 4), as plain JSON dicts.

Every coding the outbound mapping emits is built here, so the display of a code is written once.
The displays of the project's own CodeSystems must agree with `profiles/`; the HL7 ones are the
displays of the published terminology.
"""

from __future__ import annotations

from typing import Any, Final

from fhir_app.domain.escc import EsccGrade, EsccGroup, escc_row
from fhir_app.domain.levels import SinsLocation, VertebralLevel
from fhir_app.domain.noms import Radiosensitivity
from fhir_app.domain.sins_answers import (
    COMPONENT_WORDS,
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    PosterolateralAnswer,
    SinsAnswer,
    SinsCategory,
    SinsComponent,
)
from fhir_app.fhir import codes

JsonObject = dict[str, Any]

SINS_ANSWER_DISPLAY: Final[dict[SinsAnswer, str]] = {
    SinsLocation.JUNCTIONAL: "Junctional (occiput-C2, C7-T2, T11-L1, L5-S1)",
    SinsLocation.MOBILE: "Mobile spine (C3-C6, L2-L4)",
    SinsLocation.SEMI_RIGID: "Semi-rigid (T3-T10)",
    SinsLocation.RIGID: "Rigid (S2-S5)",
    PainAnswer.MECHANICAL: "Mechanical pain",
    PainAnswer.OCCASIONAL_NON_MECHANICAL: "Occasional pain but not mechanical",
    PainAnswer.PAIN_FREE: "Pain-free lesion",
    LesionAnswer.LYTIC: "Lytic",
    LesionAnswer.MIXED: "Mixed (lytic/blastic)",
    LesionAnswer.BLASTIC: "Blastic",
    AlignmentAnswer.SUBLUXATION_TRANSLATION: "Subluxation/translation present",
    AlignmentAnswer.DE_NOVO_DEFORMITY: "De novo deformity (kyphosis/scoliosis)",
    AlignmentAnswer.NORMAL: "Normal alignment",
    CollapseAnswer.GT_50: "Collapse > 50%",
    CollapseAnswer.LT_50: "Collapse < 50%",
    CollapseAnswer.NONE_GT_50_INVOLVED: "No collapse with > 50% of the body involved",
    CollapseAnswer.NONE: "No collapse",
    PosterolateralAnswer.BILATERAL: "Bilateral",
    PosterolateralAnswer.UNILATERAL: "Unilateral",
    PosterolateralAnswer.NONE: "No posterolateral involvement",
}

SINS_CATEGORY_DISPLAY: Final[dict[SinsCategory, str]] = {
    SinsCategory.STABLE: "Stable",
    SinsCategory.POTENTIALLY_UNSTABLE: "Potentially unstable",
    SinsCategory.UNSTABLE: "Unstable",
}

# risk-probability alongside each SINS category (CONTRACT 4c).
RISK_PROBABILITY: Final[dict[SinsCategory, tuple[str, str]]] = {
    SinsCategory.STABLE: ("low", "Low likelihood"),
    SinsCategory.POTENTIALLY_UNSTABLE: ("moderate", "Moderate likelihood"),
    SinsCategory.UNSTABLE: ("high", "High likelihood"),
}

PRIMARY_TUMOR_DISPLAY: Final[dict[str, str]] = {
    "prostate": "Prostate carcinoma",
    "breast": "Breast carcinoma",
    "lung-small-cell": "Small cell lung carcinoma",
    "lung-non-small-cell": "Non-small cell lung carcinoma",
    "carcinoid": "Carcinoid tumour",
    "bladder-urothelial": "Urothelial carcinoma of the bladder",
    "gi-mucinous-adenocarcinoma": "Mucinous adenocarcinoma of the gastrointestinal tract",
    "gi-adenocarcinoma": "Adenocarcinoma of the gastrointestinal tract",
    "lymphoma-hodgkin": "Hodgkin lymphoma",
    "lymphoma-non-hodgkin": "Non-Hodgkin lymphoma",
    "pancreas": "Pancreatic carcinoma",
    "medulloblastoma": "Medulloblastoma",
    "neuroblastoma": "Neuroblastoma",
    "testis-seminoma": "Testicular seminoma",
    "cervix": "Cervical carcinoma",
    "ovary": "Ovarian carcinoma",
    "melanoma": "Melanoma",
    "squamous-cell": "Squamous cell carcinoma",
    "renal-cell": "Renal cell carcinoma",
    "thyroid": "Thyroid carcinoma",
    "hepatocellular": "Hepatocellular carcinoma",
    "phaeochromocytoma": "Phaeochromocytoma",
    "unknown-primary": "Unknown primary",
}

DIFFERENTIAL_DISPLAY: Final[dict[str, str]] = {
    "bone-island": "Bone island (enostosis)",
    "sclerotic-haemangioma": "Sclerotic haemangioma",
    "degenerative-endplate-change": "Degenerative endplate change",
    "lymphoma": "Lymphoma",
    "paget-disease": "Paget disease",
    "healing-compression-fracture": "Healing compression fracture",
    "vertebral-augmentation": "Vertebral augmentation",
    "osteoid-osteoma-osteoblastoma": "Osteoid osteoma / osteoblastoma",
    "chronic-osteomyelitis": "Chronic osteomyelitis",
    "sclerotic-myeloma": "Sclerotic myeloma",
    "bone-infarct": "Bone infarct",
    "infection-spondylodiscitis": "Infection (spondylodiscitis)",
    "langerhans-cell-histiocytosis": "Langerhans cell histiocytosis",
    "myeloma": "Myeloma",
    "myeloma-plasmacytoma": "Myeloma / plasmacytoma",
    "aggressive-haemangioma": "Aggressive haemangioma",
    "giant-cell-tumour": "Giant cell tumour",
    "aneurysmal-bone-cyst": "Aneurysmal bone cyst",
    "brown-tumour": "Brown tumour",
    "chordoma": "Chordoma",
    "osteoporotic-compression-fracture": "Osteoporotic compression fracture",
}

# Displays of the remaining codes of the project's CodeSystems that outputs carry.
SINS_CODE_DISPLAY: Final[dict[str, str]] = {
    codes.SINS_METHOD: "Spinal Instability Neoplastic Score",
    codes.SINS_TOTAL: "SINS total score",
    codes.SPINAL_INSTABILITY: "Spinal instability",
}
SPINE_FINDING_DISPLAY: Final[dict[str, str]] = {
    codes.LESION_CLASSIFICATION: "Lesion classification",
    codes.LIKELY_PRIMARY: "Likely primary tumour",
    codes.PRIMARY_TUMOR: "Primary tumour",
    codes.DIFFERENTIAL: "Differential diagnosis",
    codes.ASSESSMENT_REPORT: "Vertebral metastasis assessment",
    codes.ESCC_GRADE: "Epidural spinal cord compression grade",
    codes.MYELOPATHY: "Myelopathy",
    codes.NOMS_INPUTS: "NOMS decision inputs",
}

ESCC_GROUP_DISPLAY: Final[dict[EsccGroup, str]] = {
    EsccGroup.LOW: "Low-grade ESCC (0-1c)",
    EsccGroup.HIGH: "High-grade ESCC (2-3)",
}

# Displays of the `noms` CodeSystem: the four parts and the radiosensitivity classes.
NOMS_DISPLAY: Final[dict[str, str]] = {
    codes.NOMS_NEUROLOGIC: "Neurologic",
    codes.NOMS_ONCOLOGIC: "Oncologic",
    codes.NOMS_MECHANICAL: "Mechanical",
    codes.NOMS_SYSTEMIC: "Systemic",
    Radiosensitivity.SENSITIVE.value: "Radiosensitive",
    Radiosensitivity.INTERMEDIATE_OR_SENSITIVE.value: "Intermediate or sensitive",
    Radiosensitivity.RESISTANT.value: "Radioresistant",
    Radiosensitivity.NOT_CLASSIFIED.value: "Not classified",
    codes.NOMS_NO_KNOWN_PRIMARY: "No known primary",
}


def coding(system: str, code: str, display: str | None = None) -> JsonObject:
    """A Coding; the display is left out when there is none."""
    result: JsonObject = {"system": system, "code": code}
    if display is not None:
        result["display"] = display
    return result


def concept(*codings: JsonObject, text: str | None = None) -> JsonObject:
    """A CodeableConcept of the given codings and optional text."""
    result: JsonObject = {"coding": list(codings)}
    if text is not None:
        result["text"] = text
    return result


def sins_code(code: str) -> JsonObject:
    """A `sins` coding of the method, total or outcome codes."""
    return coding(codes.CS_SINS, code, SINS_CODE_DISPLAY[code])


def spine_finding(code: str) -> JsonObject:
    """A `spine-finding` output coding."""
    return coding(codes.CS_SPINE_FINDING, code, SPINE_FINDING_DISPLAY[code])


def escc_grade(grade: EsccGrade) -> JsonObject:
    """The `escc` coding of a grade; its display is the grade's meaning on MRI."""
    return coding(codes.CS_ESCC, grade.value, f"Grade {grade.value}: {escc_row(grade).meaning}")


def escc_group(group: EsccGroup) -> JsonObject:
    """The `escc` coding of low or high grade."""
    return coding(codes.CS_ESCC, group.value, ESCC_GROUP_DISPLAY[group])


def noms(code: str) -> JsonObject:
    """A `noms` coding."""
    return coding(codes.CS_NOMS, code, NOMS_DISPLAY[code])


def sins_answer(answer: SinsAnswer, points: int) -> JsonObject:
    """A `sins` answer coding carrying its points as the ordinalValue extension."""
    return {
        "extension": [{"url": codes.EXT_ORDINAL_VALUE, "valueDecimal": points}],
        "system": codes.CS_SINS,
        "code": answer.value,
        "display": SINS_ANSWER_DISPLAY[answer],
    }


def sins_component(component: SinsComponent) -> JsonObject:
    """The `sins` coding of one of the six components."""
    return coding(codes.CS_SINS, component.value, COMPONENT_WORDS[component])


def sins_category(category: SinsCategory) -> JsonObject:
    """The `sins` coding of a category."""
    return coding(codes.CS_SINS, category.value, SINS_CATEGORY_DISPLAY[category])


def risk_probability(category: SinsCategory) -> JsonObject:
    """The HL7 risk-probability coding that matches a SINS category."""
    code, display = RISK_PROBABILITY[category]
    return coding(codes.CS_RISK_PROBABILITY, code, display)


def primary_tumor(code: str) -> JsonObject:
    """A `primary-tumor` coding."""
    return coding(codes.CS_PRIMARY_TUMOR, code, PRIMARY_TUMOR_DISPLAY.get(code))


def differential(code: str) -> JsonObject:
    """A `differential` coding."""
    return coding(codes.CS_DIFFERENTIAL, code, DIFFERENTIAL_DISPLAY.get(code))


def vertebral_level(level: VertebralLevel) -> JsonObject:
    """The SNOMED CT level as a CodeableConcept.

    The coding carries no display on purpose: SNOMED CT checks displays against its own terms,
    and the level as clinicians write it goes into `text`.
    """
    return concept(coding(codes.SNOMED, level.snomed), text=f"{level.label} vertebra")


def data_absent_unknown(text: str | None = None) -> JsonObject:
    """data-absent-reason `unknown`, with an optional explanation."""
    return concept(coding(codes.CS_DATA_ABSENT_REASON, "unknown", "Unknown"), text=text)


def observation_category(code: str, display: str) -> JsonObject:
    """An HL7 observation-category concept."""
    return concept(coding(codes.CS_OBSERVATION_CATEGORY, code, display))


SURVEY_CATEGORY: Final = ("survey", "Survey")
IMAGING_CATEGORY: Final = ("imaging", "Imaging")
RADIOLOGY_SERVICE: Final = ("RAD", "Radiology")
LOINC_REPORT_DISPLAY: Final = "Diagnostic imaging study"
AUTHOR_AGENT: Final = ("author", "Author")
