"""The shipped maps in profiles/conceptmaps/: valid R4, citing their source, one test per row.

The row table is read from the JSON itself (the map is the data); a few rows are asserted by hand
against their source (HL7 mCODE TG-263 map, CDC ICD-10-CM, WHO ICD-O-3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conceptmap_support import (
    BASE,
    HISTOLOGY,
    ICD10CM,
    ICDO3,
    PRIMARY_TUMOR,
    SNOMED,
    codes_of,
    condition,
)
from fhir.resources.R4B.conceptmap import ConceptMap
from support.validator import errors, validate_with_medplum

from fhir_app.domain.levels import LEVEL_BY_SNOMED, VertebralLevel
from fhir_app.fhir import conceptmap
from fhir_app.fhir.conceptmap import Target

SHIPPED = conceptmap.shipped_folder()
FILES = sorted(SHIPPED.glob("*.json"))
DOCUMENTS = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in FILES}
TRANSLATOR = conceptmap.load_translator(None)

Json = dict[str, Any]


def shipped_targets() -> list[tuple[str, str, str, Target]]:
    """(source system, source code, file, target) of every shipped target."""
    rows = []
    for loaded in TRANSLATOR.maps:
        for row in loaded.rows:
            for target in row.targets:
                rows.append((row.source_system, row.source_code, loaded.path.name, target))
    return rows


ROWS = shipped_targets()


def carrier(system: str, code: str, target: Target) -> Json:
    """An input carrying `system#code` where the contract reads it, and the target's context."""
    resource: Json
    if target.system == PRIMARY_TUMOR:
        resource = condition(system, code)
    else:
        placed = {"system": system, "code": code}
        level = target.code in LEVEL_BY_SNOMED or not target.applied
        resource = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "00000-0"}]}
            if level
            else {"coding": [placed]},
            "bodySite": {"coding": [placed if level else {"system": SNOMED, "code": "23215003"}]},
        }
    for depends in target.depends_on:
        assert depends.property == HISTOLOGY
        resource = {
            **resource,
            "extension": [
                *resource.get("extension", []),
                {
                    "url": HISTOLOGY,
                    "valueCodeableConcept": {
                        "coding": [{"system": depends.system, "code": depends.value}]
                    },
                },
            ],
        }
    return resource


def added_codings(translated: Json) -> list[tuple[str, str]]:
    """Every (system, code) of bodySite and code after translation."""
    found = []
    for name in ("code", "bodySite"):
        for coding in translated.get(name, {}).get("coding", []):
            found.append((coding["system"], coding["code"]))
    return found


def test_the_shipped_folder_holds_the_maps_of_contract_3a() -> None:
    assert {path.name for path in FILES} == {
        "ConceptMap-snomed-vertebral-body-to-level.json",
        "ConceptMap-cancer-diagnosis-to-primary-tumor.json",
        "ConceptMap-radelement-rdes21-sins.json",
        "ConceptMap-radelement-rdes230-vcf.json",
        "ConceptMap-radelement-rdes288-escc.json",
    }


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_each_map_is_an_r4_concept_map_that_cites_its_source(name: str) -> None:
    document = DOCUMENTS[name]
    ConceptMap.model_validate(document)
    assert name == f"ConceptMap-{document['id']}.json"
    assert document["url"] == f"{BASE}/ConceptMap/{document['id']}"
    assert document["version"]
    assert document["publisher"] == "fhir-app"
    assert document["status"] in {"active", "draft"}
    assert document["sourceUri"]
    assert document["targetUri"]
    description = document["description"]
    assert "SOURCE" in description
    assert "https://" in description
    assert "2026-12-01" in description  # the date the source was read


@pytest.mark.node
def test_every_map_passes_the_independent_validator() -> None:
    issues = validate_with_medplum(list(DOCUMENTS.values()))
    assert all(not errors(found) for found in issues), issues


@pytest.mark.parametrize(
    ("system", "code", "file", "target"),
    ROWS,
    ids=[
        f"{file.removeprefix('ConceptMap-')}:{code}->{t.code or t.equivalence}"
        f"{''.join('+' + d.value for d in t.depends_on)}"
        for _, code, file, t in ROWS
    ],
)
def test_each_row_adds_its_contract_code(system: str, code: str, file: str, target: Target) -> None:
    resource = carrier(system, code, target)
    translated = TRANSLATOR.translate(resource)
    if target.applied:
        assert (target.system, target.code) in added_codings(translated)
        assert (target.system, target.code) not in added_codings(resource)
    else:
        assert translated is resource  # unmatched: documented, left unmapped


# Rows checked by hand against the source (mCODE CM_TG263 / RadiotherapyTreatmentLocationVS).
@pytest.mark.parametrize(
    ("body_code", "level"),
    [
        ("61032001", VertebralLevel.L1),  # VB_L1 Structure of body of first lumbar vertebra
        ("280849005", VertebralLevel.T12),  # VB_T12 body of twelfth thoracic vertebra
        ("91116008", VertebralLevel.C3),  # VB_C3 body of third cervical vertebra
        ("56094003", VertebralLevel.T1),  # VB_T01 body of first thoracic vertebra
        ("21799000", VertebralLevel.L5),  # VB_L5 body of fifth lumbar vertebra
    ],
)
def test_vertebral_body_rows_checked_against_tg263(body_code: str, level: VertebralLevel) -> None:
    site = {"coding": [{"system": SNOMED, "code": body_code}]}
    observation = {"resourceType": "Observation", "status": "final", "bodySite": site}
    translated = TRANSLATOR.translate(observation)
    assert codes_of(translated["bodySite"], SNOMED) == [body_code, level.snomed]


def test_the_vertebral_body_map_covers_c3_to_l5_and_says_what_it_leaves_out() -> None:
    document = DOCUMENTS["ConceptMap-snomed-vertebral-body-to-level.json"]
    mapped = {
        LEVEL_BY_SNOMED[t["code"]].label
        for e in document["group"][0]["element"]
        for t in e["target"]
        if "code" in t
    }
    expected = {lvl.label for lvl in VertebralLevel} - {"C1", "C2", "S1", "S2", "S3", "S4", "S5"}
    assert mapped == expected
    for left_out in ("C1", "C2", "S1-S5", "T13"):
        assert left_out in document["description"]


@pytest.mark.parametrize(
    ("system", "code", "morphology", "expected"),
    [
        (ICD10CM, "C22.0", None, "hepatocellular"),  # Liver cell carcinoma
        (ICD10CM, "C22.9", "8170/3", "hepatocellular"),  # liver NOS + hepatocellular carcinoma
        (ICD10CM, "C34.90", "8041/3", "lung-small-cell"),  # lung + small cell carcinoma NOS
        (ICD10CM, "C34.11", "8140/3", "lung-non-small-cell"),  # upper lobe + adenocarcinoma
        (ICD10CM, "C64.1", "8312/3", "renal-cell"),  # right kidney + renal cell carcinoma
        (ICD10CM, "C62.91", "9061/3", "testis-seminoma"),  # testis + seminoma NOS
        (ICD10CM, "C50.911", None, "breast"),  # a billable subcode takes its category's row
        (ICD10CM, "C61", None, "prostate"),
        (ICD10CM, "C74.10", "9500/3", "neuroblastoma"),  # C74.1 has no row that applies
        (ICD10CM, "C74.10", "8700/3", "phaeochromocytoma"),
        (ICD10CM, "C18.7", "8480/3", "gi-mucinous-adenocarcinoma"),
        (SNOMED, "254837009", None, "breast"),  # Malignant neoplasm of breast (disorder)
        (SNOMED, "254632001", None, "lung-small-cell"),
    ],
)
def test_cancer_rows_checked_against_the_sources(
    system: str, code: str, morphology: str | None, expected: str
) -> None:
    translated = TRANSLATOR.translate(condition(system, code, morphology=morphology))
    assert codes_of(translated["code"], PRIMARY_TUMOR) == [expected]


@pytest.mark.parametrize(
    ("code", "morphology"),
    [
        ("C34.90", None),  # lung without morphology: small-cell or not is unknown
        ("C34.90", "8720/3"),  # a morphology the row does not list
        ("C64.1", None),
        ("C79.51", None),  # secondary neoplasm of bone: not a primary
        ("D05.10", None),  # in situ breast carcinoma: not a category the map lists
    ],
)
def test_a_diagnosis_no_row_reaches_stays_unmapped(code: str, morphology: str | None) -> None:
    resource = condition(ICD10CM, code, morphology=morphology)
    assert TRANSLATOR.translate(resource) is resource


def test_the_histology_context_is_read_from_the_mcode_extension_only() -> None:
    resource = condition(ICD10CM, "C34.90")
    resource["note"] = [{"text": "8041/3"}]
    resource["extension"] = [
        {
            "url": "http://example.org/other",
            "valueCodeableConcept": {"coding": [{"system": ICDO3, "code": "8041/3"}]},
        }
    ]
    assert TRANSLATOR.translate(resource) is resource


@pytest.mark.parametrize(
    "name", ["ConceptMap-radelement-rdes21-sins.json", "ConceptMap-radelement-rdes288-escc.json"]
)
def test_radelement_coded_elements_ship_no_unsourced_rows_and_say_so(name: str) -> None:
    document = DOCUMENTS[name]
    assert "group" not in document
    assert document["status"] == "draft"
    assert "NO ROWS SHIPPED" in document["description"]
    assert "never invents a code" in document["description"]
    loaded = next(m for m in TRANSLATOR.maps if m.path.name == name)
    assert loaded.rows == ()


@pytest.mark.parametrize(
    "system", ["http://radelement.org", "https://www.radelement.org", "http://www.radelement.org/"]
)
def test_radelement_degree_of_compression_is_height_loss_under_every_system_in_use(
    system: str,
) -> None:
    finding = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": "RDE2004"}]},
        "valueQuantity": {"value": 60, "system": "http://unitsofmeasure.org", "code": "%"},
    }
    translated = TRANSLATOR.translate(finding)
    assert codes_of(translated["code"], f"{BASE}/CodeSystem/spine-finding") == [
        "vertebral-body-height-loss"
    ]
    assert translated["valueQuantity"] is finding["valueQuantity"]  # the quantity as sent


def test_every_target_is_a_contract_input_code() -> None:
    for _, _, _, target in ROWS:
        if target.applied:
            assert target.system in conceptmap.rules.CONTRACT_TARGETS
            assert target.code in conceptmap.rules.CONTRACT_TARGETS[target.system]


def test_the_shipped_folder_is_the_source_tree_or_else_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Path(__file__).resolve().parents[4] / "profiles" / "conceptmaps" == SHIPPED
    # As installed by the Dockerfile: the package without the source tree, profiles/ in /app.
    monkeypatch.setattr(conceptmap, "SHIPPED_SUBFOLDER", Path("installed") / "conceptmaps")
    (tmp_path / "installed" / "conceptmaps").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert conceptmap.shipped_folder() == tmp_path / "installed" / "conceptmaps"
    assert conceptmap.load_translator(None).rows() == []
