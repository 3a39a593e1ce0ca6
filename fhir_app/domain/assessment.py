"""The use of the domain: findings of a patient's levels in, SINS and classification out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fhir_app.domain.appearance import AppearanceSettings, assess_appearance
from fhir_app.domain.classification import Classification, classify
from fhir_app.domain.findings import LevelFindings
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins import SinsScore, score_sins


@dataclass(frozen=True, slots=True)
class LevelAssessment:
    """Everything derived for one (patient, level)."""

    level: VertebralLevel
    sins: SinsScore
    classification: Classification
    findings: LevelFindings

    @property
    def preliminary(self) -> bool:
        """Preliminary when the category is open or any input finding is preliminary."""
        return self.sins.category is None or any(f.preliminary for f in self.findings.findings)


def assess_level(
    level: VertebralLevel, findings: LevelFindings, settings: AppearanceSettings | None = None
) -> LevelAssessment:
    """Derive SINS and the classification of one level."""
    appearance = assess_appearance(findings, settings)
    return LevelAssessment(
        level,
        score_sins(level, findings, appearance),
        classify(findings, appearance, settings),
        findings,
    )


def most_unstable_first(assessments: list[LevelAssessment]) -> list[LevelAssessment]:
    """Levels ordered most unstable first: by lowest possible total, then highest, then C1→S5.

    DESIGN: the lowest possible total is what the findings guarantee, so it ranks first.
    """
    return sorted(assessments, key=lambda a: (-a.sins.low, -a.sins.high, a.level.order))


@dataclass(frozen=True, slots=True)
class PatientSummary:
    """A patient's levels, most unstable first, and the one sentence a surgeon reads first."""

    levels: tuple[LevelAssessment, ...]

    @property
    def most_unstable(self) -> LevelAssessment | None:
        """The level that ranks first."""
        return self.levels[0] if self.levels else None

    @property
    def surgical_consultation(self) -> bool:
        """True when any level warrants a surgical consultation."""
        return any(a.sins.surgical_consultation for a in self.levels)

    def conclusion(self) -> str:
        """A short human summary: levels, appearance, SINS and category, most unstable first."""
        if not self.levels:
            return "No vertebral lesion findings."
        parts = []
        for a in self.levels:
            s = a.sins
            score = f"SINS {s.total}" if s.total is not None else f"SINS {s.low}-{s.high}"
            category = s.category_words()
            appearance = a.classification.appearance.determined
            look = appearance.value if appearance else "appearance open"
            parts.append(f"{a.level.label} {look}, {score} ({category})")
        text = "; ".join(parts) + "."
        if self.surgical_consultation:
            text += " Surgical consultation recommended (SINS 7-18)."
        return text


def summarise(
    levels: Mapping[VertebralLevel, LevelFindings], settings: AppearanceSettings | None = None
) -> PatientSummary:
    """Assess every level of a patient and order them most unstable first."""
    assessed = [assess_level(level, f, settings) for level, f in levels.items()]
    return PatientSummary(tuple(most_unstable_first(assessed)))
