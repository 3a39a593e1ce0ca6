"""The use of the domain: findings of a patient's levels in, SINS and classification out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from fhir_app.domain.appearance import AppearanceSettings, assess_appearance, mri_only_sentence
from fhir_app.domain.classification import TREATED_NOTE, Classification, classify
from fhir_app.domain.escc import GROUP_WORDS, EsccGrade, escc_row
from fhir_app.domain.findings import LevelFindings
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.noms import NomsInputs, escc_discordance, level_grade, noms_inputs
from fhir_app.domain.sins import SinsScore, score_sins
from fhir_app.domain.sins_answers import (
    COMPONENT_WORDS,
    SURGICAL_CONSULTATION_MIN_TOTAL,
    SinsComponent,
)


class CaveatKind(StrEnum):
    """The caveats of DOMAIN.md 3 (v2) that can change what a clinician does."""

    DISCORDANCE = "discordance"
    BONE_ISLAND = "bone-island"
    TREATED = "treated-lesion"
    MRI_ONLY = "mri-only-appearance"
    PATIENT_LEVEL_PAIN = "patient-level-pain"
    MISSING = "missing-findings"


@dataclass(frozen=True, slots=True)
class Caveat:
    """One caveat of a level: its kind, the full sentence, and the short words of a summary."""

    kind: CaveatKind
    text: str
    short: str


def consultation_advice(levels: list[VertebralLevel] | tuple[VertebralLevel, ...]) -> str:
    """CONTRACT 4c (v2): `Surgical consultation recommended: SINS 7 or more at T5, L1`."""
    names = ", ".join(level.label for level in levels)
    return (
        f"Surgical consultation recommended: SINS {SURGICAL_CONSULTATION_MIN_TOTAL} or more "
        f"at {names}"
    )


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

    @property
    def escc(self) -> EsccGrade | None:
        """The level's ESCC grade (DOMAIN.md 6); None when no finding states one."""
        return level_grade(self.findings)

    @property
    def escc_discordance(self) -> str | None:
        """The sentence when the level's latest ESCC grades disagree (the highest is kept)."""
        return escc_discordance(self.findings)

    def escc_words(self) -> str | None:
        """`ESCC grade 2 (high grade)`, or None when the grade is unknown."""
        grade = self.escc
        if grade is None:
            return None
        return f"ESCC grade {grade.value} ({GROUP_WORDS[escc_row(grade).group]})"

    def caveats(self) -> tuple[Caveat, ...]:
        """Every caveat of DOMAIN.md 3 (v2) that applies to this level, in a fixed order."""
        result: list[Caveat] = []
        for component in self.sins.components:
            if component.discordance is not None:
                name = COMPONENT_WORDS[component.component].lower()
                result.append(
                    Caveat(CaveatKind.DISCORDANCE, component.discordance, f"discordant {name}")
                )
        appearance = self.classification.appearance
        for discordance in appearance.discordances:
            result.append(
                Caveat(
                    CaveatKind.DISCORDANCE,
                    discordance.sentence(),
                    f"discordant appearance evidence ({discordance.deciding.source.value} vs "
                    f"{discordance.other.source.value})",
                )
            )
        # Same-time disagreements of appearance evidence that no component carries already.
        bone_lesion = self.sins.component(SinsComponent.BONE_LESION).discordance or ""
        for tie in appearance.ties:
            if tie not in bone_lesion:
                result.append(
                    Caveat(CaveatKind.DISCORDANCE, tie, "discordant findings at the same time")
                )
        escc = self.escc_discordance
        if escc is not None:
            result.append(Caveat(CaveatKind.DISCORDANCE, escc, "discordant ESCC grade"))
        if self.classification.bone_island is not None:
            result.append(
                Caveat(
                    CaveatKind.BONE_ISLAND, self.classification.bone_island, "bone island favoured"
                )
            )
        if self.classification.treated:
            result.append(Caveat(CaveatKind.TREATED, TREATED_NOTE, "treated lesion"))
        if appearance.mri_only:
            assert appearance.decided_by is not None
            result.append(
                Caveat(
                    CaveatKind.MRI_ONLY,
                    mri_only_sentence(appearance.decided_by),
                    "appearance inferred from MRI signal alone",
                )
            )
        pain = self.sins.patient_level_pain
        if pain is not None:
            result.append(
                Caveat(
                    CaveatKind.PATIENT_LEVEL_PAIN,
                    f"Patient-level pain report used for {self.level.label}: {pain.explanation}",
                    "pain reported for the patient, not for this level",
                )
            )
        missing = self.sins.missing_sentence()
        if missing is not None:
            names = ", ".join(
                ("discordant " if c.discordance is not None else "")
                + COMPONENT_WORDS[c.component].lower()
                for c in self.sins.components
                if c.open
            )
            result.append(Caveat(CaveatKind.MISSING, missing, f"open at 6/7: {names}"))
        return tuple(result)

    def summary_line(self) -> str:
        """The level in the conclusion: appearance, SINS, consultation, primary, caveats."""
        s = self.sins
        score = f"SINS {s.total}" if s.total is not None else f"SINS {s.low}-{s.high}"
        appearance = self.classification.appearance.determined
        look = appearance.value if appearance else "appearance open"
        text = f"{self.level.label} {look}, {score} ({s.category_words()})"
        if s.surgical_consultation:
            text += ", surgical consultation recommended"
        escc = self.escc_words()
        if escc is not None:
            text += f", {escc}"
        context = self.classification.primary_context
        if context is not None:
            text += f"; {context[0].lower()}{context[1:].rstrip('.')}"
        caveats = self.caveats()
        if caveats:
            text += "; caveats: " + "; ".join(c.short for c in caveats)
        return text + "."


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

    DESIGN (noms.MOST_UNSTABLE_RULE, stated in the output): the levels that certainly warrant a
    surgical consultation come first, never behind an open level; a level that could reach a
    higher total is named beside the first one by NOMS M (PatientSummary.noms).
    """
    return sorted(assessments, key=lambda a: (-a.sins.low, -a.sins.high, a.level.order))


@dataclass(frozen=True, slots=True)
class PatientSummary:
    """A patient's levels, most unstable first, and the one sentence a surgeon reads first.

    `myelopathy` is what the patient's latest `myelopathy` finding says; None when none does.
    """

    levels: tuple[LevelAssessment, ...]
    myelopathy: bool | None = None

    @property
    def most_unstable(self) -> LevelAssessment | None:
        """The level that ranks first."""
        return self.levels[0] if self.levels else None

    @property
    def could_be_higher(self) -> LevelAssessment | None:
        """The level whose highest possible total is above the first level's (the highest such,
        the first in rank on a tie); None when no level could be higher than the first."""
        if not self.levels:
            return None
        top = max(self.levels, key=lambda a: a.sins.high)
        return top if top.sins.high > self.levels[0].sins.high else None

    @property
    def surgical_consultation(self) -> bool:
        """True when any level warrants a surgical consultation."""
        return any(a.sins.surgical_consultation for a in self.levels)

    @property
    def consultation_levels(self) -> tuple[VertebralLevel, ...]:
        """The levels whose lowest possible total is 7 or more, most unstable first."""
        return tuple(a.level for a in self.levels if a.sins.surgical_consultation)

    @property
    def highest_escc(self) -> EsccGrade | None:
        """The highest ESCC grade over the levels, in the scale's order."""
        return self.noms.highest_escc

    @property
    def noms(self) -> NomsInputs:
        """The NOMS decision inputs of the patient (DOMAIN.md 7)."""
        top = self.most_unstable
        # Every level carries the patient's primary; the first one says it for all.
        primary = top.findings.primary_tumor if top is not None else None
        higher = self.could_be_higher
        return noms_inputs(
            ((a.level, a.escc) for a in self.levels),
            self.myelopathy,
            primary,
            (top.level, top.sins) if top is not None else None,
            (higher.level, higher.sins) if higher is not None else None,
        )

    def conclusion(self) -> str:
        """A short human summary, most unstable level first (CONTRACT 4d, v2).

        Per level: appearance, SINS and category, the consultation, the ESCC grade when known, the
        known primary in context and every caveat; then the levels that warrant a surgical
        consultation, then the NOMS inputs in one sentence.
        """
        if not self.levels:
            return "No vertebral lesion findings."
        text = " ".join(a.summary_line() for a in self.levels)
        if self.consultation_levels:
            text += f" {consultation_advice(self.consultation_levels)}."
        return f"{text} {self.noms.sentence()}"


def summarise(
    levels: Mapping[VertebralLevel, LevelFindings],
    settings: AppearanceSettings | None = None,
    myelopathy: bool | None = None,
) -> PatientSummary:
    """Assess every level of a patient and order them most unstable first."""
    assessed = [assess_level(level, f, settings) for level, f in levels.items()]
    return PatientSummary(tuple(most_unstable_first(assessed)), myelopathy)
