"""The Spinal Instability Neoplastic Score of one lesion level, honest about missing findings.

Each component resolves to the set of answers the findings still allow (every answer when nothing
is known). The total is then the set of totals of every completion, reported as a range, and the
category is determined only when every completion falls in one category. Unknown is never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby, product

from fhir_app.domain.appearance import (
    AppearanceResult,
    EvidenceSource,
    words,
)
from fhir_app.domain.findings import (
    Finding,
    FindingKind,
    LevelFindings,
    PosteriorElementInvolvement,
    Side,
    number,
    same_time_sentence,
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


def _answers(component: SinsComponent, tied: tuple[Finding, ...]) -> list[SinsAnswer]:
    """The distinct answers of findings at the same time, in the order of the points table."""
    values = {f.value for f in tied}
    return [a for a in SINS_POINTS[component] if a in values]


def _stated(component: SinsComponent, tied: tuple[Finding, ...]) -> ComponentResult:
    """A component stated by findings at the same latest time; disagreeing ones allow each."""
    answers = _answers(component, tied)
    assert len(answers) == len({f.value for f in tied})  # every value is an answer of the table
    patient_wide = tied[0].patient_wide
    scope = " (stated for the patient, not for this level)" if patient_wide else ""
    sources = tuple(f.source for f in tied)
    if len(answers) == 1:
        return _component(
            component,
            frozenset(answers),
            "Stated in the findings" + scope + ".",
            sources=sources,
            patient_level=patient_wide,
        )
    sentence = same_time_sentence(
        COMPONENT_WORDS[component].lower() + scope,
        [str(a.value) for a in answers],
        " or ".join(str(a.value) for a in answers),
    )
    return _component(
        component,
        frozenset(answers),
        sentence,
        sources=sources,
        discordance=sentence,
        patient_level=patient_wide,
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
    tied = findings.latest(FindingKind.PAIN)
    if not tied:
        return _unknown(SinsComponent.PAIN)
    if not tied[0].patient_wide:
        return _stated(SinsComponent.PAIN, tied)
    values = {f.value for f in tied}
    reported = [a for a in PainAnswer if a in values]
    assert len(reported) == len(values)
    stated = " and ".join(a.value for a in reported)
    sources = tuple(f.source for f in tied)
    if findings.lesion_levels <= 1:
        allows = frozenset(reported)
        text = (
            f"Pain reported for the patient ({stated}), who has one lesion level: "
            "taken as the pain of this lesion."
        )
    else:
        allows = frozenset().union(*(PATIENT_PAIN_ALLOWS[a] for a in reported))
        left = (
            "which lesion hurts is unknown, so every answer remains"
            if allows == frozenset(PainAnswer)
            else f"it leaves {' or '.join(a.value for a in PainAnswer if a in allows)} here"
        )
        # No count in the words: a level added or withdrawn elsewhere changes nothing here.
        text = (
            f"Pain reported for the patient ({stated}), not for this level; the "
            f"patient has several lesion levels and {left}."
        )
    discordance = None
    if len(reported) > 1:
        discordance = same_time_sentence(
            "pain reported for the patient",
            [a.value for a in reported],
            " or ".join(a.value for a in PainAnswer if a in allows),
        )
        text = f"{discordance} {text}"
    return _component(
        SinsComponent.PAIN,
        allows,
        text,
        sources=sources,
        discordance=discordance,
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
    tied = findings.latest(kind)
    return _stated(component, tied) if tied else _unknown(component)


def _bone_lesion(appearance: AppearanceResult, notes: list[str]) -> ComponentResult:
    deciding = appearance.decided_by
    if deciding is None:
        if not appearance.evidence:
            return _unknown(SinsComponent.BONE_LESION)
        # Findings at the same time that disagree may be what leaves the appearance open.
        ties = " ".join(e.tie for e in appearance.evidence if e.tie is not None) or None
        return _component(
            SinsComponent.BONE_LESION,
            appearance.allows,
            "The imaging evidence leaves the appearance open." + (f" {ties}" if ties else ""),
            discordance=ties,
        )
    # DOMAIN.md 3 (v2): SINS reads the bone lesion on CT; an MRI-only appearance says so here too.
    inferred = " Inferred from MRI signal alone, not read on CT." if appearance.mri_only else ""
    tie = f" {deciding.tie}" if deciding.tie is not None else ""
    text = f"{deciding.reason[0].upper()}{deciding.reason[1:]} ({words(appearance.allows)})."
    measured = [
        d.other for d in appearance.discordances if d.deciding.source is EvidenceSource.READING
    ]
    if measured:
        # DOMAIN.md 2 (v2): a stated answer (the reading) and a measurement (CT, MRI) of the
        # bone lesion that disagree are both possible for the score, so the range covers both;
        # the classification keeps the reading (DOMAIN.md 3 precedence) and notes it there.
        allows = appearance.allows.union(*(e.allows for e in measured))
        others = " and ".join(
            f"{_SOURCE_WORDS[e.source]} ({e.reason}) indicates {words(e.allows)}" for e in measured
        )
        verb = "disagrees" if len(measured) == 1 else "disagree"
        sentence = (
            f"Discordant bone lesion: the reading ({deciding.reason}) indicates "
            f"{words(appearance.allows)}, but {others}; the score allows both "
            f"({words(allows)}) because the {'/'.join(_SOURCE_WORDS[e.source] for e in measured)} "
            f"{verb} with the reading, while the classification follows the reading.{tie}"
        )
        notes.append(sentence)
        return _component(SinsComponent.BONE_LESION, allows, sentence, discordance=sentence)
    return _component(
        SinsComponent.BONE_LESION,
        appearance.allows,
        f"{text}{inferred}{tie}",
        discordance=deciding.tie,
    )


# The measurements that can contradict an explicit reading of the bone lesion (DOMAIN.md 3).
_SOURCE_WORDS = {EvidenceSource.CT: "CT", EvidenceSource.MRI: "MRI"}


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


def _measured(findings: LevelFindings, kind: FindingKind) -> tuple[tuple[float, ...], list[str]]:
    """The distinct values of the latest findings of a measurement (several on a time tie)."""
    tied = findings.latest(kind)
    values: set[float] = set()
    for finding in tied:
        assert isinstance(finding.value, float)
        values.add(finding.value)
    return tuple(sorted(values)), [f.source for f in tied]


def _values(name: str, values: tuple[float, ...]) -> str:
    """`height loss 60%`, or `height loss 30% and 60%` for disagreeing findings."""
    return f"{name} {' and '.join(f'{number(v)}%' for v in values)}"


def _discordant(
    component: SinsComponent,
    sentence: str,
    ties: list[str],
    allows: frozenset[SinsAnswer],
    sources: tuple[str, ...],
    notes: list[str],
) -> ComponentResult:
    """A stated answer and measurements that disagree (DOMAIN.md 2, v2): both remain possible,
    marked discordant; findings at the same time that disagree are named too."""
    if ties:
        sentence += f" Findings at the same time disagree: {'; '.join(ties)}."
    notes.append(sentence)
    return _component(component, allows, sentence, sources=sources, discordance=sentence)


def _tied(
    component: SinsComponent,
    what: str,
    ties: list[str],
    allows: frozenset[SinsAnswer],
    sources: tuple[str, ...],
    notes: list[str],
) -> ComponentResult:
    """A component left open by findings at the same latest time that disagree (CONTRACT 3):
    every answer they allow remains, marked discordant."""
    sentence = same_time_sentence(
        what,
        ties,
        " or ".join(str(a.value) for a in SINS_POINTS[component] if a in allows),
    )
    notes.append(sentence)
    return _component(component, allows, sentence, sources=sources, discordance=sentence)


def _collapse(findings: LevelFindings, notes: list[str]) -> ComponentResult:
    losses, loss_sources = _measured(findings, FindingKind.HEIGHT_LOSS)
    involvements, inv_sources = _measured(findings, FindingKind.BODY_INVOLVEMENT)
    sources = (*loss_sources, *inv_sources)
    # Findings at the same latest time that disagree: every combination of them is possible.
    measured = frozenset().union(
        *(
            collapse_from_measurements(loss, involvement)
            for loss in (losses or (None,))
            for involvement in (involvements or (None,))
        )
    )
    tied = findings.latest(FindingKind.COLLAPSE)
    stated = frozenset(_answers(SinsComponent.COLLAPSE, tied))
    parts = []
    if losses:
        parts.append(_values("height loss", losses))
    if involvements:
        parts.append(_values("body involvement", involvements))
    ties = []
    if len(stated) > 1:
        ties.append("stated as " + " and as ".join(a.value for a in CollapseAnswer if a in stated))
    # Measurements at the same time are discordant only when they lead to different answers.
    by_loss = {
        frozenset().union(*(collapse_from_measurements(x, i) for i in involvements or (None,)))
        for x in losses
    }
    if len(by_loss) > 1:
        ties.append(_values("height loss", losses))
    by_involvement = {
        frozenset().union(*(collapse_from_measurements(x, i) for x in losses or (None,)))
        for i in involvements
    }
    if len(by_involvement) > 1:
        ties.append(_values("body involvement", involvements))
    if stated and sources and not stated <= measured:
        # DOMAIN.md 2 (v2): neither side wins; the component allows both.
        sentence = (
            f"Discordant collapse: stated as "
            f"{' or '.join(a.value for a in CollapseAnswer if a in stated)}, but the measurements "
            f"({' and '.join(parts)}) indicate "
            f"{' or '.join(a.value for a in CollapseAnswer if a in measured)}; "
            "both remain possible."
        )
        return _discordant(
            SinsComponent.COLLAPSE,
            sentence,
            ties,
            measured | stated,
            (*(f.source for f in tied), *sources),
            notes,
        )
    if not stated and not sources:
        return _unknown(SinsComponent.COLLAPSE)
    allows = stated or measured
    if ties:
        return _tied(
            SinsComponent.COLLAPSE,
            "vertebral body collapse",
            ties,
            allows,
            (*(f.source for f in tied), *sources),
            notes,
        )
    if stated:
        return _stated(SinsComponent.COLLAPSE, tied)
    return _component(
        SinsComponent.COLLAPSE, measured, f"From {' and '.join(parts)}.", sources=sources
    )


def _sides_words(sides: frozenset[Side]) -> str:
    return " and ".join(sorted(s.value for s in sides)) or "no side"


def _posterior_sides(
    findings: LevelFindings,
) -> tuple[frozenset[frozenset[Side]], list[str], list[str]]:
    """The sets of involved sides the posterior-element findings still allow.

    DESIGN: sides add up across findings (left + right = bilateral); a later explicit "none"
    supersedes the sides reported before it. Findings at one time that disagree (a side and an
    explicit none) leave both outcomes possible. Returns the possible side sets, the sources
    and the words of every same-time disagreement.
    """
    states: frozenset[frozenset[Side]] = frozenset({frozenset()})
    sources: list[str] = []
    ties: list[str] = []
    involvement = findings.of_kind(FindingKind.POSTERIOR_ELEMENT)
    for _, group in groupby(involvement, key=lambda f: (f.patient_wide, f.observed_at)):
        same_time = list(group)
        values = [f.value for f in same_time]
        assert all(isinstance(v, PosteriorElementInvolvement) for v in values)
        side_sets = {v.sides for v in values}  # type: ignore[union-attr]
        sides = frozenset().union(*side_sets)
        if frozenset() in side_sets:
            # An explicit none clears what came before; a side at the same time may be later.
            states = frozenset({frozenset(), sides})
            sources = [f.source for f in same_time]
            ties = []
            if sides:
                stated = sorted("none" if not v else f"on the {_sides_words(v)}" for v in side_sets)
                ties.append(f"posterior-element involvement {' and '.join(stated)}")
        else:
            states = frozenset(s | sides for s in states)
            sources.extend(f.source for f in same_time)
    return states, sources, ties


def _posterolateral_of(sides: frozenset[Side]) -> PosterolateralAnswer:
    if len(sides) == 2:
        return PosterolateralAnswer.BILATERAL
    return PosterolateralAnswer.UNILATERAL if sides else PosterolateralAnswer.NONE


def _posterolateral(findings: LevelFindings, notes: list[str]) -> ComponentResult:
    tied = findings.latest(FindingKind.POSTEROLATERAL)
    stated = frozenset(_answers(SinsComponent.POSTEROLATERAL, tied))
    involved = bool(findings.of_kind(FindingKind.POSTERIOR_ELEMENT))
    states, sources, ties = _posterior_sides(findings)
    measured = frozenset(_posterolateral_of(s) for s in states)
    side_words = " or ".join(_sides_words(s) for s in sorted(states, key=_sides_words))
    if len(stated) > 1:
        ties.insert(
            0,
            "stated as " + " and as ".join(a.value for a in PosterolateralAnswer if a in stated),
        )
    measured_words = " or ".join(a.value for a in PosterolateralAnswer if a in measured)
    if stated and involved and not stated <= measured:
        # DOMAIN.md 2 (v2): neither side wins; the component allows both.
        sentence = (
            f"Discordant posterolateral involvement: stated as "
            f"{' or '.join(a.value for a in PosterolateralAnswer if a in stated)}, but the "
            f"posterior-element findings ({side_words}) indicate {measured_words}; "
            "both remain possible."
        )
        return _discordant(
            SinsComponent.POSTEROLATERAL,
            sentence,
            ties,
            stated | measured,
            (*(f.source for f in tied), *sources),
            notes,
        )
    if not stated and not involved:
        return _unknown(SinsComponent.POSTEROLATERAL)
    allows = stated or measured
    if ties:
        return _tied(
            SinsComponent.POSTEROLATERAL,
            "posterolateral involvement",
            ties,
            allows,
            (*(f.source for f in tied), *sources),
            notes,
        )
    if stated:
        return _stated(SinsComponent.POSTEROLATERAL, tied)
    return _component(
        SinsComponent.POSTEROLATERAL,
        measured,
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

    def _open_names(self, discordant: bool) -> str:
        return ", ".join(
            COMPONENT_WORDS[c.component].lower()
            for c in self.components
            if c.open and (c.discordance is not None) is discordant
        )

    def open_reason(self) -> str:
        """Why the total is a range: findings missing, findings that disagree, or both."""
        reasons = [
            words
            for words, names in (
                ("incomplete", self._open_names(discordant=False)),
                ("discordant", self._open_names(discordant=True)),
            )
            if names
        ]
        return " and ".join(reasons) + " findings"

    def missing_sentence(self) -> str | None:
        """What must be found out to decide the consultation, when the range crosses 6/7.

        Components open because their findings disagree are named as discordant, not missing.
        """
        if not self.crosses_consultation_threshold:
            return None
        deciders = []
        if names := self._open_names(discordant=False):
            deciders.append(f"findings on {names}")
        if names := self._open_names(discordant=True):
            deciders.append(f"resolving the discordant findings on {names}")
        return (
            f"SINS {self.low}-{self.high} spans the surgical-consultation threshold (7); "
            f"{' and '.join(deciders)} would decide it."
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
            else f"SINS {self.low}-{self.high} ({self.open_reason()})"
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
        _bone_lesion(appearance, notes),
        _simple(findings, FindingKind.ALIGNMENT, SinsComponent.ALIGNMENT),
        _collapse(findings, notes),
        _posterolateral(findings, notes),
    )
    totals = frozenset(sum(combo) for combo in product(*(c.points for c in components)))
    return SinsScore(level, components, totals, tuple(notes))
