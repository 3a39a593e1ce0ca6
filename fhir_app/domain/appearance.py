"""Lesion appearance (osteolytic, osteoblastic, mixed) from imaging evidence, DOMAIN.md section 3.

Sources are tried in precedence order: explicit reading, CT attenuation of an untreated lesion,
MRI signal. The first source that narrows the set of possible appearances decides; the others are
still compared with it, and every disagreement is reported with both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fhir_app.domain.findings import (
    CtAttenuation,
    FindingKind,
    LevelFindings,
    T1Signal,
    T2Signal,
)
from fhir_app.domain.sins_answers import LesionAnswer

ALL_APPEARANCES: frozenset[LesionAnswer] = frozenset(LesionAnswer)
LYTIC = LesionAnswer.LYTIC
MIXED = LesionAnswer.MIXED
BLASTIC = LesionAnswer.BLASTIC


@dataclass(frozen=True, slots=True)
class AppearanceSettings:
    """Thresholds of the CT heuristic and of the bone-island rule, in Hounsfield units.

    DESIGN: the CT thresholds are a heuristic (soft-tissue attenuation vs hyperdense) and every
    output that relies on them says so. Bone island: Ulano et al., AJR 2016;207:362.
    """

    lytic_max_hu: float = 100.0
    blastic_min_hu: float = 300.0
    bone_island_mean_hu: float = 885.0
    bone_island_max_hu: float = 1060.0


class EvidenceSource(StrEnum):
    """The sources of appearance evidence, highest precedence first."""

    READING = "reading"
    CT = "ct"
    MRI = "mri"


# MRI tables (Radiopaedia "Vertebral metastases"): the appearances each signal allows.
MRI_T1_ALLOWS: dict[T1Signal, frozenset[LesionAnswer]] = {
    T1Signal.ISO: frozenset({LYTIC}),
    T1Signal.HYPO: ALL_APPEARANCES,
    # DESIGN: T1 hyperintensity is not in the table (it suggests fat, e.g. a haemangioma);
    # it narrows nothing.
    T1Signal.HYPER: ALL_APPEARANCES,
}
MRI_T2_ALLOWS: dict[T2Signal, frozenset[LesionAnswer]] = {
    T2Signal.ISO: frozenset({LYTIC}),
    T2Signal.HYPER: frozenset({LYTIC, MIXED}),
    T2Signal.HYPO: frozenset({BLASTIC, MIXED}),
    T2Signal.HETEROGENEOUS: frozenset({MIXED}),
}

_ORDER = {LYTIC: 0, MIXED: 1, BLASTIC: 2}


def ordered(appearances: frozenset[LesionAnswer]) -> list[LesionAnswer]:
    """Appearances in a stable reading order: lytic, mixed, blastic."""
    return sorted(appearances, key=_ORDER.__getitem__)


def words(appearances: frozenset[LesionAnswer]) -> str:
    """`lytic or mixed`, for sentences."""
    return " or ".join(a.value for a in ordered(appearances))


@dataclass(frozen=True, slots=True)
class SourceEvidence:
    """What one source says: the appearances it allows and why."""

    source: EvidenceSource
    allows: frozenset[LesionAnswer]
    reason: str
    heuristic: bool = False

    @property
    def narrows(self) -> bool:
        """True when this source rules out at least one appearance."""
        return self.allows != ALL_APPEARANCES


@dataclass(frozen=True, slots=True)
class Discordance:
    """Two sources that allow no common appearance.

    `deciding` is the side with precedence (it decides unless a higher source already did),
    `other` the side it overrules.
    """

    deciding: SourceEvidence
    other: SourceEvidence

    def sentence(self) -> str:
        """Both sides in words."""
        return (
            f"Discordant evidence: {self.deciding.source.value} ({self.deciding.reason}) "
            f"indicates {words(self.deciding.allows)}, but {self.other.source.value} "
            f"({self.other.reason}) indicates {words(self.other.allows)}; "
            f"{self.deciding.source.value} takes precedence."
        )


@dataclass(frozen=True, slots=True)
class AppearanceResult:
    """The appearances the evidence still allows, the deciding source and every disagreement."""

    allows: frozenset[LesionAnswer]
    decided_by: SourceEvidence | None
    evidence: tuple[SourceEvidence, ...]
    discordances: tuple[Discordance, ...]
    notes: tuple[str, ...]

    @property
    def determined(self) -> LesionAnswer | None:
        """The appearance when exactly one remains."""
        if len(self.allows) == 1:
            return next(iter(self.allows))
        return None

    @property
    def mri_only(self) -> bool:
        """True when MRI signal alone decided the appearance (no reading, no usable CT)."""
        return self.decided_by is not None and self.decided_by.source is EvidenceSource.MRI


def _reading(findings: LevelFindings) -> SourceEvidence | None:
    finding = findings.latest(FindingKind.APPEARANCE)
    if finding is None:
        return None
    assert isinstance(finding.value, LesionAnswer)
    return SourceEvidence(
        EvidenceSource.READING,
        frozenset({finding.value}),
        f"reported as {finding.value.value}",
    )


def ct_attenuation(findings: LevelFindings) -> CtAttenuation | None:
    """The latest mean and the latest maximum CT attenuation of the level, in one value.

    A feed may send the mean and the maximum as two Observations (DOMAIN.md 3: the method says
    which); each statistic is taken from the latest finding that carries it.
    """
    measured = findings.of_kind(FindingKind.CT_ATTENUATION)
    if not measured:
        return None
    mean: float | None = None
    peak: float | None = None
    for finding in measured:  # oldest first, so the latest of each statistic stays
        assert isinstance(finding.value, CtAttenuation)
        if finding.value.mean_hu is not None:
            mean = finding.value.mean_hu
        if finding.value.max_hu is not None:
            peak = finding.value.max_hu
    return CtAttenuation(mean, peak)


def _ct(
    findings: LevelFindings, treated: bool, settings: AppearanceSettings
) -> SourceEvidence | None:
    attenuation = ct_attenuation(findings)
    if attenuation is None:
        return None
    mean = attenuation.mean_hu
    if treated:
        return SourceEvidence(
            EvidenceSource.CT,
            ALL_APPEARANCES,
            "CT attenuation not used: treated lesion (new bone may form after treatment)",
        )
    if mean is None:
        # Only a maximum: the soft-tissue / hyperdense heuristic is defined on the mean.
        return SourceEvidence(
            EvidenceSource.CT,
            ALL_APPEARANCES,
            "no mean CT attenuation (the appearance heuristic reads the mean, not the maximum)",
        )
    if mean <= settings.lytic_max_hu:
        allows, band = (
            frozenset({LYTIC}),
            f"<= {settings.lytic_max_hu:g} HU, soft-tissue attenuation",
        )
    elif mean >= settings.blastic_min_hu:
        allows = frozenset({BLASTIC})
        band = f">= {settings.blastic_min_hu:g} HU, hyperdense"
    else:
        allows = ALL_APPEARANCES
        band = f"between {settings.lytic_max_hu:g} and {settings.blastic_min_hu:g} HU"
    return SourceEvidence(
        EvidenceSource.CT,
        allows,
        f"CT heuristic: mean attenuation {mean:g} HU {band}",
        heuristic=True,
    )


def _mri(findings: LevelFindings) -> SourceEvidence | None:
    t1 = findings.latest(FindingKind.MRI_T1)
    t2 = findings.latest(FindingKind.MRI_T2)
    if t1 is None and t2 is None:
        return None
    allows = ALL_APPEARANCES
    parts: list[str] = []
    if t1 is not None:
        assert isinstance(t1.value, T1Signal)
        allows = allows & MRI_T1_ALLOWS[t1.value]
        parts.append(f"T1 {t1.value.value}intense")
    if t2 is not None:
        assert isinstance(t2.value, T2Signal)
        t2_allows = MRI_T2_ALLOWS[t2.value]
        label = (
            "heterogeneous" if t2.value is T2Signal.HETEROGENEOUS else f"{t2.value.value}intense"
        )
        parts.append(f"T2 {label}")
        if not allows & t2_allows:
            return SourceEvidence(
                EvidenceSource.MRI,
                ALL_APPEARANCES,
                f"MRI {' and '.join(parts)}: T1 and T2 allow no common appearance, MRI left open",
            )
        allows = allows & t2_allows
    return SourceEvidence(EvidenceSource.MRI, allows, f"MRI {', '.join(parts)}")


# DOMAIN.md 3 (v2): SINS reads the bone lesion on CT, and the component has the lowest
# interobserver agreement of the six (kappa 0.244, Fourney et al. 2011).
MRI_ONLY_REASON = (
    "SINS reads the bone lesion on CT, and this component has the lowest interobserver agreement "
    "of the six (kappa 0.244, Fourney et al. 2011)"
)


def mri_only_sentence(deciding: SourceEvidence) -> str:
    """The label of an appearance inferred from MRI signal alone."""
    return (
        f"Appearance inferred from MRI signal alone ({deciding.reason}: {words(deciding.allows)}), "
        f"not read on CT: {MRI_ONLY_REASON}."
    )


def is_treated(findings: LevelFindings) -> bool:
    """True when the latest treated-lesion finding says radiotherapy or chemotherapy treated it."""
    finding = findings.latest(FindingKind.TREATED)
    return finding is not None and finding.value is True


def assess_appearance(
    findings: LevelFindings, settings: AppearanceSettings | None = None
) -> AppearanceResult:
    """Apply the precedence of DOMAIN.md section 3 to the findings of one level."""
    settings = settings or AppearanceSettings()
    treated = is_treated(findings)
    evidence = tuple(
        e
        for e in (_reading(findings), _ct(findings, treated, settings), _mri(findings))
        if e is not None
    )
    narrowing = [e for e in evidence if e.narrows]
    deciding = narrowing[0] if narrowing else None
    notes: list[str] = []
    # Every disjoint pair is reported, also two overruled sources that disagree with each other
    # (e.g. CT and MRI under a reading): a disagreement is never silently dropped.
    discordances = [
        Discordance(higher, lower)
        for index, higher in enumerate(narrowing)
        for lower in narrowing[index + 1 :]
        if not higher.allows & lower.allows
    ]
    if deciding is not None:
        allows = deciding.allows
        if deciding.heuristic:
            notes.append(f"Appearance from a heuristic: {deciding.reason}.")
        if deciding.source is EvidenceSource.MRI:
            notes.append(mri_only_sentence(deciding))
    else:
        allows = ALL_APPEARANCES
    enhancement = findings.latest(FindingKind.CONTRAST_ENHANCEMENT)
    if enhancement is not None and enhancement.value is True and LYTIC in allows:
        notes.append("Contrast enhancement present, which supports an osteolytic lesion.")
    notes.extend(e.reason + "." for e in evidence if not e.narrows)
    return AppearanceResult(allows, deciding, evidence, tuple(discordances), tuple(notes))
