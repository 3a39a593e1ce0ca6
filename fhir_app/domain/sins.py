"""The Spinal Instability Neoplastic Score of one lesion level, honest about missing findings.

Each component resolves to the set of answers the findings still allow (every answer when nothing
is known). The total is then the set of totals of every completion, reported as a range, and the
category is determined only when every completion falls in one category. Unknown is never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from fhir_app.domain.appearance import AppearanceResult, words
from fhir_app.domain.findings import (
    Finding,
    FindingKind,
    LevelFindings,
    PosteriorElementInvolvement,
    Side,
)
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins_answers import (
    ANSWER_WORDS,
    CATEGORY_WORDS,
    COMPONENT_WORDS,
    SINS_CATEGORY_BANDS,
    SINS_POINTS,
    SURGICAL_CONSULTATION_MIN_TOTAL,
    CollapseAnswer,
    PainAnswer,
    PosterolateralAnswer,
    SinsAnswer,
    SinsCategory,
    SinsComponent,
    category_of,
)

# DESIGN (DOMAIN.md section 2): a collapse above this percentage of height loss is "> 50%", and
# involvement above it is "> 50% of the body involved".
HALF = 50.0


@dataclass(frozen=True, slots=True)
class ComponentResult:
    """One SINS component: the answers still allowed and the sentence that explains them."""

    component: SinsComponent
    allows: tuple[SinsAnswer, ...]  # highest points first
    explanation: str
    known: bool  # False when no finding at all speaks to the component
    sources: tuple[str, ...] = ()
    # DOMAIN.md 2 (v2): the sentence when a stated answer and a measurement disagree; the
    # component then allows both.
    discordance: str | None = None
    # DOMAIN.md 2 (v2): True when a pain report for the patient (without a level) was used.
    patient_level: bool = False

    @property
    def answer(self) -> SinsAnswer | None:
        """The answer when the findings determine it."""
        return self.allows[0] if len(self.allows) == 1 else None

    @property
    def points(self) -> tuple[int, ...]:
        """The points of every allowed answer, highest first."""
        return tuple(SINS_POINTS[self.component][a] for a in self.allows)

    @property
    def low(self) -> int:
        """The fewest points the component can still score."""
        return min(self.points)

    @property
    def high(self) -> int:
        """The most points the component can still score."""
        return max(self.points)

    @property
    def open(self) -> bool:
        """True when more than one answer remains."""
        return len(self.allows) > 1

    def sentence(self) -> str:
        """`Pain: mechanical pain (3)` or `Pain: unknown, 0-3 (…)`."""
        name = COMPONENT_WORDS[self.component]
        if self.answer is not None:
            return f"{name}: {ANSWER_WORDS[self.answer]} ({self.high}). {self.explanation}".strip()
        candidates = " / ".join(
            f"{ANSWER_WORDS[a]} ({p})" for a, p in zip(self.allows, self.points, strict=True)
        )
        return (
            f"{name}: open, {self.low}-{self.high} points; one of {candidates}. {self.explanation}"
        )


def _component(
    component: SinsComponent,
    allows: set[SinsAnswer] | frozenset[SinsAnswer],
    explanation: str,
    known: bool = True,
    sources: tuple[str, ...] = (),
    *,
    discordance: str | None = None,
    patient_level: bool = False,
) -> ComponentResult:
    table = SINS_POINTS[component]
    ordered = tuple(a for a in table if a in allows)
    return ComponentResult(
        component, ordered, explanation, known, sources, discordance, patient_level
    )


def _unknown(component: SinsComponent) -> ComponentResult:
    return _component(
        component, frozenset(SINS_POINTS[component]), "No finding; every answer remains.", False
    )


def _stated(component: SinsComponent, finding: Finding) -> ComponentResult:
    assert finding.value in SINS_POINTS[component]
    scope = " (stated for the patient, not for this level)" if finding.patient_wide else ""
    return _component(
        component,
        frozenset({finding.value}),  # type: ignore[arg-type]
        "Stated in the findings" + scope + ".",
        sources=(finding.source,),
        patient_level=finding.patient_wide,
    )


# DOMAIN.md 2 (v2): pain belongs to the lesion scored. A pain report for a patient with several
# lesion levels narrows each level only as far as logic allows.
PATIENT_PAIN_ALLOWS: dict[PainAnswer, frozenset[PainAnswer]] = {
    PainAnswer.PAIN_FREE: frozenset({PainAnswer.PAIN_FREE}),
    PainAnswer.OCCASIONAL_NON_MECHANICAL: frozenset(
        {PainAnswer.PAIN_FREE, PainAnswer.OCCASIONAL_NON_MECHANICAL}
    ),
    PainAnswer.MECHANICAL: frozenset(PainAnswer),
}


def _pain(findings: LevelFindings) -> ComponentResult:
    finding = findings.latest(FindingKind.PAIN)
    if finding is None:
        return _unknown(SinsComponent.PAIN)
    if not finding.patient_wide:
        return _stated(SinsComponent.PAIN, finding)
    assert isinstance(finding.value, PainAnswer)
    if findings.lesion_levels <= 1:
        return _component(
            SinsComponent.PAIN,
            frozenset({finding.value}),
            f"Pain reported for the patient ({finding.value.value}), who has one lesion level: "
            "taken as the pain of this lesion.",
            sources=(finding.source,),
            patient_level=True,
        )
    allows = PATIENT_PAIN_ALLOWS[finding.value]
    left = (
        "which lesion hurts is unknown, so every answer remains"
        if allows == frozenset(PainAnswer)
        else f"it leaves {' or '.join(a.value for a in PainAnswer if a in allows)} here"
    )
    return _component(
        SinsComponent.PAIN,
        allows,
        # No count in the words: a level added or withdrawn elsewhere changes nothing here.
        f"Pain reported for the patient ({finding.value.value}), not for this level; the "
        f"patient has several lesion levels and {left}.",
        sources=(finding.source,),
        patient_level=True,
    )


def _location(level: VertebralLevel) -> ComponentResult:
    return _component(
        SinsComponent.LOCATION,
        frozenset({level.location}),
        f"From the level {level.label}.",
    )


def _simple(
    findings: LevelFindings, kind: FindingKind, component: SinsComponent
) -> ComponentResult:
    finding = findings.latest(kind)
    return _unknown(component) if finding is None else _stated(component, finding)


def _bone_lesion(appearance: AppearanceResult) -> ComponentResult:
    if appearance.decided_by is None:
        return (
            _unknown(SinsComponent.BONE_LESION)
            if not appearance.evidence
            else _component(
                SinsComponent.BONE_LESION,
                appearance.allows,
                "The imaging evidence leaves the appearance open.",
            )
        )
    # DOMAIN.md 3 (v2): SINS reads the bone lesion on CT; an MRI-only appearance says so here too.
    inferred = " Inferred from MRI signal alone, not read on CT." if appearance.mri_only else ""
    return _component(
        SinsComponent.BONE_LESION,
        appearance.allows,
        f"{appearance.decided_by.reason[0].upper()}{appearance.decided_by.reason[1:]}"
        f" ({words(appearance.allows)}).{inferred}",
    )


def collapse_from_measurements(
    height_loss: float | None, involvement: float | None
) -> frozenset[CollapseAnswer]:
    """DESIGN rule of DOMAIN.md section 2: the collapse answers that measurements allow."""
    if height_loss is not None:
        if height_loss > HALF:
            return frozenset({CollapseAnswer.GT_50})
        if height_loss > 0:
            return frozenset({CollapseAnswer.LT_50})
        if involvement is None:
            return frozenset({CollapseAnswer.NONE_GT_50_INVOLVED, CollapseAnswer.NONE})
        if involvement > HALF:
            return frozenset({CollapseAnswer.NONE_GT_50_INVOLVED})
        return frozenset({CollapseAnswer.NONE})
    if involvement is None:
        return frozenset(CollapseAnswer)
    if involvement > HALF:
        return frozenset(CollapseAnswer) - {CollapseAnswer.NONE}
    return frozenset(CollapseAnswer) - {CollapseAnswer.NONE_GT_50_INVOLVED}


def _measured(findings: LevelFindings, kind: FindingKind) -> tuple[float | None, str | None]:
    finding = findings.latest(kind)
    if finding is None:
        return None, None
    assert isinstance(finding.value, float)
    return finding.value, finding.source


def _collapse(findings: LevelFindings, notes: list[str]) -> ComponentResult:
    loss, loss_source = _measured(findings, FindingKind.HEIGHT_LOSS)
    involvement, inv_source = _measured(findings, FindingKind.BODY_INVOLVEMENT)
    sources = tuple(s for s in (loss_source, inv_source) if s is not None)
    measured = collapse_from_measurements(loss, involvement)
    stated = findings.latest(FindingKind.COLLAPSE)
    parts = []
    if loss is not None:
        parts.append(f"height loss {loss:g}%")
    if involvement is not None:
        parts.append(f"body involvement {involvement:g}%")
    if stated is not None:
        assert isinstance(stated.value, CollapseAnswer)
        if sources and stated.value not in measured:
            # DOMAIN.md 2 (v2): neither side wins; the component allows both.
            sentence = (
                f"Discordant collapse: stated as {stated.value.value}, but the measurements "
                f"({' and '.join(parts)}) indicate "
                f"{' or '.join(a.value for a in CollapseAnswer if a in measured)}; "
                "both remain possible."
            )
            notes.append(sentence)
            return _component(
                SinsComponent.COLLAPSE,
                measured | {stated.value},
                sentence,
                sources=(stated.source, *sources),
                discordance=sentence,
            )
        return _stated(SinsComponent.COLLAPSE, stated)
    if not sources:
        return _unknown(SinsComponent.COLLAPSE)
    return _component(
        SinsComponent.COLLAPSE, measured, f"From {' and '.join(parts)}.", sources=sources
    )


def _posterolateral(findings: LevelFindings, notes: list[str]) -> ComponentResult:
    stated = findings.latest(FindingKind.POSTEROLATERAL)
    involvement = findings.of_kind(FindingKind.POSTERIOR_ELEMENT)
    # DESIGN: sides add up across findings (left + right = bilateral); a later explicit "none"
    # supersedes the sides reported before it.
    sides: set[Side] = set()
    sources: list[str] = []
    for finding in involvement:
        assert isinstance(finding.value, PosteriorElementInvolvement)
        if not finding.value.sides:
            sides.clear()
            sources.clear()
        sides |= finding.value.sides
        sources.append(finding.source)
    if len(sides) == 2:
        measured = PosterolateralAnswer.BILATERAL
    elif sides:
        measured = PosterolateralAnswer.UNILATERAL
    else:
        measured = PosterolateralAnswer.NONE
    side_words = " and ".join(sorted(s.value for s in sides)) or "no side"
    if stated is not None:
        assert isinstance(stated.value, PosterolateralAnswer)
        if involvement and stated.value is not measured:
            # DOMAIN.md 2 (v2): neither side wins; the component allows both.
            sentence = (
                f"Discordant posterolateral involvement: stated as {stated.value.value}, but the "
                f"posterior-element findings ({side_words}) indicate {measured.value}; "
                "both remain possible."
            )
            notes.append(sentence)
            return _component(
                SinsComponent.POSTEROLATERAL,
                frozenset({stated.value, measured}),
                sentence,
                sources=(stated.source, *sources),
                discordance=sentence,
            )
        return _stated(SinsComponent.POSTEROLATERAL, stated)
    if not involvement:
        return _unknown(SinsComponent.POSTEROLATERAL)
    return _component(
        SinsComponent.POSTEROLATERAL,
        frozenset({measured}),
        f"Posterior elements involved: {side_words}.",
        sources=tuple(sources),
    )


@dataclass(frozen=True, slots=True)
class SinsScore:
    """The SINS of one level: components, possible totals, category and consultation flag."""

    level: VertebralLevel
    components: tuple[ComponentResult, ...]
    possible_totals: frozenset[int]
    notes: tuple[str, ...]

    @property
    def low(self) -> int:
        """The lowest possible total."""
        return min(self.possible_totals)

    @property
    def high(self) -> int:
        """The highest possible total."""
        return max(self.possible_totals)

    @property
    def total(self) -> int | None:
        """The total when every component is determined."""
        return self.low if self.determined else None

    @property
    def determined(self) -> bool:
        """True when every component has one answer."""
        return not any(c.open for c in self.components)

    @property
    def possible_categories(self) -> frozenset[SinsCategory]:
        """Every category some completion of the findings falls in."""
        return frozenset(category_of(t) for t in self.possible_totals)

    @property
    def category(self) -> SinsCategory | None:
        """The category when every completion of the findings agrees on it."""
        cats = self.possible_categories
        return next(iter(cats)) if len(cats) == 1 else None

    @property
    def surgical_consultation(self) -> bool:
        """SINS 7 or more warrants a surgical consultation; only when the lowest total is 7+."""
        return self.low >= SURGICAL_CONSULTATION_MIN_TOTAL

    @property
    def crosses_consultation_threshold(self) -> bool:
        """True when the range spans 6/7, so the missing findings decide the consultation."""
        return self.low < SURGICAL_CONSULTATION_MIN_TOTAL <= self.high

    @property
    def discordances(self) -> tuple[str, ...]:
        """The sentence of every component where a stated answer and a measurement disagree."""
        return tuple(c.discordance for c in self.components if c.discordance is not None)

    @property
    def patient_level_pain(self) -> ComponentResult | None:
        """The pain component when a pain report for the patient (no level) was used."""
        pain = self.component(SinsComponent.PAIN)
        return pain if pain.patient_level else None

    @property
    def deciding_components(self) -> tuple[SinsComponent, ...]:
        """The open components, whose findings would narrow the range."""
        return tuple(c.component for c in self.components if c.open)

    def component(self, component: SinsComponent) -> ComponentResult:
        """The result of one component."""
        return next(c for c in self.components if c.component is component)

    def missing_sentence(self) -> str | None:
        """What must be found out to decide the consultation, when the range crosses 6/7."""
        if not self.crosses_consultation_threshold:
            return None
        names = ", ".join(COMPONENT_WORDS[c].lower() for c in self.deciding_components)
        return (
            f"SINS {self.low}-{self.high} spans the surgical-consultation threshold (7); "
            f"findings on {names} would decide it."
        )

    def category_words(self) -> str:
        """`potentially unstable`, or `category open: stable or potentially unstable`."""
        if self.category is not None:
            return CATEGORY_WORDS[self.category]
        order = [c for _, _, c in SINS_CATEGORY_BANDS if c in self.possible_categories]
        return "category open: " + " or ".join(CATEGORY_WORDS[c] for c in order)

    def rationale(self) -> str:
        """The total and each component in words."""
        head = (
            f"SINS {self.total}"
            if self.total is not None
            else f"SINS {self.low}-{self.high} (incomplete findings)"
        )
        category = self.category_words()
        lines = [f"{self.level.label}: {head}, {category}."]
        lines.extend(c.sentence() for c in self.components)
        return " ".join(lines)


def score_sins(
    level: VertebralLevel, findings: LevelFindings, appearance: AppearanceResult
) -> SinsScore:
    """Score one lesion level from its findings and its appearance assessment."""
    notes: list[str] = []
    components = (
        _location(level),
        _pain(findings),
        _bone_lesion(appearance),
        _simple(findings, FindingKind.ALIGNMENT, SinsComponent.ALIGNMENT),
        _collapse(findings, notes),
        _posterolateral(findings, notes),
    )
    totals = frozenset(sum(combo) for combo in product(*(c.points for c in components)))
    return SinsScore(level, components, totals, tuple(notes))
