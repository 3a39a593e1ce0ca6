"""Level assessment and patient summary: preliminary flag, ordering and conclusion."""

from __future__ import annotations

from domain_test_builders import assess, finding, level_findings

from fhir_app.domain.appearance import AppearanceSettings
from fhir_app.domain.assessment import PatientSummary, most_unstable_first, summarise
from fhir_app.domain.findings import (
    CtAttenuation,
    Finding,
    FindingKind,
    LevelFindings,
    PosteriorElementInvolvement,
    Side,
)
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    PosterolateralAnswer,
    SinsCategory,
)


def _worst(preliminary: bool = False) -> list[Finding]:
    """Every component at its highest answer."""
    return [
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL, preliminary=preliminary),
        finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.SUBLUXATION_TRANSLATION),
        finding(FindingKind.HEIGHT_LOSS, 70.0),
        finding(
            FindingKind.POSTERIOR_ELEMENT,
            PosteriorElementInvolvement(frozenset({Side.LEFT, Side.RIGHT})),
        ),
    ]


def _best() -> list[Finding]:
    """Every component at 0 points."""
    return [
        finding(FindingKind.PAIN, PainAnswer.PAIN_FREE),
        finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.COLLAPSE, CollapseAnswer.NONE),
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer.NONE),
    ]


def test_level_assessment_carries_its_level_findings_and_results() -> None:
    findings = _worst()
    assessment = assess(VertebralLevel.L1, *findings, primary="breast")
    assert assessment.level is VertebralLevel.L1
    assert assessment.findings.findings == tuple(findings)
    assert assessment.sins.level is VertebralLevel.L1
    assert assessment.sins.total == 18
    assert assessment.sins.category is SinsCategory.UNSTABLE
    assert assessment.classification.appearance.determined is LesionAnswer.LYTIC
    # DOMAIN.md 4a (v2): the known primary leads when it is in the appearance's row.
    assert assessment.classification.likely_primaries[:2] == ("breast", "renal-cell")


def test_determined_category_without_preliminary_input_is_final() -> None:
    assert not assess(VertebralLevel.L1, *_worst()).preliminary


def test_preliminary_input_makes_the_assessment_preliminary() -> None:
    assessment = assess(VertebralLevel.L1, *_worst(preliminary=True))
    assert assessment.sins.category is SinsCategory.UNSTABLE
    assert assessment.preliminary


def test_open_category_makes_the_assessment_preliminary() -> None:
    assessment = assess(VertebralLevel.T7, finding(FindingKind.PAIN, PainAnswer.MECHANICAL))
    assert assessment.sins.category is None
    assert assessment.preliminary


def test_open_range_inside_one_category_is_not_preliminary() -> None:
    findings = [f for f in _best() if f.kind is not FindingKind.POSTEROLATERAL]
    assessment = assess(VertebralLevel.S3, *findings)
    assert assessment.sins.total is None
    assert assessment.sins.category is SinsCategory.STABLE
    assert not assessment.preliminary


def _patient() -> dict[VertebralLevel, LevelFindings]:
    return {
        VertebralLevel.S3: level_findings(*_best()),  # 0, stable
        VertebralLevel.T7: level_findings(),  # 1-16, open
        VertebralLevel.L1: level_findings(*_worst()),  # 18, unstable
        VertebralLevel.C4: level_findings(  # 2 + 3 + 2 = 7 at least, 7-17
            finding(FindingKind.PAIN, PainAnswer.MECHANICAL),
            finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        ),
    }


def test_summary_orders_most_unstable_first_and_concludes() -> None:
    summary = summarise(_patient())
    assert [a.level.label for a in summary.levels] == ["L1", "C4", "T7", "S3"]
    assert summary.most_unstable is not None
    assert summary.most_unstable.level is VertebralLevel.L1
    assert summary.surgical_consultation
    # CONTRACT 4d (v2): per level the consultation and the caveats, then the levels that
    # trigger the consultation by name.
    assert summary.conclusion() == (
        "L1 lytic, SINS 18 (unstable), surgical consultation recommended. "
        "C4 lytic, SINS 7-17 (category open: potentially unstable or unstable), "
        "surgical consultation recommended. "
        "T7 appearance open, SINS 1-16 "
        "(category open: stable or potentially unstable or unstable); caveats: open at 6/7: "
        "pain, bone lesion, radiographic spinal alignment, vertebral body collapse, "
        "posterolateral involvement of spinal elements. "
        "S3 blastic, SINS 0 (stable). "
        "Surgical consultation recommended: SINS 7 or more at L1, C4. "
        "NOMS inputs: N ESCC grade unknown (no escc-grade finding); myelopathy not reported; "
        "O no known primary; M most unstable level by lowest possible SINS, then highest "
        "possible: L1 SINS 18 (unstable): mechanical instability to be considered; "
        "S not assessed."
    )


def test_summary_without_consultation_has_no_recommendation() -> None:
    summary = summarise({VertebralLevel.S3: level_findings(*_best())})
    assert not summary.surgical_consultation
    assert summary.conclusion() == (
        "S3 blastic, SINS 0 (stable). NOMS inputs: N ESCC grade unknown (no escc-grade finding); "
        "myelopathy not reported; O no known primary; M most unstable level by lowest possible "
        "SINS, then highest possible: S3 SINS 0 (stable); S not assessed."
    )


def test_empty_summary() -> None:
    summary = summarise({})
    assert summary.levels == ()
    assert summary.most_unstable is None
    assert not summary.surgical_consultation
    assert summary.conclusion() == "No vertebral lesion findings."
    assert PatientSummary(()).conclusion() == "No vertebral lesion findings."


def test_ties_break_on_lowest_then_highest_total_then_cranio_caudal() -> None:
    normal = finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL)
    assessments = [
        assess(VertebralLevel.T8),  # 1-16
        assess(VertebralLevel.T4, normal),  # 1-12
        assess(VertebralLevel.T3),  # 1-16
        assess(VertebralLevel.T9),  # 1-16
    ]
    ordered = most_unstable_first(assessments)
    assert [a.level.label for a in ordered] == ["T3", "T8", "T9", "T4"]


def test_lowest_possible_total_ranks_first() -> None:
    """A guaranteed 7 ranks before a possible 16 (DESIGN in most_unstable_first): a level that
    certainly warrants a consultation is never ranked behind an open one."""
    guaranteed = assess(
        VertebralLevel.C4,
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL),
        finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.COLLAPSE, CollapseAnswer.NONE),
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer.NONE),
    )
    possible = assess(VertebralLevel.T7)
    assert (guaranteed.sins.low, guaranteed.sins.high) == (7, 7)
    assert (possible.sins.low, possible.sins.high) == (1, 16)
    assert [a.level for a in most_unstable_first([possible, guaranteed])] == [
        VertebralLevel.C4,
        VertebralLevel.T7,
    ]


def test_a_level_that_may_be_unstable_is_named_beside_a_certainly_stable_one() -> None:
    """Audit finding 2: L1 at exactly SINS 6 and T5 at 3-16 (only an appearance known). L1 ranks
    first (lowest total 6 > 3), and M names T5 as a level that could be higher."""
    stable_six = level_findings(
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL),
        finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.HEIGHT_LOSS, 0.0),
        finding(FindingKind.BODY_INVOLVEMENT, 10.0),
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer.NONE),
    )
    open_level = level_findings(finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC))
    summary = summarise({VertebralLevel.L1: stable_six, VertebralLevel.T5: open_level})
    assert [a.level.label for a in summary.levels] == ["L1", "T5"]
    assert summary.levels[0].sins.total == 6
    assert summary.noms.mechanical_words() == (
        "most unstable level by lowest possible SINS, then highest possible: L1 SINS 6 "
        "(stable); T5 could be higher: SINS 3-16 "
        "(category open: stable or potentially unstable or unstable)"
    )
    assert summary.noms.mechanical_range == (6, 16)
    assert summary.noms.mechanical_category is None
    assert summary.conclusion().startswith("L1 blastic, SINS 6 (stable).")
    # The surgical-consultation rule is unchanged: the lowest possible total decides it.
    assert not summary.surgical_consultation


def test_summary_uses_the_settings() -> None:
    ct = finding(FindingKind.CT_ATTENUATION, CtAttenuation(150.0))
    default = summarise({VertebralLevel.T7: level_findings(ct)})
    lowered = summarise(
        {VertebralLevel.T7: level_findings(ct)}, AppearanceSettings(blastic_min_hu=120.0)
    )
    assert default.levels[0].classification.appearance.determined is None
    assert lowered.levels[0].classification.appearance.determined is LesionAnswer.BLASTIC
