"""Classification: likely primaries, differential, atypical primaries and the bone-island flag."""

from __future__ import annotations

import pytest
from domain_test_builders import (
    DOC_BONE_ISLAND_MAX_HU,
    DOC_BONE_ISLAND_MEAN_HU,
    DOC_DIFFERENTIAL,
    DOC_PRIMARIES,
    finding,
    level_findings,
)

from fhir_app.domain.appearance import AppearanceSettings, assess_appearance
from fhir_app.domain.classification import (
    TREATED_NOTE,
    UNKNOWN_PRIMARY,
    Classification,
    atypical_sentence,
    classify,
)
from fhir_app.domain.findings import CtAttenuation, Finding, FindingKind, T2Signal
from fhir_app.domain.sins_answers import LesionAnswer

LYTIC, MIXED, BLASTIC = LesionAnswer.LYTIC, LesionAnswer.MIXED, LesionAnswer.BLASTIC
BONE_ISLAND = "bone-island"
AGE_UNKNOWN_BLASTIC = "medulloblastoma, neuroblastoma: childhood tumour, age unknown."


def _classify(
    *findings: Finding, primary: str | None = None, settings: AppearanceSettings | None = None
) -> Classification:
    inputs = level_findings(*findings, primary=primary)
    return classify(inputs, assess_appearance(inputs, settings), settings)


def _read(appearance: LesionAnswer) -> Finding:
    return finding(FindingKind.APPEARANCE, appearance, source="Observation/reading")


def _ct(mean: float | None, peak: float | None = None) -> Finding:
    return finding(FindingKind.CT_ATTENUATION, CtAttenuation(mean, peak))


def _treated() -> Finding:
    return finding(FindingKind.TREATED, True)


@pytest.mark.parametrize(("appearance", "expected"), sorted(DOC_PRIMARIES.items()))
def test_likely_primaries_in_documented_order(appearance: str, expected: list[str]) -> None:
    result = _classify(_read(LesionAnswer(appearance)))
    assert list(result.likely_primaries) == expected


@pytest.mark.parametrize(("appearance", "expected"), sorted(DOC_DIFFERENTIAL.items()))
def test_differential_in_documented_order(appearance: str, expected: list[str]) -> None:
    result = _classify(_read(LesionAnswer(appearance)))
    assert list(result.differential) == expected


def test_unknown_primary_is_not_a_likely_primary() -> None:
    assert UNKNOWN_PRIMARY == "unknown-primary"
    assert all(UNKNOWN_PRIMARY not in row for row in DOC_PRIMARIES.values())
    for appearance in LesionAnswer:
        assert UNKNOWN_PRIMARY not in _classify(_read(appearance)).likely_primaries


@pytest.mark.parametrize(
    "evidence",
    [[], [finding(FindingKind.MRI_T2, T2Signal.HYPER)], [_ct(200.0)]],
    ids=["no evidence", "lytic or mixed", "CT between thresholds"],
)
def test_open_appearance_lists_nothing_and_says_why(evidence: list[Finding]) -> None:
    result = _classify(*evidence)
    assert result.likely_primaries == ()
    assert result.differential == ()
    assert result.notes[0].startswith("Appearance open (")
    assert result.notes[0].endswith(
        "): likely primaries and the differential by appearance are not narrowed."
    )


def test_open_appearance_note_names_the_candidates() -> None:
    result = _classify(finding(FindingKind.MRI_T2, T2Signal.HYPO))
    assert result.notes[0] == (
        "Appearance open (mixed or blastic): likely primaries and the differential by appearance "
        "are not narrowed."
    )
    # MRI narrowed the appearance (to two): that inference is labelled too (DOMAIN.md 3, v2).
    assert result.notes[1].startswith("Appearance inferred from MRI signal alone")
    assert len(result.notes) == 2


# DOMAIN.md section 4: renal-cell or thyroid with a blastic or mixed lesion ("typically purely
# lytic", for thyroid: differentiated vs medullary, 4a); prostate with a lytic lesion ("typically
# sclerotic"). v2 (4a): any known primary outside the appearance's row is atypical.
THYROID = (
    "differentiated thyroid carcinoma is typically purely lytic; medullary thyroid carcinoma may "
    "be sclerotic"
)
NOT_IN_ROW = "not among the typical primaries of this appearance"
ATYPICAL_ROWS = [
    ("renal-cell", "lytic", None),
    ("renal-cell", "mixed", "typically purely lytic"),
    ("renal-cell", "blastic", "typically purely lytic"),
    ("thyroid", "lytic", None),
    ("thyroid", "mixed", THYROID),
    ("thyroid", "blastic", THYROID),
    ("prostate", "lytic", "typically sclerotic"),
    ("prostate", "mixed", None),
    ("prostate", "blastic", None),
    ("breast", "lytic", None),
    ("breast", "blastic", None),
    ("lung-non-small-cell", "blastic", NOT_IN_ROW),
    ("hepatocellular", "mixed", NOT_IN_ROW),
    ("unknown-primary", "mixed", None),
]


@pytest.mark.parametrize(("primary", "appearance", "reason"), ATYPICAL_ROWS)
def test_atypical_primary_pairs(primary: str, appearance: str, reason: str | None) -> None:
    result = _classify(_read(LesionAnswer(appearance)), primary=primary)
    if reason is None:
        assert result.atypical_primary is None
        assert not any("typical for" in note for note in result.notes)
    else:
        expected = (
            f"Atypical for the known {primary} primary: a {appearance} lesion ({reason}); "
            "the likely primaries of the appearance are still listed."
        )
        assert result.atypical_primary == expected
        assert result.primary_context == expected
        assert expected in result.notes
        # The row is still listed, the known primary is not put into it.
        assert primary not in result.likely_primaries
        assert result.likely_primaries[0] == DOC_PRIMARIES[appearance][0]


def test_no_known_primary_is_never_atypical() -> None:
    assert _classify(_read(BLASTIC)).atypical_primary is None


def test_atypical_when_every_possible_appearance_is_atypical() -> None:
    """An open appearance is flagged only when no remaining candidate is typical."""
    mixed_or_blastic = _classify(finding(FindingKind.MRI_T2, T2Signal.HYPO), primary="renal-cell")
    assert mixed_or_blastic.atypical_primary == (
        "Atypical for the known renal-cell primary: a mixed or blastic lesion "
        "(typically purely lytic); the likely primaries of the appearance are still listed."
    )
    lytic_or_mixed = _classify(finding(FindingKind.MRI_T2, T2Signal.HYPER), primary="renal-cell")
    assert lytic_or_mixed.atypical_primary is None
    assert atypical_sentence("prostate", frozenset(LesionAnswer)) is None


BONE_ISLAND_SENTENCE = (
    "Dense sclerotic lesion ({reasons}) favours a bone island (enostosis) over an osteoblastic "
    "metastasis (Ulano et al., AJR 2016: sensitivity 95%, specificity 96%)."
)


@pytest.mark.parametrize(
    ("mean", "peak", "reasons"),
    [
        (DOC_BONE_ISLAND_MEAN_HU, None, None),  # 885 HU is not above 885
        (885.1, None, "mean 885.1 HU > 885 HU"),
        (500.0, DOC_BONE_ISLAND_MAX_HU, None),  # 1060 HU is not above 1060
        (500.0, 1060.1, "maximum 1060.1 HU > 1060 HU"),
        (885.0, 1060.0, None),
        (950.0, 1400.0, "mean 950 HU > 885 HU, maximum 1400 HU > 1060 HU"),
        # Only a maximum: the CT heuristic reads the mean, so the lesion is not shown sclerotic.
        (None, 1100.0, None),
        (None, None, None),
    ],
)
def test_bone_island_flag_thresholds(
    mean: float | None, peak: float | None, reasons: str | None
) -> None:
    result = _classify(_ct(mean, peak))
    if reasons is None:
        assert result.bone_island is None
        assert not any("bone island" in note for note in result.notes)
    else:
        expected = BONE_ISLAND_SENTENCE.format(reasons=reasons)
        assert result.bone_island == expected
        assert expected in result.notes


def test_bone_island_thresholds_are_settings() -> None:
    settings = AppearanceSettings(bone_island_mean_hu=700.0, bone_island_max_hu=2000.0)
    assert _classify(_ct(750.0), settings=settings).bone_island is not None
    assert _classify(_ct(750.0)).bone_island is None


@pytest.mark.parametrize(("mean", "peak"), [(1200.0, None), (500.0, 1500.0), (None, 1500.0)])
def test_treated_lesion_gets_no_bone_island_flag(mean: float | None, peak: float | None) -> None:
    result = _classify(_ct(mean, peak), _treated())
    assert result.bone_island is None
    assert result.treated
    assert result.notes[-1] == TREATED_NOTE


def test_no_ct_no_bone_island_flag() -> None:
    assert _classify(_read(BLASTIC)).bone_island is None


def test_bone_island_leads_the_blastic_differential() -> None:
    result = _classify(_ct(1000.0))
    assert result.appearance.determined is BLASTIC
    assert result.bone_island is not None
    assert result.differential[0] == BONE_ISLAND
    assert sorted(result.differential) == sorted(DOC_DIFFERENTIAL["blastic"])
    assert len(result.differential) == len(DOC_DIFFERENTIAL["blastic"])


def test_dense_lesion_read_as_mixed_keeps_the_mixed_differential() -> None:
    result = _classify(_read(MIXED), _ct(None, 1500.0))
    assert BONE_ISLAND not in result.differential
    assert list(result.differential) == DOC_DIFFERENTIAL["mixed"]


def test_lesion_that_cannot_be_sclerotic_gets_no_bone_island_flag() -> None:
    """The rule is about sclerotic lesions (DOMAIN.md 3); a lytic reading rules that out."""
    assert _classify(_read(LYTIC), _ct(None, 1500.0)).bone_island is None
    lytic_or_mixed = finding(FindingKind.MRI_T2, T2Signal.HYPER)
    assert _classify(lytic_or_mixed, _ct(None, 1500.0)).bone_island is None


def test_treated_lesion_note_and_flag() -> None:
    result = _classify(_read(BLASTIC), _treated())
    assert result.treated
    # Without a Patient the age is unknown: the childhood tumours are marked (DOMAIN.md 4a).
    assert result.notes == (AGE_UNKNOWN_BLASTIC, TREATED_NOTE)
    assert "new bone" in TREATED_NOTE
    assert not _classify(_read(BLASTIC), finding(FindingKind.TREATED, False)).treated


def test_notes_in_order_discordance_appearance_atypical_bone_island_treated() -> None:
    result = _classify(
        _read(BLASTIC),
        finding(FindingKind.MRI_T2, T2Signal.ISO),
        _ct(1000.0),
        _treated(),
        primary="renal-cell",
    )
    assert len(result.notes) == 5
    assert result.notes[0].startswith("Discordant evidence: reading (reported as blastic)")
    assert result.notes[1].startswith("CT attenuation not used: treated lesion")
    assert result.notes[2].startswith("Atypical for the known renal-cell primary: a blastic")
    assert result.notes[3] == AGE_UNKNOWN_BLASTIC
    assert result.notes[4] == TREATED_NOTE

    untreated = _classify(_read(BLASTIC), _ct(1000.0), primary="renal-cell")
    assert untreated.notes == (
        untreated.atypical_primary,
        untreated.bone_island,
        AGE_UNKNOWN_BLASTIC,
    )
    assert untreated.bone_island is not None
