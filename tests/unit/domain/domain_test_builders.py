"""Builders and the expected tables of the domain tests, written from DOMAIN.md and CONTRACT.md.

The expected values here are copied from the documents, never from the code's own tables, so that
a test fails when the code drifts from the rule book. Codes are plain strings on purpose.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhir_app.domain.assessment import LevelAssessment, assess_level
from fhir_app.domain.findings import (
    Finding,
    FindingKind,
    FindingValue,
    LevelFindings,
    PatientContext,
)
from fhir_app.domain.levels import VertebralLevel

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    """A clinical time `minutes` after T0."""
    return T0 + timedelta(minutes=minutes)


def finding(
    kind: FindingKind,
    value: FindingValue,
    minute: int = 0,
    *,
    source: str | None = None,
    patient_wide: bool = False,
    preliminary: bool = False,
) -> Finding:
    """One finding at T0 + minute; the source defaults to a readable unique-enough name."""
    return Finding(
        kind,
        value,
        at(minute),
        source if source is not None else f"Observation/{kind.value}-{minute}",
        preliminary=preliminary,
        patient_wide=patient_wide,
    )


def level_findings(
    *findings: Finding,
    primary: str | None = None,
    context: PatientContext | None = None,
    lesion_levels: int = 1,
) -> LevelFindings:
    """The findings of one level (of a patient with `lesion_levels` levels)."""
    return LevelFindings(
        tuple(findings),
        primary_tumor=primary,
        context=context or PatientContext(),
        lesion_levels=lesion_levels,
    )


def assess(
    level: VertebralLevel, *findings: Finding, primary: str | None = None
) -> LevelAssessment:
    """Assess one level with default settings."""
    return assess_level(level, level_findings(*findings, primary=primary))


# CONTRACT.md 2a (SNOMED CT) and DOMAIN.md section 2 (levels by location), one row per level.
DOC_LEVELS: list[tuple[str, str, str, str]] = [
    ("C1", "14806007", "cervical", "junctional"),
    ("C2", "39976000", "cervical", "junctional"),
    ("C3", "113205007", "cervical", "mobile"),
    ("C4", "5329002", "cervical", "mobile"),
    ("C5", "36978003", "cervical", "mobile"),
    ("C6", "36054005", "cervical", "mobile"),
    ("C7", "87391001", "cervical", "junctional"),
    ("T1", "64864005", "thoracic", "junctional"),
    ("T2", "53733008", "thoracic", "junctional"),
    ("T3", "1626008", "thoracic", "semi-rigid"),
    ("T4", "73071006", "thoracic", "semi-rigid"),
    ("T5", "56401006", "thoracic", "semi-rigid"),
    ("T6", "45296009", "thoracic", "semi-rigid"),
    ("T7", "62487009", "thoracic", "semi-rigid"),
    ("T8", "11068009", "thoracic", "semi-rigid"),
    ("T9", "82687006", "thoracic", "semi-rigid"),
    ("T10", "7610001", "thoracic", "semi-rigid"),
    ("T11", "12989004", "thoracic", "junctional"),
    ("T12", "23215003", "thoracic", "junctional"),
    ("L1", "66794005", "lumbar", "junctional"),
    ("L2", "14293000", "lumbar", "mobile"),
    ("L3", "36470004", "lumbar", "mobile"),
    ("L4", "11994002", "lumbar", "mobile"),
    ("L5", "49668003", "lumbar", "junctional"),
    ("S1", "65985001", "sacral", "junctional"),
    ("S2", "11808007", "sacral", "rigid"),
    ("S3", "49967005", "sacral", "rigid"),
    ("S4", "69950008", "sacral", "rigid"),
    ("S5", "21452006", "sacral", "rigid"),
]
DOC_LOCATION_OF: dict[str, str] = {label: location for label, _, _, location in DOC_LEVELS}

# CONTRACT.md 2b / DOMAIN.md section 2: component -> answer code -> points.
DOC_POINTS: dict[str, dict[str, int]] = {
    "location": {"junctional": 3, "mobile": 2, "semi-rigid": 1, "rigid": 0},
    "pain": {"mechanical": 3, "occasional-non-mechanical": 1, "pain-free": 0},
    "bone-lesion": {"lytic": 2, "mixed": 1, "blastic": 0},
    "alignment": {"subluxation-translation": 4, "de-novo-deformity": 2, "normal-alignment": 0},
    "collapse": {
        "collapse-gt-50": 3,
        "collapse-lt-50": 2,
        "no-collapse-gt-50-involved": 1,
        "no-collapse": 0,
    },
    "posterolateral": {"bilateral": 3, "unilateral": 1, "no-posterolateral": 0},
}
DOC_COMPONENT_ORDER = ["location", "pain", "bone-lesion", "alignment", "collapse", "posterolateral"]

# DOMAIN.md section 2: stable 0-6, potentially unstable 7-12, unstable 13-18.
DOC_BANDS: list[tuple[int, int, str]] = [
    (0, 6, "stable"),
    (7, 12, "potentially-unstable"),
    (13, 18, "unstable"),
]


def doc_category(total: int) -> str:
    """The category of a total, from DOMAIN.md section 2."""
    return next(category for low, high, category in DOC_BANDS if low <= total <= high)


ALL_APPEARANCE_CODES = frozenset({"lytic", "mixed", "blastic"})

# DOMAIN.md section 3, MRI: the appearances each signal allows. T1 hyper is not in the table;
# the code's DESIGN choice is that it narrows nothing.
DOC_T1_ALLOWS: dict[str, frozenset[str]] = {
    "iso": frozenset({"lytic"}),
    "hypo": ALL_APPEARANCE_CODES,
    "hyper": ALL_APPEARANCE_CODES,
}
DOC_T2_ALLOWS: dict[str, frozenset[str]] = {
    "iso": frozenset({"lytic"}),
    "heterogeneous": frozenset({"mixed"}),
    "hyper": frozenset({"lytic", "mixed"}),
    "hypo": frozenset({"blastic", "mixed"}),
}

# DOMAIN.md section 3: CT heuristic of an untreated lesion.
DOC_CT_LYTIC_MAX_HU = 100.0
DOC_CT_BLASTIC_MIN_HU = 300.0
# DOMAIN.md section 3: bone island (Ulano et al. 2016).
DOC_BONE_ISLAND_MEAN_HU = 885.0
DOC_BONE_ISLAND_MAX_HU = 1060.0

# DOMAIN.md section 4, in the documented order.
DOC_PRIMARIES: dict[str, list[str]] = {
    "blastic": [
        "prostate",
        "breast",
        "lung-small-cell",
        "carcinoid",
        "bladder-urothelial",
        "gi-mucinous-adenocarcinoma",
        "lymphoma-hodgkin",
        "pancreas",
        "medulloblastoma",
        "neuroblastoma",
        "testis-seminoma",
    ],
    "mixed": [
        "breast",
        "lung-non-small-cell",
        "prostate",
        "cervix",
        "ovary",
        "testis-seminoma",
        "bladder-urothelial",
        "gi-adenocarcinoma",
        "lymphoma-non-hodgkin",
        "melanoma",
        "squamous-cell",
    ],
    "lytic": [
        "renal-cell",
        "thyroid",
        "lung-non-small-cell",
        "breast",
        "gi-adenocarcinoma",
        "melanoma",
        "hepatocellular",
        "phaeochromocytoma",
        "neuroblastoma",  # DOMAIN.md 4a (v2): also in the lytic row
    ],
}

# DOMAIN.md section 5, in the documented order.
DOC_DIFFERENTIAL: dict[str, list[str]] = {
    "blastic": [
        "bone-island",
        "sclerotic-haemangioma",
        "degenerative-endplate-change",
        "lymphoma",
        "paget-disease",
        "healing-compression-fracture",
        "vertebral-augmentation",
        "osteoid-osteoma-osteoblastoma",
        "chronic-osteomyelitis",
        "sclerotic-myeloma",
        "bone-infarct",
    ],
    "mixed": [
        "lymphoma",
        "infection-spondylodiscitis",
        "paget-disease",
        "langerhans-cell-histiocytosis",
        "myeloma",
    ],
    "lytic": [
        "myeloma-plasmacytoma",
        "aggressive-haemangioma",
        "lymphoma",
        "infection-spondylodiscitis",
        "giant-cell-tumour",
        "aneurysmal-bone-cyst",
        "langerhans-cell-histiocytosis",
        "brown-tumour",
        "chordoma",
    ],
}
