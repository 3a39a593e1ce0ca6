"""The outbound half of the FHIR adapter: domain results out as FHIR R4 JSON (CONTRACT.md 4a-4e).

Outputs are plain dicts, ready for orjson; building them through the pydantic models would cost
about a millisecond per resource, so their shape is checked by the models in the tests instead.

Per level the outputs are the SINS Observation (4a), the classification Observation (4b) and the
RiskAssessment (4c); per patient one DiagnosticReport (4d) and one Provenance per derivation (4e).
Every output has a stable id per (patient, level), so a re-derivation is a new version of the same
resource. Versions are not decided here: a `Versioner` stamps each output in dependency order, and
the references between outputs use the version it stamped.

Choices where the contract leaves room, in R4 terms:
- SINS Observation `category` is both `survey` (a scoring instrument, like an Apgar score) and
  `imaging` (its findings are mostly read from imaging), so a search by either finds it.
- Every SINS component carries its sentence (answer or candidates, and why) in `code.text`:
  R4 `Observation.component` has no text or note element of its own.
- A classification whose appearance is open has no value and `dataAbsentReason` `unknown`, whose
  text names the appearances that remain; the domain's note says the same in words.
- Statuses: the SINS Observation and the RiskAssessment are `preliminary` when the category is open
  or an input is preliminary (`LevelAssessment.preliminary`); the classification when the
  appearance is open or an input is preliminary; the DiagnosticReport when any RiskAssessment is.
- The DiagnosticReport links every ImagingStudy handed in (the caller hands in the contributing
  ones); a level's outputs link the studies its own inputs were read from.
- `DiagnosticReport.issued` and `Provenance.recorded` are the derivation time; they and `meta` are
  the only parts that differ between two derivations of the same inputs (see `comparable`).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from fhir_app.domain.appearance import words
from fhir_app.domain.assessment import LevelAssessment, PatientSummary, consultation_advice
from fhir_app.domain.escc import escc_row, grade_words
from fhir_app.domain.findings import FindingKind
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins import ComponentResult
from fhir_app.fhir import codes, narrative
from fhir_app.fhir.inputs import JsonObject, MappedObservation, MappedStudy
from fhir_app.fhir.outbound_terms import (
    AUTHOR_AGENT,
    IMAGING_CATEGORY,
    LOINC_REPORT_DISPLAY,
    RADIOLOGY_SERVICE,
    SINS_ANSWER_DISPLAY,
    SURVEY_CATEGORY,
    coding,
    concept,
    data_absent_unknown,
    differential,
    escc_grade,
    escc_group,
    noms,
    observation_category,
    primary_tumor,
    risk_probability,
    sins_answer,
    sins_category,
    sins_code,
    sins_component,
    spine_finding,
    vertebral_level,
)
from fhir_app.fhir.report.presented import presented_form

# The kinds of per-(patient, level) outputs and the per-patient report, as they appear in ids.
LEVEL_KINDS: Final = frozenset({"sins", "cls", "risk"})
REPORT_KIND: Final = "report"
NOMS_KIND: Final = "noms"
# The per-patient outputs, as they appear in ids: the report and the NOMS inputs (CONTRACT 4d, 4f).
PATIENT_KINDS: Final = (REPORT_KIND, NOMS_KIND)
PROVENANCE_PREFIX: Final = "prov"

PROCESSOR_DEVICE_ID: Final = "processor"
PROCESSOR_NAME: Final = "fhir-app"

# Outputs that have a status and so can be withdrawn; a Provenance is a record, never withdrawn.
WITHDRAWABLE: Final = frozenset({"Observation", "RiskAssessment", "DiagnosticReport"})
ENTERED_IN_ERROR: Final = "entered-in-error"


# --- ids, references and time -------------------------------------------------------------


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def output_id(kind: str, patient: str, level: VertebralLevel | None) -> str:
    """The stable logical id of one output of a patient, valid as a FHIR id.

    `kind` is `sins`, `cls` or `risk` (with a level) or `report` or `noms` (level None). Patient
    ids may be 64 characters long, so the id carries the first 16 hex digits of the SHA-256 of the
    patient id instead of the id itself: `sins-t12-<16 hex>`, `report-<16 hex>`. Provenance ids
    depend on the emitted versions too and come from `provenance_id`.
    """
    patient_hash = _digest(patient, 16)
    if kind in PATIENT_KINDS:
        if level is not None:
            raise ValueError(f"the {kind} output is per patient: level must be None")
        return f"{kind}-{patient_hash}"
    if kind not in LEVEL_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; one of sins, cls, risk, report, noms")
    if level is None:
        raise ValueError(f"a {kind} output belongs to a level")
    return f"{kind}-{level.label.lower()}-{patient_hash}"


def provenance_id(patient: str, targets: Iterable[str]) -> str:
    """The id of the Provenance of one derivation: a hash of the patient and its targets.

    The targets are version-specific references, so a derivation that emits new versions gets a
    new Provenance, and one that emits exactly the same versions again maps to the same one.
    """
    return f"{PROVENANCE_PREFIX}-{_digest(chr(10).join([patient, *sorted(targets)]), 32)}"


def _aware(moment: datetime) -> datetime:
    # Times without a zone are taken as UTC: FHIR requires a zone on any time of day.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def instant(moment: datetime) -> str:
    """A FHIR `instant` in UTC with milliseconds, e.g. `2024-03-01T10:15:00.000Z`."""
    text = _aware(moment).astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def date_time(moment: datetime) -> str:
    """A FHIR `dateTime` keeping the moment's own offset (`Z` for UTC)."""
    text = _aware(moment).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def reference_to(resource: JsonObject) -> str:
    """The version-specific reference to a stamped output, `Observation/<id>/_history/<n>`."""
    version = resource["meta"]["versionId"]
    return f"{resource['resourceType']}/{resource['id']}/_history/{version}"


def _references(references: Iterable[str]) -> list[JsonObject]:
    return [{"reference": r} for r in references]


# The types R4 allows in Observation.derivedFrom. A Condition an output was derived from (CONTRACT
# 3, v2) is not one of them: it is referenced from the RiskAssessment's basis and the Provenance's
# entities (both Reference(Any)) instead, version-specific like every input.
OBSERVATION_DERIVED_FROM: Final = frozenset(
    {
        "DocumentReference",
        "ImagingStudy",
        "Media",
        "QuestionnaireResponse",
        "Observation",
        "MolecularSequence",
    }
)


def _derived_from(resource: JsonObject, references: Iterable[str]) -> None:
    """Set an output Observation's derivedFrom to the references R4 allows there, if any."""
    allowed = [r for r in references if r.split("/", 1)[0] in OBSERVATION_DERIVED_FROM]
    if allowed:
        resource["derivedFrom"] = _references(allowed)


# --- versions ------------------------------------------------------------------------------


class Versioner(Protocol):
    """Decides the version of each output as it is emitted.

    `stamp` gets an output without `meta.versionId` / `meta.lastUpdated` and returns it (the same
    dict or a new one: the caller uses the returned one) with both set, `versionId` a string. It may
    set `status` to `amended` when the output was `final` or `amended` before, the new one is
    `final`, and the content changed; `comparable` gives the content to compare. `emit_patient`
    stamps in dependency order, so a reference to an output always names the stamped version.
    """

    def stamp(self, resource: JsonObject) -> JsonObject:
        """Return the output with its version and last-updated time set."""
        ...


@dataclass(frozen=True, slots=True)
class FirstVersion:
    """The Versioner of the stateless path: every output is version 1, last updated `now`."""

    now: datetime

    def stamp(self, resource: JsonObject) -> JsonObject:
        """Set version 1 and `now`; the status stays as built."""
        meta = resource.get("meta", {})
        rest = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        resource["meta"] = {"versionId": "1", "lastUpdated": instant(self.now), **rest}
        return resource


def comparable(resource: JsonObject) -> JsonObject:
    """The content of an output that tells whether a re-derivation changed it.

    Leaves out what differs on every derivation (`meta.versionId`, `meta.lastUpdated`, `issued`,
    `recorded`, the `creation` of each presentedForm) and reads `amended` as `final`, since a
    Versioner sets `amended` itself.
    """
    content = {k: v for k, v in resource.items() if k not in ("issued", "recorded")}
    if "presentedForm" in content:
        content["presentedForm"] = [
            {k: v for k, v in a.items() if k != "creation"} for a in content["presentedForm"]
        ]
    if "meta" in content:
        content["meta"] = {
            k: v for k, v in content["meta"].items() if k not in ("versionId", "lastUpdated")
        }
    if content.get("status") == "amended":
        content["status"] = "final"
        if "presentedForm" in content:
            content["presentedForm"] = [_as_final_page(a) for a in content["presentedForm"]]
    return content


# How the report's page states an amended status (fhir/report/templates/report.html.j2).
_AMENDED_PAGE: Final = b'<p class="status">Status: amended'
_FINAL_PAGE: Final = b'<p class="status">Status: final'


def _as_final_page(attachment: JsonObject) -> JsonObject:
    """An amended report's HTML page as the page of the same report when final: the page states
    the status (service.PlannedVersions renders it again when it sets `amended`), and `comparable`
    reads `amended` as `final`."""
    data = attachment.get("data")
    if attachment.get("contentType") != "text/html" or not isinstance(data, str):
        return attachment
    try:
        page = base64.b64decode(data, validate=True)
    except binascii.Error:
        return attachment
    if _AMENDED_PAGE not in page:
        return attachment
    final = page.replace(_AMENDED_PAGE, _FINAL_PAGE, 1)
    return {**attachment, "data": base64.b64encode(final).decode("ascii")}


def withdrawn(previous: JsonObject) -> JsonObject:
    """The entered-in-error version of an output whose level lost every finding.

    Same id and content, `status` `entered-in-error`, the narrative opened by a banner that says so,
    and no `meta.versionId` / `meta.lastUpdated`, ready for a Versioner to stamp. `previous` is not
    changed. A Provenance has no status and cannot be withdrawn (ValueError).
    """
    if previous.get("resourceType") not in WITHDRAWABLE:
        raise ValueError(f"{previous.get('resourceType')} outputs cannot be withdrawn")
    result = copy.deepcopy(previous)
    meta = result.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
    result["status"] = ENTERED_IN_ERROR
    # The page a person reads would show the withdrawn report as if it stood.
    result.pop("presentedForm", None)
    if "text" in result:
        result["text"] = narrative.with_withdrawn_banner(result["text"])
    return result


# --- what a level was derived from ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Basis:
    """The version-specific references a level's outputs were derived from, sorted."""

    observations: tuple[str, ...]
    studies: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.observations + self.studies


def _counting(observations: Iterable[MappedObservation]) -> list[MappedObservation]:
    return [o for o in observations if not o.withdrawn and not o.ignored]


def _basis(observations: Sequence[MappedObservation], studies: Mapping[str, MappedStudy]) -> _Basis:
    study_ids = {sid for o in observations for sid in o.study_ids}
    return _Basis(
        tuple(sorted({o.reference for o in observations})),
        # A study referenced but not (yet) received has no version to reference; it is left out.
        tuple(sorted(studies[sid].reference for sid in study_ids if sid in studies)),
    )


def _effective(assessment: LevelAssessment, fallback: datetime) -> datetime:
    times = [_aware(f.observed_at) for f in assessment.findings.findings]
    return max(times) if times else _aware(fallback)


def _subject(patient: str) -> JsonObject:
    return {"reference": f"Patient/{patient}"}


def _notes(sentences: Iterable[str]) -> list[JsonObject]:
    seen: dict[str, None] = {}
    for sentence in sentences:
        seen.setdefault(sentence, None)
    return [{"text": s} for s in seen]


def _status(preliminary: bool) -> str:
    return "preliminary" if preliminary else "final"


# --- 4a SINS Observation -------------------------------------------------------------------


def _range(low: int, high: int) -> JsonObject:
    return {"low": {"value": low}, "high": {"value": high}}


def _sins_component(result: ComponentResult) -> JsonObject:
    entry: JsonObject = {}
    if result.discordance is not None:
        # CONTRACT 4a (v2): the discordant marker, as an extension besides the text.
        entry["extension"] = [
            {"url": codes.EXT_SINS_DISCORDANCE, "valueString": result.discordance}
        ]
    entry["code"] = concept(sins_component(result.component), text=result.sentence())
    if result.answer is not None:
        entry["valueCodeableConcept"] = concept(sins_answer(result.answer, result.high))
    elif result.known:
        entry["valueRange"] = _range(result.low, result.high)
    else:
        entry["dataAbsentReason"] = data_absent_unknown()
    return entry


def sins_notes(assessment: LevelAssessment) -> list[str]:
    """The notes of the SINS Observation: discordant evidence and what is missing at 6/7."""
    sins = assessment.sins
    sentences = [
        *sins.notes,
        *(d.sentence() for d in assessment.classification.appearance.discordances),
    ]
    missing = sins.missing_sentence()
    if missing is not None:
        sentences.append(missing)
    return sentences


def _sins_observation(
    patient: str,
    assessment: LevelAssessment,
    basis: _Basis,
    effective: str,
) -> JsonObject:
    sins = assessment.sins
    preliminary = assessment.preliminary
    notes = sins_notes(assessment)
    resource: JsonObject = {
        "resourceType": "Observation",
        "id": output_id("sins", patient, assessment.level),
        "meta": {"profile": [codes.PROFILE_SINS]},
        "text": narrative.sins_text(assessment, notes, preliminary),
        "status": _status(preliminary),
        "category": [
            observation_category(*SURVEY_CATEGORY),
            observation_category(*IMAGING_CATEGORY),
        ],
        "code": concept(sins_code(codes.SINS_TOTAL), text="SINS total score"),
        "subject": _subject(patient),
        "effectiveDateTime": effective,
    }
    if sins.total is not None:
        resource["valueInteger"] = sins.total
    else:
        resource["valueRange"] = _range(sins.low, sins.high)
    if sins.category is not None:
        resource["interpretation"] = [concept(sins_category(sins.category))]
    if notes:
        resource["note"] = _notes(notes)
    resource["bodySite"] = vertebral_level(assessment.level)
    resource["method"] = concept(sins_code(codes.SINS_METHOD))
    _derived_from(resource, basis.all)
    resource["component"] = [_sins_component(c) for c in sins.components]
    return resource


# --- 4b classification Observation ---------------------------------------------------------


def _classification_preliminary(assessment: LevelAssessment) -> bool:
    return assessment.classification.appearance.determined is None or any(
        f.preliminary for f in assessment.findings.findings
    )


def _classification_observation(
    patient: str, assessment: LevelAssessment, basis: _Basis, effective: str
) -> JsonObject:
    result = assessment.classification
    preliminary = _classification_preliminary(assessment)
    resource: JsonObject = {
        "resourceType": "Observation",
        "id": output_id("cls", patient, assessment.level),
        "meta": {"profile": [codes.PROFILE_CLASSIFICATION]},
        "text": narrative.classification_text(assessment, preliminary),
        "status": _status(preliminary),
        "category": [observation_category(*IMAGING_CATEGORY)],
        "code": concept(
            spine_finding(codes.LESION_CLASSIFICATION), text="Vertebral metastasis classification"
        ),
        "subject": _subject(patient),
        "effectiveDateTime": effective,
    }
    determined = result.appearance.determined
    if determined is not None:
        # The appearance as a classification: the `sins` code without the SINS points.
        resource["valueCodeableConcept"] = concept(
            coding(codes.CS_SINS, determined.value, SINS_ANSWER_DISPLAY[determined])
        )
    else:
        resource["dataAbsentReason"] = data_absent_unknown(
            f"Appearance open: {words(result.appearance.allows)}"
        )
    if result.notes:
        resource["note"] = _notes(result.notes)
    resource["bodySite"] = vertebral_level(assessment.level)
    _derived_from(resource, basis.all)
    components: list[JsonObject] = []
    if result.known_primary is not None:
        # The known primary in a component of its own, so a registry reads it from the outputs.
        components.append(
            {
                "code": concept(spine_finding(codes.PRIMARY_TUMOR)),
                "valueCodeableConcept": concept(
                    primary_tumor(result.known_primary), text=result.primary_context
                ),
            }
        )
    grade = assessment.escc
    if grade is not None:
        # The level's ESCC grade (DOMAIN.md 6), so a per-level table reads it beside the appearance.
        components.append(
            {
                "code": concept(spine_finding(codes.ESCC_GRADE)),
                "valueCodeableConcept": concept(escc_grade(grade), text=grade_words(grade)),
                "interpretation": [concept(escc_group(escc_row(grade).group))],
            }
        )
    components.extend(
        {
            "code": concept(spine_finding(codes.LIKELY_PRIMARY)),
            "valueCodeableConcept": concept(primary_tumor(code), text=result.remark(code)),
        }
        for code in result.likely_primaries
    )
    components.extend(
        {
            "code": concept(spine_finding(codes.DIFFERENTIAL)),
            "valueCodeableConcept": concept(differential(code)),
        }
        for code in result.differential
    )
    if components:
        resource["component"] = components
    return resource


# --- 4c RiskAssessment ---------------------------------------------------------------------


def mitigation(assessment: LevelAssessment) -> str | None:
    """The consultation advice of CONTRACT 4c, or what must be found out when 6/7 is open."""
    sins = assessment.sins
    if sins.surgical_consultation:
        return consultation_advice((assessment.level,))
    return sins.missing_sentence()


def _risk_assessment(
    patient: str,
    assessment: LevelAssessment,
    basis: _Basis,
    effective: str,
    sins_reference: str,
) -> JsonObject:
    sins = assessment.sins
    preliminary = assessment.preliminary
    advice = mitigation(assessment)
    prediction: JsonObject = {"outcome": concept(sins_code(codes.SPINAL_INSTABILITY))}
    if sins.category is not None:
        prediction["qualitativeRisk"] = concept(
            sins_category(sins.category), risk_probability(sins.category)
        )
    rationale = sins.rationale()
    grade = assessment.escc
    if grade is not None:
        # ESCC bears on the same decision (the N beside this M of NOMS), so the reader sees both.
        rationale += (
            f" {grade_words(grade)} at {assessment.level.label}; SINS is the mechanical (M) and "
            "ESCC the neurologic (N) input of NOMS."
        )
        if assessment.escc_discordance is not None:
            rationale += f" {assessment.escc_discordance}"
    prediction["rationale"] = rationale
    resource: JsonObject = {
        "resourceType": "RiskAssessment",
        "id": output_id("risk", patient, assessment.level),
        "meta": {"profile": [codes.PROFILE_RISK]},
        "text": narrative.risk_text(assessment, advice, preliminary),
        "extension": [
            {
                "url": codes.EXT_VERTEBRAL_LEVEL,
                "valueCodeableConcept": vertebral_level(assessment.level),
            }
        ],
        "status": _status(preliminary),
        "method": concept(sins_code(codes.SINS_METHOD)),
        "subject": _subject(patient),
        "occurrenceDateTime": effective,
        "basis": _references((sins_reference, *basis.all)),
        "prediction": [prediction],
    }
    if advice is not None:
        resource["mitigation"] = advice
    caveats = assessment.caveats()
    if caveats:
        # CONTRACT 4c (v2): every caveat of DOMAIN.md 3 reaches the RiskAssessment.
        resource["note"] = _notes(c.text for c in caveats)
    return resource


# --- 4d DiagnosticReport -------------------------------------------------------------------


def _report(
    patient: str,
    summary: PatientSummary,
    preliminary: bool,
    effective: str,
    issued: str,
    results: Sequence[str],
    studies: Sequence[str],
    level_outputs: Sequence[JsonObject],
    processor_version: str,
) -> JsonObject:
    resource: JsonObject = {
        "resourceType": "DiagnosticReport",
        "id": output_id(REPORT_KIND, patient, None),
        "meta": {"profile": [codes.PROFILE_REPORT]},
        "text": narrative.report_text(summary, preliminary),
        "status": _status(preliminary),
        "category": [concept(coding(codes.CS_DIAGNOSTIC_SERVICE, *RADIOLOGY_SERVICE))],
        "code": concept(
            coding(codes.LOINC, codes.LOINC_REPORT, LOINC_REPORT_DISPLAY),
            spine_finding(codes.ASSESSMENT_REPORT),
            text="Vertebral metastasis assessment",
        ),
        "subject": _subject(patient),
        "effectiveDateTime": effective,
        "issued": issued,
    }
    if results:
        resource["result"] = _references(results)
    if studies:
        resource["imagingStudy"] = _references(studies)
    resource["conclusion"] = summary.conclusion()
    # Rendered once per derived report, from the level outputs as emitted (CONTRACT 4d v2).
    resource["presentedForm"] = presented_form(level_outputs, resource, processor_version, issued)
    return resource


# --- 4f NOMS inputs Observation ------------------------------------------------------------


def _noms_observation(
    patient: str,
    summary: PatientSummary,
    preliminary: bool,
    effective: str,
    derived_from: Sequence[str],
) -> JsonObject:
    """The NOMS inputs of the patient (CONTRACT 4f): components N, O, M, S, never a treatment.

    Preliminary like the report: an open category at any level may make another level the most
    unstable one (the M), and a preliminary myelopathy finding changes N.

    Every component carries its words in `code.text`, as the SINS components do. N is the highest
    ESCC grade with its group as interpretation, and myelopathy a component of its own when a
    finding reports it; O the radiosensitivity class of the known primary; M the most unstable
    level's SINS category when the patient's highest SINS lies in one category, else the range of
    it (highest lowest to highest highest total over the levels); S `not assessed`.
    """
    inputs = summary.noms
    neurologic: JsonObject = {
        "code": concept(noms(codes.NOMS_NEUROLOGIC), text=f"N: {inputs.neurologic()}")
    }
    if inputs.highest_escc is not None and inputs.escc_group is not None:
        neurologic["valueCodeableConcept"] = concept(
            escc_grade(inputs.highest_escc), text=grade_words(inputs.highest_escc)
        )
        neurologic["interpretation"] = [concept(escc_group(inputs.escc_group))]
    else:
        neurologic["dataAbsentReason"] = data_absent_unknown("No escc-grade finding")
    components = [neurologic]
    if inputs.myelopathy is not None:
        components.append(
            {
                "code": concept(spine_finding(codes.MYELOPATHY), text=inputs.myelopathy_words()),
                "valueBoolean": inputs.myelopathy,
            }
        )
    row = inputs.radiosensitivity
    oncologic_code = codes.NOMS_NO_KNOWN_PRIMARY if row is None else row.radiosensitivity.value
    oncologic_text = inputs.oncologic() if row is None else f"{inputs.oncologic()} ({row.source})"
    components.append(
        {
            "code": concept(noms(codes.NOMS_ONCOLOGIC), text=f"O: {oncologic_text}"),
            "valueCodeableConcept": concept(noms(oncologic_code), text=oncologic_text),
        }
    )
    mechanical: JsonObject = {
        "code": concept(noms(codes.NOMS_MECHANICAL), text=f"M: {inputs.mechanical_words()}")
    }
    bounds = inputs.mechanical_range
    assert bounds is not None  # emitted only for a patient with a level
    # The patient's highest SINS: coded only when it lies in one category whatever the open
    # levels turn out to be, else the range from the highest lowest to the highest highest total.
    category = inputs.mechanical_category
    if category is not None:
        mechanical["valueCodeableConcept"] = concept(sins_category(category))
    else:
        mechanical["valueRange"] = _range(*bounds)
    components.append(mechanical)
    components.append(
        {
            "code": concept(noms(codes.NOMS_SYSTEMIC), text=f"S: {inputs.systemic()}"),
            "dataAbsentReason": concept(
                coding(codes.CS_DATA_ABSENT_REASON, "not-performed", "Not Performed"),
                text="Not assessed: systemic disease and fitness are not derived by fhir-app",
            ),
        }
    )
    resource: JsonObject = {
        "resourceType": "Observation",
        "id": output_id(NOMS_KIND, patient, None),
        "meta": {"profile": [codes.PROFILE_NOMS]},
        "text": narrative.noms_text(inputs, preliminary),
        "status": _status(preliminary),
        "category": [observation_category(*IMAGING_CATEGORY)],
        "code": concept(spine_finding(codes.NOMS_INPUTS), text="NOMS decision inputs"),
        "subject": _subject(patient),
        "effectiveDateTime": effective,
        "valueString": inputs.sentence(),
    }
    _derived_from(resource, derived_from)
    resource["component"] = components
    return resource


# --- 4e Provenance -------------------------------------------------------------------------


def _provenance(
    patient: str,
    targets: Sequence[str],
    sources: Sequence[str],
    recorded: datetime,
    processor_version: str,
) -> JsonObject:
    # CREATE when every target is a first version, else the derivation revised earlier outputs.
    first = all(t.endswith("/_history/1") for t in targets)
    activity = ("CREATE", "create") if first else ("UPDATE", "revise")
    resource: JsonObject = {
        "resourceType": "Provenance",
        "id": provenance_id(patient, targets),
        "meta": {"profile": [codes.PROFILE_PROVENANCE]},
        "text": narrative.provenance_text(processor_version, targets, sources),
        "contained": [
            {
                "resourceType": "Device",
                "id": PROCESSOR_DEVICE_ID,
                "deviceName": [{"name": PROCESSOR_NAME, "type": "manufacturer-name"}],
                "type": {"text": "FHIR processor software"},
                "version": [{"value": processor_version}],
            }
        ],
        "target": _references(targets),
        "recorded": instant(recorded),
        "activity": concept(coding(codes.CS_V3_DATA_OPERATION, *activity)),
        "agent": [
            {
                "type": concept(coding(codes.CS_PROVENANCE_AGENT_TYPE, *AUTHOR_AGENT)),
                "who": {
                    "reference": f"#{PROCESSOR_DEVICE_ID}",
                    "display": f"{PROCESSOR_NAME} {processor_version}",
                },
            }
        ],
    }
    if sources:
        resource["entity"] = [{"role": "source", "what": {"reference": s}} for s in sources]
    return resource


# --- the whole patient ---------------------------------------------------------------------


def emit_patient(
    patient: str,
    summary: PatientSummary,
    inputs: Mapping[VertebralLevel, Sequence[MappedObservation]],
    patient_inputs: Sequence[MappedObservation],
    studies: Sequence[MappedStudy],
    versioner: Versioner,
    recorded: datetime,
    processor_version: str,
    *,
    withdrawals: Sequence[JsonObject] = (),
) -> list[JsonObject]:
    """Every output of one patient, stamped, in dependency order.

    Per level (most unstable first, as in `summary`): the SINS Observation, the classification
    Observation, the RiskAssessment (basis: the stamped SINS Observation). Then the entered-in-error
    versions of `withdrawals` (previous outputs of levels that lost every finding, or the previous
    report and NOMS inputs when no level is left), then the NOMS inputs Observation (derived from
    every SINS Observation and the patient-wide inputs), then the DiagnosticReport (results: every
    stamped SINS and classification Observation and the NOMS inputs), then one Provenance whose
    targets are all of these.

    `inputs` are the counting input Observations of each level and `patient_inputs` the
    patient-wide ones (primary tumour, pain without a level) that every level is derived from;
    withdrawn or ignored inputs among them are skipped. `studies` are the patient's contributing
    ImagingStudies. `recorded` is the derivation time (`issued`, `recorded`). With no level and no
    withdrawal there is nothing to say and the list is empty.
    """
    if not processor_version:
        raise ValueError("processor_version must be a non-empty string")
    known_studies = {s.resource_id: s for s in studies if not s.withdrawn}
    shared = _counting(patient_inputs)
    emitted: list[JsonObject] = []
    results: list[str] = []
    sins_references: list[str] = []
    sources: set[str] = set()
    report_preliminary = False
    latest: datetime | None = None
    for assessment in summary.levels:
        level_inputs = _counting([*inputs.get(assessment.level, ()), *shared])
        basis = _basis(level_inputs, known_studies)
        sources.update(basis.observations)
        moment = _effective(assessment, recorded)
        latest = moment if latest is None else max(latest, moment)
        effective = date_time(moment)
        sins = versioner.stamp(_sins_observation(patient, assessment, basis, effective))
        classification = versioner.stamp(
            _classification_observation(patient, assessment, basis, effective)
        )
        risk = versioner.stamp(
            _risk_assessment(patient, assessment, basis, effective, reference_to(sins))
        )
        emitted.extend((sins, classification, risk))
        results.extend((reference_to(sins), reference_to(classification)))
        sins_references.append(reference_to(sins))
        report_preliminary = report_preliminary or risk["status"] == "preliminary"
    patient_ids = {output_id(kind, patient, None) for kind in PATIENT_KINDS}
    for previous in withdrawals:
        if summary.levels and previous.get("id") in patient_ids:
            raise ValueError(
                "the report and NOMS inputs of a patient with levels are re-derived, not withdrawn"
            )
        emitted.append(versioner.stamp(withdrawn(previous)))
    study_references = sorted(s.reference for s in known_studies.values())
    if summary.levels:
        assert latest is not None
        myelopathy_preliminary = any(
            obs.preliminary
            for obs in shared
            if any(f.finding.kind is FindingKind.MYELOPATHY for f in obs.findings)
        )
        noms_observation = versioner.stamp(
            _noms_observation(
                patient,
                summary,
                report_preliminary or myelopathy_preliminary,
                date_time(latest),
                [*sins_references, *sorted(obs.reference for obs in shared)],
            )
        )
        emitted.append(noms_observation)
        results.append(reference_to(noms_observation))
        emitted.append(
            versioner.stamp(
                _report(
                    patient,
                    summary,
                    report_preliminary,
                    date_time(latest),
                    instant(recorded),
                    results,
                    study_references,
                    emitted,
                    processor_version,
                )
            )
        )
    if not emitted:
        return []
    targets = [reference_to(r) for r in emitted]
    entity = [*sorted(sources), *study_references] if summary.levels else []
    emitted.append(
        versioner.stamp(_provenance(patient, targets, entity, recorded, processor_version))
    )
    return emitted
