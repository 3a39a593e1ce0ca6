"""Properties over random findings, checked against an oracle written from DOMAIN.md.

The oracle below restates the rules of DOMAIN.md sections 2 and 3 in the simplest form (codes as
strings, points from the documented table) and enumerates every completion of the open components
itself, so the code's ranges, categories and flags are compared with an independent computation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from domain_test_builders import (
    ALL_APPEARANCE_CODES,
    DOC_BANDS,
    DOC_BONE_ISLAND_MAX_HU,
    DOC_BONE_ISLAND_MEAN_HU,
    DOC_COMPONENT_ORDER,
    DOC_CT_BLASTIC_MIN_HU,
    DOC_CT_LYTIC_MAX_HU,
    DOC_DIFFERENTIAL,
    DOC_LOCATION_OF,
    DOC_POINTS,
    DOC_PRIMARIES,
    DOC_T1_ALLOWS,
    DOC_T2_ALLOWS,
    at,
    doc_category,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_app.domain.assessment import LevelAssessment, assess_level, summarise
from fhir_app.domain.escc import EsccGrade
from fhir_app.domain.findings import (
    CtAttenuation,
    Finding,
    FindingKind,
    FindingValue,
    LevelFindings,
    PosteriorElementInvolvement,
    Side,
    T1Signal,
    T2Signal,
)
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins import collapse_from_measurements
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    PosterolateralAnswer,
    SinsComponent,
)

PROPERTY = settings(max_examples=200, deadline=None)

# ---------------------------------------------------------------------------------------------
# Strategies: every finding kind with a value of its type, boundaries drawn often.

PERCENT = st.one_of(
    st.sampled_from([0.0, 0.0001, 50.0, 50.0001, 100.0]),
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
)
HOUNSFIELD = st.one_of(
    st.none(),
    st.sampled_from([100.0, 100.1, 299.9, 300.0, 885.0, 885.1, 1060.0, 1060.1]),
    st.floats(min_value=-1000.0, max_value=3000.0, allow_nan=False),
)
VALUES: dict[FindingKind, st.SearchStrategy[FindingValue]] = {
    FindingKind.APPEARANCE: st.sampled_from(LesionAnswer),
    FindingKind.PAIN: st.sampled_from(PainAnswer),
    FindingKind.ALIGNMENT: st.sampled_from(AlignmentAnswer),
    FindingKind.COLLAPSE: st.sampled_from(CollapseAnswer),
    FindingKind.POSTEROLATERAL: st.sampled_from(PosterolateralAnswer),
    FindingKind.HEIGHT_LOSS: PERCENT,
    FindingKind.BODY_INVOLVEMENT: PERCENT,
    FindingKind.POSTERIOR_ELEMENT: st.frozensets(st.sampled_from(Side)).map(
        PosteriorElementInvolvement
    ),
    FindingKind.CT_ATTENUATION: st.builds(CtAttenuation, HOUNSFIELD, HOUNSFIELD),
    FindingKind.MRI_T1: st.sampled_from(T1Signal),
    FindingKind.MRI_T2: st.sampled_from(T2Signal),
    FindingKind.CONTRAST_ENHANCEMENT: st.booleans(),
    FindingKind.TREATED: st.booleans(),
    FindingKind.ESCC: st.sampled_from(EsccGrade),
    FindingKind.MYELOPATHY: st.booleans(),
    FindingKind.LESION_PRESENT: st.just(True),
}
assert set(VALUES) == set(FindingKind)

# A short clock so that several findings of a kind often share or straddle a time.
TIMES = st.integers(min_value=0, max_value=20).map(at)


@st.composite
def raw_findings(draw: st.DrawFn, kinds: Iterable[FindingKind] = tuple(FindingKind)) -> Finding:
    """A finding without its source; sources are made unique by `level_findings_of`."""
    kind = draw(st.sampled_from(tuple(kinds)))
    return Finding(
        kind,
        draw(VALUES[kind]),
        draw(TIMES),
        "",
        preliminary=draw(st.booleans()),
        patient_wide=draw(st.booleans()),
    )


def _with_sources(findings: list[Finding], prefix: str = "Observation/") -> tuple[Finding, ...]:
    return tuple(
        Finding(f.kind, f.value, f.observed_at, f"{prefix}{i:03d}", f.preliminary, f.patient_wide)
        for i, f in enumerate(findings)
    )


PRIMARIES = st.sampled_from([None, "renal-cell", "thyroid", "prostate", "breast"])


APPEARANCE_KINDS = (
    FindingKind.APPEARANCE,
    FindingKind.CT_ATTENUATION,
    FindingKind.MRI_T1,
    FindingKind.MRI_T2,
    FindingKind.TREATED,
    FindingKind.CONTRAST_ENHANCEMENT,
)
STRUCTURE_KINDS = (
    FindingKind.COLLAPSE,
    FindingKind.HEIGHT_LOSS,
    FindingKind.BODY_INVOLVEMENT,
    FindingKind.POSTEROLATERAL,
    FindingKind.POSTERIOR_ELEMENT,
)


@st.composite
def level_findings_of(draw: st.DrawFn, pool: tuple[FindingKind, ...]) -> LevelFindings:
    """Findings of one level. A few kinds of the pool per example, so that several findings of
    one kind (and several appearance sources) meet often."""
    kinds = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=6, unique=True))
    findings = draw(st.lists(raw_findings(kinds), max_size=12))
    return LevelFindings(
        _with_sources(findings),
        primary_tumor=draw(PRIMARIES),
        lesion_levels=draw(st.integers(min_value=1, max_value=3)),
    )


# Every kind, or a pool that concentrates on the appearance or on collapse and posterolateral.
LEVEL_FINDINGS = st.one_of(
    level_findings_of(tuple(FindingKind)),
    level_findings_of(APPEARANCE_KINDS),
    level_findings_of(STRUCTURE_KINDS),
)
APPEARANCE_FINDINGS = level_findings_of(APPEARANCE_KINDS)
LEVELS = st.sampled_from(VertebralLevel)

# ---------------------------------------------------------------------------------------------
# The oracle, from DOMAIN.md and CONTRACT.md 3 (latest wins; level-specific over patient-wide).


def _rank(f: Finding) -> tuple[bool, datetime]:
    # No resource id: CONTRACT 3 orders by time only, so findings at the same time all count.
    return (not f.patient_wide, f.observed_at)


def winners(findings: LevelFindings, kind: FindingKind) -> list[Finding]:
    """The findings of a kind that count: the latest, all of them on a time tie."""
    found = [f for f in findings.findings if f.kind is kind]
    if not found:
        return []
    top = max(_rank(f) for f in found)
    return [f for f in found if _rank(f) == top]


def _code(value: FindingValue) -> str:
    assert isinstance(value, str)
    return value


def _codes(findings: list[Finding]) -> frozenset[str]:
    return frozenset(_code(f.value) for f in findings)


def _has(findings: LevelFindings, *kinds: FindingKind) -> bool:
    return any(f.kind in kinds for f in findings.findings)


def ct_statistic(findings: LevelFindings, statistic: str) -> list[float]:
    """DOMAIN.md 3: the latest mean (or maximum) CT attenuation, each statistic on its own; all
    the values at the latest time when several findings share it."""
    measured = [
        (f, f.value.mean_hu if statistic == "mean" else f.value.max_hu)
        for f in findings.findings
        if f.kind is FindingKind.CT_ATTENUATION and isinstance(f.value, CtAttenuation)
    ]
    carried = [(f, v) for f, v in measured if v is not None]
    if not carried:
        return []
    top = max(_rank(f) for f, _ in carried)
    return [v for f, v in carried if _rank(f) == top]


def treated_level(findings: LevelFindings) -> bool:
    """A treated-lesion tie reads as treated (the cautious reading)."""
    return any(f.value is True for f in winners(findings, FindingKind.TREATED))


def appearance_sources(findings: LevelFindings) -> list[tuple[str, frozenset[str]]]:
    """The narrowing sources in precedence order: reading, CT of an untreated lesion, MRI.

    Findings of a source at the same latest time allow the union of what each allows."""
    sources: list[tuple[str, frozenset[str]]] = []
    reading = winners(findings, FindingKind.APPEARANCE)
    if reading and _codes(reading) != ALL_APPEARANCE_CODES:
        sources.append(("reading", _codes(reading)))
    if not treated_level(findings):
        ct: set[str] = set()
        for mean in ct_statistic(findings, "mean"):
            if mean <= DOC_CT_LYTIC_MAX_HU:
                ct.add("lytic")
            elif mean >= DOC_CT_BLASTIC_MIN_HU:
                ct.add("blastic")
            else:
                ct |= ALL_APPEARANCE_CODES
        if ct and ct != ALL_APPEARANCE_CODES:
            sources.append(("ct", frozenset(ct)))
    allowed = ALL_APPEARANCE_CODES
    t1, t2 = winners(findings, FindingKind.MRI_T1), winners(findings, FindingKind.MRI_T2)
    if t1:
        allowed &= frozenset().union(*(DOC_T1_ALLOWS[_code(f.value)] for f in t1))
    if t2:
        allowed &= frozenset().union(*(DOC_T2_ALLOWS[_code(f.value)] for f in t2))
    if allowed and allowed != ALL_APPEARANCE_CODES:  # contradictory T1/T2 narrows nothing
        sources.append(("mri", allowed))
    return sources


def expected_bone_lesion(findings: LevelFindings) -> frozenset[str]:
    """DOMAIN.md 3 precedence, and DOMAIN.md 2 (v2): a reading that a measurement (CT, MRI)
    contradicts allows both for the score."""
    sources = appearance_sources(findings)
    if not sources:
        return ALL_APPEARANCE_CODES
    name, first = sources[0]
    if name != "reading":
        return first
    return first.union(*(allows for _, allows in sources[1:] if not allows & first))


def expected_collapse(findings: LevelFindings) -> frozenset[str]:
    """DOMAIN.md 2 (v2): a stated answer that the measurements contradict allows both."""
    stated = _codes(winners(findings, FindingKind.COLLAPSE))
    measured = measured_collapse(findings)
    if not stated:
        return measured
    if not _has(findings, FindingKind.HEIGHT_LOSS, FindingKind.BODY_INVOLVEMENT):
        return stated
    if stated <= measured:
        return stated
    return measured | stated


def measured_collapse(findings: LevelFindings) -> frozenset[str]:
    """Every combination of the latest height loss and involvement (several on a time tie)."""
    losses = [f.value for f in winners(findings, FindingKind.HEIGHT_LOSS)] or [None]
    involvements = [f.value for f in winners(findings, FindingKind.BODY_INVOLVEMENT)] or [None]
    return frozenset().union(
        *(measured_collapse_of(loss, inv) for loss in losses for inv in involvements)
    )


def measured_collapse_of(loss: FindingValue | None, inv: FindingValue | None) -> frozenset[str]:
    every = frozenset(DOC_POINTS["collapse"])
    if loss is None and inv is None:
        return every
    assert loss is None or isinstance(loss, float)
    assert inv is None or isinstance(inv, float)
    if loss is not None and loss > 50:
        return frozenset({"collapse-gt-50"})
    if loss is not None and loss > 0:
        return frozenset({"collapse-lt-50"})
    if loss is not None and inv is None:
        return frozenset({"no-collapse-gt-50-involved", "no-collapse"})
    # loss 0, or no height-loss finding: involvement rules out one of the "no collapse" answers
    assert inv is not None
    ruled_out = "no-collapse" if inv > 50 else "no-collapse-gt-50-involved"
    allowed = every - {ruled_out}
    return allowed if loss is None else allowed - {"collapse-gt-50", "collapse-lt-50"}


def expected_posterolateral(findings: LevelFindings) -> frozenset[str]:
    stated = _codes(winners(findings, FindingKind.POSTEROLATERAL))
    reports = [f for f in findings.findings if f.kind is FindingKind.POSTERIOR_ELEMENT]
    if not reports:
        return stated or frozenset(DOC_POINTS["posterolateral"])
    # Sides add up; an explicit none clears what came before. At one time, sides add up with
    # each other, and a none beside them leaves both outcomes (none, or those sides) possible.
    possible: set[frozenset[Side]] = {frozenset()}
    for moment in sorted({_rank(f) for f in reports}):
        group = [f.value for f in reports if _rank(f) == moment]
        assert all(isinstance(v, PosteriorElementInvolvement) for v in group)
        sides = frozenset(s for v in group for s in v.sides)  # type: ignore[union-attr]
        if any(not v.sides for v in group):  # type: ignore[union-attr]
            possible = {frozenset(), sides}
        else:
            possible = {p | sides for p in possible}
    names = ["no-posterolateral", "unilateral", "bilateral"]
    measured = frozenset(names[len(p)] for p in possible)
    # DOMAIN.md 2 (v2): a stated answer the findings contradict allows both.
    if not stated:
        return measured
    return stated if stated <= measured else stated | measured


# DOMAIN.md 2 (v2): what a pain report for a patient with several lesion levels leaves possible.
DOC_PATIENT_PAIN: dict[str, frozenset[str]] = {
    "pain-free": frozenset({"pain-free"}),
    "occasional-non-mechanical": frozenset({"pain-free", "occasional-non-mechanical"}),
    "mechanical": frozenset({"pain-free", "occasional-non-mechanical", "mechanical"}),
}


def expected_pain(findings: LevelFindings) -> frozenset[str]:
    found = winners(findings, FindingKind.PAIN)
    if not found:
        return frozenset(DOC_POINTS["pain"])
    if found[0].patient_wide and findings.lesion_levels > 1:
        return frozenset().union(*(DOC_PATIENT_PAIN[_code(f.value)] for f in found))
    return _codes(found)


def expected_components(
    level: VertebralLevel, findings: LevelFindings
) -> dict[str, frozenset[str]]:
    """Component code -> the answer codes the findings allow."""

    def simple(kind: FindingKind, component: str) -> frozenset[str]:
        return _codes(winners(findings, kind)) or frozenset(DOC_POINTS[component])

    return {
        "location": frozenset({DOC_LOCATION_OF[level.label]}),
        "pain": expected_pain(findings),
        "bone-lesion": expected_bone_lesion(findings),
        "alignment": simple(FindingKind.ALIGNMENT, "alignment"),
        "collapse": expected_collapse(findings),
        "posterolateral": expected_posterolateral(findings),
    }


def completion_totals(allowed: dict[str, frozenset[str]]) -> set[int]:
    """The total of every completion of the open components, with the documented points."""
    choices = [[DOC_POINTS[c][a] for a in allowed[c]] for c in DOC_COMPONENT_ORDER]
    return {sum(combo) for combo in itertools.product(*choices)}


def _allowed(assessment: LevelAssessment) -> dict[str, frozenset[str]]:
    return {
        c.component.value: frozenset(a.value for a in c.allows) for c in assessment.sins.components
    }


# ---------------------------------------------------------------------------------------------
# Properties of one level.


@PROPERTY
@given(level=LEVELS, findings=LEVEL_FINDINGS)
def test_components_allow_what_the_rule_book_allows(
    level: VertebralLevel, findings: LevelFindings
) -> None:
    assessment = assess_level(level, findings)
    assert [c.component.value for c in assessment.sins.components] == DOC_COMPONENT_ORDER
    assert _allowed(assessment) == expected_components(level, findings)


@PROPERTY
@given(level=LEVELS, findings=LEVEL_FINDINGS)
def test_component_without_any_finding_is_never_scored_zero(
    level: VertebralLevel, findings: LevelFindings
) -> None:
    speaks = {
        SinsComponent.PAIN: _has(findings, FindingKind.PAIN),
        SinsComponent.BONE_LESION: _has(
            findings,
            FindingKind.APPEARANCE,
            FindingKind.CT_ATTENUATION,
            FindingKind.MRI_T1,
            FindingKind.MRI_T2,
        ),
        SinsComponent.ALIGNMENT: _has(findings, FindingKind.ALIGNMENT),
        SinsComponent.COLLAPSE: _has(
            findings, FindingKind.COLLAPSE, FindingKind.HEIGHT_LOSS, FindingKind.BODY_INVOLVEMENT
        ),
        SinsComponent.POSTEROLATERAL: _has(
            findings, FindingKind.POSTEROLATERAL, FindingKind.POSTERIOR_ELEMENT
        ),
    }
    sins = assess_level(level, findings).sins
    for component, spoken in speaks.items():
        result = sins.component(component)
        assert result.known is spoken
        if not spoken:
            assert {a.value for a in result.allows} == set(DOC_POINTS[component.value])
            assert result.high == max(DOC_POINTS[component.value].values())
            assert result.answer is None


@PROPERTY
@given(level=LEVELS, findings=LEVEL_FINDINGS)
def test_totals_are_every_completion_and_the_total_is_the_sum(
    level: VertebralLevel, findings: LevelFindings
) -> None:
    assessment = assess_level(level, findings)
    sins = assessment.sins
    allowed = _allowed(assessment)
    totals = completion_totals(allowed)
    assert sins.possible_totals == totals
    assert (sins.low, sins.high) == (min(totals), max(totals))
    determined = all(len(answers) == 1 for answers in allowed.values())
    assert sins.determined is determined
    if determined:
        assert sins.total == sum(DOC_POINTS[c][next(iter(a))] for c, a in allowed.items())
        assert sins.total == sum(c.low for c in sins.components)
        assert sins.deciding_components == ()
    else:
        assert sins.total is None
        assert sins.deciding_components == tuple(
            c.component for c in sins.components if len(c.allows) > 1
        )


@PROPERTY
@given(level=LEVELS, findings=LEVEL_FINDINGS)
def test_category_is_determined_exactly_when_every_completion_agrees(
    level: VertebralLevel, findings: LevelFindings
) -> None:
    assessment = assess_level(level, findings)
    sins = assessment.sins
    categories = {doc_category(t) for t in completion_totals(_allowed(assessment))}
    assert {c.value for c in sins.possible_categories} == categories
    if len(categories) == 1:
        assert sins.category is not None
        assert {sins.category.value} == categories
    else:
        assert sins.category is None
    assert assessment.preliminary is (
        sins.category is None or any(f.preliminary for f in findings.findings)
    )


@PROPERTY
@given(level=LEVELS, findings=LEVEL_FINDINGS)
def test_consultation_follows_the_lowest_total_and_the_6_7_threshold(
    level: VertebralLevel, findings: LevelFindings
) -> None:
    sins = assess_level(level, findings).sins
    assert sins.surgical_consultation is (sins.low >= 7)
    crosses = sins.low <= 6 < 7 <= sins.high
    assert sins.crosses_consultation_threshold is crosses
    assert (sins.missing_sentence() is not None) is crosses
    if crosses:
        assert sins.deciding_components


# Posterior-element reports add up by design; CT mean and maximum are each the latest of their own
# statistic (DOMAIN.md 3, v2), so a newer finding without a mean does not outrank an older mean.
OUTRANKABLE = [
    k for k in FindingKind if k not in (FindingKind.POSTERIOR_ELEMENT, FindingKind.CT_ATTENUATION)
]


@PROPERTY
@given(level=LEVELS, findings=LEVEL_FINDINGS, data=st.data())
def test_an_outranked_finding_changes_nothing(
    level: VertebralLevel, findings: LevelFindings, data: st.DataObject
) -> None:
    """Latest wins: a finding of the same kind that is older than the one that counts (or
    patient-wide under a level-specific one) leaves every component and the appearance as they
    were. Posterior-element reports add up by design and are checked separately."""
    present = sorted({f.kind for f in findings.findings if f.kind in OUTRANKABLE})
    kind = data.draw(st.sampled_from(present or OUTRANKABLE))
    current = next(iter(winners(findings, kind)), None)
    if current is None:  # give the kind a finding that counts first
        current = data.draw(raw_findings([kind]))
        current = replace(current, source="Observation/current")
        findings = replace(findings, findings=(*findings.findings, current))
    patient_wide = current.patient_wide or data.draw(st.booleans())
    # Patient-wide under a level-specific finding may be any time; otherwise strictly earlier.
    shift = data.draw(
        st.integers(-10, 10) if patient_wide and not current.patient_wide else st.integers(-10, -1)
    )
    outranked = Finding(
        kind,
        data.draw(VALUES[kind]),
        current.observed_at + timedelta(minutes=shift),
        "Observation/outranked",
        preliminary=False,
        patient_wide=patient_wide,
    )
    before = assess_level(level, findings)
    after = assess_level(level, replace(findings, findings=(*findings.findings, outranked)))
    assert _allowed(after) == _allowed(before)
    assert after.sins.possible_totals == before.sins.possible_totals
    assert after.classification.appearance.allows == before.classification.appearance.allows
    assert after.classification.notes == before.classification.notes


@PROPERTY
@given(
    level=LEVELS,
    findings=LEVEL_FINDINGS,
    sides=st.frozensets(st.sampled_from(Side)),
    earlier=st.integers(1, 30),
    patient_wide=st.booleans(),
)
def test_a_later_explicit_none_supersedes_every_side_before_it(
    level: VertebralLevel,
    findings: LevelFindings,
    sides: frozenset[Side],
    earlier: int,
    patient_wide: bool,
) -> None:
    last = max((f.observed_at for f in findings.findings), default=at(0)) + timedelta(minutes=1)
    none = Finding(
        FindingKind.POSTERIOR_ELEMENT, PosteriorElementInvolvement(frozenset()), last, "z-none"
    )
    older = Finding(
        FindingKind.POSTERIOR_ELEMENT,
        PosteriorElementInvolvement(sides),
        last - timedelta(minutes=earlier),
        "z-older",
        patient_wide=patient_wide,
    )
    stated = _codes(winners(findings, FindingKind.POSTEROLATERAL))
    # DOMAIN.md 2 (v2): a stated answer that disagrees with the findings is kept beside them.
    expected = {"no-posterolateral"} | stated
    for extra in ((none,), (none, older)):
        with_extra = replace(findings, findings=(*findings.findings, *extra))
        assert _allowed(assess_level(level, with_extra))["posterolateral"] == expected


@PROPERTY
@given(
    level=LEVELS,
    findings=LEVEL_FINDINGS,
    level_pain=st.sampled_from(PainAnswer),
    level_time=TIMES,
    wide_pain=st.sampled_from(PainAnswer),
    wide_time=TIMES,
)
def test_level_specific_pain_always_beats_patient_wide_pain(
    level: VertebralLevel,
    findings: LevelFindings,
    level_pain: PainAnswer,
    level_time: datetime,
    wide_pain: PainAnswer,
    wide_time: datetime,
) -> None:
    extra = (
        Finding(FindingKind.PAIN, level_pain, level_time, "Observation/level-pain"),
        Finding(FindingKind.PAIN, wide_pain, wide_time, "Observation/wide", patient_wide=True),
    )
    with_both = LevelFindings((*findings.findings, *extra), findings.primary_tumor)
    pain = assess_level(level, with_both).sins.component(SinsComponent.PAIN)
    level_specific = [
        f for f in with_both.findings if f.kind is FindingKind.PAIN and not f.patient_wide
    ]
    # The latest level-specific reports; several at the same time allow each of their answers.
    last = max(f.observed_at for f in level_specific)
    assert set(pain.allows) == {f.value for f in level_specific if f.observed_at == last}
    assert "stated for the patient" not in pain.explanation


# ---------------------------------------------------------------------------------------------
# Appearance: precedence, discordance and notes.


@PROPERTY
@given(findings=APPEARANCE_FINDINGS)
def test_appearance_precedence_and_every_disagreement_reported(findings: LevelFindings) -> None:
    check_appearance(findings)


@PROPERTY
@given(
    reading=st.none() | st.sampled_from(LesionAnswer),
    mean=HOUNSFIELD,
    t1=st.none() | st.sampled_from(T1Signal),
    t2=st.none() | st.sampled_from(T2Signal),
    treated=st.booleans(),
)
def test_one_finding_per_source_precedence_and_discordance(
    reading: LesionAnswer | None,
    mean: float | None,
    t1: T1Signal | None,
    t2: T2Signal | None,
    treated: bool,
) -> None:
    """Each source at most once, so that all three sources meet often."""
    values: list[tuple[FindingKind, FindingValue | None]] = [
        (FindingKind.APPEARANCE, reading),
        (FindingKind.CT_ATTENUATION, CtAttenuation(mean)),
        (FindingKind.MRI_T1, t1),
        (FindingKind.MRI_T2, t2),
        (FindingKind.TREATED, treated),
    ]
    findings = tuple(
        Finding(kind, value, at(0), kind.value) for kind, value in values if value is not None
    )
    check_appearance(LevelFindings(findings))


def check_appearance(findings: LevelFindings) -> None:
    """Precedence, discordance and notes of DOMAIN.md section 3."""
    classification = assess_level(VertebralLevel.T7, findings).classification
    appearance = classification.appearance
    sources = appearance_sources(findings)
    assert {a.value for a in appearance.allows} == (
        sources[0][1] if sources else ALL_APPEARANCE_CODES
    )
    deciding = appearance.decided_by
    assert (deciding.source.value if deciding else None) == (sources[0][0] if sources else None)
    expected_pairs = [
        (first, second)
        for i, (first, first_allows) in enumerate(sources)
        for second, second_allows in sources[i + 1 :]
        if not first_allows & second_allows
    ]
    assert [(d.deciding.source.value, d.other.source.value) for d in appearance.discordances] == (
        expected_pairs
    )
    for discordance in appearance.discordances:
        sentence = discordance.sentence()
        for side in (discordance.deciding, discordance.other):
            assert f"{side.source.value} ({side.reason}) indicates" in sentence
        assert sentence in classification.notes
    heuristic_note = any(n.startswith("Appearance from a heuristic:") for n in appearance.notes)
    assert heuristic_note is (deciding is not None and deciding.source.value == "ct")
    enhancement = winners(findings, FindingKind.CONTRAST_ENHANCEMENT)
    enhanced = bool(enhancement) and all(f.value is True for f in enhancement)
    contrast_note = "Contrast enhancement present, which supports an osteolytic lesion."
    assert (contrast_note in appearance.notes) is (
        enhanced and LesionAnswer.LYTIC in appearance.allows
    )


def check_classification(findings: LevelFindings) -> None:
    """The classification of a level against DOMAIN.md sections 3-5."""
    classification = assess_level(VertebralLevel.T7, findings).classification
    sources = appearance_sources(findings)
    allowed = sources[0][1] if sources else ALL_APPEARANCE_CODES
    known = findings.primary_tumor if findings.primary_tumor != "unknown-primary" else None
    collapsed = collapsed_level(findings)
    fracture = ["osteoporotic-compression-fracture"] if collapsed else []
    if len(allowed) == 1:
        (appearance,) = allowed
        row = DOC_PRIMARIES[appearance]
        # DOMAIN.md 4a: the known primary leads when it is in the row (no Patient: no filter).
        expected = [known, *(p for p in row if p != known)] if known in row else row
        assert list(classification.likely_primaries) == expected
        assert set(classification.differential) == set(DOC_DIFFERENTIAL[appearance] + fracture)
        assert len(classification.differential) == len(DOC_DIFFERENTIAL[appearance] + fracture)
    else:
        assert classification.likely_primaries == ()
        assert list(classification.differential) == fracture
    treated = treated_level(findings)
    assert classification.treated is treated
    # Bone island (DOMAIN.md 3): an untreated sclerotic lesion (appearance determined blastic),
    # denser than the Ulano et al. thresholds (mean and maximum, each the latest of its
    # statistic; on a time tie every tied value must pass, since the flag lowers suspicion).
    means, peaks = ct_statistic(findings, "mean"), ct_statistic(findings, "max")
    dense = (bool(means) and min(means) > DOC_BONE_ISLAND_MEAN_HU) or (
        bool(peaks) and min(peaks) > DOC_BONE_ISLAND_MAX_HU
    )
    flagged = dense and not treated and allowed == {"blastic"}
    if flagged and allowed == {"blastic"}:
        assert classification.differential[0] == "bone-island"
    elif len(allowed) == 1:
        assert list(classification.differential) == (
            DOC_DIFFERENTIAL[next(iter(allowed))] + fracture
        )
    # Atypical (DOMAIN.md 4, 4a): a known primary in the row of no appearance still possible.
    atypical = known is not None and not any(known in DOC_PRIMARIES[a] for a in allowed)
    assert (classification.atypical_primary is not None) is atypical
    if atypical and allowed <= DOC_ATYPICAL.get(known or "", frozenset()):
        assert "(typically" in (classification.atypical_primary or "") or "thyroid" in (
            classification.atypical_primary or ""
        )


def collapsed_level(findings: LevelFindings) -> bool:
    """DOMAIN.md 5 (v2): height loss above 0, or a stated collapse of < 50% or > 50%."""
    losses = winners(findings, FindingKind.HEIGHT_LOSS)
    stated = _codes(winners(findings, FindingKind.COLLAPSE))
    return any(isinstance(f.value, float) and f.value > 0 for f in losses) or bool(
        stated & {"collapse-lt-50", "collapse-gt-50"}
    )


# DOMAIN.md section 4: the appearances for which a known primary is atypical.
DOC_ATYPICAL: dict[str, frozenset[str]] = {
    "renal-cell": frozenset({"blastic", "mixed"}),
    "thyroid": frozenset({"blastic", "mixed"}),
    "prostate": frozenset({"lytic"}),
}


@PROPERTY
@given(height_loss=st.none() | PERCENT, involvement=st.none() | PERCENT)
def test_collapse_from_measurements_matches_the_design_rule(
    height_loss: float | None, involvement: float | None
) -> None:
    findings = [
        Finding(kind, value, at(0), f"Observation/{kind.value}")
        for kind, value in (
            (FindingKind.HEIGHT_LOSS, height_loss),
            (FindingKind.BODY_INVOLVEMENT, involvement),
        )
        if value is not None
    ]
    allowed = {a.value for a in collapse_from_measurements(height_loss, involvement)}
    assert allowed == expected_collapse(LevelFindings(tuple(findings)))


@PROPERTY
@given(findings=level_findings_of((FindingKind.POSTERIOR_ELEMENT,)))
def test_posterolateral_from_sides_matches_the_design_rule(findings: LevelFindings) -> None:
    component = assess_level(VertebralLevel.T7, findings).sins.component(
        SinsComponent.POSTEROLATERAL
    )
    assert {a.value for a in component.allows} == expected_posterolateral(findings)


@PROPERTY
@given(findings=APPEARANCE_FINDINGS)
def test_classification_follows_the_tables_and_flags(findings: LevelFindings) -> None:
    check_classification(findings)


@PROPERTY
@given(
    mean=HOUNSFIELD,
    peak=HOUNSFIELD,
    treated=st.booleans(),
    reading=st.none() | st.sampled_from(LesionAnswer),
    primary=PRIMARIES,
)
def test_ct_heuristic_and_bone_island_match_the_thresholds(
    mean: float | None,
    peak: float | None,
    treated: bool,
    reading: LesionAnswer | None,
    primary: str | None,
) -> None:
    findings = [
        Finding(FindingKind.CT_ATTENUATION, CtAttenuation(mean, peak), at(0), "ct"),
        Finding(FindingKind.TREATED, treated, at(0), "treated"),
    ]
    if reading is not None:
        findings.append(Finding(FindingKind.APPEARANCE, reading, at(0), "reading"))
    level_findings = LevelFindings(tuple(findings), primary_tumor=primary)
    check_appearance(level_findings)
    check_classification(level_findings)


@PROPERTY
@given(totals=st.frozensets(st.integers(min_value=0, max_value=18), min_size=1))
def test_category_and_consultation_over_any_set_of_possible_totals(
    totals: frozenset[int],
) -> None:
    """The derived flags of a score depend on its possible totals only; every set is checked."""
    base = assess_level(VertebralLevel.T7, LevelFindings()).sins
    sins = replace(base, possible_totals=totals)
    categories = {doc_category(t) for t in totals}
    assert (sins.category.value if sins.category else None) == (
        next(iter(categories)) if len(categories) == 1 else None
    )
    assert sins.surgical_consultation is (min(totals) >= 7)
    assert sins.crosses_consultation_threshold is (min(totals) <= 6 < 7 <= max(totals))


# ---------------------------------------------------------------------------------------------
# The patient summary.


@PROPERTY
@given(patient=st.dictionaries(LEVELS, LEVEL_FINDINGS, max_size=5))
def test_summary_is_most_unstable_first(patient: dict[VertebralLevel, LevelFindings]) -> None:
    summary = summarise(patient)
    assert {a.level for a in summary.levels} == set(patient)
    # DESIGN: the lowest possible total first, then the highest, then C1 to S5.
    keys = [(-a.sins.low, -a.sins.high, a.level.order) for a in summary.levels]
    assert keys == sorted(keys)
    conclusion = summary.conclusion()
    if not patient:
        assert summary.most_unstable is None
        return
    assert summary.most_unstable is summary.levels[0]
    assert conclusion.startswith(f"{summary.levels[0].level.label} ")
    labels = [a.level.label for a in summary.levels]
    positions = [conclusion.index(f"{label} ") for label in labels]
    assert positions == sorted(positions)
    consult = any(a.sins.low >= 7 for a in summary.levels)
    assert summary.surgical_consultation is consult
    advice = "Surgical consultation recommended: SINS 7 or more at " + ", ".join(
        a.level.label for a in summary.levels if a.sins.low >= 7
    )
    # The NOMS inputs close the conclusion; the consultation advice comes right before them.
    body = conclusion.split(" NOMS inputs: ")[0]
    assert conclusion.endswith(summary.noms.sentence())
    assert body.endswith(f" {advice}.") is consult
    # NOMS M (DOMAIN.md 7) hides neither fact: the instability phrase whenever a level is
    # certainly 7 or more, and a category only when no level's range could exceed it.
    noms = summary.noms
    words = noms.mechanical_words()
    assert ("mechanical instability to be considered" in words) is consult
    highest_low = max(a.sins.low for a in summary.levels)
    highest_high = max(a.sins.high for a in summary.levels)
    possible = {doc_category(t) for t in range(highest_low, highest_high + 1)}
    category = noms.mechanical_category
    assert (category.value if category else None) == (
        next(iter(possible)) if len(possible) == 1 else None
    )
    assert noms.mechanical_range == (highest_low, highest_high)
    rank = {name: i for i, (_, _, name) in enumerate(DOC_BANDS)}
    if category is not None:
        # No level's range can reach a category above the one M names.
        assert all(
            rank[doc_category(t)] <= rank[category.value]
            for a in summary.levels
            for t in a.sins.possible_totals
        )
    top = summary.levels[0]
    assert f": {top.level.label} SINS " in words
    higher = [a for a in summary.levels if a.sins.high == highest_high > top.sins.high]
    if higher:
        assert f"; {higher[0].level.label} could be higher: SINS " in words
    else:
        assert "could be higher" not in words
