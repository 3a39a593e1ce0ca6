"""Inbound mapping of input Observations and ImagingStudies (CONTRACT.md section 3)."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_app.domain.escc import EsccGrade
from fhir_app.domain.findings import (
    CtAttenuation,
    FindingKind,
    PatientContext,
    PosteriorElementInvolvement,
    Sex,
    Side,
    T1Signal,
    T2Signal,
)
from fhir_app.domain.levels import LEVEL_BY_LABEL, VertebralLevel
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    PosterolateralAnswer,
)
from fhir_app.fhir import codes, samples
from fhir_app.fhir.inbound import (
    PRIMARY_TUMOR_CODES,
    map_observation,
    map_patient,
    map_study,
    parse_fhir_datetime,
)
from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject, MappedObservation
from fhir_app.fhir.parse import validate_resource

RECEIVED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
T12 = LEVEL_BY_LABEL["T12"]
EFFECTIVE = "2024-05-06T07:08:09+02:00"
EFFECTIVE_UTC = datetime(2024, 5, 6, 5, 8, 9, tzinfo=UTC)


def accept(raw: JsonObject, version: int = 1) -> MappedObservation:
    """Validate and map an Observation as the service does."""
    validate_resource(raw)
    return map_observation(
        raw, resource_id=str(raw.get("id", "obs")), version=version, received_at=RECEIVED
    )


def accept_any(raw: JsonObject) -> object:
    """Validate and map an Observation or an ImagingStudy."""
    if raw["resourceType"] == "ImagingStudy":
        validate_resource(raw)
        return map_study(raw, resource_id="s1", version=1)
    return accept(raw)


def refused(raw: JsonObject) -> Issue:
    """The single issue an input is rejected with (validation or mapping)."""
    with pytest.raises(InputRejected) as caught:
        accept_any(raw)
    issues = caught.value.issues
    assert len(issues) == 1, issues
    return issues[0]


def finding_obs(kind: str, value: Any, level: str | None = "T12", **kw: Any) -> JsonObject:
    return samples.observation("o1", "p1", kind, value, level=level, effective=EFFECTIVE, **kw)


def panel(findings: list[tuple[str, Any]], level: str = "T12", **kw: Any) -> JsonObject:
    return samples.lesion_panel("o1", "p1", level, findings, effective=EFFECTIVE, **kw)


def site(code: str) -> JsonObject:
    return {"coding": [{"system": codes.SNOMED, "code": code}]}


# --- one finding of every kind, standalone and as a panel component ------------------------------

# (samples kind, value, expected FindingKind, expected domain value)
EVERY_FINDING: list[tuple[str, Any, FindingKind, Any]] = [
    ("appearance", "lytic", FindingKind.APPEARANCE, LesionAnswer.LYTIC),
    ("sins:bone-lesion", "blastic", FindingKind.APPEARANCE, LesionAnswer.BLASTIC),
    ("pain", "mechanical", FindingKind.PAIN, PainAnswer.MECHANICAL),
    ("sins:pain", "pain-free", FindingKind.PAIN, PainAnswer.PAIN_FREE),
    ("alignment", "de-novo-deformity", FindingKind.ALIGNMENT, AlignmentAnswer.DE_NOVO_DEFORMITY),
    ("sins:alignment", "normal-alignment", FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
    ("sins:collapse", "collapse-lt-50", FindingKind.COLLAPSE, CollapseAnswer.LT_50),
    (
        "sins:posterolateral",
        "unilateral",
        FindingKind.POSTEROLATERAL,
        PosterolateralAnswer.UNILATERAL,
    ),
    ("height_loss", 35, FindingKind.HEIGHT_LOSS, 35.0),
    ("involvement", 60.5, FindingKind.BODY_INVOLVEMENT, 60.5),
    (
        "posterior",
        "left",
        FindingKind.POSTERIOR_ELEMENT,
        PosteriorElementInvolvement(frozenset({Side.LEFT})),
    ),
    (
        "posterior",
        "both",
        FindingKind.POSTERIOR_ELEMENT,
        PosteriorElementInvolvement(frozenset({Side.LEFT, Side.RIGHT})),
    ),
    ("posterior", "none", FindingKind.POSTERIOR_ELEMENT, PosteriorElementInvolvement(frozenset())),
    ("contrast", True, FindingKind.CONTRAST_ENHANCEMENT, True),
    ("treated", False, FindingKind.TREATED, False),
    ("ct", 850, FindingKind.CT_ATTENUATION, CtAttenuation(850.0)),
    ("t1", "iso", FindingKind.MRI_T1, T1Signal.ISO),
    ("t2", "hypo", FindingKind.MRI_T2, T2Signal.HYPO),
    ("t2", "heterogeneous", FindingKind.MRI_T2, T2Signal.HETEROGENEOUS),
    *(("escc", g.value, FindingKind.ESCC, g) for g in EsccGrade),
]
# Patient-level findings: no level, even inside a vertebral-lesion panel (CONTRACT 2c, v2).
PATIENT_LEVEL_FINDINGS: list[tuple[str, Any, FindingKind, Any]] = [
    ("myelopathy", True, FindingKind.MYELOPATHY, True),
    ("myelopathy", False, FindingKind.MYELOPATHY, False),
]


def test_every_finding_kind_is_covered() -> None:
    # lesion-present comes from a secondary cancer Condition only (test_inbound_condition.py).
    observed = set(FindingKind) - {FindingKind.LESION_PRESENT}
    assert {row[2] for row in EVERY_FINDING + PATIENT_LEVEL_FINDINGS} == observed


@pytest.mark.parametrize(("kind", "value", "finding_kind", "expected"), PATIENT_LEVEL_FINDINGS)
@pytest.mark.parametrize("level", [None, "T12"])
def test_patient_level_finding_has_no_level_standalone_or_in_a_panel(
    kind: str, value: Any, finding_kind: FindingKind, expected: Any, level: str | None
) -> None:
    standalone = accept(finding_obs(kind, value, level=level))
    in_panel = accept(panel([(kind, value), ("appearance", "lytic")]))
    [alone] = standalone.findings
    assert alone.level is None
    assert alone.finding.kind is finding_kind
    assert alone.finding.value == expected
    assert alone.finding.patient_wide
    [wide] = [f for f in in_panel.findings if f.finding.kind is finding_kind]
    assert wide == alone
    assert in_panel.levels == frozenset({T12})


@pytest.mark.parametrize(
    ("value", "words"),
    [("4", "'4' is not one"), (None, "no such coding")],
)
def test_an_escc_grade_outside_the_scale_is_refused(value: str | None, words: str) -> None:
    raw = finding_obs("escc", "2")
    raw["valueCodeableConcept"] = (
        {"coding": [{"system": codes.CS_ESCC, "code": value}]}
        if value is not None
        else {"text": "grade 2"}
    )
    issue = refused(raw)
    assert issue.code == "code-invalid"
    assert words in issue.diagnostics
    assert issue.expression == ("Observation.valueCodeableConcept",)


def test_two_escc_grades_in_one_value_are_refused() -> None:
    raw = finding_obs("escc", "2")
    raw["valueCodeableConcept"]["coding"].append({"system": codes.CS_ESCC, "code": "3"})
    assert "several ESCC grades: 2, 3" in refused(raw).diagnostics


def test_an_escc_grade_stated_absent_gives_no_finding() -> None:
    raw = finding_obs("escc", "2")
    del raw["valueCodeableConcept"]
    raw["dataAbsentReason"] = {"text": "not assessed"}
    assert accept(raw).findings == ()


def test_a_myelopathy_stated_absent_needs_no_level() -> None:
    raw = finding_obs("myelopathy", True, level=None)
    del raw["valueBoolean"]
    raw["dataAbsentReason"] = {"text": "not examined"}
    mapped = accept(raw)
    assert mapped.findings == ()
    assert not mapped.ignored


@pytest.mark.parametrize(("kind", "value", "finding_kind", "expected"), EVERY_FINDING)
def test_standalone_finding(
    kind: str, value: Any, finding_kind: FindingKind, expected: Any
) -> None:
    mapped = accept(finding_obs(kind, value, study="s1"))
    assert mapped.patient == "p1"
    assert not mapped.ignored
    assert not mapped.withdrawn
    assert mapped.study_ids == ("s1",)
    [level_finding] = mapped.findings
    assert level_finding.level is T12
    finding = level_finding.finding
    assert finding.kind is finding_kind
    assert finding.value == expected
    assert finding.observed_at == EFFECTIVE_UTC
    assert finding.source == "Observation/o1/_history/1"
    assert not finding.preliminary
    assert not finding.patient_wide


@pytest.mark.parametrize(("kind", "value", "finding_kind", "expected"), EVERY_FINDING)
def test_panel_component_gives_the_same_finding_as_standalone(
    kind: str, value: Any, finding_kind: FindingKind, expected: Any
) -> None:
    standalone = accept(finding_obs(kind, value, study="s1"))
    in_panel = accept(panel([(kind, value)], study="s1"))
    assert in_panel.findings == standalone.findings
    assert in_panel.study_ids == standalone.study_ids
    assert in_panel.levels == frozenset({T12})


def test_panel_of_every_finding_equals_the_standalone_findings_in_order() -> None:
    rows = [(kind, value) for kind, value, _, _ in EVERY_FINDING]
    in_panel = accept(panel(rows, status="preliminary"))
    standalone = [
        f
        for kind, value in rows
        for f in accept(finding_obs(kind, value, status="preliminary")).findings
    ]
    assert list(in_panel.findings) == standalone
    assert all(f.finding.preliminary for f in in_panel.findings)


def test_panel_passes_over_components_outside_the_contract() -> None:
    raw = panel([("height_loss", 10)])
    raw["component"].insert(
        0,
        {
            "code": {"coding": [{"system": codes.LOINC, "code": "8867-4"}]},
            "valueQuantity": {"value": 80, "system": codes.UCUM, "code": "/min"},
        },
    )
    [finding] = accept(raw).findings
    assert finding.finding.value == 10.0


def test_primary_tumor_needs_no_body_site() -> None:
    raw = samples.primary_tumor("o1", "p1", "renal-cell", effective="2023-11")
    mapped = accept(raw)
    assert mapped.primary_tumor == "renal-cell"
    assert mapped.primary_observed_at == datetime(2023, 11, 1, tzinfo=UTC)
    assert mapped.findings == ()
    assert not mapped.ignored


def test_primary_tumor_ignores_a_body_site_outside_sins() -> None:
    raw = samples.primary_tumor("o1", "p1", "breast", effective="2023")
    raw["bodySite"] = site("64688005")  # coccyx: irrelevant to a patient-level fact
    assert accept(raw).primary_tumor == "breast"


def test_primary_tumor_in_a_panel_equals_standalone() -> None:
    standalone = accept(samples.primary_tumor("o1", "p1", "prostate", effective=EFFECTIVE))
    raw = panel([("height_loss", 0)])
    raw["component"].append(
        {
            "code": samples.concept(codes.CS_SPINE_FINDING, codes.PRIMARY_TUMOR),
            "valueCodeableConcept": samples.concept(codes.CS_PRIMARY_TUMOR, "prostate"),
        }
    )
    in_panel = accept(raw)
    assert in_panel.primary_tumor == standalone.primary_tumor == "prostate"
    assert in_panel.primary_observed_at == standalone.primary_observed_at


def test_every_primary_tumour_code_of_domain_md_is_accepted() -> None:
    assert "unknown-primary" in PRIMARY_TUMOR_CODES
    assert {"prostate", "renal-cell", "testis-seminoma", "phaeochromocytoma"} <= PRIMARY_TUMOR_CODES
    for code in PRIMARY_TUMOR_CODES:
        assert accept(samples.primary_tumor("o1", "p1", code, effective="2024")).primary_tumor


@pytest.mark.parametrize("kind", ["pain", "sins:pain"])
def test_pain_without_body_site_is_patient_wide(kind: str) -> None:
    mapped = accept(finding_obs(kind, "mechanical", level=None))
    [level_finding] = mapped.findings
    assert level_finding.level is None
    assert level_finding.finding.patient_wide
    assert mapped.levels == frozenset()


def test_pain_panel_without_body_site_is_patient_wide() -> None:
    raw = panel([("pain", "occasional-non-mechanical")])
    del raw["bodySite"]
    [level_finding] = accept(raw).findings
    assert level_finding.level is None
    assert level_finding.finding.patient_wide


def test_sins_location_is_accepted_but_never_overrides_the_level() -> None:
    mapped = accept(finding_obs("sins:location", "rigid"))  # T12 is junctional
    assert mapped.findings == ()
    assert not mapped.ignored


def test_data_absent_value_states_nothing() -> None:
    raw = finding_obs("height_loss", 10)
    del raw["valueQuantity"]
    raw["dataAbsentReason"] = samples.concept(codes.CS_DATA_ABSENT_REASON, "not-performed")
    mapped = accept(raw)
    assert mapped.findings == ()
    assert not mapped.ignored


def test_partial_percent_values_at_the_bounds_are_accepted() -> None:
    assert accept(finding_obs("height_loss", 0)).findings[0].finding.value == 0.0
    assert accept(finding_obs("involvement", 100)).findings[0].finding.value == 100.0


# --- status ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_withdrawn_status_is_mapped_and_flagged(status: str) -> None:
    mapped = accept(finding_obs("appearance", "mixed", status=status))
    assert mapped.withdrawn
    assert not mapped.ignored
    assert mapped.levels == frozenset({T12})  # the service re-derives this level without it


@pytest.mark.parametrize(
    ("status", "preliminary"),
    [
        ("final", False),
        ("amended", False),
        ("corrected", False),
        ("preliminary", True),
        ("unknown", True),
    ],
)
def test_counting_statuses(status: str, preliminary: bool) -> None:
    mapped = accept(finding_obs("appearance", "mixed", status=status))
    assert not mapped.withdrawn
    assert not mapped.ignored
    assert mapped.findings[0].finding.preliminary is preliminary


def test_registered_has_no_result_yet_and_is_ignored() -> None:
    raw = finding_obs("height_loss", 10, status="registered")
    del raw["valueQuantity"]
    mapped = accept(raw)
    assert mapped.ignored
    assert mapped.findings == ()


# --- codes outside the contract ---------------------------------------------------------------

# The FHIR R4 example Observation (observation-example.json, body weight), as published.
FHIR_R4_EXAMPLE_BODY_WEIGHT: JsonObject = {
    "resourceType": "Observation",
    "id": "example",
    "text": {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>Generated Narrative with '
        "Details</b></p><p><b>id</b>: example</p><p><b>status</b>: final</p></div>",
    },
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                    "display": "Vital Signs",
                }
            ]
        }
    ],
    "code": {
        "coding": [
            {"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"},
            {"system": "http://loinc.org", "code": "3141-9", "display": "Body weight Measured"},
            {"system": "http://snomed.info/sct", "code": "27113001", "display": "Body weight"},
            {
                "system": "http://acme.org/devices/clinical-codes",
                "code": "body-weight",
                "display": "Body Weight",
            },
        ]
    },
    "subject": {"reference": "Patient/example"},
    "encounter": {"reference": "Encounter/example"},
    "effectiveDateTime": "2016-03-28",
    "valueQuantity": {
        "value": 185,
        "unit": "lbs",
        "system": "http://unitsofmeasure.org",
        "code": "[lb_av]",
    },
}


def test_official_example_with_an_unrelated_loinc_code_is_ignored() -> None:
    mapped = accept(copy.deepcopy(FHIR_R4_EXAMPLE_BODY_WEIGHT))
    assert mapped.ignored
    assert mapped.patient == "example"
    assert mapped.findings == ()


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (codes.CS_SINS, codes.SINS_TOTAL),
        (codes.CS_SPINE_FINDING, codes.LESION_CLASSIFICATION),
        (codes.CS_SPINE_FINDING, "no-such-code"),
    ],
)
def test_output_and_unknown_codes_are_ignored_not_derived_from(system: str, code: str) -> None:
    raw = finding_obs("height_loss", 10)
    raw["code"] = samples.concept(system, code)
    raw["valueQuantity"] = {"value": 99, "system": codes.UCUM, "code": "mg"}
    assert accept(raw).ignored


def test_ehr_codings_next_to_the_contract_code_are_passed_over() -> None:
    raw = finding_obs("height_loss", 25)
    raw["code"]["coding"].insert(0, {"system": codes.LOINC, "code": "72133-2", "display": "x"})
    raw["code"]["coding"].append({"system": "urn:oid:1.2.840.114350", "code": "LOCAL-77"})
    assert accept(raw).findings[0].finding.value == 25.0


def test_agreeing_contract_codings_are_one_meaning() -> None:
    raw = finding_obs("pain", "mechanical")
    raw["code"]["coding"].append({"system": codes.CS_SINS, "code": "pain"})
    assert accept(raw).findings[0].finding.value is PainAnswer.MECHANICAL


# --- a real-EHR style resource ------------------------------------------------------------------


def ehr_observation() -> JsonObject:
    """A finding as an EHR sends it: meta, text, extensions, identifiers, contained, references."""
    raw = finding_obs("involvement", 55)
    raw.update(
        {
            "meta": {
                "versionId": "3",
                "lastUpdated": "2024-05-06T09:00:00.123Z",
                "source": "#epic-prod-42",
                "profile": ["http://example.org/fhir/StructureDefinition/radiology-finding"],
                "tag": [{"system": "urn:ehr:tags", "code": "reviewed"}],
            },
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">T12: 55% of the body</div>',
            },
            "extension": [
                {
                    "url": "http://open.epic.com/FHIR/StructureDefinition/extension/source",
                    "valueString": "RAD",
                    "_valueString": {"id": "v1"},  # refused by fhir.resources (issue #204)
                },
                {
                    "url": "http://example.org/ext/reader",
                    "valueReference": {"reference": "#pract1"},
                },
            ],
            "_status": {
                "extension": [{"url": "http://example.org/ext/status-note", "valueCode": "ok"}]
            },
            "identifier": [{"system": "urn:oid:1.2.840.114350.1", "value": "OBS-123"}],
            "contained": [
                {"resourceType": "Practitioner", "id": "pract1", "name": [{"text": "R"}]}
            ],
            "performer": [{"reference": "#pract1"}],
            "encounter": {"reference": "Encounter/e9", "display": "CT visit"},
            "issued": "2024-05-06T10:00:00.5-04:00",
            "interpretation": [{"text": "abnormal"}],
            "note": [{"text": "Compared with 2023."}],
            "method": {"text": "Visual estimate"},
            "subject": {
                "reference": "https://ehr.example.org/fhir/R4/Patient/p1",
                "display": "Doe, Jane",
            },
            "partOf": [{"reference": "https://ehr.example.org/fhir/R4/ImagingStudy/s7/_history/2"}],
        }
    )
    raw["code"]["coding"].insert(0, {"system": codes.LOINC, "code": "59776-5"})
    raw["bodySite"]["coding"].append({"system": "urn:ehr:sites", "code": "T12"})
    raw["bodySite"]["text"] = "Twelfth thoracic vertebra"
    return raw


def test_real_ehr_style_observation_is_accepted_as_it_is() -> None:
    raw = ehr_observation()
    before = copy.deepcopy(raw)
    mapped = accept(raw)
    assert raw == before  # the received JSON is never rewritten
    assert mapped.patient == "p1"
    assert mapped.study_ids == ("s7",)
    [level_finding] = mapped.findings
    assert level_finding.level is T12
    assert level_finding.finding.value == 55.0


# --- time -------------------------------------------------------------------------------------


def observed_at(**elements: Any) -> datetime:
    raw = finding_obs("height_loss", 10)
    del raw["effectiveDateTime"]
    raw.update(elements)
    return accept(raw).findings[0].finding.observed_at


def test_effective_date_time_wins_over_issued() -> None:
    assert observed_at(
        effectiveDateTime="2024-01-01T00:00:00Z", issued="2024-02-01T00:00:00Z"
    ) == datetime(2024, 1, 1, tzinfo=UTC)


def test_effective_period_start_then_issued_then_received() -> None:
    period = {"start": "2024-03-01T10:00:00+01:00", "end": "2024-03-01T11:00:00+01:00"}
    assert observed_at(effectivePeriod=period, issued="2024-04-01T00:00:00Z") == datetime(
        2024, 3, 1, 9, tzinfo=UTC
    )
    assert observed_at(effectivePeriod={"end": "2024-03-02"}) == datetime(2024, 3, 2, tzinfo=UTC)
    assert observed_at(issued="2024-04-01T00:00:00.250Z") == datetime(
        2024, 4, 1, 0, 0, 0, 250000, tzinfo=UTC
    )
    assert observed_at() == RECEIVED


def test_effective_instant_is_read() -> None:
    assert observed_at(effectiveInstant="2024-06-01T12:00:00-05:00") == datetime(
        2024, 6, 1, 17, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-07", datetime(2024, 7, 1, tzinfo=UTC)),
        ("2024-07-15", datetime(2024, 7, 15, tzinfo=UTC)),
        ("2024-07-15T23:30:00Z", datetime(2024, 7, 15, 23, 30, tzinfo=UTC)),
        ("2024-07-15T23:30:00+14:00", datetime(2024, 7, 15, 9, 30, tzinfo=UTC)),
        ("2024-07-15T23:30:00.123456789-00:30", datetime(2024, 7, 16, 0, 0, 0, 123456, UTC)),
    ],
)
def test_fhir_datetimes_become_aware_utc(text: str, expected: datetime) -> None:
    parsed = parse_fhir_datetime(text, "x")
    assert parsed == expected
    assert parsed.tzinfo is UTC


def test_naive_received_time_is_read_as_utc() -> None:
    raw = finding_obs("height_loss", 10)
    del raw["effectiveDateTime"]
    naive = datetime(2025, 6, 1, 8, 0)
    mapped = map_observation(raw, resource_id="o1", version=2, received_at=naive)
    assert mapped.findings[0].finding.observed_at == naive.replace(tzinfo=UTC)
    other = datetime(2025, 6, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    mapped = map_observation(raw, resource_id="o1", version=2, received_at=other)
    assert mapped.findings[0].finding.observed_at == datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def test_impossible_date_is_refused_by_the_mapping_too() -> None:
    with pytest.raises(InputRejected) as caught:
        parse_fhir_datetime("2024-02-30", "Observation.effectiveDateTime")
    [issue] = caught.value.issues
    assert (issue.code, issue.expression) == ("value", ("Observation.effectiveDateTime",))


# --- references -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/p1",
        "Patient/p1/_history/4",
        "http://ehr.example.org/fhir/Patient/p1",
        "https://ehr.example.org/fhir/R4/Patient/p1/_history/2",
    ],
)
def test_subject_forms(reference: str) -> None:
    raw = finding_obs("height_loss", 10)
    raw["subject"] = {"reference": reference}
    assert accept(raw).patient == "p1"


def test_study_references_from_derived_from_and_part_of() -> None:
    raw = finding_obs("height_loss", 10)
    raw["derivedFrom"] = [
        {"reference": "ImagingStudy/s1"},
        {"reference": "DocumentReference/d1"},
        {"reference": "ImagingStudy/s1/_history/3"},
    ]
    raw["partOf"] = [{"reference": "http://pacs.example.org/fhir/ImagingStudy/s2"}]
    assert accept(raw).study_ids == ("s1", "s2")


# --- one test per rejection kind ---------------------------------------------------------------


def assert_issue(issue: Issue, code: str, expression: str, *words: str) -> None:
    assert issue.severity == "error"
    assert issue.code == code
    assert issue.expression == (expression,)
    for word in words:
        assert word in issue.diagnostics


def test_missing_subject() -> None:
    raw = finding_obs("height_loss", 10)
    del raw["subject"]
    assert_issue(refused(raw), "required", "Observation.subject", "Patient/<id>")


def test_subject_without_reference() -> None:
    raw = finding_obs("height_loss", 10)
    raw["subject"] = {"identifier": {"system": "urn:mrn", "value": "123"}}
    assert_issue(refused(raw), "required", "Observation.subject.reference")


@pytest.mark.parametrize("reference", ["Group/g1", "#p1", "urn:uuid:1234", "foo/Patient/p1"])
def test_subject_that_is_not_a_patient(reference: str) -> None:
    raw = finding_obs("height_loss", 10)
    raw["subject"] = {"reference": reference}
    assert_issue(refused(raw), "value", "Observation.subject.reference", reference)


def test_missing_level() -> None:
    raw = finding_obs("height_loss", 10, level=None)
    assert_issue(refused(raw), "required", "Observation.bodySite", "vertebral level")


def test_missing_level_of_a_panel() -> None:
    raw = panel([("appearance", "lytic"), ("pain", "mechanical")])
    del raw["bodySite"]
    assert_issue(refused(raw), "required", "Observation.bodySite")


def test_unknown_level() -> None:
    raw = finding_obs("height_loss", 10)
    raw["bodySite"] = {"coding": [{"system": codes.SNOMED, "code": "421060004"}], "text": "Spine"}
    assert_issue(refused(raw), "code-invalid", "Observation.bodySite", "C1-S5", "Spine")


def test_level_as_text_only() -> None:
    raw = finding_obs("pain", "mechanical")
    raw["bodySite"] = {"text": "T12"}
    assert_issue(refused(raw), "code-invalid", "Observation.bodySite")


def test_coccyx() -> None:
    raw = finding_obs("appearance", "lytic")
    raw["bodySite"] = site("64688005")
    assert_issue(refused(raw), "business-rule", "Observation.bodySite", "coccyx is outside SINS")


def test_occiput() -> None:
    # CONTRACT 2a: the occipital bone structure is SNOMED CT 31640002.
    raw = panel([("appearance", "lytic")])
    raw["bodySite"] = site("31640002")
    assert_issue(refused(raw), "business-rule", "Observation.bodySite", "occiput is outside SINS")


def test_the_forearm_bone_is_no_level_and_not_the_occiput() -> None:
    # SNOMED CT 55797009 is "bone structure of forearm"; v1 took it for the occiput.
    raw = panel([("appearance", "lytic")])
    raw["bodySite"] = site("55797009")
    issue = refused(raw)
    assert_issue(issue, "code-invalid", "Observation.bodySite", "no vertebral level")
    assert "occiput" not in issue.diagnostics


# --- CT attenuation: mean or maximum by Observation.method (CONTRACT 3, v2) -------------------

CT_METHOD_ROWS = [
    (None, CtAttenuation(640.0)),
    ("mean", CtAttenuation(640.0)),
    ("max", CtAttenuation(None, 640.0)),
]


@pytest.mark.parametrize(("method", "expected"), CT_METHOD_ROWS)
def test_ct_method_says_mean_or_maximum(method: str | None, expected: CtAttenuation) -> None:
    (found,) = accept(finding_obs("ct", 640, method=method)).findings
    assert found.finding.value == expected


def test_a_panel_method_applies_to_its_attenuation_component() -> None:
    raw = panel([("ct", 1210), ("appearance", "blastic")])
    raw["method"] = {"coding": [{"system": codes.SNOMED, "code": codes.SNOMED_MAXIMUM}]}
    values = [f.finding.value for f in accept(raw).findings]
    assert values == [CtAttenuation(None, 1210.0), LesionAnswer.BLASTIC]


def test_a_method_of_another_system_leaves_the_mean() -> None:
    raw = finding_obs("ct", 80)
    raw["method"] = {"coding": [{"system": "http://example.org/methods", "code": "roi"}]}
    (found,) = accept(raw).findings
    assert found.finding.value == CtAttenuation(80.0)


def test_a_method_naming_mean_and_maximum_is_refused() -> None:
    raw = finding_obs("ct", 80)
    raw["method"] = {
        "coding": [
            {"system": codes.SNOMED, "code": codes.SNOMED_MEAN},
            {"system": codes.SNOMED, "code": codes.SNOMED_MAXIMUM},
        ]
    }
    assert_issue(refused(raw), "value", "Observation.method", "both mean", "and maximum")


# --- Patient: the context of DOMAIN.md 4a ------------------------------------------------------

PATIENT_ROWS = [
    ("female", "1960-04-12", Sex.FEMALE, date(1960, 4, 12), date(1960, 4, 12)),
    ("male", "1960-04", Sex.MALE, date(1960, 4, 1), date(1960, 4, 30)),
    ("other", "1960", None, date(1960, 1, 1), date(1960, 12, 31)),
    ("unknown", "2024-02", None, date(2024, 2, 1), date(2024, 2, 29)),
    (None, None, None, None, None),
]


@pytest.mark.parametrize(("gender", "birth", "sex", "earliest", "latest"), PATIENT_ROWS)
def test_patient_gender_and_birth_date(
    gender: str | None,
    birth: str | None,
    sex: Sex | None,
    earliest: date | None,
    latest: date | None,
) -> None:
    raw: JsonObject = {"resourceType": "Patient", "id": "p1"}
    if gender is not None:
        raw["gender"] = gender
    if birth is not None:
        raw["birthDate"] = birth
    validate_resource(raw)
    mapped = map_patient(raw, resource_id="p1", version=3)
    assert mapped.context == PatientContext(sex, earliest, latest)
    assert mapped.reference == "Patient/p1/_history/3"


@pytest.mark.parametrize("birth", ["1960-13", "1960-02-30", "60-01-01"])
def test_an_impossible_birth_date_is_refused_by_the_mapping_too(birth: str) -> None:
    with pytest.raises(InputRejected) as caught:
        map_patient({"resourceType": "Patient", "birthDate": birth}, resource_id="p", version=1)
    assert caught.value.issues[0].expression == ("Patient.birthDate",)


def test_pain_at_the_coccyx_is_refused_too() -> None:
    raw = finding_obs("pain", "mechanical")
    raw["bodySite"] = site("64688005")
    assert_issue(refused(raw), "business-rule", "Observation.bodySite", "coccyx")


def test_two_levels_in_one_body_site() -> None:
    raw = finding_obs("appearance", "lytic")
    raw["bodySite"]["coding"].append({"system": codes.SNOMED, "code": VertebralLevel.L1.snomed})
    assert_issue(refused(raw), "code-invalid", "Observation.bodySite", "T12", "L1")


def test_unknown_unit() -> None:
    raw = finding_obs("ct", 300)
    raw["valueQuantity"]["code"] = "HU"
    assert_issue(refused(raw), "value", "Observation.valueQuantity.code", "[hnsf'U]")


def test_hounsfield_without_ucum_system() -> None:
    raw = finding_obs("ct", 300)
    del raw["valueQuantity"]["system"]
    assert_issue(refused(raw), "value", "Observation.valueQuantity.system", codes.UCUM)


def test_percent_in_a_panel_with_the_wrong_unit() -> None:
    raw = panel([("appearance", "lytic"), ("height_loss", 10)])
    raw["component"][1]["valueQuantity"]["code"] = "mm"
    assert_issue(refused(raw), "value", "Observation.component[1].valueQuantity.code")


@pytest.mark.parametrize("percent", [-1, 100.5, 250])
def test_percent_outside_0_to_100(percent: float) -> None:
    raw = finding_obs("height_loss", percent)
    assert_issue(refused(raw), "value", "Observation.valueQuantity.value", "0-100")


def test_quantity_with_a_comparator() -> None:
    raw = finding_obs("height_loss", 50)
    raw["valueQuantity"]["comparator"] = ">"
    assert_issue(refused(raw), "value", "Observation.valueQuantity.comparator", "exact")


def test_quantity_without_a_number() -> None:
    raw = finding_obs("height_loss", 50)
    del raw["valueQuantity"]["value"]
    assert_issue(refused(raw), "required", "Observation.valueQuantity", "number")


def test_wrong_value_type() -> None:
    raw = finding_obs("height_loss", 10)
    del raw["valueQuantity"]
    raw["valueString"] = "10%"
    assert_issue(refused(raw), "value", "Observation.value[x]", "valueQuantity", "valueString")


def test_wrong_value_type_in_a_panel_component() -> None:
    raw = panel([("appearance", "lytic"), ("pain", "mechanical"), ("contrast", True)])
    del raw["component"][2]["valueBoolean"]
    raw["component"][2]["valueInteger"] = 1
    assert_issue(refused(raw), "value", "Observation.component[2].value[x]", "valueBoolean")


def test_missing_value() -> None:
    raw = finding_obs("treated", True)
    del raw["valueBoolean"]
    assert_issue(refused(raw), "required", "Observation.value[x]")


def test_bad_primary_code() -> None:
    raw = samples.primary_tumor("o1", "p1", "breast", effective="2024")
    raw["valueCodeableConcept"]["coding"][0]["code"] = "spleen"
    assert_issue(
        refused(raw), "code-invalid", "Observation.valueCodeableConcept", "spleen", "primary-tumor"
    )


def test_primary_without_a_primary_tumor_coding() -> None:
    raw = samples.primary_tumor("o1", "p1", "breast", effective="2024")
    raw["valueCodeableConcept"] = {"coding": [{"system": codes.SNOMED, "code": "254837009"}]}
    assert_issue(refused(raw), "code-invalid", "Observation.valueCodeableConcept")


def test_two_primaries_in_one_panel() -> None:
    raw = panel([])
    for code in ("breast", "thyroid"):
        raw["component"].append(
            {
                "code": samples.concept(codes.CS_SPINE_FINDING, codes.PRIMARY_TUMOR),
                "valueCodeableConcept": samples.concept(codes.CS_PRIMARY_TUMOR, code),
            }
        )
    assert_issue(refused(raw), "business-rule", "Observation.component", "breast", "thyroid")


def test_answer_of_another_component() -> None:
    raw = finding_obs("sins:pain", "lytic")
    assert_issue(refused(raw), "code-invalid", "Observation.valueCodeableConcept", "'lytic'")


def test_answer_outside_the_sins_system() -> None:
    raw = finding_obs("appearance", "lytic")
    raw["valueCodeableConcept"] = {"coding": [{"system": codes.SNOMED, "code": "50631009"}]}
    assert_issue(refused(raw), "code-invalid", "Observation.valueCodeableConcept", codes.CS_SINS)


def test_two_answers_in_one_reading() -> None:
    raw = finding_obs("appearance", "lytic")
    raw["valueCodeableConcept"]["coding"].append({"system": codes.CS_SINS, "code": "blastic"})
    assert_issue(refused(raw), "code-invalid", "Observation.valueCodeableConcept", "several")


@pytest.mark.parametrize(
    ("weighting", "signals"),
    [
        ("t2", [codes.RADLEX_HYPER, codes.RADLEX_ISO]),
        ("t2", [codes.RADLEX_HYPER, codes.RADLEX_ISO, codes.RADLEX_HYPO]),
        ("t1", [codes.RADLEX_HYPER, codes.RADLEX_HYPO]),
    ],
)
def test_mri_signal_combinations_other_than_t2_heterogeneous(
    weighting: str, signals: list[str]
) -> None:
    raw = finding_obs(weighting, "iso")
    raw["valueCodeableConcept"] = {"coding": [{"system": codes.RADLEX, "code": s} for s in signals]}
    assert_issue(refused(raw), "value", "Observation.valueCodeableConcept", "signal")


def test_mri_signal_outside_radlex_hyper_iso_hypo() -> None:
    raw = finding_obs("t1", "iso")
    raw["valueCodeableConcept"] = {"coding": [{"system": codes.RADLEX, "code": "RID28473"}]}
    assert_issue(refused(raw), "code-invalid", "Observation.valueCodeableConcept", "RID28473")


def test_posterior_element_sides_together_with_none() -> None:
    raw = finding_obs("posterior", "left")
    raw["valueCodeableConcept"]["coding"].append(
        {"system": codes.CS_SINS, "code": "no-posterolateral"}
    )
    assert_issue(refused(raw), "value", "Observation.valueCodeableConcept", "no-posterolateral")


def test_posterior_element_left_and_right_codings_mean_both_sides() -> None:
    raw = finding_obs("posterior", "left")
    raw["valueCodeableConcept"]["coding"].append(
        {"system": codes.SNOMED, "code": codes.SNOMED_RIGHT}
    )
    value = accept(raw).findings[0].finding.value
    assert value == PosteriorElementInvolvement(frozenset({Side.LEFT, Side.RIGHT}))


def test_contract_codes_of_different_meaning() -> None:
    raw = finding_obs("height_loss", 10)
    raw["code"]["coding"].append({"system": codes.CS_SINS, "code": "pain"})
    assert_issue(refused(raw), "code-invalid", "Observation.code", "different meaning")


def test_panel_inside_a_panel() -> None:
    raw = panel([("appearance", "lytic")])
    raw["component"][0]["code"] = samples.concept(codes.CS_SPINE_FINDING, codes.VERTEBRAL_LESION)
    assert_issue(refused(raw), "code-invalid", "Observation.component[0].code")


def test_bad_location_answer() -> None:
    raw = finding_obs("sins:location", "wobbly")
    assert_issue(refused(raw), "code-invalid", "Observation.valueCodeableConcept", "location")


# --- ImagingStudy --------------------------------------------------------------------------------


def study(**changes: Any) -> JsonObject:
    raw = samples.imaging_study("s1", "p1", "CT", started="2024-05-06T07:00:00Z", uid="1.2.3.4")
    raw.update(changes)
    return raw


def test_map_study() -> None:
    raw = study()
    raw["series"].append({"uid": "1.2.3.4.2", "modality": samples.coding(codes.DCM, "MR")})
    raw["series"].append({"uid": "1.2.3.4.3", "modality": samples.coding(codes.DCM, "CT")})
    validate_resource(raw)
    mapped = map_study(raw, resource_id="s1", version=2)
    assert mapped.patient == "p1"
    assert mapped.status == "available"
    assert mapped.modalities == ("CT", "MR")
    assert mapped.study_uid == "1.2.3.4"
    assert mapped.started == "2024-05-06T07:00:00Z"
    assert mapped.reference == "ImagingStudy/s1/_history/2"
    assert not mapped.withdrawn


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_withdrawn_study(status: str) -> None:
    assert map_study(study(status=status), resource_id="s1", version=1).withdrawn


def test_study_without_uid_or_series() -> None:
    raw = study()
    del raw["identifier"], raw["series"], raw["started"]
    mapped = map_study(raw, resource_id="s1", version=1)
    assert (mapped.study_uid, mapped.modalities, mapped.started) == (None, (), None)


def test_a_study_of_another_modality_is_ignored() -> None:
    """Valid R4 (an ultrasound): stored, never a finding's context (it was refused before)."""
    raw = study()
    raw["series"][0]["modality"] = samples.coding(codes.DCM, "US")
    mapped = map_study(raw, resource_id="s1", version=1)
    assert mapped.ignored
    assert mapped.modalities == ()


def test_modality_outside_dicom() -> None:
    raw = study()
    raw["series"][0]["modality"] = {"system": "urn:local", "code": "CT"}
    assert_issue(refused(raw), "code-invalid", "ImagingStudy.series[0].modality", "urn:local")


def test_study_without_subject() -> None:
    raw = study()
    del raw["subject"]
    # R4 makes ImagingStudy.subject 1..1, so validation refuses it before the mapping would.
    issue = refused(raw)
    assert issue.code == "required"
    assert issue.expression == ("ImagingStudy.subject",)


# --- property: any panel is the sum of its standalone findings ----------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(EVERY_FINDING), min_size=1, max_size=8))
def test_any_panel_equals_its_standalone_findings(rows: list[tuple[str, Any, Any, Any]]) -> None:
    pairs = [(kind, value) for kind, value, _, _ in rows]
    in_panel = accept(panel(pairs))
    standalone = [f for kind, value in pairs for f in accept(finding_obs(kind, value)).findings]
    assert list(in_panel.findings) == standalone


def test_non_image_series_beside_ct_are_tolerated() -> None:
    raw = samples.imaging_study("s1", "p1", "CT", started="2025-01-01", uid="1.2.3")
    raw["series"].append({"uid": "1.2.3.9", "modality": samples.coding(codes.DCM, "SR")})
    mapped = map_study(raw, resource_id="s1", version=1)
    assert mapped.modalities == ("CT",)


def test_a_leap_second_is_the_last_instant_of_its_minute() -> None:
    """The R4 dateTime regex allows :60; ordered just before the next minute."""
    leap = parse_fhir_datetime("2016-12-31T23:59:60Z", "Observation.effectiveDateTime")
    assert leap == datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert leap < parse_fhir_datetime("2017-01-01T00:00:00Z", "x")
    assert leap > parse_fhir_datetime("2016-12-31T23:59:59.5Z", "x")


def test_a_modifier_extension_refuses_a_contract_input() -> None:
    negated = [{"url": "http://example.org/negated", "valueBoolean": True}]
    raw = finding_obs("appearance", "lytic")
    raw["modifierExtension"] = negated
    assert_issue(refused(raw), "not-supported", "Observation.modifierExtension[0]")
    other = {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"}}
    assert map_observation(
        {**other, "modifierExtension": negated}, resource_id="o", version=1, received_at=RECEIVED
    ).ignored
    with pytest.raises(InputRejected):
        map_patient(
            {"resourceType": "Patient", "modifierExtension": negated}, resource_id="p", version=1
        )
