"""The NOMS decision inputs of a patient (DOMAIN.md 7; Laufer et al., The Oncologist 2013).

NOMS (Neurologic, Oncologic, Mechanical, Systemic) is how spine-oncology teams decide between
radiotherapy, stereotactic radiosurgery and surgery. fhir-app presents the inputs it can derive
from findings and never a treatment: N is the highest ESCC grade and myelopathy, O the known
primary's radiosensitivity, M the SINS of the most unstable level, S is not assessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from fhir_app.domain.escc import (
    GROUP_WORDS,
    EsccGrade,
    EsccGroup,
    escc_rank,
    escc_row,
    highest_grade,
)
from fhir_app.domain.findings import Finding, FindingKind, LevelFindings
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins import SinsScore
from fhir_app.domain.sins_answers import (
    CATEGORY_WORDS,
    SURGICAL_CONSULTATION_MIN_TOTAL,
    SinsCategory,
    category_of,
)

LAUFER: Final = "Laufer et al., The Oncologist 2013;18:744"
AO_RADIOSENSITIVITY: Final = "AO Surgery Reference, tumour radiosensitivity classification"
AGREED: Final = f"{LAUFER}; {AO_RADIOSENSITIVITY}"
# The sentence of DOMAIN.md 7, kept as written: the sources do not agree on one class.
USUALLY_INTERMEDIATE_OR_SENSITIVE: Final = (
    f"usually placed as intermediate or sensitive ({LAUFER}; {AO_RADIOSENSITIVITY})"
)
NOT_CLASSIFIED_SOURCE: Final = f"classified by neither {LAUFER} nor the {AO_RADIOSENSITIVITY}"

UNKNOWN_PRIMARY: Final = "unknown-primary"


class Radiosensitivity(StrEnum):
    """Response to conventional external-beam radiotherapy; values are `noms` codes."""

    SENSITIVE = "radiosensitive"
    INTERMEDIATE_OR_SENSITIVE = "intermediate-or-sensitive"
    RESISTANT = "radioresistant"
    NOT_CLASSIFIED = "not-classified"


RADIOSENSITIVITY_WORDS: Final = {
    Radiosensitivity.SENSITIVE: "radiosensitive",
    Radiosensitivity.INTERMEDIATE_OR_SENSITIVE: "intermediate or sensitive",
    Radiosensitivity.RESISTANT: "radioresistant",
    Radiosensitivity.NOT_CLASSIFIED: "not classified",
}


@dataclass(frozen=True, slots=True)
class RadiosensitivityRow:
    """One primary of the `primary-tumor` CodeSystem, its class and the source of it."""

    primary: str
    radiosensitivity: Radiosensitivity
    source: str


_S, _IS, _R, _NC = (
    Radiosensitivity.SENSITIVE,
    Radiosensitivity.INTERMEDIATE_OR_SENSITIVE,
    Radiosensitivity.RESISTANT,
    Radiosensitivity.NOT_CLASSIFIED,
)

# DOMAIN.md 7: one row per primary code (`unknown-primary` is no primary and has none). Myeloma and
# sarcoma, which the sources also classify, are not codes of the CodeSystem.
RADIOSENSITIVITY: Final[tuple[RadiosensitivityRow, ...]] = (
    RadiosensitivityRow("lymphoma-hodgkin", _S, AGREED),
    RadiosensitivityRow("lymphoma-non-hodgkin", _S, AGREED),
    RadiosensitivityRow("testis-seminoma", _S, AGREED),
    RadiosensitivityRow("renal-cell", _R, AGREED),
    RadiosensitivityRow("thyroid", _R, AGREED),
    RadiosensitivityRow("melanoma", _R, AGREED),
    RadiosensitivityRow("gi-adenocarcinoma", _R, f"{AGREED} (colorectal)"),
    RadiosensitivityRow("hepatocellular", _R, AGREED),
    RadiosensitivityRow("lung-non-small-cell", _R, AGREED),
    RadiosensitivityRow("breast", _IS, USUALLY_INTERMEDIATE_OR_SENSITIVE),
    RadiosensitivityRow("prostate", _IS, USUALLY_INTERMEDIATE_OR_SENSITIVE),
    RadiosensitivityRow("bladder-urothelial", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("carcinoid", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("cervix", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("gi-mucinous-adenocarcinoma", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("lung-small-cell", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("medulloblastoma", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("neuroblastoma", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("ovary", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("pancreas", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("phaeochromocytoma", _NC, NOT_CLASSIFIED_SOURCE),
    RadiosensitivityRow("squamous-cell", _NC, NOT_CLASSIFIED_SOURCE),
)

_BY_PRIMARY: Final = {row.primary: row for row in RADIOSENSITIVITY}


def radiosensitivity_of(primary: str) -> RadiosensitivityRow:
    """The row of a primary; a code outside the table is not classified, never guessed."""
    return _BY_PRIMARY.get(primary, RadiosensitivityRow(primary, _NC, NOT_CLASSIFIED_SOURCE))


def _latest_grades(findings: LevelFindings) -> list[EsccGrade]:
    grades = {f.value for f in findings.latest(FindingKind.ESCC) if isinstance(f.value, EsccGrade)}
    return sorted(grades, key=escc_rank)


def level_grade(findings: LevelFindings) -> EsccGrade | None:
    """The ESCC grade of a level: its latest `escc-grade` finding; None without one.

    DESIGN: latest findings at the same time that disagree give the highest of their grades (the
    conservative reading: a compression is never played down), and `escc_discordance` says so.
    """
    return highest_grade(_latest_grades(findings))


def escc_discordance(findings: LevelFindings) -> str | None:
    """The sentence when ESCC grades of a level at the same latest time disagree."""
    grades = _latest_grades(findings)
    if len(grades) < 2:
        return None
    return (
        f"Discordant ESCC grades: findings at the same time state "
        f"{' and '.join(g.value for g in grades)}; none is later, so the highest "
        f"({grades[-1].value}) is reported (conservative)."
    )


def myelopathy_of(findings: Iterable[Finding]) -> bool | None:
    """Myelopathy of the patient: the latest `myelopathy` finding; None when none reports it."""
    stated = [f for f in findings if f.kind is FindingKind.MYELOPATHY]
    if not stated:
        return None
    # Reports at the same latest time that disagree: myelopathy counts as reported (cautious).
    latest = max(f.observed_at for f in stated)
    return any(f.value is True for f in stated if f.observed_at == latest)


NOT_ASSESSED: Final = "not assessed (systemic disease and fitness are not derived by fhir-app)"
MECHANICAL_INSTABILITY: Final = "mechanical instability to be considered"
# DESIGN (DOMAIN.md 2: the summary names the most unstable level; no rule says how to rank
# ranges): the level with the highest lowest possible SINS ranks first (then the highest possible
# SINS, then C1 to S5), so that a level that certainly warrants a consultation is never ranked
# behind an open one; M then adds the level that could reach a higher SINS, so that no possible
# instability is hidden either. Stated wherever M is.
MOST_UNSTABLE_RULE: Final = "most unstable level by lowest possible SINS, then highest possible"


def _score(sins: SinsScore) -> str:
    return f"SINS {sins.total}" if sins.total is not None else f"SINS {sins.low}-{sins.high}"


@dataclass(frozen=True, slots=True)
class NomsInputs:
    """The four NOMS inputs of one patient, as far as the findings say (never a treatment).

    `escc_levels` are the levels that have the highest grade; `primary` None means no known
    primary; `mechanical` is the most unstable level's SINS, None when the patient has no level;
    `higher` the level that could reach a higher SINS than it (the highest such), if any.
    """

    highest_escc: EsccGrade | None
    escc_levels: tuple[VertebralLevel, ...]
    myelopathy: bool | None
    primary: str | None
    mechanical: tuple[VertebralLevel, SinsScore] | None
    higher: tuple[VertebralLevel, SinsScore] | None = None

    @property
    def mechanical_range(self) -> tuple[int, int] | None:
        """The patient's highest SINS over the levels as a range: from the highest lowest total
        (the first level's) to the highest highest total; None without a level."""
        if self.mechanical is None:
            return None
        sins = self.mechanical[1]
        high = self.higher[1].high if self.higher is not None else sins.high
        return sins.low, high

    @property
    def mechanical_category(self) -> SinsCategory | None:
        """M's category, only when the patient's highest SINS lies in one category."""
        bounds = self.mechanical_range
        if bounds is None:
            return None
        low, high = category_of(bounds[0]), category_of(bounds[1])
        return low if low is high else None

    @property
    def mechanical_instability(self) -> bool:
        """True when some level's lowest possible SINS is 7 or more (DOMAIN.md 7)."""
        bounds = self.mechanical_range
        return bounds is not None and bounds[0] >= SURGICAL_CONSULTATION_MIN_TOTAL

    @property
    def escc_group(self) -> EsccGroup | None:
        """Low or high grade of the highest grade."""
        return escc_row(self.highest_escc).group if self.highest_escc is not None else None

    @property
    def radiosensitivity(self) -> RadiosensitivityRow | None:
        """The known primary's row of the radiosensitivity table; None without a known primary."""
        return radiosensitivity_of(self.primary) if self.primary is not None else None

    def myelopathy_words(self) -> str:
        """`myelopathy reported`, `no myelopathy` or `myelopathy not reported`."""
        if self.myelopathy is None:
            return "myelopathy not reported"
        return "myelopathy reported" if self.myelopathy else "no myelopathy"

    def neurologic(self) -> str:
        """N: the highest ESCC grade with its group and levels, and myelopathy."""
        if self.highest_escc is None or self.escc_group is None:
            escc = "ESCC grade unknown (no escc-grade finding)"
        else:
            where = ", ".join(level.label for level in self.escc_levels)
            escc = (
                f"highest ESCC grade {self.highest_escc.value} "
                f"({GROUP_WORDS[self.escc_group]}) at {where}"
            )
        return f"{escc}; {self.myelopathy_words()}"

    def oncologic(self) -> str:
        """O: the known primary's response to conventional external-beam radiotherapy."""
        row = self.radiosensitivity
        if row is None:
            return "no known primary"
        return f"{row.primary} primary: {RADIOSENSITIVITY_WORDS[row.radiosensitivity]}"

    def mechanical_words(self) -> str:
        """M: the most unstable level's SINS category (or range) from the SINS assessment.

        The words name the DESIGN rule that picks the level (lowest possible SINS first, then
        highest), the level that could be higher when there is one, the patient's category when
        it is determined, and the instability phrase whenever a level is certainly 7 or more.
        """
        if self.mechanical is None:
            return "no lesion level"
        level, sins = self.mechanical
        text = f"{MOST_UNSTABLE_RULE}: {level.label} {_score(sins)} ({sins.category_words()})"
        if self.mechanical_instability:
            text += f": {MECHANICAL_INSTABILITY}"
        if self.higher is not None:
            other, score = self.higher
            text += f"; {other.label} could be higher: {_score(score)} ({score.category_words()})"
            category = self.mechanical_category
            if category is not None:
                text += f"; the patient's highest SINS is {CATEGORY_WORDS[category]} either way"
        return text

    @staticmethod
    def systemic() -> str:
        """S: not derived by fhir-app."""
        return NOT_ASSESSED

    def sentence(self) -> str:
        """The NOMS inputs in one sentence (CONTRACT 4d, v2)."""
        return (
            f"NOMS inputs: N {self.neurologic()}; O {self.oncologic()}; "
            f"M {self.mechanical_words()}; S not assessed."
        )


def noms_inputs(
    grades: Iterable[tuple[VertebralLevel, EsccGrade | None]],
    myelopathy: bool | None,
    primary: str | None,
    mechanical: tuple[VertebralLevel, SinsScore] | None,
    higher: tuple[VertebralLevel, SinsScore] | None = None,
) -> NomsInputs:
    """The NOMS inputs from the levels' ESCC grades, myelopathy, the primary and the top SINS.

    `primary` `unknown-primary` states that no primary is known; `higher` is the level that could
    reach a higher SINS than the top one.
    """
    by_level = list(grades)
    highest = highest_grade(g for _, g in by_level)
    levels = tuple(
        sorted((lvl for lvl, g in by_level if g is highest and g is not None), key=_order)
    )
    known = None if primary in (None, UNKNOWN_PRIMARY) else primary
    return NomsInputs(highest, levels, myelopathy, known, mechanical, higher)


def _order(level: VertebralLevel) -> int:
    return level.order
