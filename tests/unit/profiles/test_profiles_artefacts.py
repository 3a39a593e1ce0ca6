"""The conformance artefacts in profiles/: parse as FHIR, say what the contract says, no drift.

These tests need no node: they read the committed JSON and the code tables it comes from.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.operationdefinition import OperationDefinition
from fhir.resources.R4B.structuredefinition import StructureDefinition
from fhir.resources.R4B.valueset import ValueSet

from fhir_app.domain.classification import DIFFERENTIAL, LIKELY_PRIMARIES, UNKNOWN_PRIMARY
from fhir_app.domain.escc import ESCC_SCALE, EsccRow
from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.noms import Radiosensitivity
from fhir_app.domain.sins_answers import (
    COMPONENT_WORDS,
    SINS_CATEGORY_BANDS,
    SINS_POINTS,
    SinsComponent,
)
from fhir_app.fhir import codes
from fhir_app.fhir.outbound_terms import (
    DIFFERENTIAL_DISPLAY,
    PRIMARY_TUMOR_DISPLAY,
    SINS_ANSWER_DISPLAY,
    SINS_CATEGORY_DISPLAY,
    SINS_CODE_DISPLAY,
    SPINE_FINDING_DISPLAY,
)

Json = dict[str, Any]

MODELS = {
    "CodeSystem": CodeSystem,
    "ValueSet": ValueSet,
    "StructureDefinition": StructureDefinition,
    "CapabilityStatement": CapabilityStatement,
    "OperationDefinition": OperationDefinition,
}

OUR_CODE_SYSTEMS = {
    codes.CS_SINS,
    codes.CS_SPINE_FINDING,
    codes.CS_PRIMARY_TUMOR,
    codes.CS_DIFFERENTIAL,
    codes.CS_ESCC,
    codes.CS_NOMS,
}

PROFILE_URLS = {
    codes.PROFILE_INPUT_OBSERVATION,
    codes.PROFILE_LESION_PANEL,
    codes.PROFILE_IMAGING_STUDY,
    codes.PROFILE_SINS,
    codes.PROFILE_CLASSIFICATION,
    codes.PROFILE_RISK,
    codes.PROFILE_REPORT,
    codes.PROFILE_NOMS,
    codes.PROFILE_PROVENANCE,
}


def of_type(artefacts: dict[str, Json], resource_type: str) -> list[Json]:
    """The committed artefacts of one resource type."""
    return [a for a in artefacts.values() if a["resourceType"] == resource_type]


def concepts(code_system: Json) -> dict[str, Json]:
    """The concepts of a CodeSystem by code."""
    return {c["code"]: c for c in code_system["concept"]}


def test_every_artefact_parses_with_the_fhir_models(artefacts: dict[str, Json]) -> None:
    assert artefacts, "profiles/ holds no artefacts"
    for name, resource in artefacts.items():
        model = MODELS[resource["resourceType"]]
        parsed = model.model_validate(resource)
        assert parsed.id == resource["id"], name


def test_file_names_ids_and_urls_agree(artefacts: dict[str, Json]) -> None:
    for name, resource in artefacts.items():
        kind, ident = resource["resourceType"], resource["id"]
        assert name == f"{kind}-{ident}.json"
        assert resource["url"] == f"{codes.BASE}/{kind}/{ident}"
        assert resource["status"] == "active"


def test_the_generator_writes_what_is_committed_apart_from_snapshots(
    generator: ModuleType, artefacts: dict[str, Json]
) -> None:
    # Snapshots need the base definitions (node_modules); test_profiles_snapshots compares those.
    expected = {name: json.loads(text) for name, text in generator.expected_files(None).items()}
    committed = {
        name: {k: v for k, v in a.items() if k not in ("snapshot", "mapping")}
        for name, a in artefacts.items()
    }
    assert sorted(committed) == sorted(expected), "run profiles/build_profiles.py"
    for name, resource in expected.items():
        assert committed[name] == resource, f"{name} is out of date: run profiles/build_profiles.py"


# --- CodeSystems ---------------------------------------------------------------------------


def test_code_systems_are_complete_and_active(artefacts: dict[str, Json]) -> None:
    systems = of_type(artefacts, "CodeSystem")
    assert {cs["url"] for cs in systems} == OUR_CODE_SYSTEMS
    for cs in systems:
        assert cs["content"] == "complete"
        assert cs["count"] == len(cs["concept"])
        assert len(concepts(cs)) == len(cs["concept"]), "duplicate codes"
        assert all(c["display"].strip() for c in cs["concept"])
        assert cs["valueSet"] == f"{codes.BASE}/ValueSet/{cs['id']}"


@pytest.mark.parametrize(
    ("component", "answer", "points"),
    [(c, a, p) for c, answers in SINS_POINTS.items() for a, p in answers.items()],
)
def test_every_sins_answer_carries_its_points_and_component(
    by_url: dict[str, Json], component: SinsComponent, answer: Any, points: int
) -> None:
    entry = concepts(by_url[codes.CS_SINS])[answer.value]
    properties = {p["code"]: p for p in entry["property"]}
    assert properties["points"] == {"code": "points", "valueInteger": points}
    assert properties["component"] == {"code": "component", "valueCode": component.value}
    assert entry["display"] == SINS_ANSWER_DISPLAY[answer]


def test_the_sins_code_system_declares_its_properties(by_url: dict[str, Json]) -> None:
    declared = {p["code"]: p["type"] for p in by_url[codes.CS_SINS]["property"]}
    assert declared["points"] == "integer"
    assert declared["component"] == "code"
    used = {p["code"] for c in by_url[codes.CS_SINS]["concept"] for p in c.get("property", [])}
    assert used <= set(declared)


def test_the_sins_code_system_holds_components_method_total_outcome_and_categories(
    by_url: dict[str, Json],
) -> None:
    sins = concepts(by_url[codes.CS_SINS])
    for component in SinsComponent:
        assert sins[component.value]["display"] == COMPONENT_WORDS[component]
    for code in (codes.SINS_METHOD, codes.SINS_TOTAL, codes.SPINAL_INSTABILITY):
        assert sins[code]["display"] == SINS_CODE_DISPLAY[code]
    for low, high, category in SINS_CATEGORY_BANDS:
        entry = sins[category.value]
        assert entry["display"] == SINS_CATEGORY_DISPLAY[category]
        values = {p["code"]: p["valueInteger"] for p in entry["property"]}
        assert values == {"lowest-total": low, "highest-total": high}
    answers = {a.value for table in SINS_POINTS.values() for a in table}
    expected = (
        {c.value for c in SinsComponent} | answers | {c.value for *_, c in SINS_CATEGORY_BANDS}
    )
    expected |= {codes.SINS_METHOD, codes.SINS_TOTAL, codes.SPINAL_INSTABILITY}
    assert set(sins) == expected


def test_the_spine_finding_code_system_holds_table_2c(by_url: dict[str, Json]) -> None:
    table_2c = {
        codes.VERTEBRAL_LESION,
        codes.LESION_APPEARANCE,
        codes.PAIN_CHARACTER,
        codes.SPINAL_ALIGNMENT,
        codes.HEIGHT_LOSS,
        codes.BODY_INVOLVEMENT,
        codes.POSTERIOR_ELEMENT,
        codes.CONTRAST_ENHANCEMENT,
        codes.TREATED_LESION,
        codes.PRIMARY_TUMOR,
        codes.LESION_CLASSIFICATION,
        codes.LIKELY_PRIMARY,
        codes.DIFFERENTIAL,
        codes.ASSESSMENT_REPORT,
        codes.ESCC_GRADE,
        codes.MYELOPATHY,
        codes.NOMS_INPUTS,
    }
    spine = concepts(by_url[codes.CS_SPINE_FINDING])
    assert set(spine) == table_2c
    for code, display in SPINE_FINDING_DISPLAY.items():
        assert spine[code]["display"] == display


@pytest.mark.parametrize("row", ESCC_SCALE, ids=lambda r: f"grade-{r.grade.value}")
def test_the_escc_code_system_holds_each_grade_with_its_group(
    by_url: dict[str, Json], row: EsccRow
) -> None:
    escc = concepts(by_url[codes.CS_ESCC])
    entry = escc[row.grade.value]
    assert entry["property"] == [{"code": "group", "valueCode": row.group.value}]
    assert row.meaning in entry["display"]
    grades = by_url[f"{codes.BASE}/ValueSet/escc-grade"]
    assert (codes.CS_ESCC, row.grade.value) in included(grades)


def test_the_escc_grade_value_set_is_the_scale_in_order(by_url: dict[str, Json]) -> None:
    [include] = by_url[f"{codes.BASE}/ValueSet/escc-grade"]["compose"]["include"]
    assert [c["code"] for c in include["concept"]] == ["0", "1a", "1b", "1c", "2", "3"]
    assert set(concepts(by_url[codes.CS_ESCC])) == {
        "0",
        "1a",
        "1b",
        "1c",
        "2",
        "3",
        "low-grade",
        "high-grade",
    }


def test_the_noms_code_system_holds_the_parts_and_every_class(by_url: dict[str, Json]) -> None:
    noms = concepts(by_url[codes.CS_NOMS])
    expected = {
        codes.NOMS_NEUROLOGIC,
        codes.NOMS_ONCOLOGIC,
        codes.NOMS_MECHANICAL,
        codes.NOMS_SYSTEMIC,
        codes.NOMS_NO_KNOWN_PRIMARY,
    } | {r.value for r in Radiosensitivity}
    assert set(noms) == expected


def test_the_primary_tumor_code_system_holds_every_likely_primary(
    by_url: dict[str, Json],
) -> None:
    primaries = concepts(by_url[codes.CS_PRIMARY_TUMOR])
    expected = {code for row in LIKELY_PRIMARIES.values() for code in row} | {UNKNOWN_PRIMARY}
    assert set(primaries) == expected
    for code, entry in primaries.items():
        assert entry["display"] == PRIMARY_TUMOR_DISPLAY[code]


def test_the_differential_code_system_holds_every_differential(by_url: dict[str, Json]) -> None:
    differential = concepts(by_url[codes.CS_DIFFERENTIAL])
    # DOMAIN.md 5 (v2): the osteoporotic fracture of a collapsed level is a differential too.
    assert set(differential) == {code for row in DIFFERENTIAL.values() for code in row} | {
        "osteoporotic-compression-fracture"
    }
    for code, entry in differential.items():
        assert entry["display"] == DIFFERENTIAL_DISPLAY[code]


# --- ValueSets -----------------------------------------------------------------------------


def included(value_set: Json) -> set[tuple[str, str]]:
    """(system, code) of every concept a ValueSet lists."""
    return {
        (include["system"], c["code"])
        for include in value_set["compose"]["include"]
        for c in include.get("concept", [])
    }


def test_value_set_concepts_of_our_systems_exist_with_their_display(
    artefacts: dict[str, Json], by_url: dict[str, Json]
) -> None:
    for value_set in of_type(artefacts, "ValueSet"):
        for include in value_set["compose"]["include"]:
            if include["system"] not in OUR_CODE_SYSTEMS:
                continue
            defined = concepts(by_url[include["system"]])
            for entry in include.get("concept", []):
                assert entry["code"] in defined, (value_set["id"], entry["code"])
                assert entry["display"] == defined[entry["code"]]["display"]


def test_every_code_system_has_its_whole_value_set(
    artefacts: dict[str, Json], by_url: dict[str, Json]
) -> None:
    for cs in of_type(artefacts, "CodeSystem"):
        assert by_url[cs["valueSet"]]["compose"]["include"] == [{"system": cs["url"]}]


@pytest.mark.parametrize("component", list(SinsComponent))
def test_each_sins_component_has_its_answer_value_set(
    by_url: dict[str, Json], component: SinsComponent
) -> None:
    value_set = by_url[f"{codes.BASE}/ValueSet/sins-{component.value}-answer"]
    assert included(value_set) == {(codes.CS_SINS, a.value) for a in SINS_POINTS[component]}


def test_the_vertebral_level_value_set_is_the_29_levels_of_table_2a(
    by_url: dict[str, Json],
) -> None:
    value_set = by_url[f"{codes.BASE}/ValueSet/vertebral-level"]
    assert included(value_set) == {(codes.SNOMED, level.snomed) for level in VertebralLevel}
    assert len(included(value_set)) == 29
    assert ("http://snomed.info/sct", "64688005") not in included(value_set), "coccyx"


def test_the_input_value_set_holds_every_input_code(by_url: dict[str, Json]) -> None:
    value_set = by_url[f"{codes.BASE}/ValueSet/spine-finding-input"]
    expected = {
        (codes.CS_SPINE_FINDING, code)
        for code in (
            codes.LESION_APPEARANCE,
            codes.PAIN_CHARACTER,
            codes.SPINAL_ALIGNMENT,
            codes.HEIGHT_LOSS,
            codes.BODY_INVOLVEMENT,
            codes.POSTERIOR_ELEMENT,
            codes.CONTRAST_ENHANCEMENT,
            codes.TREATED_LESION,
            codes.PRIMARY_TUMOR,
            codes.ESCC_GRADE,
            codes.MYELOPATHY,
        )
    }
    expected |= {(codes.CS_SINS, c.value) for c in SinsComponent}
    expected |= {(codes.DCM, c) for c in (codes.DCM_ATTENUATION, codes.DCM_T1, codes.DCM_T2)}
    assert included(value_set) == expected


# --- StructureDefinitions ------------------------------------------------------------------


def test_profile_urls_are_the_constants_of_codes(artefacts: dict[str, Json]) -> None:
    definitions = of_type(artefacts, "StructureDefinition")
    profiles = {sd["url"] for sd in definitions if sd["type"] != "Extension"}
    assert profiles == PROFILE_URLS
    extensions = {sd["url"]: sd for sd in definitions if sd["type"] == "Extension"}
    assert set(extensions) == {codes.EXT_VERTEBRAL_LEVEL, codes.EXT_SINS_DISCORDANCE}
    assert extensions[codes.EXT_VERTEBRAL_LEVEL]["context"] == [
        {"type": "element", "expression": "RiskAssessment"}
    ]
    # CONTRACT 4a (v2): the discordant marker of a SINS component.
    assert extensions[codes.EXT_SINS_DISCORDANCE]["context"] == [
        {"type": "element", "expression": "Observation.component"}
    ]
    for sd in definitions:
        assert sd["fhirVersion"] == "4.0.1"
        assert sd["derivation"] == "constraint"
        assert sd["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{sd['type']}"
        assert sd["snapshot"]["element"], f"{sd['id']} has no snapshot"


def differential(by_url: dict[str, Json], url: str) -> dict[str, Json]:
    """The differential elements of one of our profiles by id."""
    return {e["id"]: e for e in by_url[url]["differential"]["element"]}


def coded(pattern: Json) -> list[tuple[str, str]]:
    """(system, code) of a patternCodeableConcept."""
    return [(c["system"], c["code"]) for c in pattern["coding"]]


@pytest.mark.parametrize(
    ("url", "element_id", "expected"),
    [
        (codes.PROFILE_SINS, "Observation.code", [(codes.CS_SINS, codes.SINS_TOTAL)]),
        (
            codes.PROFILE_CLASSIFICATION,
            "Observation.code",
            [(codes.CS_SPINE_FINDING, codes.LESION_CLASSIFICATION)],
        ),
        (
            codes.PROFILE_LESION_PANEL,
            "Observation.code",
            [(codes.CS_SPINE_FINDING, codes.VERTEBRAL_LESION)],
        ),
        (codes.PROFILE_RISK, "RiskAssessment.method", [(codes.CS_SINS, codes.SINS_METHOD)]),
        (
            codes.PROFILE_RISK,
            "RiskAssessment.prediction.outcome",
            [(codes.CS_SINS, codes.SPINAL_INSTABILITY)],
        ),
        (
            codes.PROFILE_REPORT,
            "DiagnosticReport.code",
            [
                (codes.LOINC, codes.LOINC_REPORT),
                (codes.CS_SPINE_FINDING, codes.ASSESSMENT_REPORT),
            ],
        ),
    ],
)
def test_code_patterns(by_url: dict[str, Json], url: str, element_id: str, expected: Any) -> None:
    assert coded(differential(by_url, url)[element_id]["patternCodeableConcept"]) == expected


@pytest.mark.parametrize(
    "url", [codes.PROFILE_SINS, codes.PROFILE_CLASSIFICATION, codes.PROFILE_LESION_PANEL]
)
def test_level_outputs_and_panels_require_a_vertebral_level(
    by_url: dict[str, Json], url: str
) -> None:
    body_site = differential(by_url, url)["Observation.bodySite"]
    assert body_site["min"] == 1
    assert body_site["binding"]["valueSet"] == f"{codes.BASE}/ValueSet/vertebral-level"


@pytest.mark.parametrize(
    "url",
    [
        codes.PROFILE_SINS,
        codes.PROFILE_CLASSIFICATION,
        codes.PROFILE_RISK,
        codes.PROFILE_REPORT,
        codes.PROFILE_PROVENANCE,
    ],
)
def test_outputs_must_claim_their_profile(by_url: dict[str, Json], url: str) -> None:
    kind = by_url[url]["type"]
    elements = differential(by_url, url)
    assert elements[f"{kind}.meta"]["min"] == 1
    assert elements[f"{kind}.meta.profile"]["min"] == 1


def test_the_risk_assessment_requires_the_level_extension_and_a_prediction(
    by_url: dict[str, Json],
) -> None:
    elements = differential(by_url, codes.PROFILE_RISK)
    level = elements["RiskAssessment.extension:vertebralLevel"]
    assert (level["min"], level["max"]) == (1, "1")
    assert level["type"] == [{"code": "Extension", "profile": [codes.EXT_VERTEBRAL_LEVEL]}]
    assert elements["RiskAssessment.extension"]["slicing"]["discriminator"] == [
        {"type": "value", "path": "url"}
    ]
    assert elements["RiskAssessment.prediction"]["min"] == 1
    assert elements["RiskAssessment.method"]["min"] == 1


def test_the_sins_score_has_one_slice_per_component(by_url: dict[str, Json]) -> None:
    elements = differential(by_url, codes.PROFILE_SINS)
    slices = {e["sliceName"]: e for e in elements.values() if "sliceName" in e}
    assert len(slices) == len(SinsComponent)
    for component in SinsComponent:
        matching = [
            e
            for e in elements.values()
            if e["path"] == "Observation.component.code"
            and coded(e["patternCodeableConcept"]) == [(codes.CS_SINS, component.value)]
        ]
        assert len(matching) == 1, component
        slice_id = matching[0]["id"].removesuffix(".code")
        assert (elements[slice_id]["min"], elements[slice_id]["max"]) == (1, "1")


def test_the_provenance_requires_targets_and_agents(by_url: dict[str, Json]) -> None:
    elements = differential(by_url, codes.PROFILE_PROVENANCE)
    assert elements["Provenance.target"]["min"] == 1
    assert elements["Provenance.agent"]["min"] == 1


def test_bindings_and_extension_profiles_resolve_to_artefacts(
    artefacts: dict[str, Json], by_url: dict[str, Json]
) -> None:
    for sd in of_type(artefacts, "StructureDefinition"):
        for item in sd["differential"]["element"]:
            value_set = item.get("binding", {}).get("valueSet")
            if value_set is not None:
                assert value_set in by_url, (sd["id"], item["id"], value_set)
            for type_ in item.get("type", []):
                for profile in (*type_.get("profile", []), *type_.get("targetProfile", [])):
                    if profile.startswith(codes.BASE):
                        assert profile in by_url, (sd["id"], item["id"], profile)


def test_pattern_codes_of_our_systems_exist(
    artefacts: dict[str, Json], by_url: dict[str, Json]
) -> None:
    for sd in of_type(artefacts, "StructureDefinition"):
        for item in sd["differential"]["element"]:
            for coding in item.get("patternCodeableConcept", {}).get("coding", []):
                if coding["system"] in OUR_CODE_SYSTEMS:
                    assert coding["code"] in concepts(by_url[coding["system"]]), item["id"]


# --- CapabilityStatement and OperationDefinition -------------------------------------------


def test_the_capability_statement_says_what_the_server_offers(
    artefacts: dict[str, Json], by_url: dict[str, Json]
) -> None:
    statement = artefacts["CapabilityStatement-fhir-app.json"]
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["format"] == ["json"]
    (rest,) = statement["rest"]
    assert rest["mode"] == "server"
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    assert rest["compartment"] == ["http://hl7.org/fhir/CompartmentDefinition/patient"]
    resources = {r["type"]: r for r in rest["resource"]}
    assert set(resources) == {
        "Observation",
        "Condition",
        "ImagingStudy",
        "Patient",
        "RiskAssessment",
        "DiagnosticReport",
        "Provenance",
    }
    reads = {"read", "vread", "history-instance", "history-type", "search-type"}
    writes = {"create", "update", "delete", "patch"}
    for kind in ("Observation", "Condition", "ImagingStudy", "Patient"):
        assert {i["code"] for i in resources[kind]["interaction"]} == reads | writes
        assert resources[kind]["conditionalCreate"] is True
        assert resources[kind]["conditionalUpdate"] is True
        assert resources[kind]["conditionalDelete"] == "single"
        operations = {o["name"] for o in resources[kind]["operation"]}
        assert operations == ({"everything", "validate"} if kind == "Patient" else {"validate"})
    for kind in ("RiskAssessment", "DiagnosticReport", "Provenance"):
        assert {i["code"] for i in resources[kind]["interaction"]} == reads
        assert "conditionalUpdate" not in resources[kind]
        assert "operation" not in resources[kind]
    for resource in resources.values():
        assert resource["conditionalRead"] == "full-support"
    for kind in ("Observation", "RiskAssessment", "DiagnosticReport", "Provenance"):
        params = {p["name"] for p in resources[kind]["searchParam"]}
        assert {"patient", "_lastUpdated", "_count"} <= params, kind
    for kind in ("Observation", "Condition", "DiagnosticReport"):
        assert {"subject", "code"} <= {p["name"] for p in resources[kind]["searchParam"]}
    for entry in resources.values():
        for profile in entry.get("supportedProfile", []):
            assert profile in by_url, profile
    operations = {o["name"]: o["definition"] for o in rest["operation"]}
    assert operations["export"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
    assess = by_url[operations["assess"]]
    assert assess["resourceType"] == "OperationDefinition"


def test_the_assess_operation_takes_and_returns_a_bundle(artefacts: dict[str, Json]) -> None:
    operation = artefacts["OperationDefinition-assess.json"]
    assert (operation["code"], operation["system"], operation["instance"]) == (
        "assess",
        True,
        False,
    )
    assert operation["affectsState"] is False
    parameters = {(p["use"], p["name"]): p for p in operation["parameter"]}
    assert parameters[("in", "input")]["type"] == "Bundle"
    assert parameters[("out", "return")]["type"] == "Bundle"
