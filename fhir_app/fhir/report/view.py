"""The report view model: plain data read back from the emitted outputs of one patient.

The view is built from the output resources exactly as `fhir_app.fhir.outbound` emits them (the
per-level SINS Observation, classification Observation and RiskAssessment, and the
DiagnosticReport), not from the domain objects, so that whatever the outputs say reaches the reader
and nothing else does: a caveat added to a `note` later flows through without a change here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fhir_app.domain.escc import GROUP_WORDS, EsccGrade, EsccGroup, escc_row
from fhir_app.domain.levels import LEVEL_BY_SNOMED, VertebralLevel
from fhir_app.domain.sins_answers import (
    CATEGORY_WORDS,
    SINS_CATEGORY_BANDS,
    SURGICAL_CONSULTATION_MIN_TOTAL,
    SinsCategory,
)
from fhir_app.fhir import codes

JsonObject = dict[str, Any]

NOT_REPORTED: Final = "not reported"
ESCC_GRADE: Final = codes.ESCC_GRADE
NOMS_INPUTS: Final = codes.NOMS_INPUTS
KNOWN_PRIMARY: Final = "primary-tumor"
BONE_LESION: Final = "bone-lesion"
SNOMED: Final = "http://snomed.info/sct"
# The ESCC grades of DOMAIN 6, carried by the classification's escc-grade component.
CS_ESCC: Final = codes.CS_ESCC


@dataclass(frozen=True, slots=True)
class LevelView:
    """One reported level as the reader sees it."""

    level: VertebralLevel
    sins_low: int
    sins_high: int
    # The category when the whole range lies in one; None when it is open.
    category: SinsCategory | None
    # Every category the range reaches (one when determined).
    candidates: tuple[SinsCategory, ...]
    mitigation: str | None
    appearance: str | None
    # How the appearance was read: the bone-lesion component's sentence of the SINS Observation.
    appearance_basis: str | None
    # The patient's known primary as the classification states it, with its words in context.
    known_primary: str | None
    likely_primaries: tuple[str, ...]
    differential: tuple[str, ...]
    caveats: tuple[str, ...]
    # Epidural spinal cord compression (DOMAIN 6); absent until an output carries it.
    escc_grade: str | None
    preliminary: bool

    @property
    def label(self) -> str:
        """The level as clinicians write it, e.g. `T12`."""
        return self.level.label

    @property
    def region(self) -> str:
        """Cervical, thoracic, lumbar or sacral."""
        return self.level.region.value

    @property
    def sins(self) -> str:
        """`16`, or `4-14` when the findings leave the total open."""
        if self.sins_low == self.sins_high:
            return str(self.sins_low)
        return f"{self.sins_low}-{self.sins_high}"

    @property
    def category_words(self) -> str:
        """`unstable`, or `open: stable or potentially unstable`."""
        if self.category is not None:
            return CATEGORY_WORDS[self.category]
        return "open: " + " or ".join(CATEGORY_WORDS[c] for c in self.candidates)

    @property
    def surgical_consultation(self) -> bool:
        """The lowest possible total reaches the consultation threshold (as in CONTRACT 4c)."""
        return self.sins_low >= SURGICAL_CONSULTATION_MIN_TOTAL

    @property
    def escc_group(self) -> EsccGroup | None:
        """Low grade (0-1c) or high grade (2-3) (DOMAIN 6), None when no known grade is carried."""
        if self.escc_grade is None:
            return None
        try:
            return escc_row(EsccGrade(self.escc_grade)).group
        except ValueError:
            return None

    @property
    def escc_high_grade(self) -> bool:
        """The level's ESCC grade is 2 or 3: spinal cord compression (Bilsky: high grade)."""
        return self.escc_group is EsccGroup.HIGH

    @property
    def escc_words(self) -> str:
        """`ESCC 3 (high grade)`, `ESCC 1b (low grade)`, or `not reported`."""
        if self.escc_grade is None:
            return NOT_REPORTED
        group = self.escc_group
        if group is None:
            return f"ESCC {self.escc_grade}"
        return f"ESCC {self.escc_grade} ({GROUP_WORDS[group]})"


@dataclass(frozen=True, slots=True)
class ReportView:
    """One patient's report: levels most unstable first, as the DiagnosticReport lists them."""

    patient: str
    status: str
    effective: str | None
    conclusion: str
    levels: tuple[LevelView, ...]
    noms_inputs: str | None
    inputs: tuple[str, ...]
    processor_version: str
    # A finding reports myelopathy (the N of NOMS, CONTRACT 4f): a fact about the patient.
    myelopathy: bool = False

    @property
    def cord_compression(self) -> tuple[str, ...]:
        """One sentence per level with high-grade ESCC (2 or 3), the facts only, never a treatment
        (DOMAIN 6-7): `High-grade epidural spinal cord compression: ESCC 3 at T4; myelopathy
        reported`."""
        suffix = "; myelopathy reported" if self.myelopathy else ""
        return tuple(
            f"High-grade epidural spinal cord compression: ESCC {level.escc_grade} at "
            f"{level.label}{suffix}"
            for level in self.levels
            if level.escc_high_grade
        )

    @property
    def surgical_consultation(self) -> bool:
        """Any level warrants a surgical consultation."""
        return any(level.surgical_consultation for level in self.levels)

    @property
    def consultation_levels(self) -> tuple[str, ...]:
        """The levels whose SINS is 7 or more whatever the open findings turn out to be."""
        return tuple(level.label for level in self.levels if level.surgical_consultation)

    @property
    def disclaimer(self) -> str:
        """The words CONTRACT 4d v2 asks for."""
        return (
            f"computed decision support by fhir-app {self.processor_version} from the findings "
            "listed; not a radiologist's report"
        )

    def level(self, level: VertebralLevel) -> LevelView | None:
        """The view of one level, None when it is not reported."""
        return next((v for v in self.levels if v.level is level), None)


# --- reading the outputs ---------------------------------------------------------------------


def _codings(concept: object) -> list[JsonObject]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding", []) if isinstance(c, dict)]


def _has_code(concept: object, system: str, code: str) -> bool:
    # The hottest test of the view (every component of every output): no list built.
    if not isinstance(concept, dict):
        return False
    for coding in concept.get("coding", []):
        if (
            isinstance(coding, dict)
            and coding.get("code") == code
            and coding.get("system") == system
        ):
            return True
    return False


def _code_of(concept: object, system: str) -> str | None:
    return next((c["code"] for c in _codings(concept) if c.get("system") == system), None)


def _words(concept: object) -> str | None:
    """A CodeableConcept in words: its text, else the display of its first coding."""
    if not isinstance(concept, dict):
        return None
    text = concept.get("text")
    if isinstance(text, str):
        return text
    return next((c["display"] for c in _codings(concept) if "display" in c), None)


def _level_of(resource: JsonObject) -> VertebralLevel | None:
    site = resource.get("bodySite")
    if site is None:
        extension = [
            e for e in resource.get("extension", []) if e.get("url") == codes.EXT_VERTEBRAL_LEVEL
        ]
        site = extension[0].get("valueCodeableConcept") if extension else None
    code = _code_of(site, SNOMED)
    return LEVEL_BY_SNOMED.get(code) if code is not None else None


def _notes(resource: JsonObject | None) -> list[str]:
    if resource is None:
        return []
    return [n["text"] for n in resource.get("note", []) if isinstance(n.get("text"), str)]


def _range(resource: JsonObject) -> tuple[int, int]:
    if "valueInteger" in resource:
        total = int(resource["valueInteger"])
        return total, total
    value = resource["valueRange"]
    return int(value["low"]["value"]), int(value["high"]["value"])


def _candidates(low: int, high: int) -> tuple[SinsCategory, ...]:
    return tuple(c for lo, hi, c in SINS_CATEGORY_BANDS if lo <= high and low <= hi)


def _category(sins: JsonObject) -> SinsCategory | None:
    for interpretation in sins.get("interpretation", []):
        code = _code_of(interpretation, codes.CS_SINS)
        if code is not None:
            return SinsCategory(code)
    return None


def _component_text(resource: JsonObject, system: str, code: str) -> str | None:
    for component in resource.get("component", []):
        if _has_code(component.get("code"), system, code):
            return _words(component.get("code"))
    return None


def _flagged_components(sins: JsonObject) -> list[str]:
    # A SINS component carries an extension of its own only to mark it (the discordant marker of
    # CONTRACT 4a v2): the marker's words, else the component's sentence, are a caveat.
    found = []
    for component in sins.get("component", []):
        extensions = component.get("extension") or []
        words = [e["valueString"] for e in extensions if isinstance(e.get("valueString"), str)]
        if words:
            found.extend(words)
        elif extensions and (text := _words(component.get("code"))) is not None:
            found.append(text)
    return found


def _named(concept: object) -> str | None:
    """A coded value as `display (text)`: the code's name, then what the output says of it."""
    if not isinstance(concept, dict):
        return None
    name = next((c.get("display") or c.get("code") for c in _codings(concept)), None)
    text = concept.get("text")
    if name is None:
        return text if isinstance(text, str) else None
    return f"{name} ({text})" if isinstance(text, str) and text != name else str(name)


def _component_values(resource: JsonObject | None, code: str) -> tuple[str, ...]:
    if resource is None:
        return ()
    values = []
    for component in resource.get("component", []):
        if _has_code(component.get("code"), codes.CS_SPINE_FINDING, code):
            words = _named(component.get("valueCodeableConcept"))
            if words is not None:
                values.append(words)
    return tuple(values)


def _escc(resources: Iterable[JsonObject]) -> str | None:
    """The ESCC grade of a level: an Observation coded `escc-grade`, or such a component."""
    for resource in resources:
        if _has_code(resource.get("code"), codes.CS_SPINE_FINDING, ESCC_GRADE):
            return _code_of(resource.get("valueCodeableConcept"), CS_ESCC)
        for component in resource.get("component", []):
            if _has_code(component.get("code"), codes.CS_SPINE_FINDING, ESCC_GRADE):
                return _code_of(component.get("valueCodeableConcept"), CS_ESCC)
    return None


def _noms(resources: Iterable[JsonObject]) -> str | None:
    """The NOMS inputs (CONTRACT 4f) in one sentence: each component's name and value."""
    for resource in resources:
        if not _has_code(resource.get("code"), codes.CS_SPINE_FINDING, NOMS_INPUTS):
            continue
        if isinstance(resource.get("valueString"), str):
            return str(resource["valueString"])
        parts = []
        for component in resource.get("component", []):
            name = _words(component.get("code"))
            value = component.get("valueString") or _words(component.get("valueCodeableConcept"))
            if name is not None and value is not None:
                parts.append(f"{name}: {value}")
        return "; ".join(parts) + "." if parts else None
    return None


def _myelopathy(resources: Iterable[JsonObject]) -> bool:
    """A current output reports myelopathy (the NOMS inputs' myelopathy component, CONTRACT 4f)."""
    for resource in resources:
        for part in (resource, *resource.get("component", [])):
            if (
                _has_code(part.get("code"), codes.CS_SPINE_FINDING, codes.MYELOPATHY)
                and part.get("valueBoolean") is True
            ):
                return True
    return False


def _unique(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(texts))


def _references(resource: JsonObject | None, element: str) -> list[str]:
    if resource is None:
        return []
    return [
        r["reference"] for r in resource.get(element, []) if isinstance(r.get("reference"), str)
    ]


def _is(resource: JsonObject, rtype: str, system: str, code: str) -> bool:
    return resource.get("resourceType") == rtype and _has_code(resource.get("code"), system, code)


def _level_view(
    level: VertebralLevel,
    sins: JsonObject,
    classification: JsonObject | None,
    risk: JsonObject | None,
    others: Sequence[JsonObject],
) -> LevelView:
    low, high = _range(sins)
    category = _category(sins)
    appearance: str | None = None
    if classification is not None:
        appearance = _words(classification.get("valueCodeableConcept")) or _words(
            classification.get("dataAbsentReason")
        )
    mitigation = risk.get("mitigation") if risk is not None else None
    # The mitigation has a column of its own; the caveats are everything else the outputs note.
    caveats = tuple(
        text
        for text in _unique(
            [*_notes(risk), *_flagged_components(sins), *_notes(sins), *_notes(classification)]
        )
        if text != mitigation
    )
    statuses = {r.get("status") for r in (sins, classification, risk) if r is not None}
    return LevelView(
        level=level,
        sins_low=low,
        sins_high=high,
        category=category,
        candidates=(category,) if category is not None else _candidates(low, high),
        mitigation=mitigation if isinstance(mitigation, str) else None,
        appearance=appearance,
        appearance_basis=_component_text(sins, codes.CS_SINS, BONE_LESION),
        known_primary=next(iter(_component_values(classification, KNOWN_PRIMARY)), None),
        likely_primaries=_component_values(classification, codes.LIKELY_PRIMARY),
        differential=_component_values(classification, codes.DIFFERENTIAL),
        caveats=caveats,
        escc_grade=_escc([sins, *(r for r in (classification,) if r is not None), *others]),
        preliminary="preliminary" in statuses,
    )


def build_view(
    outputs: Sequence[JsonObject], report: JsonObject, processor_version: str
) -> ReportView:
    """The view of one patient's report from its emitted outputs and its DiagnosticReport.

    `outputs` may hold anything the patient's derivation emitted (other patients' outputs, a
    Provenance or withdrawn outputs are ignored); the levels follow the order of the report's
    `result` (most unstable first), and a level with a SINS Observation but not in `result` follows
    in cranio-caudal order.
    """
    subject = report.get("subject", {}).get("reference")
    current = [
        r
        for r in outputs
        if r.get("subject", {}).get("reference") == subject
        and r.get("status") != "entered-in-error"
    ]
    by_level: dict[VertebralLevel, dict[str, JsonObject]] = {}
    others: dict[VertebralLevel, list[JsonObject]] = {}
    for resource in current:
        level = _level_of(resource)
        if level is None:
            continue
        kinds = by_level.setdefault(level, {})
        if _is(resource, "Observation", codes.CS_SINS, codes.SINS_TOTAL):
            kinds["sins"] = resource
        elif _is(resource, "Observation", codes.CS_SPINE_FINDING, codes.LESION_CLASSIFICATION):
            kinds["cls"] = resource
        elif resource.get("resourceType") == "RiskAssessment":
            kinds["risk"] = resource
        else:
            others.setdefault(level, []).append(resource)
    order = _report_order(report, by_level)
    levels = tuple(
        _level_view(
            level,
            by_level[level]["sins"],
            by_level[level].get("cls"),
            by_level[level].get("risk"),
            others.get(level, []),
        )
        for level in order
    )
    # Every input any output was derived from (Observations, Conditions, a Patient, ImagingStudies:
    # `derivedFrom`, a RiskAssessment's `basis`), so "from the findings listed" holds; the outputs
    # themselves (the SINS Observations a basis or the NOMS inputs cite) are not findings.
    own = {f"{r.get('resourceType')}/{r.get('id')}" for r in current}
    inputs = [
        reference
        for resource in current
        for element in ("derivedFrom", "basis")
        for reference in _references(resource, element)
        if reference.split("/_history/")[0] not in own
    ]
    inputs.extend(_references(report, "imagingStudy"))
    patient = str(subject).removeprefix("Patient/") if subject else ""
    return ReportView(
        patient=patient,
        status=str(report.get("status", "")),
        effective=report.get("effectiveDateTime"),
        conclusion=str(report.get("conclusion", "")),
        levels=levels,
        noms_inputs=_noms(current),
        inputs=tuple(sorted(set(inputs))),
        processor_version=processor_version,
        myelopathy=_myelopathy(current),
    )


def _report_order(
    report: JsonObject, by_level: Mapping[VertebralLevel, Mapping[str, JsonObject]]
) -> list[VertebralLevel]:
    ids = {kinds["sins"]["id"]: level for level, kinds in by_level.items() if "sins" in kinds}
    order: list[VertebralLevel] = []
    for reference in _references(report, "result"):
        parts = reference.split("/")
        level = ids.get(parts[1]) if len(parts) > 1 and parts[0] == "Observation" else None
        if level is not None and level not in order:
            order.append(level)
    rest = sorted((lvl for lvl in ids.values() if lvl not in order), key=lambda lvl: lvl.order)
    return [*order, *rest]
