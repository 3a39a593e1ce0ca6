"""The SINS answer table (Fisher et al., Spine 2010;35:E1221): every answer and its points.

Enum values are the codes of `{base}/CodeSystem/sins`.
"""

from __future__ import annotations

from enum import StrEnum

from fhir_app.domain.levels import SinsLocation


class SinsComponent(StrEnum):
    """The six SINS components, in the order of the score sheet."""

    LOCATION = "location"
    PAIN = "pain"
    BONE_LESION = "bone-lesion"
    ALIGNMENT = "alignment"
    COLLAPSE = "collapse"
    POSTEROLATERAL = "posterolateral"


class PainAnswer(StrEnum):
    """Pain: mechanical = relief when recumbent and/or pain on movement or loading."""

    MECHANICAL = "mechanical"
    OCCASIONAL_NON_MECHANICAL = "occasional-non-mechanical"
    PAIN_FREE = "pain-free"


class LesionAnswer(StrEnum):
    """Bone lesion appearance, which is also the metastasis classification."""

    LYTIC = "lytic"
    MIXED = "mixed"
    BLASTIC = "blastic"


class AlignmentAnswer(StrEnum):
    """Radiographic spinal alignment."""

    SUBLUXATION_TRANSLATION = "subluxation-translation"
    DE_NOVO_DEFORMITY = "de-novo-deformity"
    NORMAL = "normal-alignment"


class CollapseAnswer(StrEnum):
    """Vertebral body collapse."""

    GT_50 = "collapse-gt-50"
    LT_50 = "collapse-lt-50"
    NONE_GT_50_INVOLVED = "no-collapse-gt-50-involved"
    NONE = "no-collapse"


class PosterolateralAnswer(StrEnum):
    """Posterolateral involvement of the spinal elements."""

    BILATERAL = "bilateral"
    UNILATERAL = "unilateral"
    NONE = "no-posterolateral"


SinsAnswer = (
    SinsLocation
    | PainAnswer
    | LesionAnswer
    | AlignmentAnswer
    | CollapseAnswer
    | PosterolateralAnswer
)

# The rule table: component -> every answer with its points, highest first.
SINS_POINTS: dict[SinsComponent, dict[SinsAnswer, int]] = {
    SinsComponent.LOCATION: {
        SinsLocation.JUNCTIONAL: 3,
        SinsLocation.MOBILE: 2,
        SinsLocation.SEMI_RIGID: 1,
        SinsLocation.RIGID: 0,
    },
    SinsComponent.PAIN: {
        PainAnswer.MECHANICAL: 3,
        PainAnswer.OCCASIONAL_NON_MECHANICAL: 1,
        PainAnswer.PAIN_FREE: 0,
    },
    SinsComponent.BONE_LESION: {
        LesionAnswer.LYTIC: 2,
        LesionAnswer.MIXED: 1,
        LesionAnswer.BLASTIC: 0,
    },
    SinsComponent.ALIGNMENT: {
        AlignmentAnswer.SUBLUXATION_TRANSLATION: 4,
        AlignmentAnswer.DE_NOVO_DEFORMITY: 2,
        AlignmentAnswer.NORMAL: 0,
    },
    SinsComponent.COLLAPSE: {
        CollapseAnswer.GT_50: 3,
        CollapseAnswer.LT_50: 2,
        CollapseAnswer.NONE_GT_50_INVOLVED: 1,
        CollapseAnswer.NONE: 0,
    },
    SinsComponent.POSTEROLATERAL: {
        PosterolateralAnswer.BILATERAL: 3,
        PosterolateralAnswer.UNILATERAL: 1,
        PosterolateralAnswer.NONE: 0,
    },
}

# How each answer reads in a rationale sentence.
ANSWER_WORDS: dict[SinsAnswer, str] = {
    SinsLocation.JUNCTIONAL: "junctional (O-C2, C7-T2, T11-L1, L5-S1)",
    SinsLocation.MOBILE: "mobile spine (C3-C6, L2-L4)",
    SinsLocation.SEMI_RIGID: "semi-rigid (T3-T10)",
    SinsLocation.RIGID: "rigid (S2-S5)",
    PainAnswer.MECHANICAL: "mechanical pain",
    PainAnswer.OCCASIONAL_NON_MECHANICAL: "occasional pain, not mechanical",
    PainAnswer.PAIN_FREE: "pain-free lesion",
    LesionAnswer.LYTIC: "lytic",
    LesionAnswer.MIXED: "mixed lytic/blastic",
    LesionAnswer.BLASTIC: "blastic",
    AlignmentAnswer.SUBLUXATION_TRANSLATION: "subluxation/translation present",
    AlignmentAnswer.DE_NOVO_DEFORMITY: "de novo deformity (kyphosis/scoliosis)",
    AlignmentAnswer.NORMAL: "normal alignment",
    CollapseAnswer.GT_50: "collapse > 50%",
    CollapseAnswer.LT_50: "collapse < 50%",
    CollapseAnswer.NONE_GT_50_INVOLVED: "no collapse with > 50% of the body involved",
    CollapseAnswer.NONE: "none of the above",
    PosterolateralAnswer.BILATERAL: "bilateral",
    PosterolateralAnswer.UNILATERAL: "unilateral",
    PosterolateralAnswer.NONE: "none of the above",
}

COMPONENT_WORDS: dict[SinsComponent, str] = {
    SinsComponent.LOCATION: "Location",
    SinsComponent.PAIN: "Pain",
    SinsComponent.BONE_LESION: "Bone lesion",
    SinsComponent.ALIGNMENT: "Radiographic spinal alignment",
    SinsComponent.COLLAPSE: "Vertebral body collapse",
    SinsComponent.POSTEROLATERAL: "Posterolateral involvement of spinal elements",
}


class SinsCategory(StrEnum):
    """SINS categories; values are `sins` codes."""

    STABLE = "stable"
    POTENTIALLY_UNSTABLE = "potentially-unstable"
    UNSTABLE = "unstable"


CATEGORY_WORDS: dict[SinsCategory, str] = {
    SinsCategory.STABLE: "stable",
    SinsCategory.POTENTIALLY_UNSTABLE: "potentially unstable",
    SinsCategory.UNSTABLE: "unstable",
}

# The category table: (lowest total, highest total, category).
SINS_CATEGORY_BANDS: tuple[tuple[int, int, SinsCategory], ...] = (
    (0, 6, SinsCategory.STABLE),
    (7, 12, SinsCategory.POTENTIALLY_UNSTABLE),
    (13, 18, SinsCategory.UNSTABLE),
)

# SINS 7-18 warrants a surgical consultation (Fourney et al., J Clin Oncol 2011).
SURGICAL_CONSULTATION_MIN_TOTAL = 7


def points(component: SinsComponent, answer: SinsAnswer) -> int:
    """The points an answer scores for its component."""
    return SINS_POINTS[component][answer]


def category_of(total: int) -> SinsCategory:
    """The SINS category of a total score 0-18."""
    for low, high, category in SINS_CATEGORY_BANDS:
        if low <= total <= high:
            return category
    raise ValueError(f"SINS total {total} is outside 0-18")
