"""The second clinical review (DOMAIN.md 2 v2, 3 and 7), at the domain level: a reading of the
bone lesion that a measurement contradicts, and the most unstable level of NOMS M."""

from __future__ import annotations

from domain_test_builders import finding, level_findings

from fhir_app.domain.assessment import CaveatKind, assess_level, summarise
from fhir_app.domain.findings import (
    CtAttenuation,
    Finding,
    FindingKind,
    LevelFindings,
    PosteriorElementInvolvement,
    Side,
    T2Signal,
)
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.noms import noms_inputs
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    LesionAnswer,
    PainAnswer,
    SinsCategory,
    SinsComponent,
)

T12 = VertebralLevel.T12
LYTIC, MIXED, BLASTIC = LesionAnswer.LYTIC, LesionAnswer.MIXED, LesionAnswer.BLASTIC
LEFT = PosteriorElementInvolvement(frozenset({Side.LEFT}))


def _m2(pain: PainAnswer = PainAnswer.OCCASIONAL_NON_MECHANICAL) -> list[Finding]:
    """The review's M2 input without its appearance evidence: SINS 6 blastic, 8 lytic."""
    return [
        finding(FindingKind.PAIN, pain),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.HEIGHT_LOSS, 0.0),
        finding(FindingKind.BODY_INVOLVEMENT, 60.0),
        finding(FindingKind.POSTERIOR_ELEMENT, LEFT),
    ]


def _ct(mean: float) -> Finding:
    return finding(FindingKind.CT_ATTENUATION, CtAttenuation(mean_hu=mean))


# --- 1. a reading of the bone lesion contradicted by CT or MRI ---------------------------------


def test_reading_contradicted_by_ct_widens_the_score_and_is_discordant() -> None:
    a = assess_level(
        T12, level_findings(finding(FindingKind.APPEARANCE, BLASTIC), _ct(40.0), *_m2())
    )
    bone = a.sins.component(SinsComponent.BONE_LESION)
    assert set(bone.allows) == {LYTIC, BLASTIC}
    assert bone.discordance is not None
    assert bone.discordance.startswith(
        "Discordant bone lesion: the reading (reported as blastic) indicates blastic, but CT "
        "(CT heuristic: mean attenuation 40 HU <= 100 HU, soft-tissue attenuation) indicates lytic;"
    )
    assert "the score allows both (lytic or blastic) because the CT disagrees" in bone.explanation
    assert (a.sins.low, a.sins.high, a.sins.category) == (6, 8, None)
    assert not a.sins.surgical_consultation
    assert a.preliminary
    assert bone.discordance in a.sins.notes
    assert bone.discordance in a.sins.rationale()
    assert "resolving the discordant findings on bone lesion" in (a.sins.missing_sentence() or "")
    caveats = [c for c in a.caveats() if c.kind is CaveatKind.DISCORDANCE]
    assert bone.discordance in [c.text for c in caveats]
    assert "discordant bone lesion" in a.summary_line()
    # DOMAIN.md 3: the classification keeps the reading, with its discordance note.
    assert a.classification.appearance.determined is BLASTIC
    assert "T12 blastic, SINS 6-8 (category open" in a.summary_line()


def test_widened_range_decides_the_consultation_flag() -> None:
    a = assess_level(
        T12,
        level_findings(
            finding(FindingKind.APPEARANCE, BLASTIC), _ct(40.0), *_m2(PainAnswer.MECHANICAL)
        ),
    )
    assert (a.sins.low, a.sins.high) == (8, 10)
    assert a.sins.category is SinsCategory.POTENTIALLY_UNSTABLE
    assert a.sins.surgical_consultation
    assert a.sins.component(SinsComponent.BONE_LESION).discordance is not None


def test_reading_contradicted_by_mri_allows_both() -> None:
    a = assess_level(
        T12,
        level_findings(
            finding(FindingKind.APPEARANCE, LYTIC),
            finding(FindingKind.MRI_T2, T2Signal.HYPO),
            *_m2(),
        ),
    )
    bone = a.sins.component(SinsComponent.BONE_LESION)
    assert set(bone.allows) == {LYTIC, MIXED, BLASTIC}
    assert bone.discordance is not None
    assert "because the MRI disagrees with the reading" in bone.discordance
    assert a.classification.appearance.determined is LYTIC


def test_reading_contradicted_by_ct_and_mri_names_both() -> None:
    a = assess_level(
        T12,
        level_findings(
            finding(FindingKind.APPEARANCE, BLASTIC),
            _ct(40.0),
            finding(FindingKind.MRI_T2, T2Signal.ISO),
            *_m2(),
        ),
    )
    bone = a.sins.component(SinsComponent.BONE_LESION)
    assert set(bone.allows) == {LYTIC, BLASTIC}
    assert bone.discordance is not None
    assert "because the CT/MRI disagree with the reading" in bone.discordance


def test_ct_against_mri_without_a_contradicted_reading_changes_nothing() -> None:
    # No reading: CT decides; CT vs MRI stays an appearance discordance (no stated answer).
    a = assess_level(
        T12, level_findings(_ct(40.0), finding(FindingKind.MRI_T2, T2Signal.HYPO), *_m2())
    )
    bone = a.sins.component(SinsComponent.BONE_LESION)
    assert bone.allows == (LYTIC,)
    assert bone.discordance is None
    assert a.classification.appearance.discordances
    # A reading (lytic and mixed at one time) that only the MRI half-agrees with: CT vs MRI
    # disagree, but neither contradicts the reading, so the reading's answers stay.
    tied = [
        finding(FindingKind.APPEARANCE, LYTIC, source="Observation/r1"),
        finding(FindingKind.APPEARANCE, MIXED, source="Observation/r2"),
    ]
    b = assess_level(
        T12,
        level_findings(*tied, _ct(40.0), finding(FindingKind.MRI_T2, T2Signal.HYPO), *_m2()),
    )
    bone = b.sins.component(SinsComponent.BONE_LESION)
    assert set(bone.allows) == {LYTIC, MIXED}
    assert bone.discordance is not None
    assert not bone.discordance.startswith("Discordant bone")


def test_treated_lesion_ct_does_not_contradict_the_reading() -> None:
    a = assess_level(
        T12,
        level_findings(
            finding(FindingKind.APPEARANCE, BLASTIC),
            finding(FindingKind.TREATED, True),
            _ct(40.0),
            *_m2(),
        ),
    )
    bone = a.sins.component(SinsComponent.BONE_LESION)
    assert bone.allows == (BLASTIC,)
    assert bone.discordance is None
    assert a.sins.total == 6


# --- 2. the most unstable level and NOMS M -----------------------------------------------------

L1, T5, T7 = VertebralLevel.L1, VertebralLevel.T5, VertebralLevel.T7
RULE = "most unstable level by lowest possible SINS, then highest possible"


def _certain_11() -> LevelFindings:
    """L1 lytic, SINS 11: junctional 3, mechanical 3, lytic 2, normal 0, < 50% 2, unilateral 1."""
    return level_findings(
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL),
        finding(FindingKind.APPEARANCE, LYTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.HEIGHT_LOSS, 30.0),
        finding(FindingKind.POSTERIOR_ELEMENT, LEFT),
    )


def test_certain_consultation_level_ranks_first_and_m_names_the_open_one() -> None:
    """The review's A input: L1 certainly 11, T5 open (3-16)."""
    summary = summarise(
        {T5: level_findings(finding(FindingKind.APPEARANCE, LYTIC)), L1: _certain_11()}
    )
    assert [a.level for a in summary.levels] == [L1, T5]
    assert summary.conclusion().startswith("L1 lytic, SINS 11 (potentially unstable)")
    noms = summary.noms
    assert noms.mechanical_words() == (
        f"{RULE}: L1 SINS 11 (potentially unstable): mechanical instability to be considered; "
        "T5 could be higher: SINS 3-16 (category open: stable or potentially unstable or "
        "unstable)"
    )
    assert noms.mechanical_instability
    # 11 to 16 spans potentially unstable and unstable: no category for the patient.
    assert noms.mechanical_range == (11, 16)
    assert noms.mechanical_category is None


def test_m_category_only_when_the_patients_highest_sins_lies_in_one_category() -> None:
    # T7 open at 8-11 (semi-rigid 1, mechanical 3, lytic 2, normal 0, < 50% 2, posterolateral
    # open 0-3) beside L1 certainly 11: the patient's highest SINS is potentially unstable.
    t7 = level_findings(
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL),
        finding(FindingKind.APPEARANCE, LYTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.HEIGHT_LOSS, 30.0),
    )
    summary = summarise({T7: t7, L1: _certain_11()})
    assert [(a.sins.low, a.sins.high) for a in summary.levels] == [(11, 11), (8, 11)]
    assert summary.noms.mechanical_category is SinsCategory.POTENTIALLY_UNSTABLE
    assert "could be higher" not in summary.noms.mechanical_words()


def test_the_highest_reaching_level_is_named_first_in_rank_on_a_tie() -> None:
    summary = summarise(
        {
            VertebralLevel.T9: level_findings(finding(FindingKind.APPEARANCE, LYTIC)),
            T5: level_findings(finding(FindingKind.APPEARANCE, LYTIC)),
            L1: _certain_11(),
        }
    )
    assert [a.level for a in summary.levels] == [L1, T5, VertebralLevel.T9]
    assert summary.could_be_higher is not None
    assert summary.could_be_higher.level is T5


def test_m_of_a_patient_without_levels() -> None:
    inputs = noms_inputs([], None, None, None)
    assert inputs.mechanical_range is None
    assert inputs.mechanical_category is None
    assert not inputs.mechanical_instability
    assert inputs.mechanical_words() == "no lesion level"
    assert summarise({}).could_be_higher is None
