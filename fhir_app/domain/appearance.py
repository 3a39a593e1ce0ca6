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
    Finding,
    FindingKind,
    LevelFindings,
    T1Signal,
    T2Signal,
    number,
    same_time_sentence,
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
    # CONTRACT 3: the sentence when findings of this source at the same latest time disagree; the
    # source then allows every appearance they allow.
    tie: str | None = None

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
    # Every disagreement of findings at the same latest time (a source's, or treated-lesion).
    ties: tuple[str, ...] = ()

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
    tied = findings.latest(FindingKind.APPEARANCE)
    if not tied:
        return None
    values = {f.value for f in tied}
    assert values <= ALL_APPEARANCES
    allows = frozenset(a for a in LesionAnswer if a in values)
    readings = [a.value for a in ordered(allows)]
    tie = (
        same_time_sentence("lesion appearance readings", readings, words(allows))
        if len(readings) > 1
        else None
    )
    return SourceEvidence(
        EvidenceSource.READING, allows, f"reported as {' and as '.join(readings)}", tie=tie
    )


@dataclass(frozen=True, slots=True)
class CtMeasured:
    """The latest mean and maximum CT attenuation of a level in HU, ascending.

    One value each as a rule; several when findings at the same latest time disagree.
    """

    means: tuple[float, ...]
    maxima: tuple[float, ...]


def _latest_values(measured: list[Finding], values: list[float | None]) -> tuple[float, ...]:
    """The distinct values of the latest findings that carry one (all of them on a time tie)."""
    carried = [(f, v) for f, v in zip(measured, values, strict=True) if v is not None]
    if not carried:
        return ()
    last = carried[-1][0]
    return tuple(
        sorted(
            {
                v
                for f, v in carried
                if (f.patient_wide, f.observed_at) == (last.patient_wide, last.observed_at)
            }
        )
    )


def ct_attenuation(findings: LevelFindings) -> CtMeasured | None:
    """The latest mean and the latest maximum CT attenuation of the level.

    A feed may send the mean and the maximum as two Observations (DOMAIN.md 3: the method says
    which); each statistic is taken from the latest findings that carry it.
    """
    measured = findings.of_kind(FindingKind.CT_ATTENUATION)
    if not measured:
        return None
    values = [f.value for f in measured]
    assert all(isinstance(v, CtAttenuation) for v in values)
    return CtMeasured(
        _latest_values(measured, [v.mean_hu for v in values]),  # type: ignore[union-attr]
        _latest_values(measured, [v.max_hu for v in values]),  # type: ignore[union-attr]
    )


def _ct(
    findings: LevelFindings, treated: bool, settings: AppearanceSettings
) -> SourceEvidence | None:
    attenuation = ct_attenuation(findings)
    if attenuation is None:
        return None
    if treated:
        return SourceEvidence(
            EvidenceSource.CT,
            ALL_APPEARANCES,
            "CT attenuation not used: treated lesion (new bone may form after treatment)",
        )
    if not attenuation.means:
        # Only a maximum: the soft-tissue / hyperdense heuristic is defined on the mean.
        return SourceEvidence(
            EvidenceSource.CT,
            ALL_APPEARANCES,
            "no mean CT attenuation (the appearance heuristic reads the mean, not the maximum)",
        )
    allows: frozenset[LesionAnswer] = frozenset()
    bands = []
    for mean in attenuation.means:
        if mean <= settings.lytic_max_hu:
            allows |= {LYTIC}
            band = f"<= {number(settings.lytic_max_hu)} HU, soft-tissue attenuation"
        elif mean >= settings.blastic_min_hu:
            allows |= {BLASTIC}
            band = f">= {number(settings.blastic_min_hu)} HU, hyperdense"
        else:
            allows = ALL_APPEARANCES
            band = (
                f"between {number(settings.lytic_max_hu)} and {number(settings.blastic_min_hu)} HU"
            )
        bands.append(f"{number(mean)} HU {band}")
    stated = [
        *(f"mean {number(v)} HU" for v in attenuation.means if len(attenuation.means) > 1),
        *(f"maximum {number(v)} HU" for v in attenuation.maxima if len(attenuation.maxima) > 1),
    ]
    tie = (
        same_time_sentence("CT attenuation", stated, words(allows) + " (by the CT heuristic)")
        if stated
        else None
    )
    return SourceEvidence(
        EvidenceSource.CT,
        allows,
        f"CT heuristic: mean attenuation {' and '.join(bands)}",
        heuristic=True,
        tie=tie,
    )


def _signal(tied: tuple[Finding, ...], order: list[T1Signal] | list[T2Signal]) -> list[str]:
    values = {f.value for f in tied}
    return [s.value for s in order if s in values]


def _t2_words(signal: str) -> str:
    return "heterogeneous" if signal == T2Signal.HETEROGENEOUS.value else f"{signal}intense"


def _mri(findings: LevelFindings) -> SourceEvidence | None:
    t1 = _signal(findings.latest(FindingKind.MRI_T1), list(T1Signal))
    t2 = _signal(findings.latest(FindingKind.MRI_T2), list(T2Signal))
    if not t1 and not t2:
        return None
    allows = ALL_APPEARANCES
    parts: list[str] = []
    stated: list[str] = []
    if t1:
        # Signals at the same time that disagree: each is possible, so their appearances join.
        allows = allows & frozenset().union(*(MRI_T1_ALLOWS[T1Signal(s)] for s in t1))
        parts.append(f"T1 {' and '.join(f'{s}intense' for s in t1)}")
        if len(t1) > 1:
            stated.append(parts[-1])
    if t2:
        t2_allows: frozenset[LesionAnswer] = frozenset().union(
            *(MRI_T2_ALLOWS[T2Signal(s)] for s in t2)
        )
        parts.append(f"T2 {' and '.join(_t2_words(s) for s in t2)}")
        if len(t2) > 1:
            stated.append(parts[-1])
        if not allows & t2_allows:
            return SourceEvidence(
                EvidenceSource.MRI,
                ALL_APPEARANCES,
                f"MRI {' and '.join(parts)}: T1 and T2 allow no common appearance, MRI left open",
            )
        allows = allows & t2_allows
    tie = same_time_sentence("MRI signal", stated, words(allows)) if stated else None
    return SourceEvidence(EvidenceSource.MRI, allows, f"MRI {', '.join(parts)}", tie=tie)


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
    """True when the latest treated-lesion finding says radiotherapy or chemotherapy treated it.

    Findings at the same latest time that disagree count as treated: the CT heuristic and the
    bone-island rule are then not relied on (the cautious reading), and `treated_tie` says so.
    """
    return any(f.value is True for f in findings.latest(FindingKind.TREATED))


def treated_tie(findings: LevelFindings) -> str | None:
    """The sentence when treated-lesion findings at the same latest time disagree."""
    if len({f.value for f in findings.latest(FindingKind.TREATED)}) < 2:
        return None
    return (
        "Discordant treated-lesion findings: findings at the same time state treated and not "
        "treated; none is later, so the lesion is read as treated (its CT density is not relied "
        "on)."
    )


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
    # Support only when every latest enhancement finding reports it (it narrows nothing anyway).
    if enhancement and all(f.value is True for f in enhancement) and LYTIC in allows:
        notes.append("Contrast enhancement present, which supports an osteolytic lesion.")
    notes.extend(e.reason + "." for e in evidence if not e.narrows)
    ties = [e.tie for e in evidence if e.tie is not None]
    treated_words = treated_tie(findings)
    if treated_words is not None:
        ties.append(treated_words)
    return AppearanceResult(
        allows, deciding, evidence, tuple(discordances), tuple(notes), tuple(ties)
    )
