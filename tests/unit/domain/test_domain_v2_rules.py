"""The v2 rules of DOMAIN.md 2, 3, 4a and 5, one parametrised test per row of each table.

Expected values are written from DOMAIN.md (v2 paragraphs), not from the code's tables.
"""

from __future__ import annotations

from datetime import date

import pytest
from domain_test_builders import DOC_POINTS, T0, finding, level_findings
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_app.domain.appearance import assess_appearance
from fhir_app.domain.assessment import (
    CaveatKind,
    LevelAssessment,
    assess_level,
    consultation_advice,
    summarise,
)
from fhir_app.domain.classification import (
    ADULT_AGE,
    CHILDHOOD_PRIMARIES,
    SEX_SPECIFIC_PRIMARIES,
    age_at,
    classify,
)
from fhir_app.domain.findings import (
    CtAttenuation,
    Finding,
    FindingKind,
    LevelFindings,
    PatientContext,
    PosteriorElementInvolvement,
    Sex,
    Side,
    T2Signal,
)
from fhir_app.domain.levels import OUTSIDE_SINS_SNOMED, VertebralLevel
from fhir_app.domain.sins import PATIENT_PAIN_ALLOWS, collapse_from_measurements
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    PosterolateralAnswer,
    SinsComponent,
)

PROPERTY = settings(max_examples=200, deadline=None)
L1, T5 = VertebralLevel.L1, VertebralLevel.T5


def _assess(*findings: Finding, **kwargs: object) -> LevelAssessment:
    return assess_level(L1, level_findings(*findings, **kwargs))  # type: ignore[arg-type]


def _codes(assessment: LevelAssessment, component: SinsComponent) -> set[str]:
    return {a.value for a in assessment.sins.component(component).allows}


# --- DOMAIN.md 2 (v2): stated versus measured -----------------------------------------------

# (stated collapse, height loss, involvement, the answers allowed, discordant)
COLLAPSE_ROWS = [
    ("no-collapse", 60.0, None, {"no-collapse", "collapse-gt-50"}, True),  # the issue's case
    ("no-collapse", 30.0, None, {"no-collapse", "collapse-lt-50"}, True),
    ("collapse-gt-50", 0.0, 20.0, {"collapse-gt-50", "no-collapse"}, True),
    ("no-collapse", 0.0, 70.0, {"no-collapse", "no-collapse-gt-50-involved"}, True),
    ("no-collapse-gt-50-involved", None, 30.0, {"no-collapse-gt-50-involved", "no-collapse",
                                               "collapse-lt-50", "collapse-gt-50"}, True),
    ("collapse-lt-50", None, 70.0, {"collapse-lt-50"}, False),
    ("collapse-gt-50", 55.0, None, {"collapse-gt-50"}, False),
    ("no-collapse", 0.0, None, {"no-collapse"}, False),
]  # fmt: skip


@pytest.mark.parametrize(("stated", "loss", "involvement", "allows", "discordant"), COLLAPSE_ROWS)
def test_stated_collapse_against_measurements(
    stated: str, loss: float | None, involvement: float | None, allows: set[str], discordant: bool
) -> None:
    findings = [finding(FindingKind.COLLAPSE, CollapseAnswer(stated))]
    if loss is not None:
        findings.append(finding(FindingKind.HEIGHT_LOSS, loss))
    if involvement is not None:
        findings.append(finding(FindingKind.BODY_INVOLVEMENT, involvement))
    assessment = _assess(*findings)
    assert _codes(assessment, SinsComponent.COLLAPSE) == allows
    component = assessment.sins.component(SinsComponent.COLLAPSE)
    assert (component.discordance is not None) is discordant
    kinds = [c.kind for c in assessment.caveats()]
    assert (CaveatKind.DISCORDANCE in kinds) is discordant
    if discordant:
        assert component.discordance is not None
        assert component.discordance in assessment.sins.rationale()


# (stated posterolateral, sides reported, the answers allowed, discordant)
POSTEROLATERAL_ROWS = [
    ("no-posterolateral", {Side.LEFT}, {"no-posterolateral", "unilateral"}, True),
    ("no-posterolateral", {Side.LEFT, Side.RIGHT}, {"no-posterolateral", "bilateral"}, True),
    ("bilateral", set(), {"bilateral", "no-posterolateral"}, True),
    ("unilateral", {Side.RIGHT}, {"unilateral"}, False),
    ("no-posterolateral", set(), {"no-posterolateral"}, False),
]


@pytest.mark.parametrize(("stated", "sides", "allows", "discordant"), POSTEROLATERAL_ROWS)
def test_stated_posterolateral_against_side_findings(
    stated: str, sides: set[Side], allows: set[str], discordant: bool
) -> None:
    assessment = _assess(
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer(stated)),
        finding(FindingKind.POSTERIOR_ELEMENT, PosteriorElementInvolvement(frozenset(sides))),
    )
    assert _codes(assessment, SinsComponent.POSTEROLATERAL) == allows
    component = assessment.sins.component(SinsComponent.POSTEROLATERAL)
    assert (component.discordance is not None) is discordant


def test_the_issues_hidden_consultation_is_no_longer_hidden() -> None:
    """Stated "no collapse", 60% measured: v1 scored 4 (stable); v2 keeps 7 possible."""
    assessment = _assess(
        finding(FindingKind.APPEARANCE, LesionAnswer.MIXED),
        finding(FindingKind.PAIN, PainAnswer.PAIN_FREE),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer.NONE),
        finding(FindingKind.COLLAPSE, CollapseAnswer.NONE),
        finding(FindingKind.HEIGHT_LOSS, 60.0),
    )
    assert (assessment.sins.low, assessment.sins.high) == (4, 7)
    assert assessment.sins.category is None
    assert assessment.sins.crosses_consultation_threshold
    assert "discordant vertebral body collapse" in assessment.summary_line()


# --- DOMAIN.md 2 (v2): pain stated for the patient ------------------------------------------

# (patient-level answer, lesion levels of the patient, the answers allowed at each level)
PAIN_ROWS = [
    ("pain-free", 1, {"pain-free"}),
    ("occasional-non-mechanical", 1, {"occasional-non-mechanical"}),
    ("mechanical", 1, {"mechanical"}),
    ("pain-free", 2, {"pain-free"}),
    ("occasional-non-mechanical", 2, {"pain-free", "occasional-non-mechanical"}),
    ("mechanical", 2, {"pain-free", "occasional-non-mechanical", "mechanical"}),
    ("mechanical", 5, {"pain-free", "occasional-non-mechanical", "mechanical"}),
]


@pytest.mark.parametrize(("answer", "levels", "allows"), PAIN_ROWS)
def test_patient_level_pain(answer: str, levels: int, allows: set[str]) -> None:
    pain = finding(FindingKind.PAIN, PainAnswer(answer), patient_wide=True)
    assessment = _assess(pain, lesion_levels=levels)
    assert _codes(assessment, SinsComponent.PAIN) == allows
    # The output names the patient-level report wherever it was used.
    caveats = [c for c in assessment.caveats() if c.kind is CaveatKind.PATIENT_LEVEL_PAIN]
    assert len(caveats) == 1
    assert "reported for the patient" in caveats[0].text
    assert "pain reported for the patient" in assessment.summary_line()


def test_a_level_specific_pain_finding_overrides_the_patient_report() -> None:
    assessment = _assess(
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL, 5, patient_wide=True),
        finding(FindingKind.PAIN, PainAnswer.PAIN_FREE, 1),
        lesion_levels=3,
    )
    assert _codes(assessment, SinsComponent.PAIN) == {"pain-free"}
    assert not any(c.kind is CaveatKind.PATIENT_LEVEL_PAIN for c in assessment.caveats())


def test_the_issues_t5_is_not_moved_by_a_patient_report() -> None:
    """ "mechanical" for the patient moved T5 from 6 to 9; it now leaves T5's pain open."""
    findings = [
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL, patient_wide=True),
        finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.HEIGHT_LOSS, 30.0),
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer.UNILATERAL),
    ]
    sins = assess_level(T5, level_findings(*findings, lesion_levels=2)).sins
    assert (sins.low, sins.high) == (6, 9)
    assert not sins.surgical_consultation


# --- DOMAIN.md 3 (v2): every caveat on the level assessment ---------------------------------

CAVEAT_ROWS = [
    (
        CaveatKind.DISCORDANCE,
        [
            finding(FindingKind.COLLAPSE, CollapseAnswer.NONE),
            finding(FindingKind.HEIGHT_LOSS, 60.0),
        ],
        "discordant vertebral body collapse",
    ),
    (
        CaveatKind.DISCORDANCE,
        [
            finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC),
            finding(FindingKind.MRI_T2, T2Signal.ISO),
        ],
        "discordant appearance evidence (reading vs mri)",
    ),
    (
        CaveatKind.BONE_ISLAND,
        [finding(FindingKind.CT_ATTENUATION, CtAttenuation(950.0))],
        "bone island favoured",
    ),
    (
        CaveatKind.BONE_ISLAND,
        # A maximum alone says nothing of sclerosis: the reading makes the lesion blastic.
        [
            finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC),
            finding(FindingKind.CT_ATTENUATION, CtAttenuation(None, 1200.0)),
        ],
        "bone island favoured",
    ),
    (CaveatKind.TREATED, [finding(FindingKind.TREATED, True)], "treated lesion"),
    (
        CaveatKind.MRI_ONLY,
        [finding(FindingKind.MRI_T2, T2Signal.ISO)],
        "appearance inferred from MRI signal alone",
    ),
    (
        CaveatKind.PATIENT_LEVEL_PAIN,
        [finding(FindingKind.PAIN, PainAnswer.PAIN_FREE, patient_wide=True)],
        "pain reported for the patient, not for this level",
    ),
    (CaveatKind.MISSING, [], "open at 6/7: pain, bone lesion"),
]


@pytest.mark.parametrize(("kind", "findings", "short"), CAVEAT_ROWS)
def test_every_caveat_reaches_the_level_assessment(
    kind: CaveatKind, findings: list[Finding], short: str
) -> None:
    assessment = _assess(*findings)
    caveats = [c for c in assessment.caveats() if c.kind is kind]
    assert caveats
    assert any(c.short.startswith(short) for c in caveats)
    line = assessment.summary_line()
    assert "; caveats: " in line
    assert all(c.short in line for c in assessment.caveats())


def test_a_level_without_caveats_says_none() -> None:
    assessment = _assess(
        finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC),
        finding(FindingKind.PAIN, PainAnswer.PAIN_FREE),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.COLLAPSE, CollapseAnswer.NONE),
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer.NONE),
    )
    assert assessment.caveats() == ()
    assert "caveats" not in assessment.summary_line()


# --- DOMAIN.md 3: CT mean or maximum -----------------------------------------------------------

# (mean, maximum, bone island favoured): the maximum rule is 1060 HU (Ulano et al. 2016).
CT_ROWS = [
    (None, 1060.0, False),
    (None, 1060.5, True),
    (640.0, 1210.0, True),
    (640.0, None, False),
    (885.5, None, True),
]


@pytest.mark.parametrize(("mean", "peak", "favoured"), CT_ROWS)
def test_bone_island_by_mean_or_maximum_from_separate_findings(
    mean: float | None, peak: float | None, favoured: bool
) -> None:
    findings = [finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC)]
    if mean is not None:
        findings.append(finding(FindingKind.CT_ATTENUATION, CtAttenuation(mean), 1))
    if peak is not None:
        findings.append(finding(FindingKind.CT_ATTENUATION, CtAttenuation(None, peak), 2))
    assessment = _assess(*findings)
    assert (assessment.classification.bone_island is not None) is favoured


# --- DOMAIN.md 4a (v2): primaries in the patient's context ------------------------------------

ADULT_WOMAN = PatientContext(Sex.FEMALE, date(1960, 5, 1), date(1960, 5, 1))
ADULT_MAN = PatientContext(Sex.MALE, date(1960, 5, 1), date(1960, 5, 1))

# DOMAIN.md 4a: the sex-specific primaries, each with the appearance whose row holds it.
SEX_ROWS = [
    ("prostate", "male", "blastic"),
    ("prostate", "male", "mixed"),
    ("testis-seminoma", "male", "blastic"),
    ("testis-seminoma", "male", "mixed"),
    ("cervix", "female", "mixed"),
    ("ovary", "female", "mixed"),
]


@pytest.mark.parametrize(("primary", "sex", "appearance"), SEX_ROWS)
def test_sex_specific_primaries(primary: str, sex: str, appearance: str) -> None:
    assert SEX_SPECIFIC_PRIMARIES[primary].value == sex
    reading = finding(FindingKind.APPEARANCE, LesionAnswer(appearance))
    same = ADULT_MAN if sex == "male" else ADULT_WOMAN
    other = ADULT_WOMAN if sex == "male" else ADULT_MAN
    kept = _assess(reading, context=same).classification
    assert primary in kept.likely_primaries
    left = _assess(reading, context=other).classification
    assert primary not in left.likely_primaries
    assert any(
        s.startswith(f"Left out for a {other.sex.value} patient") and primary in s  # type: ignore[union-attr]
        for s in left.left_out
    )
    assert set(left.left_out) <= set(left.notes)
    # Unknown or other gender filters nothing.
    unknown = _assess(reading, context=PatientContext(None, date(1960, 5, 1), date(1960, 5, 1)))
    assert primary in unknown.classification.likely_primaries


@pytest.mark.parametrize("sex", [Sex.FEMALE, Sex.MALE])
def test_breast_stays_for_both_sexes(sex: Sex) -> None:
    context = ADULT_WOMAN if sex is Sex.FEMALE else ADULT_MAN
    for appearance in LesionAnswer:
        reading = finding(FindingKind.APPEARANCE, appearance)
        assert "breast" in _assess(reading, context=context).classification.likely_primaries


def test_women_never_get_prostate_first() -> None:
    reading = finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC)
    classification = _assess(reading, context=ADULT_WOMAN).classification
    assert classification.likely_primaries[0] == "breast"


# (birth earliest, birth latest, listed, remark): the study is at T0 (2024-03-01).
AGE_ROWS = [
    (date(2014, 1, 1), date(2014, 1, 1), True, None),  # 10 years old
    (date(2006, 3, 2), date(2006, 3, 2), True, None),  # 17, one day before 18
    (date(2006, 3, 1), date(2006, 3, 1), False, None),  # 18 on the study day
    (date(1960, 1, 1), date(1960, 1, 1), False, None),
    (date(2006, 1, 1), date(2006, 12, 31), True, "childhood tumour, age unknown"),  # 17 or 18
    (None, None, True, "childhood tumour, age unknown"),
]


@pytest.mark.parametrize(("earliest", "latest", "listed", "remark"), AGE_ROWS)
@pytest.mark.parametrize("primary", ["neuroblastoma", "medulloblastoma"])
def test_childhood_tumours_by_age(
    primary: str, earliest: date | None, latest: date | None, listed: bool, remark: str | None
) -> None:
    assert primary in CHILDHOOD_PRIMARIES
    reading = finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC)
    classification = _assess(reading, context=PatientContext(None, earliest, latest)).classification
    assert (primary in classification.likely_primaries) is listed
    assert classification.remark(primary) == remark
    if not listed:
        assert any(primary in s and f"under {ADULT_AGE}" in s for s in classification.left_out)


def test_neuroblastoma_is_in_the_lytic_row_too() -> None:
    reading = finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC)
    child = PatientContext(None, date(2018, 6, 1), date(2018, 6, 1))
    assert "neuroblastoma" in _assess(reading, context=child).classification.likely_primaries


def test_age_needs_a_study_time() -> None:
    assert age_at(ADULT_WOMAN, None) is None
    assert age_at(ADULT_WOMAN, T0) == (63, 63)
    # Only patient-wide findings: no study of the level dates the age.
    pain = finding(FindingKind.PAIN, PainAnswer.PAIN_FREE, patient_wide=True)
    classification = _assess(
        pain,
        finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC, patient_wide=True),
        context=ADULT_WOMAN,
    ).classification
    assert classification.remark("neuroblastoma") == "childhood tumour, age unknown"


# (known primary, appearance, first listed, the sentence starts with)
KNOWN_ROWS = [
    ("breast", "lytic", "breast", "Consistent with the known breast primary."),
    ("breast", "blastic", "breast", "Consistent with the known breast primary."),
    ("prostate", "mixed", "prostate", "Consistent with the known prostate primary."),
    ("renal-cell", "blastic", "prostate", "Atypical for the known renal-cell primary"),
    ("thyroid", "blastic", "prostate", "Atypical for the known thyroid primary"),
    ("melanoma", "blastic", "prostate", "Atypical for the known melanoma primary"),
]


@pytest.mark.parametrize(("known", "appearance", "first", "sentence"), KNOWN_ROWS)
def test_the_known_primary_leads(known: str, appearance: str, first: str, sentence: str) -> None:
    reading = finding(FindingKind.APPEARANCE, LesionAnswer(appearance))
    classification = _assess(reading, primary=known).classification
    assert classification.likely_primaries[0] == first
    assert classification.known_primary == known
    assert classification.primary_context is not None
    assert classification.primary_context.startswith(sentence)
    assert classification.primary_context in classification.notes
    if sentence.startswith("Consistent"):
        assert classification.remark(known) == f"consistent with the known {known} primary"
        assert classification.likely_primaries.count(known) == 1
    else:
        # The row is still listed.
        assert len(classification.likely_primaries) > 5


def test_the_thyroid_note_distinguishes_differentiated_and_medullary() -> None:
    reading = finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC)
    note = _assess(reading, primary="thyroid").classification.atypical_primary
    assert note is not None
    assert "differentiated thyroid carcinoma is typically purely lytic" in note
    assert "medullary thyroid carcinoma may be sclerotic" in note


def test_a_known_primary_is_never_filtered_by_sex() -> None:
    reading = finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC)
    classification = _assess(reading, primary="prostate", context=ADULT_WOMAN).classification
    assert classification.likely_primaries[0] == "prostate"
    assert not any("prostate" in s for s in classification.left_out)


def test_unknown_primary_is_no_known_primary() -> None:
    reading = finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC)
    classification = _assess(reading, primary="unknown-primary").classification
    assert classification.known_primary is None
    assert classification.primary_context is None


# --- DOMAIN.md 5 (v2): osteoporotic compression fracture -------------------------------------

FRACTURE = "osteoporotic-compression-fracture"
# (findings, listed)
FRACTURE_ROWS = [
    ([finding(FindingKind.HEIGHT_LOSS, 10.0)], True),
    ([finding(FindingKind.HEIGHT_LOSS, 60.0)], True),
    ([finding(FindingKind.HEIGHT_LOSS, 0.0)], False),
    ([finding(FindingKind.COLLAPSE, CollapseAnswer.LT_50)], True),
    ([finding(FindingKind.COLLAPSE, CollapseAnswer.GT_50)], True),
    ([finding(FindingKind.COLLAPSE, CollapseAnswer.NONE_GT_50_INVOLVED)], False),
    ([finding(FindingKind.COLLAPSE, CollapseAnswer.NONE)], False),
    ([], False),
]


@pytest.mark.parametrize(("findings", "listed"), FRACTURE_ROWS)
@pytest.mark.parametrize("appearance", [*LesionAnswer, None])
def test_a_collapsed_level_lists_the_osteoporotic_fracture(
    findings: list[Finding], listed: bool, appearance: LesionAnswer | None
) -> None:
    reading = [] if appearance is None else [finding(FindingKind.APPEARANCE, appearance)]
    classification = _assess(*reading, *findings).classification
    assert (FRACTURE in classification.differential) is listed
    if listed:
        assert classification.differential[-1] == FRACTURE


# --- CONTRACT 2a and 4c (v2) ---------------------------------------------------------------


def test_the_occiput_is_the_occipital_bone() -> None:
    assert OUTSIDE_SINS_SNOMED == {"64688005": "coccyx", "31640002": "occiput"}


def test_consultation_names_the_levels() -> None:
    assert consultation_advice((T5,)) == "Surgical consultation recommended: SINS 7 or more at T5"
    assert consultation_advice([T5, L1]) == (
        "Surgical consultation recommended: SINS 7 or more at T5, L1"
    )
    worst = [
        finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.SUBLUXATION_TRANSLATION),
    ]
    summary = summarise({T5: level_findings(*worst), L1: level_findings()})
    assert summary.consultation_levels == (T5,)
    assert summary.conclusion().endswith(
        "Surgical consultation recommended: SINS 7 or more at T5. " + summary.noms.sentence()
    )


# --- Properties ------------------------------------------------------------------------------

PERCENT = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@PROPERTY
@given(
    stated=st.sampled_from(CollapseAnswer),
    loss=st.none() | PERCENT,
    involvement=st.none() | PERCENT,
)
def test_a_discordant_collapse_range_contains_both_answers(
    stated: CollapseAnswer, loss: float | None, involvement: float | None
) -> None:
    findings = [finding(FindingKind.COLLAPSE, stated)]
    if loss is not None:
        findings.append(finding(FindingKind.HEIGHT_LOSS, loss))
    if involvement is not None:
        findings.append(finding(FindingKind.BODY_INVOLVEMENT, involvement))
    component = _assess(*findings).sins.component(SinsComponent.COLLAPSE)
    measured = collapse_from_measurements(loss, involvement)
    measuring = loss is not None or involvement is not None
    assert (component.discordance is not None) is (measuring and stated not in measured)
    if component.discordance is not None:
        points = DOC_POINTS["collapse"]
        for answer in (stated, *measured):
            assert answer in component.allows
            assert component.low <= points[answer.value] <= component.high


@PROPERTY
@given(
    stated=st.sampled_from(PosterolateralAnswer),
    reports=st.lists(st.frozensets(st.sampled_from(Side)), min_size=1, max_size=4),
)
def test_a_discordant_posterolateral_range_contains_both_answers(
    stated: PosterolateralAnswer, reports: list[frozenset[Side]]
) -> None:
    findings = [finding(FindingKind.POSTEROLATERAL, stated)] + [
        finding(FindingKind.POSTERIOR_ELEMENT, PosteriorElementInvolvement(sides), minute)
        for minute, sides in enumerate(reports)
    ]
    component = _assess(*findings).sins.component(SinsComponent.POSTEROLATERAL)
    sides: set[Side] = set()
    for report in reports:
        sides = set() if not report else sides | report
    measured = PosterolateralAnswer(["no-posterolateral", "unilateral", "bilateral"][len(sides)])
    assert set(component.allows) == {stated, measured}
    assert (component.discordance is not None) is (stated is not measured)
    points = DOC_POINTS["posterolateral"]
    for answer in (stated, measured):
        assert component.low <= points[answer.value] <= component.high


# DOMAIN.md 2 (v2), restated: what a patient-level report leaves at each of several levels.
DOC_PATIENT_PAIN = {
    "pain-free": {"pain-free"},
    "occasional-non-mechanical": {"pain-free", "occasional-non-mechanical"},
    "mechanical": {"pain-free", "occasional-non-mechanical", "mechanical"},
}


@PROPERTY
@given(
    patient_pain=st.sampled_from(PainAnswer),
    level_pain=st.none() | st.sampled_from(PainAnswer),
    levels=st.integers(min_value=2, max_value=6),
    minute=st.integers(min_value=-5, max_value=5),
)
def test_a_patient_level_pain_report_never_narrows_beyond_the_rule(
    patient_pain: PainAnswer, level_pain: PainAnswer | None, levels: int, minute: int
) -> None:
    findings = [finding(FindingKind.PAIN, patient_pain, minute, patient_wide=True)]
    if level_pain is not None:
        findings.append(finding(FindingKind.PAIN, level_pain, 0))
    allows = {
        a.value
        for a in _assess(*findings, lesion_levels=levels).sins.component(SinsComponent.PAIN).allows
    }
    if level_pain is None:
        assert allows == DOC_PATIENT_PAIN[patient_pain.value]
        assert {a.value for a in PATIENT_PAIN_ALLOWS[patient_pain]} == allows
    else:
        # A finding of the level always wins over the patient's report.
        assert allows == {level_pain.value}


@PROPERTY
@given(
    findings=st.lists(
        st.tuples(
            st.sampled_from([FindingKind.PAIN, FindingKind.COLLAPSE, FindingKind.HEIGHT_LOSS]),
            st.integers(0, 3),
            st.booleans(),
        ),
        max_size=5,
    ),
    levels=st.integers(min_value=1, max_value=4),
)
def test_the_category_is_determined_iff_every_completion_agrees(
    findings: list[tuple[FindingKind, int, bool]], levels: int
) -> None:
    values = {
        FindingKind.PAIN: list(PainAnswer),
        FindingKind.COLLAPSE: list(CollapseAnswer),
        FindingKind.HEIGHT_LOSS: [0.0, 20.0, 50.0, 80.0],
    }
    built = [
        finding(kind, values[kind][index % len(values[kind])], index, patient_wide=wide)  # type: ignore[arg-type]
        for kind, index, wide in findings
    ]
    sins = _assess(*built, lesion_levels=levels).sins
    totals = set()
    from itertools import product

    for combo in product(*(c.points for c in sins.components)):
        totals.add(sum(combo))
    categories = {0 if t <= 6 else 1 if t <= 12 else 2 for t in totals}
    assert (sins.category is not None) is (len(categories) == 1)


def test_the_classification_reads_the_context_of_level_findings() -> None:
    findings = LevelFindings(
        (finding(FindingKind.APPEARANCE, LesionAnswer.MIXED),), context=ADULT_MAN
    )
    result = classify(findings, assess_appearance(findings))
    assert "cervix" not in result.likely_primaries
    assert "ovary" not in result.likely_primaries


@pytest.mark.parametrize(
    ("evidence", "labelled"),
    [
        (finding(FindingKind.MRI_T2, T2Signal.ISO), True),
        (finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC), False),
        (finding(FindingKind.CT_ATTENUATION, CtAttenuation(40.0)), False),
    ],
)
def test_the_bone_lesion_component_says_when_mri_alone_decided(
    evidence: Finding, labelled: bool
) -> None:
    component = _assess(evidence).sins.component(SinsComponent.BONE_LESION)
    assert ("Inferred from MRI signal alone, not read on CT." in component.explanation) is labelled
