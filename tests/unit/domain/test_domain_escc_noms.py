"""ESCC grades (DOMAIN.md 6) and the NOMS inputs (DOMAIN.md 7): one test per table row, and laws.

Expected values are written from DOMAIN.md, never read from the code's own tables.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from domain_test_builders import assess, finding, level_findings
from hypothesis import given
from hypothesis import strategies as st

from fhir_app.domain.assessment import summarise
from fhir_app.domain.escc import (
    ESCC_SCALE,
    EsccGrade,
    EsccGroup,
    escc_rank,
    escc_row,
    grade_words,
    highest_grade,
)
from fhir_app.domain.findings import Finding, FindingKind, LevelFindings
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.noms import (
    RADIOSENSITIVITY,
    Radiosensitivity,
    level_grade,
    myelopathy_of,
    noms_inputs,
    radiosensitivity_of,
)
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    LesionAnswer,
    PainAnswer,
)

T5, T7, L1 = VertebralLevel.T5, VertebralLevel.T7, VertebralLevel.L1

# DOMAIN.md 6, the ESCC scale: grade, meaning, group.
SCALE = [
    ("0", "bone-only disease", "low grade"),
    ("1a", "epidural impingement, no deformation of the thecal sac", "low grade"),
    ("1b", "deformation of the thecal sac, no spinal cord abutment", "low grade"),
    ("1c", "deformation of the thecal sac, spinal cord abutment, no compression", "low grade"),
    ("2", "spinal cord compression, CSF visible around the cord", "high grade"),
    ("3", "spinal cord compression, no CSF visible around the cord", "high grade"),
]
GROUPS = {"low grade": EsccGroup.LOW, "high grade": EsccGroup.HIGH}

# DOMAIN.md 7, the O input: every code of the primary-tumor CodeSystem but unknown-primary.
SENSITIVE = "radiosensitive"
RESISTANT = "radioresistant"
BREAST_PROSTATE = "intermediate or sensitive"
NOT_CLASSIFIED = "not classified"
TABLE_7 = [
    ("lymphoma-hodgkin", SENSITIVE),
    ("lymphoma-non-hodgkin", SENSITIVE),
    ("testis-seminoma", SENSITIVE),
    ("renal-cell", RESISTANT),
    ("thyroid", RESISTANT),
    ("melanoma", RESISTANT),
    ("gi-adenocarcinoma", RESISTANT),
    ("hepatocellular", RESISTANT),
    ("lung-non-small-cell", RESISTANT),
    ("breast", BREAST_PROSTATE),
    ("prostate", BREAST_PROSTATE),
    ("bladder-urothelial", NOT_CLASSIFIED),
    ("carcinoid", NOT_CLASSIFIED),
    ("cervix", NOT_CLASSIFIED),
    ("gi-mucinous-adenocarcinoma", NOT_CLASSIFIED),
    ("lung-small-cell", NOT_CLASSIFIED),
    ("medulloblastoma", NOT_CLASSIFIED),
    ("neuroblastoma", NOT_CLASSIFIED),
    ("ovary", NOT_CLASSIFIED),
    ("pancreas", NOT_CLASSIFIED),
    ("phaeochromocytoma", NOT_CLASSIFIED),
    ("squamous-cell", NOT_CLASSIFIED),
]
CLASS_CODES = {
    SENSITIVE: "radiosensitive",
    RESISTANT: "radioresistant",
    BREAST_PROSTATE: "intermediate-or-sensitive",
    NOT_CLASSIFIED: "not-classified",
}


def escc(grade: str, minute: int = 0, **kw: object) -> Finding:
    return finding(FindingKind.ESCC, EsccGrade(grade), minute, **kw)  # type: ignore[arg-type]


# --- the scale, one test per row --------------------------------------------------------------


@pytest.mark.parametrize(("grade", "meaning", "group"), SCALE)
def test_escc_grade_row(grade: str, meaning: str, group: str) -> None:
    row = escc_row(EsccGrade(grade))
    assert row.meaning == meaning
    assert row.group is GROUPS[group]
    assert escc_rank(EsccGrade(grade)) == [g for g, _, _ in SCALE].index(grade)
    assert grade_words(EsccGrade(grade)) == f"ESCC grade {grade} ({group}: {meaning})"
    # A level with this grade says it, with its group, in the conclusion.
    assessment = assess(L1, escc(grade))
    assert assessment.escc is EsccGrade(grade)
    assert assessment.escc_words() == f"ESCC grade {grade} ({group})"
    assert f", ESCC grade {grade} ({group})" in assessment.summary_line()


def test_the_scale_is_the_six_grades_in_order() -> None:
    assert [row.grade.value for row in ESCC_SCALE] == [g for g, _, _ in SCALE]
    assert [g.value for g in EsccGrade] == [g for g, _, _ in SCALE]


# --- the radiosensitivity table, one test per row ---------------------------------------------


@pytest.mark.parametrize(("primary", "words"), TABLE_7)
def test_radiosensitivity_row(primary: str, words: str) -> None:
    row = radiosensitivity_of(primary)
    assert row.primary == primary
    assert row.radiosensitivity.value == CLASS_CODES[words]
    assert row.source  # every row cites its source
    if words == NOT_CLASSIFIED:
        assert "neither" in row.source
    else:
        assert "Laufer" in row.source
        assert "AO Surgery Reference" in row.source
    if primary in ("breast", "prostate"):
        # DOMAIN.md 7 wording: "usually placed as intermediate or sensitive".
        assert row.source.startswith("usually placed as intermediate or sensitive")
    inputs = noms_inputs([], None, primary, None)
    assert inputs.oncologic() == f"{primary} primary: {words}"


def test_the_table_has_one_row_per_primary_code() -> None:
    assert [row.primary for row in RADIOSENSITIVITY] == [p for p, _ in TABLE_7]


def test_a_code_outside_the_table_is_not_classified_never_guessed() -> None:
    row = radiosensitivity_of("myeloma")
    assert row.radiosensitivity is Radiosensitivity.NOT_CLASSIFIED


@pytest.mark.parametrize("primary", [None, "unknown-primary"])
def test_no_known_primary(primary: str | None) -> None:
    inputs = noms_inputs([], None, primary, None)
    assert inputs.primary is None
    assert inputs.radiosensitivity is None
    assert inputs.oncologic() == "no known primary"


# --- per-level grade and myelopathy -----------------------------------------------------------


def test_the_latest_escc_finding_wins() -> None:
    assert level_grade(level_findings(escc("3", 0), escc("1b", 5))) is EsccGrade.G1B
    assert level_grade(level_findings(escc("1b", 5), escc("3", 0))) is EsccGrade.G1B


def test_a_level_without_an_escc_finding_has_no_grade() -> None:
    assessment = assess(L1, finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC))
    assert assessment.escc is None
    assert assessment.escc_words() is None
    assert "ESCC" not in assessment.summary_line()


@pytest.mark.parametrize(
    ("stated", "expected", "words"),
    [
        ([], None, "myelopathy not reported"),
        ([(True, 0)], True, "myelopathy reported"),
        ([(False, 0)], False, "no myelopathy"),
        ([(True, 0), (False, 5)], False, "no myelopathy"),
        ([(False, 5), (True, 0)], False, "no myelopathy"),
    ],
)
def test_myelopathy_is_the_latest_finding(
    stated: list[tuple[bool, int]], expected: bool | None, words: str
) -> None:
    findings = [
        finding(FindingKind.MYELOPATHY, value, minute, patient_wide=True)
        for value, minute in stated
    ]
    findings.append(finding(FindingKind.PAIN, PainAnswer.MECHANICAL, patient_wide=True))
    assert myelopathy_of(findings) is expected
    assert noms_inputs([], expected, None, None).myelopathy_words() == words


# --- the NOMS inputs of a patient -------------------------------------------------------------


def _unstable() -> list[Finding]:
    return [
        finding(FindingKind.PAIN, PainAnswer.MECHANICAL),
        finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        finding(FindingKind.ALIGNMENT, AlignmentAnswer.SUBLUXATION_TRANSLATION),
        finding(FindingKind.HEIGHT_LOSS, 70.0),
    ]


def test_noms_inputs_of_a_high_grade_radioresistant_patient() -> None:
    summary = summarise(
        {
            T7: level_findings(*_unstable(), escc("3"), primary="renal-cell"),
            L1: level_findings(escc("1c"), primary="renal-cell"),
        },
        myelopathy=True,
    )
    noms = summary.noms
    assert summary.highest_escc is EsccGrade.G3
    assert noms.escc_group is EsccGroup.HIGH
    assert noms.escc_levels == (T7,)
    assert noms.neurologic() == "highest ESCC grade 3 (high grade) at T7; myelopathy reported"
    assert noms.oncologic() == "renal-cell primary: radioresistant"
    # DESIGN: the lowest possible total ranks first, so T7 (certainly unstable) is the M, and
    # L1 (3-18, only an ESCC finding) is named as a level that could be higher.
    t7 = summary.levels[0].sins
    assert summary.levels[0].level is T7
    assert noms.mechanical_words() == (
        f"most unstable level by lowest possible SINS, then highest possible: T7 SINS "
        f"{t7.low}-{t7.high} (unstable): mechanical instability to be considered; L1 could be "
        "higher: SINS 3-18 (category open: stable or potentially unstable or unstable); "
        "the patient's highest SINS is unstable either way"
    )
    assert "Surgical consultation recommended: SINS 7 or more at T7." in summary.conclusion()
    assert noms.systemic().startswith("not assessed")
    sentence = noms.sentence()
    assert sentence.startswith("NOMS inputs: N highest ESCC grade 3 (high grade) at T7")
    assert sentence.endswith("; S not assessed.")
    assert summary.conclusion().endswith(sentence)
    # Never a treatment: the inputs name no therapy and recommend nothing.
    for word in ("recommend", "radiotherapy", "surgery", "radiosurgery", "SBRT"):
        assert word not in sentence


def test_noms_inputs_name_every_level_of_the_highest_grade_and_an_open_range() -> None:
    summary = summarise(
        {
            T5: level_findings(escc("2"), primary="breast"),
            L1: level_findings(escc("2"), primary="breast"),
        }
    )
    noms = summary.noms
    assert noms.escc_levels == (T5, L1)
    assert (
        noms.neurologic() == "highest ESCC grade 2 (high grade) at T5, L1; myelopathy not reported"
    )
    assert noms.oncologic() == "breast primary: intermediate or sensitive"
    assert noms.mechanical is not None
    assert "SINS " in noms.mechanical_words()
    # A range while findings are missing.
    assert "-" in noms.mechanical_words().split(": ")[1].split(" ")[2]


def test_noms_inputs_without_a_level_say_so() -> None:
    noms = summarise({}).noms
    assert noms.mechanical is None
    assert noms.mechanical_words() == "no lesion level"
    assert (
        noms.neurologic() == "ESCC grade unknown (no escc-grade finding); myelopathy not reported"
    )
    assert noms.escc_group is None


# --- laws -------------------------------------------------------------------------------------

BASE = datetime(2024, 3, 1, tzinfo=UTC)
GRADES = st.sampled_from(EsccGrade)
LEVEL_POOL = st.sampled_from([T5, T7, L1, VertebralLevel.C4, VertebralLevel.S1])


@st.composite
def patients(draw: st.DrawFn) -> dict[VertebralLevel, LevelFindings]:
    """Levels with 0-3 ESCC findings each, beside a lesion finding, at arbitrary times."""
    levels = draw(st.lists(LEVEL_POOL, min_size=1, max_size=5, unique=True))
    out: dict[VertebralLevel, LevelFindings] = {}
    for index, level in enumerate(levels):
        grades = draw(st.lists(st.tuples(GRADES, st.integers(0, 30)), max_size=3))
        findings = [
            Finding(
                FindingKind.ESCC,
                g,
                BASE + timedelta(minutes=m),
                f"Observation/e{index}-{i}",
            )
            for i, (g, m) in enumerate(grades)
        ]
        findings.append(
            Finding(FindingKind.APPEARANCE, LesionAnswer.LYTIC, BASE, f"Observation/a{index}")
        )
        out[level] = LevelFindings(tuple(findings))
    return out


@given(patients())
def test_the_highest_grade_is_the_maximum_over_levels_in_the_scale_order(
    patient: dict[VertebralLevel, LevelFindings],
) -> None:
    summary = summarise(patient)
    grades = [a.escc for a in summary.levels if a.escc is not None]
    order = [g for g, _, _ in SCALE]
    if not grades:
        assert summary.highest_escc is None
        return
    expected = max(grades, key=lambda g: order.index(g.value))
    assert summary.highest_escc is expected
    assert all(order.index(g.value) <= order.index(expected.value) for g in grades)
    assert set(summary.noms.escc_levels) == {a.level for a in summary.levels if a.escc is expected}


@given(patients())
def test_a_level_without_an_escc_finding_never_has_a_grade(
    patient: dict[VertebralLevel, LevelFindings],
) -> None:
    for assessment in summarise(patient).levels:
        stated = [f for f in assessment.findings.findings if f.kind is FindingKind.ESCC]
        if not stated:
            assert assessment.escc is None
        else:
            # The latest grade; several at the same latest time give the highest (conservative).
            last = max(f.observed_at for f in stated)
            tied = {f.value for f in stated if f.observed_at == last}
            assert assessment.escc is max(tied, key=list(EsccGrade).index)  # type: ignore[arg-type]
            assert (assessment.escc_discordance is not None) is (len(tied) > 1)


@given(st.lists(st.one_of(st.none(), GRADES), max_size=8))
def test_highest_grade_ignores_unknown_and_never_assumes(grades: list[EsccGrade | None]) -> None:
    highest = highest_grade(grades)
    known = [g for g in grades if g is not None]
    assert (highest is None) == (not known)
    if highest is not None:
        assert highest in known
        assert all(escc_rank(g) <= escc_rank(highest) for g in known)
