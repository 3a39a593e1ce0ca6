"""The outbound mapping against CONTRACT.md 4a-4e, every output checked by the R4B models."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.riskassessment import RiskAssessment
from pydantic import ValidationError

from fhir_app.domain.assessment import PatientSummary, summarise
from fhir_app.domain.findings import (
    CtAttenuation,
    Finding,
    FindingKind,
    FindingValue,
    LevelFindings,
    PosteriorElementInvolvement,
    Side,
    T2Signal,
)
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins_answers import (
    AlignmentAnswer,
    CollapseAnswer,
    LesionAnswer,
    PainAnswer,
    SinsCategory,
    SinsComponent,
)
from fhir_app.fhir import codes, outbound
from fhir_app.fhir.inputs import JsonObject, LevelFinding, MappedObservation, MappedStudy
from fhir_app.fhir.outbound import (
    FirstVersion,
    comparable,
    date_time,
    emit_patient,
    instant,
    output_id,
    provenance_id,
    withdrawn,
)

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
RECORDED = datetime(2024, 3, 2, 8, 30, tzinfo=UTC)
PATIENT = "pat-1"
VERSION = "0.1.0"
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
HISTORY = re.compile(
    r"^(Observation|RiskAssessment|DiagnosticReport|ImagingStudy)/[^/]+/_history/\d+$"
)

MODELS: dict[str, Any] = {
    "Observation": Observation,
    "RiskAssessment": RiskAssessment,
    "DiagnosticReport": DiagnosticReport,
    "Provenance": Provenance,
}

T12, C7, L3, T7 = VertebralLevel.T12, VertebralLevel.C7, VertebralLevel.L3, VertebralLevel.T7
NO_SIDE = PosteriorElementInvolvement(frozenset())
LEFT = PosteriorElementInvolvement(frozenset({Side.LEFT}))
BOTH = PosteriorElementInvolvement(frozenset({Side.LEFT, Side.RIGHT}))


# --- building domain inputs ------------------------------------------------------------------


def obs(
    rid: str,
    level: VertebralLevel | None,
    kind: FindingKind,
    value: FindingValue,
    *,
    at: datetime = T0,
    version: int = 1,
    status: str = "final",
    studies: tuple[str, ...] = (),
) -> MappedObservation:
    """One input Observation stating one finding."""
    reference = f"Observation/{rid}/_history/{version}"
    finding = Finding(
        kind,
        value,
        at,
        source=reference,
        preliminary=status == "preliminary",
        patient_wide=level is None,
    )
    return MappedObservation(
        rid, version, PATIENT, status, (LevelFinding(level, finding),), study_ids=studies
    )


def primary(rid: str, code: str) -> MappedObservation:
    """A patient-level primary-tumour input."""
    return MappedObservation(rid, 1, PATIENT, "final", primary_tumor=code, primary_observed_at=T0)


@dataclass
class Patient:
    """Inputs of one patient, grouped the way the service hands them to emit_patient."""

    observations: list[MappedObservation]
    patient_inputs: list[MappedObservation] = field(default_factory=list)
    studies: list[MappedStudy] = field(default_factory=list)

    def inputs(self) -> dict[VertebralLevel, list[MappedObservation]]:
        grouped: dict[VertebralLevel, list[MappedObservation]] = {}
        for o in self.observations:
            for level in o.levels:
                grouped.setdefault(level, []).append(o)
        return grouped

    def summary(self) -> PatientSummary:
        known = next((o.primary_tumor for o in self.patient_inputs if o.primary_tumor), None)
        wide = [f.finding for o in self.patient_inputs for f in o.findings if f.level is None]
        levels = {
            level: LevelFindings(
                tuple(f.finding for o in obs_ for f in o.findings if f.level is level)
                + tuple(wide),
                known,
                lesion_levels=len(self.inputs()),
            )
            for level, obs_ in self.inputs().items()
        }
        return summarise(levels)

    def emit(
        self,
        versioner: Any = None,
        recorded: datetime = RECORDED,
        withdrawals: Sequence[JsonObject] = (),
    ) -> list[JsonObject]:
        return emit_patient(
            PATIENT,
            self.summary(),
            self.inputs(),
            self.patient_inputs,
            self.studies,
            versioner or FirstVersion(T0),
            recorded,
            VERSION,
            withdrawals=withdrawals,
        )


def study(rid: str = "ct1", version: int = 2) -> MappedStudy:
    return MappedStudy(rid, version, PATIENT, "available", ("CT",), "1.2.3", "2024-03-01")


def complete_t12() -> list[MappedObservation]:
    """T12: junctional 3 + mechanical 3 + lytic 2 + normal 0 + <50% 2 + unilateral 1 = 11."""
    return [
        obs("t12-pain", T12, FindingKind.PAIN, PainAnswer.MECHANICAL),
        obs("t12-look", T12, FindingKind.APPEARANCE, LesionAnswer.LYTIC, studies=("ct1",)),
        obs("t12-align", T12, FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        obs("t12-height", T12, FindingKind.HEIGHT_LOSS, 30.0, at=T0 + timedelta(hours=2)),
        obs("t12-post", T12, FindingKind.POSTERIOR_ELEMENT, LEFT),
    ]


def complete_c7() -> list[MappedObservation]:
    """C7: junctional 3 + mechanical 3 + lytic 2 + subluxation 4 + >50% 3 + bilateral 3 = 18."""
    return [
        obs("c7-pain", C7, FindingKind.PAIN, PainAnswer.MECHANICAL),
        obs("c7-look", C7, FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        obs("c7-align", C7, FindingKind.ALIGNMENT, AlignmentAnswer.SUBLUXATION_TRANSLATION),
        obs("c7-height", C7, FindingKind.HEIGHT_LOSS, 60.0),
        obs("c7-post", C7, FindingKind.POSTERIOR_ELEMENT, BOTH),
    ]


def complete_l3() -> list[MappedObservation]:
    """L3: mobile 2 + pain-free 0 + blastic (CT 900 HU) 0 + normal 0 + none 0 + none 0 = 2."""
    return [
        obs("l3-pain", L3, FindingKind.PAIN, PainAnswer.PAIN_FREE),
        obs("l3-ct", L3, FindingKind.CT_ATTENUATION, CtAttenuation(900.0), studies=("ct1",)),
        obs("l3-align", L3, FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        obs("l3-height", L3, FindingKind.HEIGHT_LOSS, 0.0),
        obs("l3-involved", L3, FindingKind.BODY_INVOLVEMENT, 20.0),
        obs("l3-post", L3, FindingKind.POSTERIOR_ELEMENT, NO_SIDE),
    ]


def incomplete_t7() -> list[MappedObservation]:
    """T7: semi-rigid 1 + pain ? + lytic 2 + normal 0 + collapse 0-1 + posterolateral ? = 3-10."""
    return [
        obs("t7-look", T7, FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        obs("t7-align", T7, FindingKind.ALIGNMENT, AlignmentAnswer.NORMAL),
        obs("t7-height", T7, FindingKind.HEIGHT_LOSS, 0.0),
    ]


def three_levels() -> Patient:
    return Patient(
        [*complete_t12(), *complete_c7(), *complete_l3()],
        [primary("prim", "breast")],
        [study()],
    )


# --- checking outputs ------------------------------------------------------------------------


def validate(resource: JsonObject) -> None:
    """Round-trip through orjson, then the R4B model of the resource type."""
    wire = orjson.loads(orjson.dumps(resource))
    MODELS[wire["resourceType"]].model_validate(wire)


def by_id(outputs: list[JsonObject]) -> dict[str, JsonObject]:
    return {r["id"]: r for r in outputs}


def level_outputs(outputs: list[JsonObject], level: VertebralLevel) -> dict[str, JsonObject]:
    found = by_id(outputs)
    return {kind: found[output_id(kind, PATIENT, level)] for kind in ("sins", "cls", "risk")}


def the(outputs: list[JsonObject], resource_type: str) -> JsonObject:
    (found,) = [r for r in outputs if r["resourceType"] == resource_type]
    return found


def refs(elements: list[JsonObject]) -> list[str]:
    return [e["reference"] for e in elements]


def component(resource: JsonObject, code: str) -> JsonObject:
    found: list[JsonObject] = [
        c for c in resource["component"] if c["code"]["coding"][0]["code"] == code
    ]
    assert len(found) == 1, code
    return found[0]


def codings(concept: JsonObject) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept["coding"]]


class ThirdVersion:
    """A Versioner as a database might answer: every output is already at version 3."""

    def __init__(self) -> None:
        self.stamped: list[str] = []

    def stamp(self, resource: JsonObject) -> JsonObject:
        self.stamped.append(f"{resource['resourceType']}/{resource['id']}")
        stamped = dict(resource)
        stamped["meta"] = {
            **resource["meta"],
            "versionId": "3",
            "lastUpdated": "2024-03-05T00:00:00Z",
        }
        return stamped


# --- every output is valid R4 -----------------------------------------------------------------


def test_every_output_of_a_three_level_patient_is_valid_r4() -> None:
    outputs = three_levels().emit()
    assert [r["resourceType"] for r in outputs] == [
        *["Observation", "Observation", "RiskAssessment"] * 3,
        "Observation",
        "DiagnosticReport",
        "Provenance",
    ]
    for resource in outputs:
        validate(resource)


def test_every_output_of_an_incomplete_and_open_patient_is_valid_r4() -> None:
    open_look = [obs("t2", T12, FindingKind.MRI_T2, T2Signal.HYPER, status="preliminary")]
    outputs = Patient([*incomplete_t7(), *open_look]).emit()
    for resource in outputs:
        validate(resource)


def test_a_broken_output_fails_the_model_check() -> None:
    sins = three_levels().emit()[0]
    validate(sins)
    del sins["status"]
    with pytest.raises(ValidationError):
        validate(sins)


def test_every_output_has_profile_id_narrative_and_subject() -> None:
    profiles = {
        "sins": codes.PROFILE_SINS,
        "cls": codes.PROFILE_CLASSIFICATION,
        "risk": codes.PROFILE_RISK,
        "report": codes.PROFILE_REPORT,
        "noms": codes.PROFILE_NOMS,
        "prov": codes.PROFILE_PROVENANCE,
    }
    for resource in three_levels().emit():
        kind = resource["id"].split("-")[0]
        assert resource["meta"]["profile"] == [profiles[kind]]
        assert FHIR_ID.match(resource["id"])
        assert resource["text"]["status"] == "generated"
        div = ET.fromstring(resource["text"]["div"])
        assert div.tag == "{http://www.w3.org/1999/xhtml}div"
        assert "".join(div.itertext()).strip()
        if resource["resourceType"] == "Provenance":
            assert "subject" not in resource
        else:
            assert resource["subject"] == {"reference": f"Patient/{PATIENT}"}


# --- 4a SINS Observation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "total", "category", "probability"),
    [
        (L3, 2, SinsCategory.STABLE, "low"),
        (T12, 11, SinsCategory.POTENTIALLY_UNSTABLE, "moderate"),
        (C7, 18, SinsCategory.UNSTABLE, "high"),
    ],
)
def test_complete_level_totals_interpretation_and_risk_probability(
    level: VertebralLevel, total: int, category: SinsCategory, probability: str
) -> None:
    outputs = level_outputs(three_levels().emit(), level)
    sins, risk = outputs["sins"], outputs["risk"]
    assert sins["status"] == "final"
    assert sins["valueInteger"] == total
    assert "valueRange" not in sins
    assert codings(sins["code"]) == [(codes.CS_SINS, codes.SINS_TOTAL)]
    assert codings(sins["method"]) == [(codes.CS_SINS, codes.SINS_METHOD)]
    assert codings(sins["bodySite"]) == [(codes.SNOMED, level.snomed)]
    assert [codings(i) for i in sins["interpretation"]] == [[(codes.CS_SINS, category.value)]]
    points = [
        c["valueCodeableConcept"]["coding"][0]["extension"][0]["valueDecimal"]
        for c in sins["component"]
    ]
    assert sum(points) == total
    assert risk["status"] == "final"
    prediction = risk["prediction"][0]
    assert codings(prediction["qualitativeRisk"]) == [
        (codes.CS_SINS, category.value),
        (codes.CS_RISK_PROBABILITY, probability),
    ]
    if total >= 7:
        # CONTRACT 4c (v2): the advice names the level, without the "7-18" of v1.
        assert risk["mitigation"] == (
            f"Surgical consultation recommended: SINS 7 or more at {level.label}"
        )
    else:
        assert "mitigation" not in risk


def test_sins_components_in_score_sheet_order_with_ordinal_answers() -> None:
    sins = level_outputs(three_levels().emit(), T12)["sins"]
    assert [c["code"]["coding"][0]["code"] for c in sins["component"]] == [
        c.value for c in SinsComponent
    ]
    expected = [
        ("junctional", 3),
        ("mechanical", 3),
        ("lytic", 2),
        ("normal-alignment", 0),
        ("collapse-lt-50", 2),
        ("unilateral", 1),
    ]
    for entry, (code, points) in zip(sins["component"], expected, strict=True):
        answer = entry["valueCodeableConcept"]["coding"][0]
        assert (answer["system"], answer["code"]) == (codes.CS_SINS, code)
        assert answer["display"]
        assert answer["extension"] == [{"url": codes.EXT_ORDINAL_VALUE, "valueDecimal": points}]
        assert entry["code"]["text"]


def test_sins_effective_is_the_latest_finding_and_derived_from_versioned_inputs() -> None:
    sins = level_outputs(three_levels().emit(), T12)["sins"]
    assert sins["effectiveDateTime"] == "2024-03-01T12:00:00Z"
    assert refs(sins["derivedFrom"]) == [
        "Observation/prim/_history/1",
        "Observation/t12-align/_history/1",
        "Observation/t12-height/_history/1",
        "Observation/t12-look/_history/1",
        "Observation/t12-pain/_history/1",
        "Observation/t12-post/_history/1",
        "ImagingStudy/ct1/_history/2",
    ]


def test_incomplete_level_gives_range_absent_components_and_the_missing_sentence() -> None:
    outputs = Patient(incomplete_t7()).emit()
    t7 = level_outputs(outputs, T7)
    sins, risk = t7["sins"], t7["risk"]
    assert sins["status"] == "preliminary"
    assert "valueInteger" not in sins
    assert sins["valueRange"] == {"low": {"value": 3}, "high": {"value": 10}}
    assert "interpretation" not in sins
    pain = component(sins, "pain")
    assert codings(pain["dataAbsentReason"]) == [(codes.CS_DATA_ABSENT_REASON, "unknown")]
    assert not any(k.startswith("value") for k in pain)
    collapse = component(sins, "collapse")
    assert collapse["valueRange"] == {"low": {"value": 0}, "high": {"value": 1}}
    assert "no collapse with > 50% of the body involved" in collapse["code"]["text"]
    assert "none of the above" in collapse["code"]["text"]
    assert "dataAbsentReason" not in collapse
    assert "dataAbsentReason" in component(sins, "posterolateral")
    missing = (
        "SINS 3-10 spans the surgical-consultation threshold (7); findings on pain, vertebral "
        "body collapse, posterolateral involvement of spinal elements would decide it."
    )
    assert {"text": missing} in sins["note"]
    assert risk["status"] == "preliminary"
    assert risk["mitigation"] == missing
    assert "qualitativeRisk" not in risk["prediction"][0]
    assert risk["prediction"][0]["rationale"].startswith("T7: SINS 3-10 (incomplete findings)")
    assert the(outputs, "DiagnosticReport")["status"] == "preliminary"


def test_open_range_above_the_threshold_still_recommends_consultation() -> None:
    partial = [o for o in complete_c7() if o.resource_id not in ("c7-height", "c7-post")]
    risk = level_outputs(Patient(partial).emit(), C7)["risk"]
    assert risk["status"] == "preliminary"  # 12-18: potentially unstable or unstable
    assert risk["mitigation"] == "Surgical consultation recommended: SINS 7 or more at C7"
    assert "qualitativeRisk" not in risk["prediction"][0]


def test_discordant_evidence_is_noted_on_the_sins_and_the_classification() -> None:
    discordant = [
        *[o for o in complete_t12() if o.resource_id != "t12-look"],
        obs("t12-look", T12, FindingKind.APPEARANCE, LesionAnswer.LYTIC),
        obs("t12-ct", T12, FindingKind.CT_ATTENUATION, CtAttenuation(500.0)),
    ]
    t12 = level_outputs(Patient(discordant).emit(), T12)
    for kind in ("sins", "cls"):
        texts = [n["text"] for n in t12[kind]["note"]]
        assert any(t.startswith("Discordant evidence: reading") for t in texts), kind


# --- v2: discordance, caveats, known primary, consultation per level --------------------------


def test_a_discordant_component_carries_the_marker_and_reaches_the_risk_assessment() -> None:
    inputs = [
        *[o for o in complete_t12() if o.resource_id != "t12-height"],
        obs("t12-stated", T12, FindingKind.COLLAPSE, CollapseAnswer.NONE),
        obs("t12-measured", T12, FindingKind.HEIGHT_LOSS, 60.0),
    ]
    outputs = Patient(inputs).emit()
    level = level_outputs(outputs, T12)
    sins, risk = level["sins"], level["risk"]
    collapse = next(c for c in sins["component"] if c["code"]["coding"][0]["code"] == "collapse")
    (marker,) = collapse["extension"]
    assert marker["url"] == codes.EXT_SINS_DISCORDANCE
    assert marker["valueString"].startswith("Discordant collapse: stated as no-collapse")
    assert marker["valueString"] in collapse["code"]["text"]
    assert collapse["valueRange"] == {"low": {"value": 0}, "high": {"value": 3}}
    assert "(discordant)" in sins["text"]["div"]
    notes = [n["text"] for n in risk["note"]]
    assert marker["valueString"] in notes
    assert marker["valueString"] in risk["prediction"][0]["rationale"]
    report = the(outputs, "DiagnosticReport")
    assert "discordant vertebral body collapse" in report["conclusion"]
    for resource in (sins, risk, report):
        validate(resource)


def test_the_risk_assessment_notes_every_caveat_and_names_the_level() -> None:
    pain = obs("pain", None, FindingKind.PAIN, PainAnswer.MECHANICAL)
    inputs = [o for o in complete_t12() if o.resource_id != "t12-pain"]
    outputs = Patient([*inputs, *complete_c7()], [pain]).emit()
    risk = level_outputs(outputs, T12)["risk"]
    notes = [n["text"] for n in risk["note"]]
    assert any(n.startswith("Patient-level pain report used for T12") for n in notes)
    assert "Caveats:" in risk["text"]["div"]
    validate(risk)


def test_the_known_primary_is_a_component_and_primaries_carry_their_remark() -> None:
    cls = level_outputs(three_levels().emit(), T12)["cls"]
    known = [c for c in cls["component"] if c["code"]["coding"][0]["code"] == "primary-tumor"]
    assert len(known) == 1
    assert known[0]["valueCodeableConcept"]["coding"][0]["code"] == "breast"
    assert known[0]["valueCodeableConcept"]["text"] == "Consistent with the known breast primary."
    first = next(c for c in cls["component"] if c["code"]["coding"][0]["code"] == "likely-primary")
    assert first["valueCodeableConcept"]["text"] == "consistent with the known breast primary"
    report = the(three_levels().emit(), "DiagnosticReport")
    assert "consistent with the known breast primary" in report["conclusion"]
    validate(cls)


# --- 4b classification ------------------------------------------------------------------------


def test_classification_value_primaries_and_differential_in_table_order() -> None:
    cls = level_outputs(three_levels().emit(), T12)["cls"]
    assert cls["status"] == "final"
    assert codings(cls["code"]) == [(codes.CS_SPINE_FINDING, codes.LESION_CLASSIFICATION)]
    assert codings(cls["valueCodeableConcept"]) == [(codes.CS_SINS, "lytic")]
    assert codings(cls["bodySite"]) == [(codes.SNOMED, T12.snomed)]
    primaries = [
        c["valueCodeableConcept"]["coding"][0]
        for c in cls["component"]
        if c["code"]["coding"][0]["code"] == codes.LIKELY_PRIMARY
    ]
    assert {p["system"] for p in primaries} == {codes.CS_PRIMARY_TUMOR}
    # DOMAIN.md 4a (v2): the known breast primary leads the lytic row.
    assert [p["code"] for p in primaries][:3] == ["breast", "renal-cell", "thyroid"]
    differential = [
        c["valueCodeableConcept"]["coding"][0]
        for c in cls["component"]
        if c["code"]["coding"][0]["code"] == codes.DIFFERENTIAL
    ]
    assert {d["system"] for d in differential} == {codes.CS_DIFFERENTIAL}
    assert differential[0]["code"] == "myeloma-plasmacytoma"
    # DOMAIN.md 5 (v2): T12 has < 50% collapse.
    assert differential[-1]["code"] == "osteoporotic-compression-fracture"


def test_bone_island_atypical_primary_and_treated_lesion_are_notes() -> None:
    patient = Patient(complete_l3(), [primary("prim", "renal-cell")])
    cls = level_outputs(patient.emit(), L3)["cls"]
    texts = [n["text"] for n in cls["note"]]
    assert any("favours a bone island" in t for t in texts)
    assert any(t.startswith("Atypical for the known renal-cell primary") for t in texts)
    differential = [
        c["valueCodeableConcept"]["coding"][0]["code"]
        for c in cls["component"]
        if c["code"]["coding"][0]["code"] == codes.DIFFERENTIAL
    ]
    assert differential[0] == "bone-island"

    treated = Patient([*complete_t12(), obs("t12-rt", T12, FindingKind.TREATED, True)])
    texts = [n["text"] for n in level_outputs(treated.emit(), T12)["cls"]["note"]]
    assert any(t.startswith("Treated lesion") for t in texts)


def test_open_appearance_has_no_value_but_an_absent_reason_naming_what_remains() -> None:
    open_look = [obs("t2", T12, FindingKind.MRI_T2, T2Signal.HYPER)]
    cls = level_outputs(Patient(open_look).emit(), T12)["cls"]
    assert cls["status"] == "preliminary"
    assert "valueCodeableConcept" not in cls
    assert cls["dataAbsentReason"]["text"] == "Appearance open: lytic or mixed"
    assert "component" not in cls
    assert any("not narrowed" in n["text"] for n in cls["note"])


def test_a_preliminary_input_makes_every_output_of_its_level_preliminary() -> None:
    inputs = [
        *[o for o in complete_t12() if o.resource_id != "t12-pain"],
        obs("t12-pain", T12, FindingKind.PAIN, PainAnswer.MECHANICAL, status="preliminary"),
    ]
    outputs = Patient(inputs).emit()
    assert {r["status"] for r in level_outputs(outputs, T12).values()} == {"preliminary"}
    assert the(outputs, "DiagnosticReport")["status"] == "preliminary"


# --- 4c RiskAssessment ------------------------------------------------------------------------


def test_risk_assessment_method_level_basis_and_outcome() -> None:
    outputs = three_levels().emit()
    t12 = level_outputs(outputs, T12)
    risk = t12["risk"]
    assert codings(risk["method"]) == [(codes.CS_SINS, codes.SINS_METHOD)]
    assert risk["extension"] == [
        {"url": codes.EXT_VERTEBRAL_LEVEL, "valueCodeableConcept": t12["sins"]["bodySite"]}
    ]
    assert codings(risk["extension"][0]["valueCodeableConcept"]) == [(codes.SNOMED, T12.snomed)]
    assert risk["occurrenceDateTime"] == t12["sins"]["effectiveDateTime"]
    basis = refs(risk["basis"])
    assert basis[0] == f"Observation/{t12['sins']['id']}/_history/1"
    assert basis[1:] == refs(t12["sins"]["derivedFrom"])
    prediction = risk["prediction"][0]
    assert codings(prediction["outcome"]) == [(codes.CS_SINS, codes.SPINAL_INSTABILITY)]
    assert prediction["rationale"].startswith("T12: SINS 11, potentially unstable.")
    assert "Pain: mechanical pain (3)" in prediction["rationale"]


# --- 4d DiagnosticReport ----------------------------------------------------------------------


def test_report_links_every_result_and_study_with_the_conclusion() -> None:
    patient = three_levels()
    outputs = patient.emit()
    report = the(outputs, "DiagnosticReport")
    assert report["id"] == output_id("report", PATIENT, None)
    assert report["status"] == "final"
    assert codings(report["code"]) == [
        (codes.LOINC, codes.LOINC_REPORT),
        (codes.CS_SPINE_FINDING, codes.ASSESSMENT_REPORT),
    ]
    assert codings(report["category"][0]) == [(codes.CS_DIAGNOSTIC_SERVICE, "RAD")]
    observations = [r for r in outputs if r["resourceType"] == "Observation"]
    assert refs(report["result"]) == [f"Observation/{o['id']}/_history/1" for o in observations]
    assert refs(report["imagingStudy"]) == ["ImagingStudy/ct1/_history/2"]
    assert report["conclusion"] == patient.summary().conclusion()
    assert report["conclusion"].startswith("C7 lytic, SINS 18 (unstable)")
    assert report["effectiveDateTime"] == "2024-03-01T12:00:00Z"
    assert report["issued"] == "2024-03-02T08:30:00.000Z"


def test_levels_come_most_unstable_first() -> None:
    outputs = three_levels().emit()
    sins_ids = [r["id"] for r in outputs if r["id"].startswith("sins-")]
    assert [i.split("-")[1] for i in sins_ids] == ["c7", "t12", "l3"]


# --- 4e Provenance ----------------------------------------------------------------------------


def test_provenance_targets_every_output_and_names_the_processor_and_inputs() -> None:
    patient = three_levels()
    outputs = patient.emit()
    provenance = outputs[-1]
    assert provenance["resourceType"] == "Provenance"
    assert refs(provenance["target"]) == [
        f"{r['resourceType']}/{r['id']}/_history/1" for r in outputs[:-1]
    ]
    assert provenance["recorded"] == "2024-03-02T08:30:00.000Z"
    (device,) = provenance["contained"]
    assert device["resourceType"] == "Device"
    assert device["version"] == [{"value": VERSION}]
    assert device["deviceName"][0]["name"] == "fhir-app"
    (agent,) = provenance["agent"]
    assert agent["who"]["reference"] == f"#{device['id']}"
    assert {e["role"] for e in provenance["entity"]} == {"source"}
    inputs = [o.reference for o in patient.observations + patient.patient_inputs]
    expected = [*sorted(inputs), "ImagingStudy/ct1/_history/2"]
    assert [e["what"]["reference"] for e in provenance["entity"]] == expected
    assert codings(provenance["activity"]) == [(codes.CS_V3_DATA_OPERATION, "CREATE")]


# --- versions and references ------------------------------------------------------------------


def test_references_between_outputs_use_the_stamped_versions() -> None:
    versioner = ThirdVersion()
    outputs = three_levels().emit(versioner)
    for resource in outputs:
        validate(resource)
    emitted = {f"{r['resourceType']}/{r['id']}" for r in outputs}
    assert versioner.stamped == [f"{r['resourceType']}/{r['id']}" for r in outputs]
    internal = []
    for resource in outputs:
        internal += [r for r in refs(resource.get("basis", [])) if "/sins-" in r]
        internal += refs(resource.get("result", [])) + refs(resource.get("target", []))
    # basis 3; results 6 + the NOMS inputs; targets 11 (9 + NOMS inputs + report).
    assert len(internal) == 3 + 7 + 11
    for reference in internal:
        assert reference.endswith("/_history/3"), reference
        assert reference.removesuffix("/_history/3") in emitted
    assert codings(outputs[-1]["activity"]) == [(codes.CS_V3_DATA_OPERATION, "UPDATE")]


def test_stamping_happens_in_dependency_order() -> None:
    versioner = ThirdVersion()
    three_levels().emit(versioner)
    kinds = [s.split("/")[1].split("-")[0] for s in versioner.stamped]
    assert kinds == ["sins", "cls", "risk"] * 3 + ["noms", "report", "prov"]


def test_first_version_sets_version_one_and_keeps_the_status() -> None:
    resource = {
        "resourceType": "Observation",
        "id": "x",
        "meta": {"profile": ["p"]},
        "status": "final",
    }
    stamped = FirstVersion(T0).stamp(resource)
    assert stamped["meta"] == {
        "versionId": "1",
        "lastUpdated": "2024-03-01T10:00:00.000Z",
        "profile": ["p"],
    }
    assert stamped["status"] == "final"


def test_every_reference_is_version_specific() -> None:
    for resource in three_levels().emit():
        for key in ("derivedFrom", "basis", "result", "imagingStudy", "target"):
            for reference in refs(resource.get(key, [])):
                assert HISTORY.match(reference), reference
        for entity in resource.get("entity", []):
            assert HISTORY.match(entity["what"]["reference"])


# --- determinism ------------------------------------------------------------------------------


def test_same_inputs_give_byte_identical_outputs() -> None:
    first = [orjson.dumps(r) for r in three_levels().emit()]
    second = [orjson.dumps(r) for r in three_levels().emit()]
    assert first == second


def test_input_order_does_not_change_the_outputs() -> None:
    patient = three_levels()
    shuffled = list(patient.observations)
    random.Random(7).shuffle(shuffled)
    again = Patient(shuffled, patient.patient_inputs, patient.studies)
    assert [orjson.dumps(r) for r in again.emit()] == [orjson.dumps(r) for r in patient.emit()]


def test_only_derivation_times_differ_between_two_derivations() -> None:
    early = three_levels().emit(FirstVersion(T0), RECORDED)
    late_time = RECORDED + timedelta(days=3)
    late = three_levels().emit(FirstVersion(late_time), late_time)
    assert [comparable(r) for r in early] == [comparable(r) for r in late]
    assert early[-1]["recorded"] != late[-1]["recorded"]
    assert early[-2]["issued"] != late[-2]["issued"]


def test_comparable_reads_amended_as_final_and_sees_content_changes() -> None:
    sins = three_levels().emit()[0]
    amended = {**sins, "status": "amended", "meta": {**sins["meta"], "versionId": "2"}}
    assert comparable(amended) == comparable(sins)
    changed = {**sins, "valueInteger": 17}
    assert comparable(changed) != comparable(sins)


# --- ids --------------------------------------------------------------------------------------


def test_output_ids_are_valid_distinct_and_stable_for_long_patient_ids() -> None:
    long_patient = "p" * 64
    ids = {output_id("report", long_patient, None)}
    for level in VertebralLevel:
        for kind in ("sins", "cls", "risk"):
            ids.add(output_id(kind, long_patient, level))
    assert len(ids) == 1 + 3 * len(VertebralLevel)
    assert all(FHIR_ID.match(i) for i in ids)
    assert output_id("sins", PATIENT, T12) == output_id("sins", PATIENT, T12)
    assert output_id("sins", PATIENT, T12).startswith("sins-t12-")
    assert output_id("sins", PATIENT, T12) != output_id("sins", "pat-2", T12)


@pytest.mark.parametrize(
    ("kind", "level"), [("sins", None), ("report", T12), ("prov", None), ("bogus", T12)]
)
def test_output_id_refuses_wrong_kind_or_level(kind: str, level: VertebralLevel | None) -> None:
    with pytest.raises(ValueError, match=r"."):
        output_id(kind, PATIENT, level)


def test_provenance_id_follows_the_emitted_versions() -> None:
    targets = ["Observation/a/_history/1", "DiagnosticReport/r/_history/1"]
    assert provenance_id(PATIENT, targets) == provenance_id(PATIENT, reversed(targets))
    assert FHIR_ID.match(provenance_id(PATIENT, targets))
    bumped = ["Observation/a/_history/2", "DiagnosticReport/r/_history/1"]
    assert provenance_id(PATIENT, bumped) != provenance_id(PATIENT, targets)


def test_times_carry_a_zone() -> None:
    assert instant(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05.000Z"
    plus_two = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert instant(plus_two) == "2024-01-02T01:04:05.000Z"
    assert date_time(plus_two) == "2024-01-02T03:04:05+02:00"
    assert date_time(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05Z"


def test_patient_wide_inputs_are_referenced_by_every_level() -> None:
    pain = obs("pain-any", None, FindingKind.PAIN, PainAnswer.OCCASIONAL_NON_MECHANICAL)
    patient = Patient(incomplete_t7() + complete_l3()[1:], [pain])
    outputs = patient.emit()
    for level in (T7, L3):
        sins = level_outputs(outputs, level)["sins"]
        assert "Observation/pain-any/_history/1" in refs(sins["derivedFrom"])
    t7_pain = component(level_outputs(outputs, T7)["sins"], "pain")
    # DOMAIN.md 2 (v2): with two lesion levels, "occasional" for the patient leaves 0-1.
    assert "Pain reported for the patient" in t7_pain["code"]["text"]
    assert t7_pain["valueRange"] == {"low": {"value": 0}, "high": {"value": 1}}


def test_withdrawn_inputs_are_not_referenced() -> None:
    gone = MappedObservation("gone", 4, PATIENT, "entered-in-error", withdrawn=True)
    patient = Patient(complete_t12(), [gone])
    outputs = patient.emit()
    everything = orjson.dumps(outputs).decode()
    assert "Observation/gone" not in everything


# --- withdrawal -------------------------------------------------------------------------------


def test_withdrawn_keeps_id_and_content_and_marks_entered_in_error() -> None:
    outputs = three_levels().emit()
    for previous in outputs[:-1]:
        before = orjson.dumps(previous)
        gone = withdrawn(previous)
        assert orjson.dumps(previous) == before
        assert gone["id"] == previous["id"]
        assert gone["status"] == "entered-in-error"
        assert "versionId" not in gone["meta"]
        assert "lastUpdated" not in gone["meta"]
        assert gone["meta"]["profile"] == previous["meta"]["profile"]
        assert "Entered in error" in gone["text"]["div"]
        ET.fromstring(gone["text"]["div"])
        rest = {k: v for k, v in gone.items() if k not in ("status", "meta", "text")}
        # The page a person reads would show a withdrawn report as standing: it goes.
        changed = ("status", "meta", "text", "presentedForm")
        assert rest == {k: v for k, v in previous.items() if k not in changed}
        assert "presentedForm" not in gone
        stamped = FirstVersion(T0).stamp(gone)
        validate(stamped)
        assert withdrawn(stamped)["text"] == gone["text"]
    with pytest.raises(ValueError, match="Provenance"):
        withdrawn(outputs[-1])


def test_emit_patient_stamps_withdrawals_and_names_them_in_the_provenance() -> None:
    before = Patient([*complete_t12(), *incomplete_t7()]).emit()
    t7_previous = list(level_outputs(before, T7).values())
    versioner = ThirdVersion()
    after = Patient(complete_t12()).emit(versioner, withdrawals=t7_previous)
    assert [r["id"].split("-")[0] for r in after] == [
        "sins",
        "cls",
        "risk",
        "sins",
        "cls",
        "risk",
        "noms",
        "report",
        "prov",
    ]
    for resource in after[3:6]:
        assert resource["status"] == "entered-in-error"
        assert resource["meta"]["versionId"] == "3"
        validate(resource)
    report = the(after, "DiagnosticReport")
    assert all("-t7-" not in r for r in refs(report["result"]))
    targets = refs(after[-1]["target"])
    assert len(targets) == 8  # 6 level outputs, the NOMS inputs and the report
    assert f"Observation/{output_id('sins', PATIENT, T7)}/_history/3" in targets


def test_no_level_left_withdraws_the_report_instead_of_deriving_one() -> None:
    before = Patient(complete_t12()).emit()
    empty = Patient([])
    assert empty.emit() == []
    after = empty.emit(withdrawals=before[:-1])
    assert [r["status"] for r in after[:-1]] == ["entered-in-error"] * 5
    assert after[-1]["resourceType"] == "Provenance"
    assert "entity" not in after[-1]
    validate(after[-1])
    with pytest.raises(ValueError, match="report"):
        Patient(complete_t12()).emit(withdrawals=[the(before, "DiagnosticReport")])


def test_narrative_escapes_markup_and_names_the_level() -> None:
    outputs = Patient(incomplete_t7()).emit()
    sins = level_outputs(outputs, T7)["sins"]
    div = sins["text"]["div"]
    ET.fromstring(div)
    text = "".join(ET.fromstring(div).itertext())
    assert "T7: SINS 3-10" in text
    assert "no collapse with > 50% of the body involved" in text
    assert "&gt; 50%" in div
    assert "Preliminary" in text


def _page_report(status: str, body: str) -> dict[str, object]:
    import base64

    page = f'<html><p class="status">Status: {status}; findings up to 2025</p>{body}</html>'
    return {
        "resourceType": "DiagnosticReport",
        "id": "r",
        "status": status,
        "presentedForm": [
            {
                "contentType": "text/html",
                "data": base64.b64encode(page.encode()).decode(),
                "creation": status,
            }
        ],
    }


def test_an_amended_report_and_its_page_compare_as_final() -> None:
    """The page states the status, and a Versioner renders it again when it sets `amended`: an
    unchanged re-derivation (final) must compare equal to the stored amended report, and a page
    that says something else must not."""
    assert outbound.comparable(_page_report("amended", "L1")) == outbound.comparable(
        _page_report("final", "L1")
    )
    assert outbound.comparable(_page_report("amended", "L1")) != outbound.comparable(
        _page_report("final", "L2")
    )
    assert outbound.comparable(_page_report("preliminary", "L1")) != outbound.comparable(
        _page_report("final", "L1")
    )
