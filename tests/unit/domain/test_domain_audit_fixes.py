"""The clinical audit's findings (ties, most unstable level, age at the study, bone island, numbers
in words, discordant ranges), one test per rule, at the domain level."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from domain_test_builders import at, finding, level_findings

from fhir_app.domain.assessment import CaveatKind, assess_level
from fhir_app.domain.escc import EsccGrade
from fhir_app.domain.findings import (
    CtAttenuation,
    Finding,
    FindingKind,
    FindingValue,
    LevelFindings,
    PatientContext,
    PosteriorElementInvolvement,
    Sex,
    Side,
    T1Signal,
    T2Signal,
    number,
)
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    PosterolateralAnswer,
    SinsComponent,
)

L5 = VertebralLevel.L5
NONE_SIDE = PosteriorElementInvolvement(frozenset())
LEFT = PosteriorElementInvolvement(frozenset({Side.LEFT}))


def _rest(*skip: FindingKind) -> list[Finding]:
    """The audit's other findings of L5: lytic, normal alignment, loss 0, involvement 10, none."""
    rest = [
        finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        finding(FindingKind.PAIN, PainAnswer.PAIN_FREE),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.HEIGHT_LOSS, 0.0),
        finding(FindingKind.BODY_INVOLVEMENT, 10.0),
        finding(FindingKind.POSTERIOR_ELEMENT, NONE_SIDE),
    ]
    return [f for f in rest if f.kind not in skip]


def _tie(kind: FindingKind, *values: FindingValue, ids: tuple[str, ...] = ()) -> list[Finding]:
    names = ids or tuple(f"Observation/tie-{i}" for i in range(len(values)))
    return [finding(kind, v, 5, source=s) for v, s in zip(values, names, strict=True)]


# --- 1. findings at the same time that disagree -------------------------------------------------


@pytest.mark.parametrize(
    "ids", [("Observation/a", "Observation/b"), ("Observation/b", "Observation/a")]
)
def test_same_time_pain_disagreement_allows_both_whatever_the_ids(ids: tuple[str, str]) -> None:
    pain = _tie(FindingKind.PAIN, PainAnswer.MECHANICAL, PainAnswer.PAIN_FREE, ids=ids)
    assessment = assess_level(L5, level_findings(*_rest(FindingKind.PAIN), *pain))
    sins = assessment.sins
    component = sins.component(SinsComponent.PAIN)
    assert set(component.allows) == {PainAnswer.MECHANICAL, PainAnswer.PAIN_FREE}
    assert (sins.low, sins.high) == (5, 8)
    assert sins.category is None
    assert component.discordance == (
        "Discordant pain: findings at the same time state mechanical and pain-free; none is "
        "later, so mechanical or pain-free remain possible."
    )
    assert component.discordance in sins.rationale()
    assert sins.rationale().startswith("L5: SINS 5-8 (discordant findings)")
    assert sins.missing_sentence() == (
        "SINS 5-8 spans the surgical-consultation threshold (7); resolving the discordant "
        "findings on pain would decide it."
    )
    kinds = [c.kind for c in assessment.caveats()]
    assert CaveatKind.DISCORDANCE in kinds
    assert "discordant pain" in assessment.summary_line()


def test_identical_findings_at_the_same_time_are_no_discordance() -> None:
    pain = _tie(FindingKind.PAIN, PainAnswer.MECHANICAL, PainAnswer.MECHANICAL)
    sins = assess_level(L5, level_findings(*_rest(FindingKind.PAIN), *pain)).sins
    assert sins.component(SinsComponent.PAIN).discordance is None
    assert sins.total == 8
    assert sins.component(SinsComponent.PAIN).sources == ("Observation/tie-0", "Observation/tie-1")


def test_a_later_finding_still_wins_over_an_earlier_tie() -> None:
    tie = _tie(FindingKind.PAIN, PainAnswer.MECHANICAL, PainAnswer.PAIN_FREE)
    later = finding(FindingKind.PAIN, PainAnswer.OCCASIONAL_NON_MECHANICAL, 9)
    sins = assess_level(L5, level_findings(*_rest(FindingKind.PAIN), *tie, later)).sins
    assert sins.component(SinsComponent.PAIN).answer is PainAnswer.OCCASIONAL_NON_MECHANICAL
    assert sins.discordances == ()


@pytest.mark.parametrize(
    "ids", [("Observation/a", "Observation/b"), ("Observation/b", "Observation/a")]
)
def test_same_time_side_and_explicit_none_allow_both(ids: tuple[str, str]) -> None:
    posterior = _tie(FindingKind.POSTERIOR_ELEMENT, LEFT, NONE_SIDE, ids=ids)
    findings = level_findings(*_rest(FindingKind.POSTERIOR_ELEMENT), *posterior)
    component = assess_level(L5, findings).sins.component(SinsComponent.POSTEROLATERAL)
    assert set(component.allows) == {PosterolateralAnswer.UNILATERAL, PosterolateralAnswer.NONE}
    assert component.discordance == (
        "Discordant posterolateral involvement: findings at the same time state "
        "posterior-element involvement none and on the left; none is later, so unilateral or "
        "no-posterolateral remain possible."
    )


def test_same_time_sides_still_add_up() -> None:
    right = PosteriorElementInvolvement(frozenset({Side.RIGHT}))
    posterior = _tie(FindingKind.POSTERIOR_ELEMENT, LEFT, right)
    findings = level_findings(*_rest(FindingKind.POSTERIOR_ELEMENT), *posterior)
    component = assess_level(L5, findings).sins.component(SinsComponent.POSTEROLATERAL)
    assert component.answer is PosterolateralAnswer.BILATERAL
    assert component.discordance is None


def test_stated_posterolateral_tie_with_findings_that_contradict_it() -> None:
    stated = _tie(
        FindingKind.POSTEROLATERAL, PosterolateralAnswer.NONE, PosterolateralAnswer.BILATERAL
    )
    findings = level_findings(*_rest(FindingKind.POSTERIOR_ELEMENT), *stated)
    findings = LevelFindings((*findings.findings, finding(FindingKind.POSTERIOR_ELEMENT, LEFT)))
    component = assess_level(L5, findings).sins.component(SinsComponent.POSTEROLATERAL)
    assert set(component.allows) == set(PosterolateralAnswer)
    assert component.discordance is not None
    assert "Findings at the same time disagree: stated as bilateral and as no-posterolateral" in (
        component.discordance
    )


def test_stated_posterolateral_tie_without_findings() -> None:
    stated = _tie(
        FindingKind.POSTEROLATERAL, PosterolateralAnswer.NONE, PosterolateralAnswer.UNILATERAL
    )
    findings = level_findings(*_rest(FindingKind.POSTERIOR_ELEMENT), *stated)
    component = assess_level(L5, findings).sins.component(SinsComponent.POSTEROLATERAL)
    assert set(component.allows) == {PosterolateralAnswer.UNILATERAL, PosterolateralAnswer.NONE}
    assert component.discordance is not None


def test_same_time_height_losses_allow_each_answer() -> None:
    losses = _tie(FindingKind.HEIGHT_LOSS, 30.0, 60.0)
    findings = level_findings(*_rest(FindingKind.HEIGHT_LOSS), *losses)
    sins = assess_level(L5, findings).sins
    component = sins.component(SinsComponent.COLLAPSE)
    assert set(component.allows) == {CollapseAnswer.GT_50, CollapseAnswer.LT_50}
    assert component.discordance == (
        "Discordant vertebral body collapse: findings at the same time state height loss 30% "
        "and 60%; none is later, so collapse-gt-50 or collapse-lt-50 remain possible."
    )
    assert component.discordance in sins.notes


def test_same_time_measurements_with_one_answer_are_no_discordance() -> None:
    # 20% and 30% height loss both mean collapse-lt-50: the findings agree on the answer.
    losses = _tie(FindingKind.HEIGHT_LOSS, 20.0, 30.0)
    findings = level_findings(*_rest(FindingKind.HEIGHT_LOSS), *losses)
    sins = assess_level(L5, findings).sins
    component = sins.component(SinsComponent.COLLAPSE)
    assert set(component.allows) == {CollapseAnswer.LT_50}
    assert component.discordance is None
    # Involvements of 60% and 70% with height loss 0 both mean no collapse with >50% involved.
    involvements = _tie(FindingKind.BODY_INVOLVEMENT, 60.0, 70.0)
    findings = level_findings(*_rest(FindingKind.BODY_INVOLVEMENT), *involvements)
    component = assess_level(L5, findings).sins.component(SinsComponent.COLLAPSE)
    assert set(component.allows) == {CollapseAnswer.NONE_GT_50_INVOLVED}
    assert component.discordance is None


def test_same_time_involvements_and_stated_collapses() -> None:
    involvement = _tie(FindingKind.BODY_INVOLVEMENT, 10.0, 60.0)
    stated = _tie(FindingKind.COLLAPSE, CollapseAnswer.NONE, CollapseAnswer.NONE_GT_50_INVOLVED)
    findings = level_findings(
        *_rest(FindingKind.BODY_INVOLVEMENT, FindingKind.HEIGHT_LOSS), *involvement, *stated
    )
    component = assess_level(L5, findings).sins.component(SinsComponent.COLLAPSE)
    # Both stated answers fit some measurement: the stated answers narrow, the tie is named.
    assert set(component.allows) == {CollapseAnswer.NONE, CollapseAnswer.NONE_GT_50_INVOLVED}
    assert component.discordance is not None
    assert "body involvement 10% and 60%" in component.discordance
    assert "stated as no-collapse-gt-50-involved and as no-collapse" in component.discordance


def test_stated_collapse_tie_against_measurements() -> None:
    stated = _tie(FindingKind.COLLAPSE, CollapseAnswer.NONE, CollapseAnswer.LT_50)
    findings = level_findings(
        *_rest(FindingKind.HEIGHT_LOSS), finding(FindingKind.HEIGHT_LOSS, 60.0), *stated
    )
    component = assess_level(L5, findings).sins.component(SinsComponent.COLLAPSE)
    assert set(component.allows) == {
        CollapseAnswer.NONE,
        CollapseAnswer.LT_50,
        CollapseAnswer.GT_50,
    }
    assert component.discordance is not None
    assert component.discordance.startswith(
        "Discordant collapse: stated as collapse-lt-50 or no-collapse, but the measurements"
    )
    assert "Findings at the same time disagree" in component.discordance


def test_alignment_tie() -> None:
    tie = _tie(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL, AlignmentAnswer.DE_NOVO_DEFORMITY)
    sins = assess_level(L5, level_findings(*_rest(FindingKind.ALIGNMENT), *tie)).sins
    assert sins.component(SinsComponent.ALIGNMENT).points == (2, 0)
    assert len(sins.discordances) == 1


@pytest.mark.parametrize(
    ("levels", "allows"),
    [
        (1, {"mechanical", "pain-free"}),
        (2, {"mechanical", "occasional-non-mechanical", "pain-free"}),
    ],
)
def test_patient_pain_tie(levels: int, allows: set[str]) -> None:
    pain = [
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL, 5, patient_wide=True, source="w1"),
        finding(FindingKind.PAIN, PainAnswer.PAIN_FREE, 5, patient_wide=True, source="w2"),
    ]
    findings = level_findings(*_rest(FindingKind.PAIN), *pain, lesion_levels=levels)
    component = assess_level(L5, findings).sins.component(SinsComponent.PAIN)
    assert {a.value for a in component.allows} == allows
    assert component.patient_level
    assert component.discordance is not None
    assert component.discordance.startswith("Discordant pain reported for the patient")


def test_appearance_reading_tie_decides_with_both_and_marks_the_component() -> None:
    tie = _tie(FindingKind.APPEARANCE, LesionAnswer.LYTIC, LesionAnswer.BLASTIC)
    assessment = assess_level(L5, level_findings(*_rest(FindingKind.APPEARANCE), *tie))
    bone = assessment.sins.component(SinsComponent.BONE_LESION)
    assert set(bone.allows) == {LesionAnswer.LYTIC, LesionAnswer.BLASTIC}
    assert bone.discordance == (
        "Discordant lesion appearance readings: findings at the same time state lytic and "
        "blastic; none is later, so lytic or blastic remain possible."
    )
    # Named once: the component's discordance, not again as an appearance caveat.
    assert [c.text for c in assessment.caveats()].count(bone.discordance) == 1


def test_a_reading_tie_of_every_appearance_passes_to_ct() -> None:
    tie = _tie(FindingKind.APPEARANCE, LesionAnswer.LYTIC, LesionAnswer.MIXED, LesionAnswer.BLASTIC)
    ct = finding(FindingKind.CT_ATTENUATION, CtAttenuation(50.0))
    assessment = assess_level(L5, level_findings(*tie, ct))
    assert assessment.classification.appearance.determined is LesionAnswer.LYTIC
    texts = [c.text for c in assessment.caveats()]
    assert any(t.startswith("Discordant lesion appearance readings") for t in texts)
    assert any(
        t.startswith("Discordant lesion appearance readings")
        for t in assessment.classification.notes
    )


def test_an_open_appearance_names_the_tie_that_opened_it() -> None:
    tie = _tie(FindingKind.APPEARANCE, LesionAnswer.LYTIC, LesionAnswer.MIXED, LesionAnswer.BLASTIC)
    bone = assess_level(L5, level_findings(*tie)).sins.component(SinsComponent.BONE_LESION)
    assert bone.open
    assert bone.discordance is not None
    assert bone.explanation.startswith(
        "The imaging evidence leaves the appearance open. Discordant"
    )


def test_ct_mean_tie_and_maximum_tie() -> None:
    means = _tie(FindingKind.CT_ATTENUATION, CtAttenuation(50.0), CtAttenuation(400.0))
    peaks = [
        finding(FindingKind.CT_ATTENUATION, CtAttenuation(None, 900.0), 5, source="p1"),
        finding(FindingKind.CT_ATTENUATION, CtAttenuation(None, 1100.0), 5, source="p2"),
    ]
    appearance = assess_level(L5, level_findings(*means, *peaks)).classification.appearance
    assert appearance.allows == {LesionAnswer.LYTIC, LesionAnswer.BLASTIC}
    assert appearance.ties == (
        "Discordant CT attenuation: findings at the same time state mean 50 HU and mean 400 HU "
        "and maximum 900 HU and maximum 1100 HU; none is later, so lytic or blastic (by the CT "
        "heuristic) remain possible.",
    )


def test_bone_island_needs_every_tied_value_above_the_threshold() -> None:
    blastic = finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC)
    means = _tie(FindingKind.CT_ATTENUATION, CtAttenuation(500.0), CtAttenuation(950.0))
    assert assess_level(L5, level_findings(blastic, *means)).classification.bone_island is None
    means = _tie(FindingKind.CT_ATTENUATION, CtAttenuation(900.0), CtAttenuation(950.0))
    flagged = assess_level(L5, level_findings(blastic, *means)).classification.bone_island
    assert flagged is not None
    assert "mean 900 HU and 950 HU > 885 HU" in flagged


def test_mri_ties_join_what_each_signal_allows() -> None:
    t1 = _tie(FindingKind.MRI_T1, T1Signal.ISO, T1Signal.HYPO)
    t2 = _tie(FindingKind.MRI_T2, T2Signal.HETEROGENEOUS, T2Signal.ISO)
    appearance = assess_level(L5, level_findings(*t1, *t2)).classification.appearance
    assert appearance.allows == {LesionAnswer.LYTIC, LesionAnswer.MIXED}
    assert appearance.ties == (
        "Discordant MRI signal: findings at the same time state T1 isointense and hypointense "
        "and T2 isointense and heterogeneous; none is later, so lytic or mixed remain possible.",
    )


def test_treated_tie_reads_as_treated_and_says_so() -> None:
    tie = _tie(FindingKind.TREATED, True, False)
    ct = finding(FindingKind.CT_ATTENUATION, CtAttenuation(50.0))
    assessment = assess_level(L5, level_findings(*tie, ct))
    assert assessment.classification.treated
    assert assessment.classification.appearance.determined is None
    assert any(
        n.startswith("Discordant treated-lesion findings") for n in assessment.classification.notes
    )


def test_enhancement_tie_supports_nothing() -> None:
    tie = _tie(FindingKind.CONTRAST_ENHANCEMENT, True, False)
    appearance = assess_level(L5, level_findings(*tie)).classification.appearance
    assert not any("Contrast enhancement" in n for n in appearance.notes)


def test_escc_tie_keeps_the_highest_grade_and_says_so() -> None:
    tie = _tie(FindingKind.ESCC, EsccGrade.G1A, EsccGrade.G2)
    assessment = assess_level(L5, level_findings(*_rest(), *tie))
    assert assessment.escc is EsccGrade.G2
    assert assessment.escc_discordance == (
        "Discordant ESCC grades: findings at the same time state 1a and 2; none is later, so the "
        "highest (2) is reported (conservative)."
    )
    assert "discordant ESCC grade" in assessment.summary_line()


def test_height_loss_tie_keeps_the_collapsed_differential() -> None:
    losses = _tie(FindingKind.HEIGHT_LOSS, 0.0, 20.0)
    classification = assess_level(
        L5, level_findings(*_rest(FindingKind.HEIGHT_LOSS), *losses)
    ).classification
    assert "osteoporotic-compression-fracture" in classification.differential


# --- 3. age at the study date ----------------------------------------------------------------

SEVENTEEN_AT_STUDY = PatientContext(Sex.MALE, date(2007, 6, 1), date(2007, 6, 1))
STUDY = datetime(2025, 5, 2, 11, 0, tzinfo=UTC)


def _lytic_teen(study: datetime | None) -> LevelFindings:
    findings = (
        Finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC, datetime(2025, 5, 2, 12, tzinfo=UTC)),
        Finding(FindingKind.ESCC, EsccGrade.G1A, datetime(2025, 7, 1, 12, tzinfo=UTC)),
    )
    return LevelFindings(findings, context=SEVENTEEN_AT_STUDY, study_started=study)


def test_age_is_taken_at_the_study_date() -> None:
    classification = assess_level(VertebralLevel.T5, _lytic_teen(STUDY)).classification
    assert "neuroblastoma" in classification.likely_primaries
    assert not classification.left_out


def test_without_a_study_date_the_latest_finding_stands_in_and_is_named() -> None:
    classification = assess_level(VertebralLevel.T5, _lytic_teen(None)).classification
    assert "neuroblastoma" not in classification.likely_primaries
    assert classification.left_out == (
        "Left out for a patient aged 18 on 2025-07-01, the latest finding (no study date "
        "known): neuroblastoma (childhood tumours, listed only under 18).",
    )


def test_an_adult_at_the_study_date_is_named_with_the_date() -> None:
    later = datetime(2025, 6, 2, tzinfo=UTC)
    classification = assess_level(VertebralLevel.T5, _lytic_teen(later)).classification
    assert classification.left_out[0].startswith(
        "Left out for a patient aged 18 on the study date 2025-06-02:"
    )


def test_a_patient_level_finding_alone_gives_no_age() -> None:
    pain = Finding(FindingKind.PAIN, PainAnswer.PAIN_FREE, at(0), "w", patient_wide=True)
    findings = LevelFindings((pain,), context=SEVENTEEN_AT_STUDY)
    classification = assess_level(VertebralLevel.T5, findings).classification
    assert classification.left_out == ()


# --- 4. bone island only for a sclerotic lesion ------------------------------------------------


def test_no_bone_island_for_an_open_appearance_with_a_dense_maximum() -> None:
    ct = [
        finding(FindingKind.CT_ATTENUATION, CtAttenuation(200.0)),
        finding(FindingKind.CT_ATTENUATION, CtAttenuation(None, 1061.0), source="max"),
    ]
    assessment = assess_level(VertebralLevel.T5, level_findings(*ct))
    assert assessment.classification.bone_island is None
    assert CaveatKind.BONE_ISLAND not in [c.kind for c in assessment.caveats()]
    assert (
        "Bone-island rule not applied: the attenuation (maximum 1061 HU > 1060 HU) is dense, "
        "but the lesion is not shown to be sclerotic (appearance lytic or mixed or blastic)."
        in (assessment.classification.notes)
    )


def test_no_bone_island_and_no_note_below_the_thresholds() -> None:
    ct = finding(FindingKind.CT_ATTENUATION, CtAttenuation(200.0))
    notes = assess_level(VertebralLevel.T5, level_findings(ct)).classification.notes
    assert not any("one-island" in n or "bone island" in n for n in notes)


def test_bone_island_for_a_blastic_reading_with_a_dense_maximum() -> None:
    findings = level_findings(
        finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC),
        finding(FindingKind.CT_ATTENUATION, CtAttenuation(None, 1061.0)),
    )
    classification = assess_level(VertebralLevel.T5, findings).classification
    assert classification.bone_island is not None
    assert classification.differential[0] == "bone-island"


# --- 5. numbers in words -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (50.0, "50"),
        (50.0000001, "50.0000001"),
        (100.00000000000001, "100.00000000000001"),
        (-12.5, "-12.5"),
        (0.0, "0"),
    ],
)
def test_numbers_are_never_rounded(value: float, words: str) -> None:
    assert number(value) == words
    assert float(words) == value


def test_height_loss_just_above_half_is_printed_as_measured() -> None:
    loss = finding(FindingKind.HEIGHT_LOSS, 50.0000001)
    sins = assess_level(L5, level_findings(*_rest(FindingKind.HEIGHT_LOSS), loss)).sins
    collapse = sins.component(SinsComponent.COLLAPSE)
    assert collapse.answer is CollapseAnswer.GT_50
    assert "height loss 50.0000001%" in collapse.explanation


def test_ct_mean_just_above_the_lytic_threshold_is_printed_as_measured() -> None:
    ct = finding(FindingKind.CT_ATTENUATION, CtAttenuation(100.0000001))
    notes = assess_level(L5, level_findings(ct)).classification.notes
    assert "CT heuristic: mean attenuation 100.0000001 HU between 100 and 300 HU." in notes


# --- 6. a range from a discordance is not called incomplete -----------------------------------


def test_a_discordant_range_is_named_discordant_not_missing() -> None:
    findings = level_findings(
        *_rest(FindingKind.HEIGHT_LOSS),
        finding(FindingKind.COLLAPSE, CollapseAnswer.NONE),
        finding(FindingKind.HEIGHT_LOSS, 60.0),
    )
    assessment = assess_level(L5, findings)
    sins = assessment.sins
    assert sins.rationale().startswith("L5: SINS 5-8 (discordant findings), category open")
    assert sins.missing_sentence() == (
        "SINS 5-8 spans the surgical-consultation threshold (7); resolving the discordant "
        "findings on vertebral body collapse would decide it."
    )
    assert "open at 6/7: discordant vertebral body collapse" in assessment.summary_line()


def test_a_range_from_missing_and_discordant_findings_names_both() -> None:
    findings = level_findings(
        *_rest(FindingKind.HEIGHT_LOSS, FindingKind.ALIGNMENT),
        finding(FindingKind.COLLAPSE, CollapseAnswer.NONE),
        finding(FindingKind.HEIGHT_LOSS, 60.0),
    )
    sins = assess_level(L5, findings).sins
    assert "(incomplete and discordant findings)" in sins.rationale()
    assert sins.missing_sentence() == (
        "SINS 5-12 spans the surgical-consultation threshold (7); findings on radiographic "
        "spinal alignment and resolving the discordant findings on vertebral body collapse would "
        "decide it."
    )


def test_a_range_from_missing_findings_only_stays_incomplete() -> None:
    sins = assess_level(L5, level_findings(*_rest(FindingKind.ALIGNMENT))).sins
    assert "(incomplete findings)" in sins.rationale()
    assert sins.missing_sentence() == (
        "SINS 5-9 spans the surgical-consultation threshold (7); findings on radiographic "
        "spinal alignment would decide it."
    )
