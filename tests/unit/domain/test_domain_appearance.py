"""Appearance from imaging evidence: MRI tables, CT heuristic, precedence and discordance."""

from __future__ import annotations

import itertools

import pytest
from domain_test_builders import (
    ALL_APPEARANCE_CODES,
    DOC_CT_BLASTIC_MIN_HU,
    DOC_CT_LYTIC_MAX_HU,
    DOC_T1_ALLOWS,
    DOC_T2_ALLOWS,
    finding,
    level_findings,
)

from fhir_app.domain.appearance import (
    MRI_T1_ALLOWS,
    MRI_T2_ALLOWS,
    AppearanceResult,
    AppearanceSettings,
    EvidenceSource,
    assess_appearance,
    ordered,
    words,
)
from fhir_app.domain.findings import CtAttenuation, Finding, FindingKind, T1Signal, T2Signal
from fhir_app.domain.sins_answers import LesionAnswer

LYTIC, MIXED, BLASTIC = LesionAnswer.LYTIC, LesionAnswer.MIXED, LesionAnswer.BLASTIC


def _codes(appearances: frozenset[LesionAnswer]) -> set[str]:
    return {a.value for a in appearances}


def _appearance(*findings: Finding) -> AppearanceResult:
    return assess_appearance(level_findings(*findings))


def _ct(mean: float | None, minute: int = 0, peak: float | None = None) -> Finding:
    return finding(FindingKind.CT_ATTENUATION, CtAttenuation(mean, peak), minute)


def _treated(value: bool = True, minute: int = 0) -> Finding:
    return finding(FindingKind.TREATED, value, minute)


@pytest.mark.parametrize(("signal", "expected"), sorted(DOC_T1_ALLOWS.items()))
def test_t1_signal_allows_documented_appearances(signal: str, expected: frozenset[str]) -> None:
    assert _codes(MRI_T1_ALLOWS[T1Signal(signal)]) == expected
    result = _appearance(finding(FindingKind.MRI_T1, T1Signal(signal)))
    assert _codes(result.allows) == expected


@pytest.mark.parametrize(("signal", "expected"), sorted(DOC_T2_ALLOWS.items()))
def test_t2_signal_allows_documented_appearances(signal: str, expected: frozenset[str]) -> None:
    assert _codes(MRI_T2_ALLOWS[T2Signal(signal)]) == expected
    result = _appearance(finding(FindingKind.MRI_T2, T2Signal(signal)))
    assert _codes(result.allows) == expected
    assert result.decided_by is not None
    assert result.decided_by.source is EvidenceSource.MRI


def test_mri_tables_cover_every_signal() -> None:
    assert set(MRI_T1_ALLOWS) == set(T1Signal)
    assert set(MRI_T2_ALLOWS) == set(T2Signal)


# T1 and T2 narrow together (DOMAIN.md 3): the appearances both allow; none in common leaves the
# MRI open (and says why).
COMBINED = [
    ("iso", "iso", {"lytic"}),
    ("iso", "hyper", {"lytic"}),
    ("iso", "hypo", None),
    ("iso", "heterogeneous", None),
    ("hypo", "iso", {"lytic"}),
    ("hypo", "hyper", {"lytic", "mixed"}),
    ("hypo", "hypo", {"blastic", "mixed"}),
    ("hypo", "heterogeneous", {"mixed"}),
    ("hyper", "iso", {"lytic"}),
    ("hyper", "hyper", {"lytic", "mixed"}),
    ("hyper", "hypo", {"blastic", "mixed"}),
    ("hyper", "heterogeneous", {"mixed"}),
]


def test_combined_table_has_every_pair() -> None:
    assert {(t1, t2) for t1, t2, _ in COMBINED} == set(
        itertools.product(DOC_T1_ALLOWS, DOC_T2_ALLOWS)
    )


@pytest.mark.parametrize(("t1", "t2", "expected"), COMBINED)
def test_t1_and_t2_narrow_together(t1: str, t2: str, expected: set[str] | None) -> None:
    result = _appearance(
        finding(FindingKind.MRI_T1, T1Signal(t1)), finding(FindingKind.MRI_T2, T2Signal(t2))
    )
    (mri,) = result.evidence
    assert mri.source is EvidenceSource.MRI
    if expected is None:
        assert _codes(result.allows) == ALL_APPEARANCE_CODES
        assert result.decided_by is None
        assert not mri.narrows
        t2_words = "heterogeneous" if t2 == "heterogeneous" else f"{t2}intense"
        note = (
            f"MRI T1 {t1}intense and T2 {t2_words}: T1 and T2 allow no common appearance, "
            "MRI left open."
        )
        assert note in result.notes
    else:
        assert _codes(result.allows) == expected
        assert result.decided_by is mri
        # DOMAIN.md 3 (v2): an appearance from MRI signal alone is labelled as an inference.
        assert result.mri_only
        assert len(result.notes) == 1
        assert result.notes[0].startswith("Appearance inferred from MRI signal alone")
        assert "kappa 0.244" in result.notes[0]


def test_mri_reason_names_both_signals() -> None:
    result = _appearance(
        finding(FindingKind.MRI_T1, T1Signal.HYPO),
        finding(FindingKind.MRI_T2, T2Signal.HETEROGENEOUS),
    )
    assert result.decided_by is not None
    assert result.decided_by.reason == "MRI T1 hypointense, T2 heterogeneous"


def test_latest_mri_signal_wins() -> None:
    result = _appearance(
        finding(FindingKind.MRI_T2, T2Signal.HYPO, 9),
        finding(FindingKind.MRI_T2, T2Signal.ISO, 2),
    )
    assert _codes(result.allows) == {"blastic", "mixed"}


@pytest.mark.parametrize(
    ("mean", "expected"),
    [
        (-40.0, {"lytic"}),
        (DOC_CT_LYTIC_MAX_HU, {"lytic"}),  # 100 HU
        (100.1, None),
        (200.0, None),
        (299.9, None),
        (DOC_CT_BLASTIC_MIN_HU, {"blastic"}),  # 300 HU
        (1200.0, {"blastic"}),
    ],
)
def test_ct_heuristic_boundaries(mean: float, expected: set[str] | None) -> None:
    result = _appearance(_ct(mean))
    (ct,) = result.evidence
    assert ct.source is EvidenceSource.CT
    assert ct.heuristic
    if expected is None:
        assert _codes(result.allows) == ALL_APPEARANCE_CODES
        assert result.decided_by is None
        assert result.notes == (
            f"CT heuristic: mean attenuation {mean:g} HU between 100 and 300 HU.",
        )
    else:
        assert _codes(result.allows) == expected
        assert result.decided_by is ct
        assert len(result.notes) == 1
        assert result.notes[0].startswith("Appearance from a heuristic: CT heuristic: mean ")


def test_ct_heuristic_note_names_the_band() -> None:
    assert _appearance(_ct(40.0)).notes == (
        "Appearance from a heuristic: CT heuristic: mean attenuation 40 HU <= 100 HU, "
        "soft-tissue attenuation.",
    )
    assert _appearance(_ct(650.0)).notes == (
        "Appearance from a heuristic: CT heuristic: mean attenuation 650 HU >= 300 HU, hyperdense.",
    )


def test_ct_thresholds_are_settings() -> None:
    settings = AppearanceSettings(lytic_max_hu=50.0, blastic_min_hu=150.0)
    findings = level_findings(_ct(60.0))
    assert _codes(assess_appearance(findings, settings).allows) == ALL_APPEARANCE_CODES
    assert _codes(assess_appearance(level_findings(_ct(150.0)), settings).allows) == {"blastic"}
    assert _codes(assess_appearance(findings).allows) == {"lytic"}


def test_ct_without_mean_passes_to_mri() -> None:
    result = _appearance(_ct(None, peak=900.0), finding(FindingKind.MRI_T2, T2Signal.ISO))
    assert _codes(result.allows) == {"lytic"}
    assert result.decided_by is not None
    assert result.decided_by.source is EvidenceSource.MRI
    assert (
        "no mean CT attenuation (the appearance heuristic reads the mean, not the maximum)."
        in result.notes
    )
    assert result.mri_only


def test_a_reading_or_ct_decided_appearance_is_not_mri_only() -> None:
    t2 = finding(FindingKind.MRI_T2, T2Signal.ISO)
    assert not _appearance(finding(FindingKind.APPEARANCE, LYTIC), t2).mri_only
    assert not _appearance(_ct(40.0), t2).mri_only
    assert not _appearance().mri_only


def test_mean_and_maximum_from_two_findings_are_read_together() -> None:
    # DOMAIN.md 3: the method makes a CT attenuation a maximum; a feed sends mean and maximum as
    # two Observations, and the latest of each statistic counts.
    mean_old, mean_new = _ct(50.0, minute=0), _ct(640.0, minute=5)
    peak = _ct(None, minute=1, peak=1210.0)
    result = _appearance(mean_old, peak, mean_new)
    assert _codes(result.allows) == {"blastic"}
    assert "640 HU" in result.decided_by.reason  # type: ignore[union-attr]


@pytest.mark.parametrize("mean", [40.0, 200.0, 1000.0])
def test_treated_lesion_ct_is_not_used(mean: float) -> None:
    result = _appearance(_ct(mean), _treated())
    assert _codes(result.allows) == ALL_APPEARANCE_CODES
    assert result.decided_by is None
    assert result.notes == (
        "CT attenuation not used: treated lesion (new bone may form after treatment).",
    )


def test_treated_lesion_ct_passes_to_mri() -> None:
    result = _appearance(_ct(1000.0), _treated(), finding(FindingKind.MRI_T2, T2Signal.ISO))
    assert _codes(result.allows) == {"lytic"}
    assert result.decided_by is not None
    assert result.decided_by.source is EvidenceSource.MRI
    assert result.discordances == ()


def test_latest_treated_finding_decides() -> None:
    not_treated_any_more = _appearance(_ct(1000.0), _treated(True, 1), _treated(False, 2))
    assert _codes(not_treated_any_more.allows) == {"blastic"}
    treated_later = _appearance(_ct(1000.0), _treated(False, 1), _treated(True, 2))
    assert _codes(treated_later.allows) == ALL_APPEARANCE_CODES


def test_no_evidence_leaves_every_appearance() -> None:
    result = _appearance()
    assert result.allows == {LYTIC, MIXED, BLASTIC}
    assert result.decided_by is None
    assert result.evidence == ()
    assert result.discordances == ()
    assert result.determined is None


def test_reading_beats_ct_and_mri_and_reports_both_disagreements() -> None:
    result = _appearance(
        finding(FindingKind.APPEARANCE, MIXED),
        _ct(50.0),
        finding(FindingKind.MRI_T2, T2Signal.ISO),
    )
    assert result.determined is MIXED
    assert result.decided_by is not None
    assert result.decided_by.source is EvidenceSource.READING
    assert [(d.deciding.source, d.other.source) for d in result.discordances] == [
        (EvidenceSource.READING, EvidenceSource.CT),
        (EvidenceSource.READING, EvidenceSource.MRI),
    ]
    assert result.discordances[0].sentence() == (
        "Discordant evidence: reading (reported as mixed) indicates mixed, but ct "
        "(CT heuristic: mean attenuation 50 HU <= 100 HU, soft-tissue attenuation) indicates "
        "lytic; reading takes precedence."
    )
    # The heuristic did not decide, so it is not reported as the basis of the appearance.
    assert not any(n.startswith("Appearance from a heuristic") for n in result.notes)


def test_ct_beats_mri() -> None:
    result = _appearance(_ct(500.0), finding(FindingKind.MRI_T2, T2Signal.ISO))
    assert result.determined is BLASTIC
    assert result.decided_by is not None
    assert result.decided_by.source is EvidenceSource.CT
    (discordance,) = result.discordances
    assert discordance.other.source is EvidenceSource.MRI
    assert discordance.sentence() == (
        "Discordant evidence: ct (CT heuristic: mean attenuation 500 HU >= 300 HU, hyperdense) "
        "indicates blastic, but mri (MRI T2 isointense) indicates lytic; ct takes precedence."
    )


def test_open_ct_passes_to_mri_without_discordance() -> None:
    result = _appearance(_ct(200.0), finding(FindingKind.MRI_T2, T2Signal.HYPO))
    assert _codes(result.allows) == {"blastic", "mixed"}
    assert result.decided_by is not None
    assert result.decided_by.source is EvidenceSource.MRI
    assert result.discordances == ()


def test_overlapping_sources_are_not_discordant() -> None:
    result = _appearance(
        finding(FindingKind.APPEARANCE, MIXED), finding(FindingKind.MRI_T2, T2Signal.HYPER)
    )
    assert result.determined is MIXED
    assert result.discordances == ()


def test_disagreement_between_two_overruled_sources_is_reported() -> None:
    """CT and MRI disagree while the reading decides: the disagreement is still reported."""
    result = _appearance(
        finding(FindingKind.APPEARANCE, MIXED),
        _ct(40.0),
        finding(FindingKind.MRI_T2, T2Signal.HYPO),
    )
    assert result.determined is MIXED
    assert [(d.deciding.source, d.other.source) for d in result.discordances] == [
        (EvidenceSource.READING, EvidenceSource.CT),
        (EvidenceSource.CT, EvidenceSource.MRI),
    ]
    assert "but mri (MRI T2 hypointense) indicates mixed or blastic" in (
        result.discordances[1].sentence()
    )


def test_latest_reading_wins() -> None:
    result = _appearance(
        finding(FindingKind.APPEARANCE, LYTIC, 5), finding(FindingKind.APPEARANCE, BLASTIC, 1)
    )
    assert result.determined is LYTIC
    assert result.decided_by is not None
    assert result.decided_by.reason == "reported as lytic"


@pytest.mark.parametrize(
    ("enhanced", "evidence", "noted"),
    [
        (True, [], True),
        (True, [finding(FindingKind.MRI_T2, T2Signal.HYPER)], True),
        (True, [finding(FindingKind.APPEARANCE, BLASTIC)], False),
        (True, [finding(FindingKind.MRI_T2, T2Signal.HYPO)], False),
        (False, [finding(FindingKind.MRI_T2, T2Signal.HYPER)], False),
    ],
)
def test_contrast_enhancement_supports_lytic_but_narrows_nothing(
    enhanced: bool, evidence: list[Finding], noted: bool
) -> None:
    without = _appearance(*evidence)
    result = _appearance(finding(FindingKind.CONTRAST_ENHANCEMENT, enhanced), *evidence)
    assert result.allows == without.allows
    note = "Contrast enhancement present, which supports an osteolytic lesion."
    assert (note in result.notes) is noted


def test_ordered_and_words_read_lytic_mixed_blastic() -> None:
    everything = frozenset({BLASTIC, LYTIC, MIXED})
    assert ordered(everything) == [LYTIC, MIXED, BLASTIC]
    assert words(everything) == "lytic or mixed or blastic"
    assert words(frozenset({BLASTIC, MIXED})) == "mixed or blastic"
