"""SINS: the answer table, the categories, and how findings resolve each component."""

from __future__ import annotations

import pytest
from domain_test_builders import (
    DOC_COMPONENT_ORDER,
    DOC_POINTS,
    assess,
    finding,
)

from fhir_app.domain.findings import (
    Finding,
    FindingKind,
    FindingValue,
    PosteriorElementInvolvement,
    Side,
)
from fhir_app.domain.levels import SinsLocation, VertebralLevel
from fhir_app.domain.sins import collapse_from_measurements
from fhir_app.domain.sins_answers import (
    SINS_POINTS,
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    PosterolateralAnswer,
    SinsAnswer,
    SinsCategory,
    SinsComponent,
    category_of,
    points,
)

DOC_POINT_ROWS = [
    (component, answer, value)
    for component, answers in DOC_POINTS.items()
    for answer, value in answers.items()
]

# The finding kind that states each component's answer directly (location comes from the level).
STATING_KIND = {
    "pain": FindingKind.PAIN,
    "bone-lesion": FindingKind.APPEARANCE,
    "alignment": FindingKind.ALIGNMENT,
    "collapse": FindingKind.COLLAPSE,
    "posterolateral": FindingKind.POSTEROLATERAL,
}
# A level of each location, to score a location answer end to end.
LEVEL_OF_LOCATION = {
    "junctional": VertebralLevel.L1,
    "mobile": VertebralLevel.C4,
    "semi-rigid": VertebralLevel.T7,
    "rigid": VertebralLevel.S3,
}


def _answer(component: str, code: str) -> SinsAnswer:
    return next(a for a in SINS_POINTS[SinsComponent(component)] if a.value == code)


def _sides(*sides: Side, minute: int = 0, source: str | None = None) -> Finding:
    """A posterior-element finding; no side is an explicit none."""
    return finding(
        FindingKind.POSTERIOR_ELEMENT,
        PosteriorElementInvolvement(frozenset(sides)),
        minute,
        source=source,
    )


@pytest.mark.parametrize(("component", "answer", "expected"), DOC_POINT_ROWS)
def test_answer_scores_documented_points(component: str, answer: str, expected: int) -> None:
    assert points(SinsComponent(component), _answer(component, answer)) == expected


@pytest.mark.parametrize(("component", "answer", "expected"), DOC_POINT_ROWS)
def test_stated_answer_is_scored_end_to_end(component: str, answer: str, expected: int) -> None:
    if component == "location":
        result = assess(LEVEL_OF_LOCATION[answer])
    else:
        value = _answer(component, answer)
        assert not isinstance(value, SinsLocation)  # location comes from the level only
        result = assess(VertebralLevel.T7, finding(STATING_KIND[component], value))
    component_result = result.sins.component(SinsComponent(component))
    assert component_result.answer is not None
    assert component_result.answer.value == answer
    assert (component_result.low, component_result.high) == (expected, expected)


def test_components_and_answers_are_exactly_the_documented_ones() -> None:
    """No 2-point pain, 3-point lesion or 1/3-point alignment answer exists (DOMAIN.md 2)."""
    assert [c.value for c in SinsComponent] == DOC_COMPONENT_ORDER
    for component, answers in SINS_POINTS.items():
        assert {a.value: p for a, p in answers.items()} == DOC_POINTS[component.value]
        # Highest points first, which the component results rely on.
        assert list(answers.values()) == sorted(answers.values(), reverse=True)


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (0, "stable"),
        (6, "stable"),
        (7, "potentially-unstable"),
        (12, "potentially-unstable"),
        (13, "unstable"),
        (18, "unstable"),
    ],
)
def test_total_falls_in_documented_category(total: int, expected: str) -> None:
    assert category_of(total).value == expected


@pytest.mark.parametrize("total", [-1, 19])
def test_total_outside_0_18_is_rejected(total: int) -> None:
    with pytest.raises(ValueError, match="outside 0-18"):
        category_of(total)


GT50, LT50 = CollapseAnswer.GT_50, CollapseAnswer.LT_50
NONE_INV, NONE = CollapseAnswer.NONE_GT_50_INVOLVED, CollapseAnswer.NONE
EVERY_COLLAPSE = {GT50, LT50, NONE_INV, NONE}


@pytest.mark.parametrize(
    ("height_loss", "involvement", "expected"),
    [
        # height loss > 50% -> > 50%, whatever the involvement
        (50.0001, None, {GT50}),
        (80.0, 10.0, {GT50}),
        (100.0, 90.0, {GT50}),
        # 0 < loss <= 50% -> < 50%
        (50.0, None, {LT50}),
        (0.0001, None, {LT50}),
        (50.0, 90.0, {LT50}),
        (20.0, 0.0, {LT50}),
        # loss 0: involvement decides between the two "no collapse" answers
        (0.0, 50.0001, {NONE_INV}),
        (0.0, 100.0, {NONE_INV}),
        (0.0, 50.0, {NONE}),
        (0.0, 0.0, {NONE}),
        (0.0, None, {NONE_INV, NONE}),
        # no height loss finding: involvement rules out one answer only
        (None, 50.0001, {GT50, LT50, NONE_INV}),
        (None, 50.0, {GT50, LT50, NONE}),
        (None, 0.0, {GT50, LT50, NONE}),
        (None, None, EVERY_COLLAPSE),
    ],
)
def test_collapse_from_measurements_design_rule(
    height_loss: float | None, involvement: float | None, expected: set[CollapseAnswer]
) -> None:
    assert collapse_from_measurements(height_loss, involvement) == expected


@pytest.mark.parametrize(
    ("height_loss", "involvement", "expected_codes", "explanation"),
    [
        (60.0, None, ["collapse-gt-50"], "From height loss 60%."),
        (
            None,
            70.0,
            ["collapse-gt-50", "collapse-lt-50", "no-collapse-gt-50-involved"],
            "From body involvement 70%.",
        ),
        (0.0, 30.0, ["no-collapse"], "From height loss 0% and body involvement 30%."),
    ],
)
def test_collapse_component_from_measurements(
    height_loss: float | None,
    involvement: float | None,
    expected_codes: list[str],
    explanation: str,
) -> None:
    findings = []
    if height_loss is not None:
        findings.append(finding(FindingKind.HEIGHT_LOSS, height_loss, source="Observation/loss"))
    if involvement is not None:
        findings.append(
            finding(FindingKind.BODY_INVOLVEMENT, involvement, source="Observation/inv")
        )
    collapse = assess(VertebralLevel.T7, *findings).sins.component(SinsComponent.COLLAPSE)
    assert [a.value for a in collapse.allows] == expected_codes
    assert collapse.explanation == explanation
    assert collapse.known
    assert set(collapse.sources) == {f.source for f in findings}


def test_latest_measurement_wins() -> None:
    collapse = assess(
        VertebralLevel.T7,
        finding(FindingKind.HEIGHT_LOSS, 60.0, 5),
        finding(FindingKind.HEIGHT_LOSS, 10.0, 9),
        finding(FindingKind.HEIGHT_LOSS, 0.0, 1),
    ).sins.component(SinsComponent.COLLAPSE)
    assert collapse.answer is LT50


def test_stated_collapse_and_a_disagreeing_measurement_are_both_possible() -> None:
    # DOMAIN.md 2 (v2): v1 let the stated answer win (a hidden consultation: stated 4, measured
    # 7); now the component allows both and is marked discordant.
    sins = assess(
        VertebralLevel.T7,
        finding(FindingKind.COLLAPSE, CollapseAnswer.NONE, 1, source="Observation/stated"),
        finding(FindingKind.HEIGHT_LOSS, 70.0, 2, source="Observation/height"),
    ).sins
    collapse = sins.component(SinsComponent.COLLAPSE)
    assert collapse.answer is None
    assert set(collapse.allows) == {NONE, GT50}
    assert (collapse.low, collapse.high) == (0, 3)
    assert collapse.sources == ("Observation/stated", "Observation/height")
    sentence = (
        "Discordant collapse: stated as no-collapse, but the measurements (height loss 70%) "
        "indicate collapse-gt-50; both remain possible."
    )
    assert collapse.discordance == sentence
    assert sins.notes == (sentence,)
    assert sins.discordances == (sentence,)
    assert sentence in sins.rationale()


def test_stated_collapse_agreeing_with_measurements_has_no_note() -> None:
    sins = assess(
        VertebralLevel.T7,
        finding(FindingKind.COLLAPSE, CollapseAnswer.LT_50),
        finding(FindingKind.HEIGHT_LOSS, 30.0),
        finding(FindingKind.BODY_INVOLVEMENT, 80.0),
    ).sins
    assert sins.component(SinsComponent.COLLAPSE).answer is LT50
    assert sins.notes == ()


LEFT, RIGHT = Side.LEFT, Side.RIGHT


@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        ([(0, {LEFT})], "unilateral"),
        ([(0, {RIGHT})], "unilateral"),
        ([(0, {LEFT, RIGHT})], "bilateral"),
        ([(0, {LEFT}), (1, {RIGHT})], "bilateral"),
        ([(0, {RIGHT}), (1, {LEFT}), (2, {RIGHT})], "bilateral"),
        ([(0, {LEFT}), (1, {LEFT})], "unilateral"),
        ([(0, set())], "no-posterolateral"),
        # a later explicit none supersedes every side reported before it
        ([(0, {LEFT}), (1, {RIGHT}), (2, set())], "no-posterolateral"),
        ([(0, {LEFT, RIGHT}), (1, set())], "no-posterolateral"),
        # sides reported after the none count again
        ([(0, set()), (1, {LEFT})], "unilateral"),
        ([(0, {LEFT}), (1, set()), (2, {RIGHT})], "unilateral"),
        ([(0, {LEFT}), (1, set()), (2, {RIGHT}), (3, {LEFT})], "bilateral"),
        # order is by clinical time, not by arrival
        ([(2, set()), (0, {LEFT}), (1, {RIGHT})], "no-posterolateral"),
        ([(1, set()), (2, {LEFT}), (0, {RIGHT})], "unilateral"),
    ],
)
def test_posterolateral_from_sides(findings: list[tuple[int, set[Side]]], expected: str) -> None:
    inputs = [_sides(*sides, minute=minute) for minute, sides in findings]
    component = assess(VertebralLevel.T7, *inputs).sins.component(SinsComponent.POSTEROLATERAL)
    assert component.answer is not None
    assert component.answer.value == expected
    assert component.known


def test_posterolateral_explanation_and_sources() -> None:
    component = assess(
        VertebralLevel.T7,
        _sides(RIGHT, minute=0, source="a"),
        _sides(minute=1, source="b"),
        _sides(LEFT, minute=2, source="c"),
    ).sins.component(SinsComponent.POSTEROLATERAL)
    assert component.explanation == "Posterior elements involved: left."
    assert component.sources == ("b", "c")
    none_only = assess(
        VertebralLevel.T7,
        _sides(),
    ).sins.component(SinsComponent.POSTEROLATERAL)
    assert none_only.explanation == "Posterior elements involved: no side."
    both = assess(
        VertebralLevel.T7,
        _sides(RIGHT, LEFT),
    ).sins.component(SinsComponent.POSTEROLATERAL)
    assert both.explanation == "Posterior elements involved: left and right."


def test_stated_posterolateral_and_disagreeing_sides_are_both_possible() -> None:
    sins = assess(
        VertebralLevel.T7,
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer.UNILATERAL, 0),
        _sides(LEFT, RIGHT, minute=5),
    ).sins
    component = sins.component(SinsComponent.POSTEROLATERAL)
    assert component.answer is None
    assert set(component.allows) == {
        PosterolateralAnswer.UNILATERAL,
        PosterolateralAnswer.BILATERAL,
    }
    sentence = (
        "Discordant posterolateral involvement: stated as unilateral, but the posterior-element "
        "findings (left and right) indicate bilateral; both remain possible."
    )
    assert component.discordance == sentence
    assert sins.notes == (sentence,)


def test_stated_posterolateral_agreeing_with_sides_has_no_note() -> None:
    sins = assess(
        VertebralLevel.T7,
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer.NONE),
        _sides(),
    ).sins
    assert sins.component(SinsComponent.POSTEROLATERAL).answer is PosterolateralAnswer.NONE
    assert sins.notes == ()


def test_level_specific_pain_beats_later_patient_wide_pain() -> None:
    pain = assess(
        VertebralLevel.T7,
        finding(FindingKind.PAIN, PainAnswer.PAIN_FREE, 0),
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL, 60, patient_wide=True),
    ).sins.component(SinsComponent.PAIN)
    assert pain.answer is PainAnswer.PAIN_FREE
    assert "patient" not in pain.explanation


def test_patient_wide_pain_applies_and_says_so() -> None:
    pain = assess(
        VertebralLevel.T7,
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL, 0, patient_wide=True),
        finding(FindingKind.PAIN, PainAnswer.PAIN_FREE, 5, patient_wide=True),
    ).sins.component(SinsComponent.PAIN)
    assert pain.answer is PainAnswer.PAIN_FREE
    # DOMAIN.md 2 (v2): a patient with one lesion level: the report applies as stated, and the
    # explanation says where it came from.
    assert pain.explanation == (
        "Pain reported for the patient (pain-free), who has one lesion level: taken as the pain "
        "of this lesion."
    )
    assert pain.patient_level


def test_latest_level_specific_pain_wins_whatever_the_arrival_order() -> None:
    pain = assess(
        VertebralLevel.T7,
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL, 10),
        finding(FindingKind.PAIN, PainAnswer.OCCASIONAL_NON_MECHANICAL, 3),
    ).sins.component(SinsComponent.PAIN)
    assert pain.answer is PainAnswer.MECHANICAL
    assert pain.explanation == "Stated in the findings."


@pytest.mark.parametrize("component", [c for c in SinsComponent if c is not SinsComponent.LOCATION])
def test_component_without_finding_allows_every_answer(component: SinsComponent) -> None:
    result = assess(VertebralLevel.T7).sins.component(component)
    assert [a.value for a in result.allows] == list(DOC_POINTS[component.value])
    assert result.answer is None
    assert result.open
    assert not result.known
    assert result.high == max(DOC_POINTS[component.value].values())
    assert result.explanation == "No finding; every answer remains."


def test_no_findings_gives_the_full_range_and_no_category() -> None:
    sins = assess(VertebralLevel.T7).sins
    # semi-rigid 1 + pain 0-3 + lesion 0-2 + alignment 0-4 + collapse 0-3 + posterolateral 0-3
    assert (sins.low, sins.high) == (1, 16)
    assert sins.total is None
    assert sins.category is None
    assert not sins.determined
    assert sins.possible_categories == set(SinsCategory)
    assert sins.crosses_consultation_threshold
    assert not sins.surgical_consultation
    assert sins.deciding_components == tuple(c for c in SinsComponent if c.value != "location")


def _complete(**answers: FindingValue) -> list[Finding]:
    """A finding stating every component but location; unnamed ones score 0."""
    defaults: dict[str, FindingValue] = {
        "pain": PainAnswer.PAIN_FREE,
        "bone-lesion": LesionAnswer.BLASTIC,
        "alignment": AlignmentAnswer.NORMAL,
        "collapse": CollapseAnswer.NONE,
        "posterolateral": PosterolateralAnswer.NONE,
    }
    defaults.update({k.replace("_", "-"): v for k, v in answers.items()})
    return [finding(STATING_KIND[c], v) for c, v in defaults.items()]


def test_complete_findings_give_a_total_rationale_and_no_missing_sentence() -> None:
    sins = assess(
        VertebralLevel.L1,
        *_complete(pain=PainAnswer.MECHANICAL, bone_lesion=LesionAnswer.LYTIC),
    ).sins
    assert sins.determined
    assert sins.total == 3 + 3 + 2
    assert sins.possible_totals == {8}
    assert sins.category is SinsCategory.POTENTIALLY_UNSTABLE
    assert sins.surgical_consultation
    assert not sins.crosses_consultation_threshold
    assert sins.missing_sentence() is None
    assert sins.deciding_components == ()
    assert sins.rationale() == (
        "L1: SINS 8, potentially unstable. "
        "Location: junctional (O-C2, C7-T2, T11-L1, L5-S1) (3). From the level L1. "
        "Pain: mechanical pain (3). Stated in the findings. "
        "Bone lesion: lytic (2). Reported as lytic (lytic). "
        "Radiographic spinal alignment: normal alignment (0). Stated in the findings. "
        "Vertebral body collapse: none of the above (0). Stated in the findings. "
        "Posterolateral involvement of spinal elements: none of the above (0). "
        "Stated in the findings."
    )


def test_open_component_sentence_and_missing_sentence_across_the_threshold() -> None:
    sins = assess(
        VertebralLevel.T7,
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL),
        finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.POSTEROLATERAL, PosterolateralAnswer.NONE),
        finding(FindingKind.BODY_INVOLVEMENT, 30.0),
    ).sins
    # semi-rigid 1 + pain 3 + blastic 0 + normal 0 + collapse {3, 2, 0} + none 0
    assert sins.possible_totals == {4, 6, 7}
    assert (sins.low, sins.high, sins.total) == (4, 7, None)
    assert sins.category is None
    assert sins.crosses_consultation_threshold
    assert not sins.surgical_consultation
    assert sins.deciding_components == (SinsComponent.COLLAPSE,)
    assert sins.missing_sentence() == (
        "SINS 4-7 spans the surgical-consultation threshold (7); "
        "findings on vertebral body collapse would decide it."
    )
    assert sins.component(SinsComponent.COLLAPSE).sentence() == (
        "Vertebral body collapse: open, 0-3 points; one of collapse > 50% (3) / "
        "collapse < 50% (2) / none of the above (0). From body involvement 30%."
    )
    assert sins.rationale().startswith(
        "T7: SINS 4-7 (incomplete findings), category open: stable or potentially unstable. "
    )


def test_open_range_inside_one_category_determines_the_category() -> None:
    sins = assess(
        VertebralLevel.S3,
        finding(FindingKind.PAIN, PainAnswer.PAIN_FREE),
        finding(FindingKind.APPEARANCE, LesionAnswer.BLASTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        finding(FindingKind.COLLAPSE, CollapseAnswer.NONE),
    ).sins
    # rigid 0 + 0 + 0 + 0 + 0 + posterolateral {3, 1, 0}
    assert sins.possible_totals == {0, 1, 3}
    assert sins.total is None
    assert sins.category is SinsCategory.STABLE
    assert not sins.crosses_consultation_threshold
    assert sins.missing_sentence() is None
    assert sins.rationale().startswith("S3: SINS 0-3 (incomplete findings), stable. ")


def test_range_from_seven_up_recommends_consultation_without_total() -> None:
    sins = assess(
        VertebralLevel.L1,
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL),
        finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC),
    ).sins
    assert sins.low == 3 + 3 + 2
    assert sins.surgical_consultation
    assert not sins.crosses_consultation_threshold
    assert sins.total is None
