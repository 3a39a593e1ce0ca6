"""The search parameters of every searchable type, as data (FHIR R4 searchparameter-registry).

One row per parameter: its name, FHIR search type, the elements it reads (a simple path: the
type, then element names; a choice element `effective` reads `effectiveDateTime`,
`effectivePeriod`, `effectiveInstant`), and the index that serves it. Everything else is derived
from this table: the index rows of a resource (`index.py`), the parsing and validation of a
request (`request.py`) and the CapabilityStatement's `searchParam`, `searchInclude` and
`searchRevInclude` (`capability.py`). A parameter that is not here is not declared and is refused.

Source: the R4 SearchParameter registry (http://hl7.org/fhir/R4/searchparameter-registry.html);
each row names its definition. The rows without a definition are fhir-app's own, kept because
CONTRACT section 5 searches RiskAssessment and Provenance by `code`: their R4 counterparts are the
assessment method and the provenance activity.

Index kinds:
- `token`: (system, code) rows; `reference`: (target type, target id) rows; `date`: [low, high)
  ranges of the value's precision; `string`: normalised text rows;
- `compartment`: the patient the resource belongs to, a column of the current row (a Provenance
  has no subject: its patient is the patient of the derivation that emitted it);
- `id` and `last-updated`: columns of the current row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

SearchType = Literal["token", "reference", "date", "string"]
IndexKind = Literal["token", "reference", "date", "string", "compartment", "id", "last-updated"]

R4: Final = "http://hl7.org/fhir/SearchParameter/"

# The types a reference may name in this server (Provenance.target / entity can be any of them).
SERVED_TYPES: Final = (
    "Observation",
    "ImagingStudy",
    "Patient",
    "Condition",
    "RiskAssessment",
    "DiagnosticReport",
    "Provenance",
)


@dataclass(frozen=True, slots=True)
class SearchParameter:
    """One search parameter of one resource type."""

    name: str
    type: SearchType
    paths: tuple[str, ...]
    index: IndexKind
    documentation: str
    definition: str | None = None
    # Reference parameters: the types the reference may point to.
    targets: tuple[str, ...] = ()

    @property
    def modifiers(self) -> frozenset[str]:
        """The modifiers this parameter takes (FHIR R4 search.html#modifiers)."""
        if self.index in ("id", "last-updated"):
            return frozenset()
        common = {"missing"}
        if self.type == "token":
            return frozenset({*common, "not"})
        if self.type == "string":
            return frozenset({*common, "exact", "contains"})
        if self.type == "reference":
            return frozenset({*common, *self.targets})
        return frozenset(common)


def _id(rtype: str) -> SearchParameter:
    return SearchParameter(
        "_id", "token", (f"{rtype}.id",), "id", "The logical id.", R4 + "Resource-id"
    )


def _last_updated(rtype: str) -> SearchParameter:
    return SearchParameter(
        "_lastUpdated",
        "date",
        (f"{rtype}.meta.lastUpdated",),
        "last-updated",
        "When the current version was stored.",
        R4 + "Resource-lastUpdated",
    )


def _patient(path: str, documentation: str, definition: str) -> SearchParameter:
    return SearchParameter(
        "patient",
        "reference",
        (path,),
        "compartment",
        documentation,
        definition,
        ("Patient",),
    )


def _subject(rtype: str, targets: tuple[str, ...]) -> SearchParameter:
    return SearchParameter(
        "subject",
        "reference",
        (f"{rtype}.subject",),
        "reference",
        f"The subject, {' or '.join(t + '/<id>' for t in targets)}; matches its type only.",
        f"{R4}{rtype}-subject",
        targets,
    )


def _clinical_patient(rtype: str) -> SearchParameter:
    return _patient(
        f"{rtype}.subject",
        "The patient, <id> or Patient/<id> (the subject when it is a Patient).",
        R4 + "clinical-patient",
    )


def _token(
    name: str, paths: tuple[str, ...], documentation: str, definition: str | None
) -> SearchParameter:
    return SearchParameter(name, "token", paths, "token", documentation, definition)


def _date(
    name: str, paths: tuple[str, ...], documentation: str, definition: str
) -> SearchParameter:
    return SearchParameter(name, "date", paths, "date", documentation, definition)


def _reference(
    name: str, paths: tuple[str, ...], targets: tuple[str, ...], documentation: str, definition: str
) -> SearchParameter:
    return SearchParameter(
        name, "reference", paths, "reference", documentation, definition, targets
    )


def _string(
    name: str, paths: tuple[str, ...], documentation: str, definition: str
) -> SearchParameter:
    return SearchParameter(name, "string", paths, "string", documentation, definition)


CODE_DOC: Final = "A code, as system|code, code or |code (no system)."
IDENTIFIER_DOC: Final = "A business identifier, system|value or value."

PARAMETERS: Final[dict[str, tuple[SearchParameter, ...]]] = {
    "Observation": (
        _id("Observation"),
        _last_updated("Observation"),
        _subject("Observation", ("Group", "Device", "Patient", "Location")),
        _clinical_patient("Observation"),
        _token("code", ("Observation.code",), CODE_DOC, R4 + "clinical-code"),
        _token(
            "identifier",
            ("Observation.identifier",),
            IDENTIFIER_DOC + " Inputs keep theirs; derived Observations carry none.",
            R4 + "clinical-identifier",
        ),
        _token("status", ("Observation.status",), "The status.", R4 + "Observation-status"),
        _token("category", ("Observation.category",), "The category.", R4 + "Observation-category"),
        _date(
            "date",
            ("Observation.effective",),
            "When the finding was made (effective[x]), with prefixes eq ne gt ge lt le sa eb.",
            R4 + "clinical-date",
        ),
        _reference(
            "derived-from",
            ("Observation.derivedFrom",),
            (
                "Media",
                "Observation",
                "ImagingStudy",
                "MolecularSequence",
                "QuestionnaireResponse",
                "DocumentReference",
            ),
            "What the observation was derived from (e.g. the ImagingStudy, the inputs).",
            R4 + "Observation-derived-from",
        ),
    ),
    "ImagingStudy": (
        _id("ImagingStudy"),
        _last_updated("ImagingStudy"),
        _subject("ImagingStudy", ("Group", "Device", "Patient")),
        _clinical_patient("ImagingStudy"),
        _token(
            "identifier",
            ("ImagingStudy.identifier",),
            IDENTIFIER_DOC + " E.g. the DICOM Study Instance UID.",
            R4 + "clinical-identifier",
        ),
        _token("status", ("ImagingStudy.status",), "The status.", R4 + "ImagingStudy-status"),
        _token(
            "modality",
            ("ImagingStudy.series.modality",),
            "A series' modality (DICOM).",
            R4 + "ImagingStudy-modality",
        ),
        _date(
            "started",
            ("ImagingStudy.started",),
            "When the study started.",
            R4 + "ImagingStudy-started",
        ),
    ),
    "Patient": (
        _id("Patient"),
        _last_updated("Patient"),
        _token("identifier", ("Patient.identifier",), IDENTIFIER_DOC, R4 + "Patient-identifier"),
        _token(
            "gender", ("Patient.gender",), "The administrative gender.", R4 + "individual-gender"
        ),
        _date("birthdate", ("Patient.birthDate",), "The birth date.", R4 + "individual-birthdate"),
        _string(
            "name",
            ("Patient.name",),
            "Any part of a name (family, given, prefix, suffix, text); starts with, ignoring "
            "case and accents; :exact and :contains.",
            R4 + "Patient-name",
        ),
        _string("family", ("Patient.name.family",), "The family name.", R4 + "individual-family"),
        _string("given", ("Patient.name.given",), "A given name.", R4 + "individual-given"),
    ),
    "Condition": (
        _id("Condition"),
        _last_updated("Condition"),
        _subject("Condition", ("Group", "Patient")),
        _clinical_patient("Condition"),
        _token("code", ("Condition.code",), CODE_DOC, R4 + "clinical-code"),
        _token("identifier", ("Condition.identifier",), IDENTIFIER_DOC, R4 + "clinical-identifier"),
        _token(
            "clinical-status",
            ("Condition.clinicalStatus",),
            "The clinical status (active, remission, resolved...).",
            R4 + "Condition-clinical-status",
        ),
        _date(
            "onset-date",
            ("Condition.onset",),
            "When the condition began (onsetDateTime or onsetPeriod).",
            R4 + "Condition-onset-date",
        ),
    ),
    "RiskAssessment": (
        _id("RiskAssessment"),
        _last_updated("RiskAssessment"),
        _subject("RiskAssessment", ("Group", "Patient")),
        _clinical_patient("RiskAssessment"),
        _token("method", ("RiskAssessment.method",), CODE_DOC, R4 + "RiskAssessment-method"),
        _token(
            "code",
            ("RiskAssessment.code", "RiskAssessment.method"),
            "fhir-app's own (CONTRACT 5): the assessment's code or method, e.g. "
            "https://fhir-app.org/fhir/CodeSystem/sins|sins.",
            None,
        ),
        _date(
            "date",
            ("RiskAssessment.occurrence",),
            "When the assessment was made (occurrenceDateTime).",
            R4 + "clinical-date",
        ),
    ),
    "DiagnosticReport": (
        _id("DiagnosticReport"),
        _last_updated("DiagnosticReport"),
        _subject("DiagnosticReport", ("Group", "Device", "Patient", "Location")),
        _clinical_patient("DiagnosticReport"),
        _token("code", ("DiagnosticReport.code",), CODE_DOC, R4 + "clinical-code"),
        _token(
            "status", ("DiagnosticReport.status",), "The status.", R4 + "DiagnosticReport-status"
        ),
        _date(
            "date",
            ("DiagnosticReport.effective",),
            "The clinically relevant time of the report (effective[x]).",
            R4 + "clinical-date",
        ),
        _date(
            "issued",
            ("DiagnosticReport.issued",),
            "When this version of the report was made.",
            R4 + "DiagnosticReport-issued",
        ),
        _reference(
            "result",
            ("DiagnosticReport.result",),
            ("Observation",),
            "A result: the SINS, classification and NOMS inputs Observations.",
            R4 + "DiagnosticReport-result",
        ),
    ),
    "Provenance": (
        _id("Provenance"),
        _last_updated("Provenance"),
        _patient(
            "Provenance.target",
            "The patient whose outputs the derivation emitted, <id> or Patient/<id>.",
            R4 + "Provenance-patient",
        ),
        _reference(
            "target",
            ("Provenance.target",),
            SERVED_TYPES,
            "An output the derivation emitted (any version of it).",
            R4 + "Provenance-target",
        ),
        _reference(
            "entity",
            ("Provenance.entity.what",),
            SERVED_TYPES,
            "An input the derivation read.",
            R4 + "Provenance-entity",
        ),
        _date(
            "recorded",
            ("Provenance.recorded",),
            "When it was recorded.",
            R4 + "Provenance-recorded",
        ),
        _token(
            "code",
            ("Provenance.activity",),
            "fhir-app's own (CONTRACT 5): the activity, e.g. "
            "http://terminology.hl7.org/CodeSystem/v3-DataOperation|CREATE.",
            None,
        ),
    ),
}

# The sort keys of `_sort` (with `-` for descending): when the version was stored, and the
# clinical `date` where a type has one.
SORT_KEYS: Final = ("_lastUpdated", "date")


def parameters_of(rtype: str) -> dict[str, SearchParameter]:
    """The search parameters of a type by name; empty when the type is not searchable."""
    return {parameter.name: parameter for parameter in PARAMETERS.get(rtype, ())}


def sort_keys_of(rtype: str) -> tuple[str, ...]:
    """The `_sort` keys a type supports."""
    names = parameters_of(rtype)
    return tuple(key for key in SORT_KEYS if key in names)


def includes_of(rtype: str) -> list[str]:
    """`Type:param` of every reference parameter of `rtype` (its `_include` values)."""
    return [f"{rtype}:{p.name}" for p in PARAMETERS.get(rtype, ()) if p.type == "reference"]


def revincludes_of(rtype: str) -> list[str]:
    """`Source:param` of every reference parameter, of any type, that may point to `rtype`."""
    return sorted(
        f"{source}:{p.name}"
        for source, parameters in PARAMETERS.items()
        for p in parameters
        if p.type == "reference" and rtype in p.targets
    )
