"""The epidural spinal cord compression (ESCC) scale of Bilsky et al. (DOMAIN.md 6), as data.

Enum values are the codes of `{base}/CodeSystem/escc`. The scale is graded on axial T2-weighted
MRI at the level of greatest compression; fhir-app reads the grade from a finding, per level, and
never assumes one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

ESCC_SOURCE: Final = "Bilsky et al., J Neurosurg Spine 2010;13:324"


class EsccGrade(StrEnum):
    """The six grades of the scale, in the scale's order (0 lowest, 3 highest)."""

    G0 = "0"
    G1A = "1a"
    G1B = "1b"
    G1C = "1c"
    G2 = "2"
    G3 = "3"


class EsccGroup(StrEnum):
    """Low grade (0-1c) or high grade (2-3): the N of NOMS reads the group."""

    LOW = "low-grade"
    HIGH = "high-grade"


GROUP_WORDS: Final = {EsccGroup.LOW: "low grade", EsccGroup.HIGH: "high grade"}


@dataclass(frozen=True, slots=True)
class EsccRow:
    """One row of the scale: the grade, what it means on MRI, and its group."""

    grade: EsccGrade
    meaning: str
    group: EsccGroup


# DOMAIN.md 6, in the scale's order (Bilsky 2010).
ESCC_SCALE: Final[tuple[EsccRow, ...]] = (
    EsccRow(EsccGrade.G0, "bone-only disease", EsccGroup.LOW),
    EsccRow(EsccGrade.G1A, "epidural impingement, no deformation of the thecal sac", EsccGroup.LOW),
    EsccRow(EsccGrade.G1B, "deformation of the thecal sac, no spinal cord abutment", EsccGroup.LOW),
    EsccRow(
        EsccGrade.G1C,
        "deformation of the thecal sac, spinal cord abutment, no compression",
        EsccGroup.LOW,
    ),
    EsccRow(EsccGrade.G2, "spinal cord compression, CSF visible around the cord", EsccGroup.HIGH),
    EsccRow(
        EsccGrade.G3, "spinal cord compression, no CSF visible around the cord", EsccGroup.HIGH
    ),
)

_ROW: Final = {row.grade: row for row in ESCC_SCALE}
_ORDER: Final = {row.grade: index for index, row in enumerate(ESCC_SCALE)}


def escc_row(grade: EsccGrade) -> EsccRow:
    """The row of the scale of one grade."""
    return _ROW[grade]


def escc_rank(grade: EsccGrade) -> int:
    """The position of a grade in the scale's order (0 is grade 0, 5 is grade 3)."""
    return _ORDER[grade]


def highest_grade(grades: Iterable[EsccGrade | None]) -> EsccGrade | None:
    """The highest grade in the scale's order; None when no grade is known (never assumed)."""
    known = [g for g in grades if g is not None]
    return max(known, key=escc_rank) if known else None


def grade_words(grade: EsccGrade) -> str:
    """`ESCC grade 2 (high grade: spinal cord compression, CSF visible around the cord)`."""
    row = escc_row(grade)
    return f"ESCC grade {grade.value} ({GROUP_WORDS[row.group]}: {row.meaning})"
