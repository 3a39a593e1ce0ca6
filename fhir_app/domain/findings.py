"""Findings about one vertebral level of one patient, as the domain understands them.

The inbound FHIR mapping turns each accepted Observation (or panel component) into one `Finding`.
Ordering and precedence between findings are domain rules and live here, not in the adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from fhir_app.domain.escc import EsccGrade
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    PosterolateralAnswer,
)


class Side(StrEnum):
    """Side of posterior-element involvement."""

    LEFT = "left"
    RIGHT = "right"


class T1Signal(StrEnum):
    """MRI T1-weighted signal of the lesion relative to normal marrow."""

    HYPER = "hyper"
    ISO = "iso"
    HYPO = "hypo"


class T2Signal(StrEnum):
    """MRI T2-weighted signal; heterogeneous is hyper- and hypointense parts in one lesion."""

    HYPER = "hyper"
    ISO = "iso"
    HYPO = "hypo"
    HETEROGENEOUS = "heterogeneous"


@dataclass(frozen=True, slots=True)
class PosteriorElementInvolvement:
    """Sides of posterior-element involvement; an empty set is an explicit 'none'."""

    sides: frozenset[Side]


@dataclass(frozen=True, slots=True)
class CtAttenuation:
    """CT attenuation of the lesion in Hounsfield units (mean, and maximum where measured).

    A measurement is a mean unless its method says it is the maximum (DOMAIN.md 3): one finding
    then has `mean_hu` None and `max_hu` set.
    """

    mean_hu: float | None
    max_hu: float | None = None


FindingValue = (
    LesionAnswer
    | PainAnswer
    | AlignmentAnswer
    | CollapseAnswer
    | PosterolateralAnswer
    | PosteriorElementInvolvement
    | CtAttenuation
    | T1Signal
    | T2Signal
    | EsccGrade
    | bool
    | float
)


class FindingKind(StrEnum):
    """What a finding states. Values are the contract's input codes where one exists."""

    APPEARANCE = "lesion-appearance"  # LesionAnswer, an explicit reading (also sins#bone-lesion)
    PAIN = "pain-character"  # PainAnswer (also sins#pain)
    ALIGNMENT = "spinal-alignment"  # AlignmentAnswer (also sins#alignment)
    COLLAPSE = "collapse"  # CollapseAnswer, stated directly (sins#collapse)
    POSTEROLATERAL = "posterolateral"  # PosterolateralAnswer, stated directly (sins#posterolateral)
    HEIGHT_LOSS = "vertebral-body-height-loss"  # float, percent
    BODY_INVOLVEMENT = "vertebral-body-involvement"  # float, percent
    POSTERIOR_ELEMENT = "posterior-element-involvement"  # PosteriorElementInvolvement
    CT_ATTENUATION = "ct-attenuation"  # CtAttenuation
    MRI_T1 = "mri-t1"  # T1Signal
    MRI_T2 = "mri-t2"  # T2Signal
    CONTRAST_ENHANCEMENT = "contrast-enhancement"  # bool
    TREATED = "treated-lesion"  # bool
    ESCC = "escc-grade"  # EsccGrade, per level (DOMAIN.md 6)
    MYELOPATHY = "myelopathy"  # bool, patient level: clinical signs of spinal cord dysfunction
    # True: the level has a lesion and nothing more is known of it (a secondary cancer Condition of
    # the level, CONTRACT 3 v2). It puts the level among the patient's lesion levels and narrows no
    # SINS component: every rule reads the kinds above, so each component stays as open as the
    # other findings leave it, and the location still comes from the level.
    LESION_PRESENT = "lesion-present"


# Findings about the patient that say nothing of any one level: never handed to a level's rules.
PATIENT_ONLY_KINDS: frozenset[FindingKind] = frozenset({FindingKind.MYELOPATHY})


@dataclass(frozen=True, slots=True)
class Finding:
    """One statement about a level.

    `observed_at` is the clinical time (effective, else issued, else received) that orders findings:
    the latest wins per component. `patient_wide` marks a finding stated without a level (pain),
    which a level-specific finding of the same kind always overrides. `source` names the input it
    came from so that outputs can reference it.
    """

    kind: FindingKind
    value: FindingValue
    observed_at: datetime
    source: str = ""
    preliminary: bool = False
    patient_wide: bool = False


class Sex(StrEnum):
    """Patient.gender as far as the sex-specific primaries of DOMAIN.md 4a read it."""

    FEMALE = "female"
    MALE = "male"


@dataclass(frozen=True, slots=True)
class PatientContext:
    """What the Patient resource says that changes the likely primaries (DOMAIN.md 4a).

    `sex` None: gender unknown, other or not sent (nothing is filtered). `birth_earliest` and
    `birth_latest` bound the birth date (a FHIR birthDate may be a year or a month only); both
    None when the birth date is unknown.
    """

    sex: Sex | None = None
    birth_earliest: date | None = None
    birth_latest: date | None = None


@dataclass(frozen=True, slots=True)
class LevelFindings:
    """Everything known about one lesion level, plus what is known of the patient.

    `lesion_levels` is how many lesion levels the patient has: a pain report without a level
    narrows a level only as far as DOMAIN.md 2 (v2) allows when there are several.
    `study_started` is the start of the latest imaging study of the level (age at the study).
    """

    findings: tuple[Finding, ...] = ()
    primary_tumor: str | None = None
    sources: tuple[str, ...] = field(default=())
    context: PatientContext = field(default=PatientContext())
    lesion_levels: int = 1
    # When the latest ImagingStudy the level's findings were read from started (DOMAIN.md 4a: age
    # at the study date); None when no such study or no start is known.
    study_started: datetime | None = None

    def of_kind(self, kind: FindingKind) -> list[Finding]:
        """The findings of one kind, oldest first, level-specific after patient-wide ones."""
        selected = [f for f in self.findings if f.kind is kind]
        return sorted(selected, key=lambda f: (not f.patient_wide, f.observed_at, f.source))

    def latest(self, kind: FindingKind) -> tuple[Finding, ...]:
        """The findings of one kind that win: level-specific over patient-wide, then the latest.

        CONTRACT 3: the latest wins per component. Findings at the same latest time all win, since
        none is later: the rules then allow every answer they allow (a resource id never decides).
        Empty when no finding of the kind exists.
        """
        selected = self.of_kind(kind)
        if not selected:
            return ()
        last = selected[-1]
        return tuple(
            f
            for f in selected
            if f.patient_wide == last.patient_wide and f.observed_at == last.observed_at
        )


def number(value: float) -> str:
    """A measured value in words, never rounded: `50`, `50.0000001`, `-12.5`.

    The shortest text that reads back as the same float (Python's repr), so a value that a rule
    puts above a threshold is never printed as the threshold itself.
    """
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def same_time_sentence(what: str, stated: list[str], remains: str) -> str:
    """The discordance of findings at the same latest time that disagree (CONTRACT 3)."""
    return (
        f"Discordant {what}: findings at the same time state {' and '.join(stated)}; none is "
        f"later, so {remains} remain possible."
    )
