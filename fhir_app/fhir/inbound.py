"""Inbound mapping: accepted FHIR input resources to domain findings (CONTRACT.md section 3).

Works on the received JSON (plain dicts) after `parse.validate_resource`, so the FHIR shape is
known to be valid R4; what is checked here is the contract. Every refusal is an InputRejected
whose issue names the element with a FHIRPath expression.

Choices the contract leaves open (DESIGN, kept visible here and in the tests):
- Time: `effectiveDateTime`, else `effectiveInstant`, else `effectivePeriod.start` (the start of
  the acquisition; `.end` when only it is given), else `issued`, else the time received. Partial
  dates take their first instant (`2024-03` is 2024-03-01T00:00Z); a date without a time zone is
  read as UTC.
- Status: `registered` (no result yet) is stored and ignored; `unknown` counts but makes the
  findings preliminary, like `preliminary`: an output must not look final on a result whose status
  nobody knows.
- `sins#location` as input is checked (level and answer) but yields no finding: the location
  always comes from the level, so a stated answer never overrides it.
- A value with `dataAbsentReason` and no value states nothing: accepted, no finding.
- A quantity with a `comparator` (`<50 %`) is refused: findings need exact values.
- posterior-element-involvement codings name sides; left and right codings together mean both.
- Several contract codings in one `Observation.code` must agree on what they mean.
- CT attenuation is a mean unless `Observation.method` carries SNOMED 56851009 (maximum); for a
  vertebral-lesion panel the panel's method applies to its attenuation component (R4 components
  have no method of their own). A method naming both mean and maximum is refused; other method
  codings (e.g. a site's own) leave the default, the mean.
- Patient: `gender` female / male give the sex of DOMAIN.md 4a, `other` / `unknown` / absent give
  none; `birthDate` may be partial (`1960`, `1960-04`) and then bounds the age by its first and
  last day.
- Condition (CONTRACT 3, v2): a `primary-tumor` coding in `Condition.code` states the known
  primary (an mCODE primary cancer condition reaches it through the shipped ConceptMap; one whose
  code no map reaches is stored and ignored). An mCODE secondary cancer condition, or SNOMED
  94222008 (secondary malignant neoplasm of bone), states a lesion at every vertebral level of its
  `bodySite` (0..* in R4, so several levels are several lesions); other sites (the coccyx, the
  liver) give none. Time: `recordedDate`, else `onsetDateTime`, else the time received.
- Condition statuses: verificationStatus `entered-in-error` or `refuted` withdraws it (like an
  entered-in-error Observation); `unconfirmed`, `provisional`, `differential` count but make the
  findings preliminary (a primary is then read as a preliminary primary-tumor Observation's is).
  clinicalStatus: a primary counts whatever it says, because an inactive, in remission or
  resolved cancer is still the patient's history of it, the likeliest source of a new
  bone metastasis (late recurrence of breast or renal cancer is common), and the known primary only
  leads the likely primaries and adds a note, it never removes one (DOMAIN.md 4a). A secondary
  lesion counts when `active`, `recurrence`, `relapse` or absent; `inactive`, `remission` and
  `resolved` say the record has closed that lesion, and a level with every SINS component open
  would then ask for a look at something the clinician has closed: such a Condition is stored and
  ignored (imaging findings of the level still count on their own).
- A Condition without a Patient subject is stored and ignored (nothing to attach it to).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Final

from fhir_app.domain.classification import LIKELY_PRIMARIES, UNKNOWN_PRIMARY
from fhir_app.domain.escc import EsccGrade
from fhir_app.domain.findings import (
    CtAttenuation,
    Finding,
    FindingKind,
    FindingValue,
    PatientContext,
    PosteriorElementInvolvement,
    Sex,
    Side,
    T1Signal,
    T2Signal,
    number,
)
from fhir_app.domain.levels import (
    LEVEL_BY_SNOMED,
    OUTSIDE_SINS_SNOMED,
    SinsLocation,
    VertebralLevel,
)
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    PosterolateralAnswer,
    SinsComponent,
)
from fhir_app.fhir import codes
from fhir_app.fhir.inputs import (
    JsonObject,
    LevelFinding,
    MappedCondition,
    MappedObservation,
    MappedPatient,
    MappedStudy,
    versioned,
)
from fhir_app.fhir.parse import rejected
from fhir_app.fhir.search.dates import in_utc
from fhir_app.fhir.validation.modifiers import refuse_unknown_modifiers

# The codes of `{base}/CodeSystem/primary-tumor` (DOMAIN.md section 4).
PRIMARY_TUMOR_CODES: Final = frozenset(
    {code for row in LIKELY_PRIMARIES.values() for code in row} | {UNKNOWN_PRIMARY}
)

# What an Observation status means beyond codes.COUNTING_STATUSES and codes.WITHDRAWN_STATUSES
# (DESIGN above): these make the findings preliminary; `registered` has no result yet.
PRELIMINARY_STATUSES: Final = frozenset({"preliminary", "unknown"})
NO_RESULT_YET: Final = frozenset({"registered"})

_ID: Final = r"[A-Za-z0-9\-.]{1,64}"


def _reference_pattern(resource_type: str) -> re.Pattern[str]:
    """`Type/id`, optionally version-specific, relative or at the end of an absolute URL."""
    return re.compile(rf"(?:https?://\S+/)?{resource_type}/({_ID})(?:/_history/{_ID})?")


_PATIENT_REF: Final = _reference_pattern("Patient")
_STUDY_REF: Final = _reference_pattern("ImagingStudy")
_FHIR_DATETIME: Final = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


@dataclass(frozen=True, slots=True)
class _Reading:
    """What one code and its value state. `kind` None: a valid statement that derives nothing.

    `needs_level`: bodySite is required; `patient_level`: bodySite does not apply (primary tumour).
    """

    kind: FindingKind | None
    value: FindingValue | None = None
    primary_tumor: str | None = None
    needs_level: bool = True
    patient_level: bool = False


_Reader = Callable[[JsonObject, str], _Reading]


# ---------------------------------------------------------------------------------------------
# Reading value[x]


def _value_element(holder: JsonObject, path: str, expected: str) -> Any | None:
    """The `value<expected>` of an Observation or component; None when data is stated absent."""
    value = holder.get(f"value{expected}")
    if value is not None:
        return value
    present = next((k for k in holder if k.startswith("value") and holder[k] is not None), None)
    if present is not None:
        raise rejected(
            "value",
            f"{path}.value[x] must be value{expected}, got {present}",
            f"{path}.value[x]",
        )
    if holder.get("dataAbsentReason") is not None:
        return None
    raise rejected(
        "required",
        f"{path}.value[x] is missing: expected value{expected} (or a dataAbsentReason)",
        f"{path}.value[x]",
    )


def _codings(concept: Any) -> Iterator[tuple[str | None, str | None]]:
    """(system, code) of each coding of a CodeableConcept."""
    if not isinstance(concept, dict):
        return
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict):
            yield coding.get("system"), coding.get("code")


def _codes_in(concept: Any, system: str) -> list[str]:
    """The codes of one system in a CodeableConcept, duplicates removed, in order."""
    found: list[str] = []
    for coding_system, code in _codings(concept):
        if coding_system == system and isinstance(code, str) and code not in found:
            found.append(code)
    return found


def _named_primaries(stated: list[str]) -> list[str]:
    """The `primary-tumor` codes of one CodeableConcept, an unspecified primary left out beside a
    named one. R4 lets the codings of a concept differ in granularity: a feed may send ICD-10-CM
    C80.1 (malignant neoplasm, unspecified, mapped to `unknown-primary`) beside the SNOMED code of
    the primary it names; the finer coding states the primary. Two named primaries still disagree.
    """
    named = [code for code in stated if code != UNKNOWN_PRIMARY]
    return named if named else stated


def _answer_reader(kind: FindingKind | None, answers: type[StrEnum], what: str) -> _Reader:
    """A valueCodeableConcept holding one `sins` answer of `answers`."""
    allowed = {a.value for a in answers}

    def read(holder: JsonObject, path: str) -> _Reading:
        concept = _value_element(holder, path, "CodeableConcept")
        if concept is None:
            return _Reading(None, needs_level=kind is not FindingKind.PAIN)
        where = f"{path}.valueCodeableConcept"
        stated = _codes_in(concept, codes.CS_SINS)
        unknown = [c for c in stated if c not in allowed]
        if unknown or not stated:
            got = f"'{unknown[0]}' is not one" if unknown else "no such coding"
            raise rejected(
                "code-invalid",
                f"{where} must be a {what} answer of {codes.CS_SINS} "
                f"({', '.join(sorted(allowed))}); {got}",
                where,
            )
        if len(stated) > 1:
            raise rejected(
                "code-invalid", f"{where} states several {what} answers: {', '.join(stated)}", where
            )
        answer: Any = answers(stated[0])
        return _Reading(
            kind, answer if kind is not None else None, needs_level=kind is not FindingKind.PAIN
        )

    return read


def _quantity_value(holder: JsonObject, path: str, unit: str, words: str) -> float | None:
    """The number of a valueQuantity that must be in UCUM `unit`; None when stated absent."""
    quantity = _value_element(holder, path, "Quantity")
    if quantity is None:
        return None
    where = f"{path}.valueQuantity"
    if quantity.get("comparator") is not None:
        raise rejected(
            "value",
            f"{where} has comparator '{quantity['comparator']}'; {words} needs an exact value",
            f"{where}.comparator",
        )
    number = quantity.get("value")
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise rejected("required", f"{where}.value is missing: {words} needs a number", where)
    if quantity.get("system") != codes.UCUM:
        raise rejected(
            "value",
            f"{where}.system must be {codes.UCUM} (UCUM), got {quantity.get('system')!r}",
            f"{where}.system",
        )
    if quantity.get("code") != unit:
        raise rejected(
            "value",
            f"{where}.code must be the UCUM unit '{unit}' for {words}, "
            f"got {quantity.get('code')!r}",
            f"{where}.code",
        )
    return float(number)


def _percent_reader(kind: FindingKind, words: str) -> _Reader:
    def read(holder: JsonObject, path: str) -> _Reading:
        percent = _quantity_value(holder, path, codes.UNIT_PERCENT, words)
        if percent is None:
            return _Reading(None)
        if not 0.0 <= percent <= 100.0:
            where = f"{path}.valueQuantity.value"
            raise rejected(
                "value", f"{where} {number(percent)} % is outside 0-100 % ({words})", where
            )
        return _Reading(kind, percent)

    return read


def _boolean_reader(kind: FindingKind, *, patient_level: bool = False) -> _Reader:
    """A valueBoolean; `patient_level` findings (myelopathy) need no level and take none."""
    needs_level = not patient_level

    def read(holder: JsonObject, path: str) -> _Reading:
        value = _value_element(holder, path, "Boolean")
        if value is None:
            return _Reading(None, needs_level=needs_level, patient_level=patient_level)
        if not isinstance(value, bool):
            where = f"{path}.valueBoolean"
            raise rejected("value", f"{where} must be true or false", where)
        return _Reading(kind, value, needs_level=needs_level, patient_level=patient_level)

    return read


def _read_escc(holder: JsonObject, path: str) -> _Reading:
    """An ESCC grade: one code of `{base}/CodeSystem/escc` (DOMAIN.md 6)."""
    concept = _value_element(holder, path, "CodeableConcept")
    if concept is None:
        return _Reading(None)
    where = f"{path}.valueCodeableConcept"
    allowed = [g.value for g in EsccGrade]
    stated = _codes_in(concept, codes.CS_ESCC)
    unknown = [c for c in stated if c not in allowed]
    if unknown or not stated:
        got = f"'{unknown[0]}' is not one" if unknown else "no such coding"
        raise rejected(
            "code-invalid",
            f"{where} must be an ESCC grade of {codes.CS_ESCC} ({', '.join(allowed)}); {got}",
            where,
        )
    if len(stated) > 1:
        raise rejected(
            "code-invalid", f"{where} states several ESCC grades: {', '.join(stated)}", where
        )
    return _Reading(FindingKind.ESCC, EsccGrade(stated[0]))


def _read_attenuation(holder: JsonObject, path: str) -> _Reading:
    mean = _quantity_value(holder, path, codes.UNIT_HU, "CT attenuation")
    return (
        _Reading(None)
        if mean is None
        else _Reading(FindingKind.CT_ATTENUATION, CtAttenuation(mean))
    )


_SIGNAL_BY_RADLEX: Final = {
    codes.RADLEX_HYPER: "hyper",
    codes.RADLEX_ISO: "iso",
    codes.RADLEX_HYPO: "hypo",
}


def _signals(holder: JsonObject, path: str, weighting: str) -> frozenset[str] | None:
    concept = _value_element(holder, path, "CodeableConcept")
    if concept is None:
        return None
    where = f"{path}.valueCodeableConcept"
    radlex = _codes_in(concept, codes.RADLEX)
    unknown = [c for c in radlex if c not in _SIGNAL_BY_RADLEX]
    if unknown or not radlex:
        got = f"'{unknown[0]}' is not one" if unknown else "no such coding"
        raise rejected(
            "code-invalid",
            f"{where} must be a {codes.RADLEX} {weighting} signal: {codes.RADLEX_HYPER} "
            f"hyperintense, {codes.RADLEX_ISO} isointense or {codes.RADLEX_HYPO} hypointense; "
            f"{got}",
            where,
        )
    return frozenset(_SIGNAL_BY_RADLEX[c] for c in radlex)


def _read_t1(holder: JsonObject, path: str) -> _Reading:
    signals = _signals(holder, path, "T1")
    if signals is None:
        return _Reading(None)
    if len(signals) > 1:
        where = f"{path}.valueCodeableConcept"
        raise rejected(
            "value",
            f"{where} states several T1 signals ({', '.join(sorted(signals))}); "
            "a T1 reading has one",
            where,
        )
    return _Reading(FindingKind.MRI_T1, T1Signal(next(iter(signals))))


def _read_t2(holder: JsonObject, path: str) -> _Reading:
    signals = _signals(holder, path, "T2")
    if signals is None:
        return _Reading(None)
    if signals == {"hyper", "hypo"}:
        return _Reading(FindingKind.MRI_T2, T2Signal.HETEROGENEOUS)
    if len(signals) > 1:
        where = f"{path}.valueCodeableConcept"
        raise rejected(
            "value",
            f"{where} states T2 signals {', '.join(sorted(signals))}; only hyper and hypo "
            "together (a heterogeneous signal) may be combined",
            where,
        )
    return _Reading(FindingKind.MRI_T2, T2Signal(next(iter(signals))))


_SIDES_BY_SNOMED: Final = {
    codes.SNOMED_LEFT: frozenset({Side.LEFT}),
    codes.SNOMED_RIGHT: frozenset({Side.RIGHT}),
    codes.SNOMED_BILATERAL: frozenset({Side.LEFT, Side.RIGHT}),
}


def _read_posterior_element(holder: JsonObject, path: str) -> _Reading:
    concept = _value_element(holder, path, "CodeableConcept")
    if concept is None:
        return _Reading(None)
    where = f"{path}.valueCodeableConcept"
    sides = frozenset(
        side
        for code in _codes_in(concept, codes.SNOMED)
        for side in _SIDES_BY_SNOMED.get(code, frozenset())
    )
    none_stated = PosterolateralAnswer.NONE.value in _codes_in(concept, codes.CS_SINS)
    if none_stated and sides:
        raise rejected(
            "value", f"{where} states both involved sides and {PosterolateralAnswer.NONE}", where
        )
    if not none_stated and not sides:
        raise rejected(
            "code-invalid",
            f"{where} must be SNOMED CT {codes.SNOMED_LEFT} left, {codes.SNOMED_RIGHT} right, "
            f"{codes.SNOMED_BILATERAL} right and left, or {codes.CS_SINS}#"
            f"{PosterolateralAnswer.NONE}",
            where,
        )
    return _Reading(FindingKind.POSTERIOR_ELEMENT, PosteriorElementInvolvement(sides))


def _read_primary_tumor(holder: JsonObject, path: str) -> _Reading:
    concept = _value_element(holder, path, "CodeableConcept")
    if concept is None:
        return _Reading(None, needs_level=False, patient_level=True)
    where = f"{path}.valueCodeableConcept"
    stated = _codes_in(concept, codes.CS_PRIMARY_TUMOR)
    unknown = [c for c in stated if c not in PRIMARY_TUMOR_CODES]
    if unknown or not stated:
        got = f"'{unknown[0]}' is not a code of it" if unknown else "no such coding"
        raise rejected(
            "code-invalid", f"{where} must be a code of {codes.CS_PRIMARY_TUMOR}; {got}", where
        )
    stated = _named_primaries(stated)
    if len(stated) > 1:
        raise rejected(
            "code-invalid", f"{where} states several primary tumours: {', '.join(stated)}", where
        )
    return _Reading(None, primary_tumor=stated[0], needs_level=False, patient_level=True)


_READ_APPEARANCE: Final = _answer_reader(FindingKind.APPEARANCE, LesionAnswer, "bone-lesion")
_READ_PAIN: Final = _answer_reader(FindingKind.PAIN, PainAnswer, "pain")
_READ_ALIGNMENT: Final = _answer_reader(FindingKind.ALIGNMENT, AlignmentAnswer, "alignment")

# The contract's input codes and how each reads its value (CONTRACT.md 2b, 2c and section 3).
# Codes that mean the same thing share one reader, so agreeing codings are recognised as such.
# Output codes (sins-total, lesion-classification, ...) are absent on purpose: an output sent back
# in is stored and ignored, never derived from.
FINDING_READERS: Final[dict[tuple[str, str], _Reader]] = {
    (codes.CS_SPINE_FINDING, codes.LESION_APPEARANCE): _READ_APPEARANCE,
    (codes.CS_SPINE_FINDING, codes.PAIN_CHARACTER): _READ_PAIN,
    (codes.CS_SPINE_FINDING, codes.SPINAL_ALIGNMENT): _READ_ALIGNMENT,
    (codes.CS_SPINE_FINDING, codes.HEIGHT_LOSS): _percent_reader(
        FindingKind.HEIGHT_LOSS, "vertebral body height loss"
    ),
    (codes.CS_SPINE_FINDING, codes.BODY_INVOLVEMENT): _percent_reader(
        FindingKind.BODY_INVOLVEMENT, "vertebral body involvement"
    ),
    (codes.CS_SPINE_FINDING, codes.POSTERIOR_ELEMENT): _read_posterior_element,
    (codes.CS_SPINE_FINDING, codes.CONTRAST_ENHANCEMENT): _boolean_reader(
        FindingKind.CONTRAST_ENHANCEMENT
    ),
    (codes.CS_SPINE_FINDING, codes.TREATED_LESION): _boolean_reader(FindingKind.TREATED),
    (codes.CS_SPINE_FINDING, codes.PRIMARY_TUMOR): _read_primary_tumor,
    (codes.CS_SPINE_FINDING, codes.ESCC_GRADE): _read_escc,
    (codes.CS_SPINE_FINDING, codes.MYELOPATHY): _boolean_reader(
        FindingKind.MYELOPATHY, patient_level=True
    ),
    (codes.CS_SINS, SinsComponent.LOCATION.value): _answer_reader(None, SinsLocation, "location"),
    (codes.CS_SINS, SinsComponent.PAIN.value): _READ_PAIN,
    (codes.CS_SINS, SinsComponent.BONE_LESION.value): _READ_APPEARANCE,
    (codes.CS_SINS, SinsComponent.ALIGNMENT.value): _READ_ALIGNMENT,
    (codes.CS_SINS, SinsComponent.COLLAPSE.value): _answer_reader(
        FindingKind.COLLAPSE, CollapseAnswer, "collapse"
    ),
    (codes.CS_SINS, SinsComponent.POSTEROLATERAL.value): _answer_reader(
        FindingKind.POSTEROLATERAL, PosterolateralAnswer, "posterolateral"
    ),
    (codes.DCM, codes.DCM_ATTENUATION): _read_attenuation,
    (codes.DCM, codes.DCM_T1): _read_t1,
    (codes.DCM, codes.DCM_T2): _read_t2,
}
_PANEL: Final = (codes.CS_SPINE_FINDING, codes.VERTEBRAL_LESION)
_PANEL_MEANING: Final = "panel"


def _meaning(concept: Any, where: str) -> _Reader | str | None:
    """The reader of a contract code in `concept`, `_PANEL_MEANING`, or None (outside the contract).

    EHRs add their own codings (LOINC, local codes) next to ours; those are passed over. Contract
    codings that mean different things are refused rather than one being picked.
    """
    meanings: list[_Reader | str] = []
    named: list[str] = []
    for system, code in _codings(concept):
        key = (system or "", code or "")
        meaning = _PANEL_MEANING if key == _PANEL else FINDING_READERS.get(key)
        if meaning is not None and meaning not in meanings:
            meanings.append(meaning)
            named.append(f"{system}#{code}")
    if len(meanings) > 1:
        raise rejected(
            "code-invalid",
            f"{where} carries contract codes of different meaning ({', '.join(named)}); "
            "one Observation states one finding or one vertebral-lesion panel",
            where,
        )
    return meanings[0] if meanings else None


# ---------------------------------------------------------------------------------------------
# Subject, level, time, references


def _patient(raw: JsonObject, resource_type: str) -> str:
    """The patient id of `subject`, which must reference Patient/<id> (relative or absolute)."""
    where = f"{resource_type}.subject"
    subject = raw.get("subject")
    if not isinstance(subject, dict):
        raise rejected(
            "required", f"{where} is missing: an input must name its patient as Patient/<id>", where
        )
    reference = subject.get("reference")
    if not isinstance(reference, str):
        raise rejected(
            "required",
            f"{where}.reference is missing: a Patient/<id> reference is needed "
            "(references by identifier alone are not resolved)",
            f"{where}.reference",
        )
    match = _PATIENT_REF.fullmatch(reference)
    if match is None:
        raise rejected(
            "value",
            f"{where}.reference must be Patient/<id> (or an absolute URL ending so), "
            f"got '{reference}'",
            f"{where}.reference",
        )
    return match.group(1)


def _patient_if_any(raw: JsonObject) -> str | None:
    """The patient id of `subject` when it references Patient/<id>; None for any other subject."""
    subject = raw.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    match = _PATIENT_REF.fullmatch(reference) if isinstance(reference, str) else None
    return match.group(1) if match is not None else None


def _level(site: Any, *, required: bool) -> VertebralLevel | None:
    """The vertebral level of `Observation.bodySite` (SNOMED CT, CONTRACT table 2a)."""
    where = "Observation.bodySite"
    if site is None:
        if required:
            raise rejected(
                "required",
                f"{where} is missing: a finding needs its vertebral level C1-S5 (SNOMED CT)",
                where,
            )
        return None
    snomed = _codes_in(site, codes.SNOMED)
    levels = list(dict.fromkeys(LEVEL_BY_SNOMED[c] for c in snomed if c in LEVEL_BY_SNOMED))
    outside = list(
        dict.fromkeys(OUTSIDE_SINS_SNOMED[c] for c in snomed if c in OUTSIDE_SINS_SNOMED)
    )
    if len(levels) + len(outside) > 1:
        sites = ", ".join([lvl.label for lvl in levels] + outside)
        raise rejected(
            "code-invalid",
            f"{where} names several sites ({sites}); one Observation speaks about one level",
            where,
        )
    if outside:
        raise rejected(
            "business-rule",
            f"{where} is the {outside[0]}: the {outside[0]} is outside SINS, which scores the "
            "vertebral levels C1 to S5 only",
            where,
        )
    if not levels:
        text = site.get("text") if isinstance(site, dict) else None
        shown = f" (text '{text}')" if isinstance(text, str) else ""
        raise rejected(
            "code-invalid",
            f"{where} has no vertebral level C1-S5 as a {codes.SNOMED} coding{shown}",
            where,
        )
    return levels[0]


def parse_fhir_datetime(value: str, where: str) -> datetime:
    """A FHIR date, dateTime or instant as an aware UTC datetime.

    Partial dates take their first instant (`2024` is 2024-01-01T00:00Z); without a time zone
    (dates, or a time sent without one) the time is read as UTC.
    """
    match = _FHIR_DATETIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise rejected("value", f"{where} '{value}' is not a FHIR dateTime", where)
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if second == "60":
        # A leap second (the R4 regex allows :60, Python's calendar does not): ordered as the
        # last instant of its minute.
        second, fraction = "59", "999999"
    try:
        moment = datetime.fromisoformat(
            f"{year}-{month or '01'}-{day or '01'}T{hour or '00'}:{minute or '00'}:"
            f"{second or '00'}.{(fraction or '0')[:6].ljust(6, '0')}"
            f"{'+00:00' if zone in (None, 'Z') else zone}"
        )
    except ValueError as exc:
        raise rejected("value", f"{where} '{value}' is not a valid date: {exc}", where) from exc
    # Clamped: 9999-12-31T23:00:00-05:00 is valid FHIR but past Python's calendar in UTC.
    return in_utc(moment)


def _observed_at(raw: JsonObject, received_at: datetime) -> datetime:
    """effectiveDateTime, effectiveInstant, effectivePeriod.start (or .end), issued, received."""
    period = raw.get("effectivePeriod")
    candidates = [
        ("Observation.effectiveDateTime", raw.get("effectiveDateTime")),
        ("Observation.effectiveInstant", raw.get("effectiveInstant")),
    ]
    if isinstance(period, dict):
        candidates.append(("Observation.effectivePeriod.start", period.get("start")))
        candidates.append(("Observation.effectivePeriod.end", period.get("end")))
    candidates.append(("Observation.issued", raw.get("issued")))
    for where, value in candidates:
        if value is not None:
            return parse_fhir_datetime(value, where)
    if received_at.tzinfo is None:
        return received_at.replace(tzinfo=UTC)
    return received_at.astimezone(UTC)


def _study_ids(raw: JsonObject) -> tuple[str, ...]:
    """ImagingStudy ids referenced from derivedFrom or partOf, in order, each once."""
    found: dict[str, None] = {}
    for element in ("derivedFrom", "partOf"):
        for reference in raw.get(element) or ():
            target = reference.get("reference") if isinstance(reference, dict) else None
            match = _STUDY_REF.fullmatch(target) if isinstance(target, str) else None
            if match is not None:
                found[match.group(1)] = None
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# The public mappings


def map_observation(
    raw: JsonObject, *, resource_id: str, version: int, received_at: datetime
) -> MappedObservation:
    """Map one validated input Observation to domain findings (CONTRACT.md section 3).

    A finding code, a `sins` component code or a DICOM measurement gives one finding; a
    `vertebral-lesion` panel gives one per component, sharing the panel's level, subject, time and
    status, so both forms give the same findings. Codes outside the contract give an `ignored`
    result (stored, not derived from); withdrawn statuses are mapped and flagged `withdrawn`.
    Raises InputRejected when the Observation breaks the contract.
    """
    status = str(raw.get("status"))
    study_ids = _study_ids(raw)
    meaning = _meaning(raw.get("code"), "Observation.code")
    withdrawn = status in codes.WITHDRAWN_STATUSES
    if meaning is None or status in NO_RESULT_YET:
        # CONTRACT 3 (v2): outside the contract, any valid R4 subject is fine (a contained
        # Patient, a Group, none); such an Observation belongs to no patient of ours.
        return MappedObservation(
            resource_id,
            version,
            _patient_if_any(raw),
            status,
            study_ids=study_ids,
            withdrawn=withdrawn,
            ignored=True,
        )
    refuse_unknown_modifiers(raw, "Observation")
    patient = _patient(raw, "Observation")
    if isinstance(meaning, str):
        readings = list(_panel_readings(raw))
        # A panel is a lesion: it needs its level unless it only states patient-level facts.
        resolve_site = not readings or any(not r.patient_level for r in readings)
        require_site = not readings or any(r.needs_level for r in readings)
    else:
        reading = meaning(raw, "Observation")
        readings = [reading]
        resolve_site = not reading.patient_level
        require_site = reading.needs_level
    level = _level(raw.get("bodySite"), required=require_site) if resolve_site else None
    statistic = _ct_statistic(raw)
    readings = [_with_statistic(r, statistic) for r in readings]
    observed_at = _observed_at(raw, received_at)
    source = versioned("Observation", resource_id, version)
    preliminary = status in PRELIMINARY_STATUSES
    # A patient-level finding (myelopathy) belongs to no level, also inside a lesion panel.
    findings = tuple(
        LevelFinding(
            None if r.patient_level else level,
            Finding(
                r.kind,
                r.value,
                observed_at,
                source=source,
                preliminary=preliminary,
                patient_wide=r.patient_level or level is None,
            ),
        )
        for r in readings
        if r.kind is not None and r.value is not None
    )
    primaries = list(dict.fromkeys(r.primary_tumor for r in readings if r.primary_tumor))
    if len(primaries) > 1:
        raise rejected(
            "business-rule",
            f"Observation states several primary tumours ({', '.join(primaries)}); "
            "send one primary-tumor Observation",
            "Observation.component",
        )
    primary = primaries[0] if primaries else None
    return MappedObservation(
        resource_id,
        version,
        patient,
        status,
        findings=findings,
        primary_tumor=primary,
        primary_observed_at=observed_at if primary is not None else None,
        study_ids=study_ids,
        withdrawn=withdrawn,
    )


def _ct_statistic(raw: JsonObject) -> str:
    """`mean` or `max`: what a CT attenuation of this Observation measures (DOMAIN.md 3)."""
    found = _codes_in(raw.get("method"), codes.SNOMED)
    mean, peak = codes.SNOMED_MEAN in found, codes.SNOMED_MAXIMUM in found
    if mean and peak:
        raise rejected(
            "value",
            f"Observation.method names both mean ({codes.SNOMED_MEAN}) and maximum "
            f"({codes.SNOMED_MAXIMUM}); one CT attenuation is one of them",
            "Observation.method",
        )
    return "max" if peak else "mean"


def _with_statistic(reading: _Reading, statistic: str) -> _Reading:
    """A CT attenuation reading as the maximum when the method says so."""
    if statistic != "max" or not isinstance(reading.value, CtAttenuation):
        return reading
    return replace(reading, value=CtAttenuation(None, reading.value.mean_hu))


def _panel_readings(raw: JsonObject) -> Iterator[_Reading]:
    """The readings of a vertebral-lesion panel's components; unknown components are passed over."""
    for index, component in enumerate(raw.get("component") or ()):
        path = f"Observation.component[{index}]"
        meaning = _meaning(component.get("code"), f"{path}.code")
        if meaning is None:
            continue
        refuse_unknown_modifiers(component, path)
        if isinstance(meaning, str):
            raise rejected(
                "code-invalid",
                f"{path}.code: a vertebral-lesion panel cannot nest a panel",
                f"{path}.code",
            )
        yield meaning(component, path)


_SEX_BY_GENDER: Final = {"female": Sex.FEMALE, "male": Sex.MALE}


def _birth_bounds(text: Any) -> tuple[date | None, date | None]:
    """The first and last day a FHIR date (`1960`, `1960-04`, `1960-04-12`) can mean."""
    if not isinstance(text, str):
        return None, None
    where = "Patient.birthDate"
    match = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", text)
    if match is None:
        raise rejected("value", f"{where} '{text}' is not a FHIR date", where)
    year, month, day = match.groups()
    try:
        if day is not None:
            exact = date(int(year), int(month), int(day))
            return exact, exact
        if month is not None:
            last = calendar.monthrange(int(year), int(month))[1]
            return date(int(year), int(month), 1), date(int(year), int(month), last)
        return date(int(year), 1, 1), date(int(year), 12, 31)
    except ValueError as exc:
        raise rejected("value", f"{where} '{text}' is not a valid date: {exc}", where) from exc


def map_patient(raw: JsonObject, *, resource_id: str, version: int) -> MappedPatient:
    """Map one validated input Patient to the context of DOMAIN.md 4a (sex, birth date)."""
    refuse_unknown_modifiers(raw, "Patient")
    earliest, latest = _birth_bounds(raw.get("birthDate"))
    gender = raw.get("gender")
    sex = _SEX_BY_GENDER.get(gender) if isinstance(gender, str) else None
    return MappedPatient(resource_id, version, PatientContext(sex, earliest, latest))


def map_study(raw: JsonObject, *, resource_id: str, version: int) -> MappedStudy:
    """Map one validated input ImagingStudy: patient, status, modalities, Study Instance UID.

    Modalities come from `series[].modality` (and the study-level `modality` list), each a DICOM
    code of CONTRACT section 2; the UID is the `urn:dicom:uid` identifier without `urn:oid:`.
    """
    status = str(raw.get("status"))
    refuse_unknown_modifiers(raw, "ImagingStudy")
    for index, series in enumerate(raw.get("series") or ()):
        refuse_unknown_modifiers(series, f"ImagingStudy.series[{index}]")
    patient = _patient(raw, "ImagingStudy")
    modalities: dict[str, None] = {}
    others: list[tuple[str, str]] = []
    for path, coding in _modality_codings(raw):
        system = coding.get("system") if isinstance(coding, dict) else None
        code = coding.get("code") if isinstance(coding, dict) else None
        if system != codes.DCM or not isinstance(code, str):
            raise rejected(
                "code-invalid",
                f"{path} must be a {codes.DCM} modality; got {system}#{code}",
                path,
            )
        if code in codes.MODALITIES:
            modalities[code] = None
        else:
            others.append((path, code))
    # Real CT and MR studies carry non-image series too (SR dose reports, KO key images, PR, SEG):
    # they are tolerated beside an imaging series. A study with no imaging modality of the
    # contract (ultrasound, mammography, ...) is valid R4 from a radiology feed: stored, and
    # `ignored`, so a finding that references it is read as if it referenced no study.
    ignored = bool(others) and not modalities
    started = raw.get("started")
    return MappedStudy(
        resource_id,
        version,
        patient,
        status,
        modalities=tuple(modalities),
        study_uid=_study_uid(raw.get("identifier")),
        started=started if isinstance(started, str) else None,
        withdrawn=status in codes.WITHDRAWN_STATUSES,
        ignored=ignored,
    )


def _modality_codings(raw: JsonObject) -> Iterable[tuple[str, Any]]:
    for index, series in enumerate(raw.get("series") or ()):
        if isinstance(series, dict) and series.get("modality") is not None:
            yield f"ImagingStudy.series[{index}].modality", series["modality"]
    for index, coding in enumerate(raw.get("modality") or ()):
        yield f"ImagingStudy.modality[{index}]", coding


def _study_uid(identifiers: Any) -> str | None:
    for identifier in identifiers or ():
        if isinstance(identifier, dict) and identifier.get("system") == codes.DICOM_UID:
            value = identifier.get("value")
            if isinstance(value, str):
                return value.removeprefix("urn:oid:")
    return None


# ---------------------------------------------------------------------------------------------
# Condition (CONTRACT 3, v2)

MCODE_SECONDARY_CANCER: Final = (
    "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-secondary-cancer-condition"
)
# SNOMED CT 94222008 |Secondary malignant neoplasm of bone (disorder)|.
SNOMED_SECONDARY_BONE: Final = "94222008"
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
# The rules of the module docstring, as data.
CONDITION_WITHDRAWN: Final = frozenset({"entered-in-error", "refuted"})
CONDITION_PROVISIONAL: Final = frozenset({"unconfirmed", "provisional", "differential"})
SECONDARY_CLOSED: Final = frozenset({"inactive", "remission", "resolved"})


def _status_code(concept: Any, system: str) -> str:
    """The code of one status system in a CodeableConcept; empty when none is given."""
    found = _codes_in(concept, system)
    return found[0] if found else ""


def _condition_primary(raw: JsonObject) -> str | None:
    """The `primary-tumor` code of `Condition.code`, checked as a primary-tumor value is."""
    where = "Condition.code"
    stated = _codes_in(raw.get("code"), codes.CS_PRIMARY_TUMOR)
    unknown = [c for c in stated if c not in PRIMARY_TUMOR_CODES]
    if unknown:
        raise rejected(
            "code-invalid",
            f"{where}: '{unknown[0]}' is not a code of {codes.CS_PRIMARY_TUMOR}",
            where,
        )
    stated = _named_primaries(stated)
    if len(stated) > 1:
        raise rejected(
            "code-invalid", f"{where} states several primary tumours: {', '.join(stated)}", where
        )
    return stated[0] if stated else None


def _is_secondary(raw: JsonObject) -> bool:
    """An mCODE secondary cancer condition or SNOMED 94222008 (secondary neoplasm of bone)."""
    meta = raw.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return MCODE_SECONDARY_CANCER in (profiles or ()) or SNOMED_SECONDARY_BONE in _codes_in(
        raw.get("code"), codes.SNOMED
    )


def _condition_levels(raw: JsonObject) -> list[VertebralLevel]:
    """The vertebral levels of `Condition.bodySite` (0..*), C1 to S5, in order, each once."""
    found: dict[VertebralLevel, None] = {}
    for site in raw.get("bodySite") or ():
        for code in _codes_in(site, codes.SNOMED):
            if code in LEVEL_BY_SNOMED:
                found[LEVEL_BY_SNOMED[code]] = None
    return sorted(found, key=lambda level: level.order)


def _condition_time(raw: JsonObject, received_at: datetime) -> datetime:
    """recordedDate, else onsetDateTime, else the time received (module docstring)."""
    for where, value in (
        ("Condition.recordedDate", raw.get("recordedDate")),
        ("Condition.onsetDateTime", raw.get("onsetDateTime")),
    ):
        if value is not None:
            return parse_fhir_datetime(value, where)
    if received_at.tzinfo is None:
        return received_at.replace(tzinfo=UTC)
    return received_at.astimezone(UTC)


def map_condition(
    raw: JsonObject, *, resource_id: str, version: int, received_at: datetime
) -> MappedCondition:
    """Map one validated input Condition to what it states (CONTRACT 3, v2; rules above).

    A primary cancer Condition gives the patient's known primary exactly as a `primary-tumor`
    Observation does; a secondary cancer Condition of the bone gives a `lesion-present` finding at
    each vertebral level of its bodySite. Anything else is `ignored`: stored, never derived from.
    Raises InputRejected only for a `primary-tumor` coding that is not one of that system's codes.
    """
    clinical = _status_code(raw.get("clinicalStatus"), CONDITION_CLINICAL)
    verification = _status_code(raw.get("verificationStatus"), CONDITION_VERIFICATION)
    patient = _patient_if_any(raw)
    primary = _condition_primary(raw)
    levels = (
        _condition_levels(raw) if _is_secondary(raw) and clinical not in SECONDARY_CLOSED else []
    )
    withdrawn = verification in CONDITION_WITHDRAWN
    if patient is None or (primary is None and not levels):
        return MappedCondition(
            resource_id, version, patient, clinical, withdrawn=withdrawn, ignored=True
        )
    refuse_unknown_modifiers(raw, "Condition")
    observed_at = _condition_time(raw, received_at)
    provisional = verification in CONDITION_PROVISIONAL
    source = versioned("Condition", resource_id, version)
    findings = tuple(
        LevelFinding(
            level,
            Finding(
                FindingKind.LESION_PRESENT,
                True,
                observed_at,
                source=source,
                preliminary=provisional,
            ),
        )
        for level in levels
    )
    return MappedCondition(
        resource_id,
        version,
        patient,
        clinical,
        findings=findings,
        primary_tumor=primary,
        primary_observed_at=observed_at if primary is not None else None,
        withdrawn=withdrawn,
        provisional=provisional,
    )
