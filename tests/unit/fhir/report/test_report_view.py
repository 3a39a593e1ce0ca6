"""The report view model, read back from the emitted outputs (CONTRACT 4d v2)."""

from __future__ import annotations

from typing import Any

import pytest
from report_support import output, outputs_of, report_of

from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins_answers import SinsCategory
from fhir_app.fhir import codes
from fhir_app.fhir.report.view import CS_ESCC, NOT_REPORTED, build_view

SEVERAL = "patient-08-several-levels.json"


def view_of(outputs: list[dict[str, object]], version: str = "9.8.7"):  # type: ignore[no-untyped-def]
    return build_view(outputs, report_of(outputs), version)  # type: ignore[arg-type]


def test_levels_follow_the_report_most_unstable_first() -> None:
    view = view_of(outputs_of(SEVERAL))
    assert [level.label for level in view.levels] == ["T11", "L2", "T4"]
    assert view.patient == "p08"
    assert view.status == "preliminary"
    assert view.conclusion == report_of(outputs_of(SEVERAL))["conclusion"]


def test_a_level_whose_category_is_determined() -> None:
    t11 = view_of(outputs_of(SEVERAL)).levels[0]
    sins = output(outputs_of(SEVERAL), "sins-t11-")
    low, high = sins["valueRange"]["low"]["value"], sins["valueRange"]["high"]["value"]
    assert (t11.sins, t11.sins_low, t11.sins_high) == (f"{low}-{high}", low, high)
    assert t11.category is SinsCategory.UNSTABLE
    assert t11.candidates == (SinsCategory.UNSTABLE,)
    assert t11.category_words == "unstable"
    assert t11.region == "thoracic"
    assert t11.surgical_consultation
    assert t11.mitigation == output(outputs_of(SEVERAL), "risk-t11-")["mitigation"]
    assert t11.appearance == "Lytic"
    assert t11.known_primary == "Breast carcinoma (Consistent with the known breast primary.)"
    assert t11.likely_primaries[0] == (
        "Breast carcinoma (consistent with the known breast primary)"
    )
    assert t11.likely_primaries[1] == "Renal cell carcinoma"


def test_a_total_reads_as_one_number() -> None:
    level = view_of(outputs_of("patient-03-unstable.json")).levels[0]
    total = output(outputs_of("patient-03-unstable.json"), "sins-")["valueInteger"]
    assert (level.sins, level.sins_low, level.sins_high) == (str(total), total, total)


def test_an_open_level_names_its_candidate_categories() -> None:
    view = view_of(outputs_of(SEVERAL))
    l2 = view.level(VertebralLevel.L2)
    assert l2 is not None
    assert l2.sins == "4-14"
    assert l2.category is None
    assert l2.candidates == (
        SinsCategory.STABLE,
        SinsCategory.POTENTIALLY_UNSTABLE,
        SinsCategory.UNSTABLE,
    )
    assert l2.category_words == "open: stable or potentially unstable or unstable"
    assert not l2.surgical_consultation
    assert l2.preliminary
    t4 = view.level(VertebralLevel.T4)
    assert t4 is not None
    assert t4.candidates == (SinsCategory.STABLE, SinsCategory.POTENTIALLY_UNSTABLE)
    assert view.level(VertebralLevel.C1) is None


def test_the_consultation_flag_and_its_levels() -> None:
    view = view_of(outputs_of(SEVERAL))
    assert view.surgical_consultation
    assert view.consultation_levels == ("T11",)
    stable = view_of(outputs_of("patient-01-stable-blastic.json"))
    assert not stable.surgical_consultation
    assert stable.consultation_levels == ()


def test_appearance_and_how_it_was_read() -> None:
    l2 = view_of(outputs_of(SEVERAL)).level(VertebralLevel.L2)
    assert l2 is not None
    assert l2.appearance == "Lytic"
    assert l2.appearance_basis is not None
    assert "MRI T1 isointense" in l2.appearance_basis
    outputs = outputs_of(SEVERAL)
    cls = output(outputs, "cls-l2-")
    del cls["valueCodeableConcept"]
    cls["dataAbsentReason"] = {"text": "Appearance open: lytic or mixed"}
    open_appearance = view_of(outputs).level(VertebralLevel.L2)
    assert open_appearance is not None
    assert open_appearance.appearance == "Appearance open: lytic or mixed"


def test_every_note_of_the_level_outputs_is_a_caveat_and_new_ones_flow_through() -> None:
    outputs = outputs_of(SEVERAL)
    risk = output(outputs, "risk-l2-")
    risk["note"] = [{"text": "A caveat the RiskAssessment gained later."}]
    output(outputs, "cls-l2-")["note"] = [{"text": "A classification note."}]
    l2 = view_of(outputs).level(VertebralLevel.L2)
    assert l2 is not None
    assert l2.caveats[0] == "A caveat the RiskAssessment gained later."
    assert "A classification note." in l2.caveats


def test_the_mitigation_is_not_repeated_among_the_caveats() -> None:
    l2 = view_of(outputs_of(SEVERAL)).level(VertebralLevel.L2)
    assert l2 is not None
    assert l2.mitigation is not None
    # The SINS Observation notes the same sentence; the view shows it once, as the mitigation.
    assert l2.mitigation in {n["text"] for n in output(outputs_of(SEVERAL), "sins-l2-")["note"]}
    assert l2.mitigation not in l2.caveats


def test_a_marked_sins_component_is_a_caveat() -> None:
    outputs = outputs_of(SEVERAL)
    sins = output(outputs, "sins-t11-")
    collapse = next(c for c in sins["component"] if c["code"]["coding"][0]["code"] == "collapse")
    collapse["extension"] = [{"url": "https://example.org/discordant", "valueBoolean": True}]
    t11 = view_of(outputs).levels[0]
    assert collapse["code"]["text"] in t11.caveats


def test_a_discordance_is_a_caveat_once() -> None:
    level = view_of(outputs_of("patient-11-discordant-collapse.json")).levels[0]
    discordant = [c for c in level.caveats if c.startswith("Discordant")]
    assert len(discordant) == 2
    assert any("height loss 60%" in c for c in discordant)


def test_the_patient_level_pain_report_is_a_caveat() -> None:
    view = view_of(outputs_of("patient-12-patient-level-pain.json"))
    for level in view.levels:
        assert any("Pain reported for the patient" in c for c in level.caveats), level.label


def test_known_caveats_of_the_examples_reach_the_view() -> None:
    bone_island = view_of(outputs_of("patient-06-bone-island.json")).levels[0]
    assert any("bone island" in caveat.lower() for caveat in bone_island.caveats)
    treated = view_of(outputs_of("patient-10-treated-preliminary.json")).levels[0]
    assert any("treated" in caveat.lower() for caveat in treated.caveats)


def test_escc_is_not_reported_until_an_output_carries_it() -> None:
    outputs = outputs_of(SEVERAL)
    t11 = view_of(outputs).levels[0]
    assert t11.escc_grade is None
    assert t11.escc_words == NOT_REPORTED
    grade = {
        "resourceType": "Observation",
        "id": "escc-t11",
        "status": "final",
        "code": {"coding": [{"system": codes.CS_SPINE_FINDING, "code": "escc-grade"}]},
        "subject": {"reference": "Patient/p08"},
        "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "12989004"}]},
        "valueCodeableConcept": {"coding": [{"system": CS_ESCC, "code": "2"}]},
    }
    graded = view_of([*outputs, grade]).levels[0]
    assert graded.escc_grade == "2"
    assert graded.escc_words == "ESCC 2 (high grade)"


def test_escc_as_a_component_of_a_level_output() -> None:
    outputs = outputs_of(SEVERAL)
    output(outputs, "cls-l2-")["component"].append(
        {
            "code": {"coding": [{"system": codes.CS_SPINE_FINDING, "code": "escc-grade"}]},
            "valueCodeableConcept": {"coding": [{"system": CS_ESCC, "code": "1b"}]},
        }
    )
    l2 = view_of(outputs).level(VertebralLevel.L2)
    assert l2 is not None
    assert l2.escc_grade == "1b"


def noms(**value: object) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": "noms",
        "status": "final",
        "code": {"coding": [{"system": codes.CS_SPINE_FINDING, "code": "noms-inputs"}]},
        "subject": {"reference": "Patient/p08"},
        **value,
    }


def is_noms(resource: dict[str, Any]) -> bool:
    codings = resource.get("code", {}).get("coding", [])
    return any(c.get("code") == codes.NOMS_INPUTS for c in codings)


def test_noms_inputs_in_one_sentence_when_present() -> None:
    derived = outputs_of(SEVERAL)
    emitted = next(r for r in derived if is_noms(r))
    assert view_of(derived).noms_inputs == emitted["valueString"]
    outputs = [r for r in derived if not is_noms(r)]
    assert view_of(outputs).noms_inputs is None
    components = noms(
        component=[
            {"code": {"text": "Neurologic"}, "valueString": "ESCC not reported"},
            {"code": {"text": "Oncologic"}, "valueCodeableConcept": {"text": "radioresistant"}},
        ]
    )
    assert view_of([*outputs, components]).noms_inputs == (
        "Neurologic: ESCC not reported; Oncologic: radioresistant."
    )
    stated = noms(valueString="N low grade; O not classified; M unstable; S not assessed.")
    assert view_of([*outputs, stated]).noms_inputs == stated["valueString"]


def test_inputs_are_the_version_specific_references_of_every_level() -> None:
    outputs = outputs_of(SEVERAL)
    view = view_of(outputs)
    own = {f"{r['resourceType']}/{r['id']}" for r in outputs}
    expected = {
        ref["reference"]
        for r in outputs
        for ref in [*r.get("derivedFrom", []), *r.get("basis", [])]
        if ref["reference"].split("/_history/")[0] not in own  # the NOMS inputs cite SINS outputs
    } | {ref["reference"] for ref in report_of(outputs)["imagingStudy"]}
    assert set(view.inputs) == expected
    assert all("/_history/" in reference for reference in view.inputs)
    assert list(view.inputs) == sorted(view.inputs)


def test_the_disclaimer_names_the_processor_version() -> None:
    view = view_of(outputs_of(SEVERAL), version="1.2.3")
    assert view.processor_version == "1.2.3"
    assert view.disclaimer == (
        "computed decision support by fhir-app 1.2.3 from the findings listed; "
        "not a radiologist's report"
    )


def test_withdrawn_and_other_patients_outputs_are_left_out() -> None:
    outputs = outputs_of(SEVERAL)
    output(outputs, "sins-t4-")["status"] = "entered-in-error"
    others = outputs_of("patient-03-unstable.json")
    view = view_of([*outputs, *others])
    assert [level.label for level in view.levels] == ["T11", "L2"]


def test_a_level_not_named_by_the_report_follows_in_spinal_order() -> None:
    outputs = outputs_of(SEVERAL)
    report = report_of(outputs)
    report["result"] = [r for r in report["result"] if "-l2-" not in r["reference"]]
    assert [level.label for level in view_of(outputs).levels] == ["T11", "T4", "L2"]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 6, (SinsCategory.STABLE,)),
        (6, 7, (SinsCategory.STABLE, SinsCategory.POTENTIALLY_UNSTABLE)),
        (12, 13, (SinsCategory.POTENTIALLY_UNSTABLE, SinsCategory.UNSTABLE)),
        (13, 18, (SinsCategory.UNSTABLE,)),
    ],
)
def test_candidate_categories_of_a_range(low: int, high: int, expected: tuple[object]) -> None:
    outputs = outputs_of(SEVERAL)
    sins = output(outputs, "sins-l2-")
    sins["valueRange"] = {"low": {"value": low}, "high": {"value": high}}
    l2 = view_of(outputs).level(VertebralLevel.L2)
    assert l2 is not None
    assert l2.candidates == expected


HIGH_GRADE = "patient-16-high-grade-escc.json"


def test_the_escc_group_is_named_with_the_grade() -> None:
    view = view_of(outputs_of(HIGH_GRADE))
    t9, l2 = view.level(VertebralLevel.T9), view.level(VertebralLevel.L2)
    assert t9 is not None
    assert l2 is not None
    assert (t9.escc_grade, t9.escc_words, t9.escc_high_grade) == ("3", "ESCC 3 (high grade)", True)
    assert (l2.escc_grade, l2.escc_words, l2.escc_high_grade) == (
        "1a",
        "ESCC 1a (low grade)",
        False,
    )


def test_each_high_grade_level_has_a_cord_compression_sentence_with_myelopathy() -> None:
    view = view_of(outputs_of(HIGH_GRADE))
    assert view.myelopathy
    assert view.cord_compression == (
        "High-grade epidural spinal cord compression: ESCC 3 at T9; myelopathy reported",
    )
    for sentence in view.cord_compression:
        assert not any(
            word in sentence.lower() for word in ("surgery", "radiotherapy", "recommend")
        )
    low = view_of(outputs_of("patient-17-low-grade-escc.json"))
    assert low.cord_compression == ()
    assert view_of(outputs_of(SEVERAL)).cord_compression == ()


def test_without_myelopathy_the_sentence_names_the_compression_only() -> None:
    outputs = [r for r in outputs_of(HIGH_GRADE) if not is_noms(r)]
    view = view_of(outputs)
    assert not view.myelopathy
    assert view.cord_compression == ("High-grade epidural spinal cord compression: ESCC 3 at T9",)


def test_condition_inputs_are_among_the_findings_listed() -> None:
    outputs = outputs_of("patient-08-several-levels.json")
    condition = "Condition/p08-secondary/_history/2"
    output(outputs, "risk-t4-")["basis"].append({"reference": condition})
    view = view_of(outputs)
    assert condition in view.inputs
    own = {f"{r['resourceType']}/{r['id']}" for r in outputs}
    assert not any(reference.split("/_history/")[0] in own for reference in view.inputs)
