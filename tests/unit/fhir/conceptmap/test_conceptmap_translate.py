"""The translator: contract codings added to a copy, site maps adding and overriding rows."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from conceptmap_support import (
    ICD10CM,
    LOCAL,
    PRIMARY_TUMOR,
    SINS,
    SNOMED,
    SPINE_FINDING,
    codes_of,
    concept_map,
    condition,
    write_map,
)

from fhir_app.fhir import conceptmap

RADELEMENT = ("http://radelement.org", "https://www.radelement.org", "http://www.radelement.org/")
L1_BODY, L1_LEVEL, T12_BODY, T12_LEVEL = "61032001", "66794005", "280849005", "23215003"


def local_map() -> dict[str, Any]:
    """A site's map: its reading codes onto spine-finding, its answer codes onto sins answers."""
    return concept_map(
        "local",
        [
            {
                "source": LOCAL,
                "target": SPINE_FINDING,
                "element": [
                    {
                        "code": "APPEAR",
                        "target": [{"code": "lesion-appearance", "equivalence": "equivalent"}],
                    },
                    {
                        "code": "PANEL",
                        "target": [{"code": "vertebral-lesion", "equivalence": "equivalent"}],
                    },
                ],
            },
            {
                "source": LOCAL,
                "target": SINS,
                "element": [
                    {"code": "OSTEOLYTIC", "target": [{"code": "lytic", "equivalence": "equal"}]},
                    {
                        "code": "COLLAPSE",
                        "target": [{"code": "collapse", "equivalence": "equivalent"}],
                    },
                    {
                        "code": "COLLAPSE-LT50",
                        "target": [{"code": "collapse-lt-50", "equivalence": "equivalent"}],
                    },
                ],
            },
        ],
    )


def observation(**elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": "Patient/p"},
        **elements,
    }


def concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def test_the_input_stays_as_received_and_the_copy_gets_the_contract_coding() -> None:
    translator = conceptmap.load_translator(None)
    received = observation(
        code=concept("http://loinc.org", "1-8"), bodySite=concept(SNOMED, L1_BODY)
    )
    before = copy.deepcopy(received)
    translated = translator.translate(received)
    assert received == before
    assert translated is not received
    assert codes_of(translated["bodySite"], SNOMED) == [L1_BODY, L1_LEVEL]
    assert translated["bodySite"]["coding"][1]["display"] == "L1 vertebra"


def test_nothing_to_map_returns_the_same_object() -> None:
    translator = conceptmap.load_translator(None)
    received = observation(
        code=concept("http://loinc.org", "1-8"), bodySite=concept(SNOMED, L1_LEVEL)
    )
    assert translator.translate(received) is received
    study = {"resourceType": "ImagingStudy", "status": "available"}
    assert translator.translate(study) is study


def test_a_contract_coding_already_present_is_not_added_twice() -> None:
    translator = conceptmap.load_translator(None)
    site = {"coding": [{"system": SNOMED, "code": L1_BODY}, {"system": SNOMED, "code": L1_LEVEL}]}
    received = observation(bodySite=site)
    assert translator.translate(received) is received


def test_a_site_map_adds_local_codes_in_code_components_and_values(tmp_path: Path) -> None:
    write_map(tmp_path, "local.json", local_map())
    translator = conceptmap.load_translator(tmp_path)
    panel = observation(
        code=concept(LOCAL, "PANEL"),
        bodySite=concept(SNOMED, T12_BODY),
        component=[
            {
                "code": concept(LOCAL, "APPEAR"),
                "valueCodeableConcept": concept(LOCAL, "OSTEOLYTIC"),
            },
            {
                "code": concept(LOCAL, "COLLAPSE"),
                "valueCodeableConcept": concept(LOCAL, "COLLAPSE-LT50"),
            },
            {"code": concept("http://loinc.org", "x"), "valueString": "kept"},
        ],
    )
    translated = translator.translate(panel)
    assert codes_of(translated["code"], SPINE_FINDING) == ["vertebral-lesion"]
    assert codes_of(translated["bodySite"], SNOMED) == [T12_BODY, T12_LEVEL]
    first, second, third = translated["component"]
    assert codes_of(first["code"], SPINE_FINDING) == ["lesion-appearance"]
    assert codes_of(first["valueCodeableConcept"], SINS) == ["lytic"]
    assert codes_of(second["code"], SINS) == ["collapse"]
    assert codes_of(second["valueCodeableConcept"], SINS) == ["collapse-lt-50"]
    assert third == panel["component"][2]
    # the feed's own codings stay first and unchanged
    assert first["code"]["coding"][0] == {"system": LOCAL, "code": "APPEAR"}


def test_a_site_row_replaces_the_shipped_row_for_the_same_code(tmp_path: Path) -> None:
    override = concept_map(
        "override",
        [
            {
                "source": SNOMED,
                "target": SNOMED,
                "element": [
                    {
                        "code": L1_BODY,
                        "target": [{"equivalence": "unmatched", "comment": "not here"}],
                    },
                    {
                        "code": "999999",
                        "target": [{"code": T12_LEVEL, "equivalence": "equivalent"}],
                    },
                ],
            }
        ],
    )
    write_map(tmp_path, "override.json", override)
    translator = conceptmap.load_translator(tmp_path)
    l1 = observation(bodySite=concept(SNOMED, L1_BODY))
    assert translator.translate(l1) is l1
    local = translator.translate(observation(bodySite=concept(SNOMED, "999999")))
    assert codes_of(local["bodySite"], SNOMED) == ["999999", T12_LEVEL]
    # the other shipped rows stay
    t12 = translator.translate(observation(bodySite=concept(SNOMED, T12_BODY)))
    assert codes_of(t12["bodySite"], SNOMED) == [T12_BODY, T12_LEVEL]


@pytest.mark.parametrize("system", RADELEMENT)
def test_alternative_source_systems_are_groups_of_their_own(system: str, tmp_path: Path) -> None:
    """RadElement has no single system URI: a map repeats its rows per URI seen in use."""
    groups = [
        {
            "source": alias,
            "target": SPINE_FINDING,
            "element": [
                {
                    "code": "SITE-ESCC",
                    "target": [{"code": "escc-grade", "equivalence": "equivalent"}],
                }
            ],
        }
        for alias in RADELEMENT
    ]
    write_map(tmp_path, "aliases.json", concept_map("aliases", groups))
    translator = conceptmap.load_translator(tmp_path)
    translated = translator.translate(observation(code=concept(system, "SITE-ESCC")))
    assert codes_of(translated["code"], SPINE_FINDING) == ["escc-grade"]


def test_depends_on_conditions_must_all_hold(tmp_path: Path) -> None:
    histology = (
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"
    )
    icdo3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
    document = concept_map(
        "both",
        [
            {
                "source": "https://hospital.example.org/dx",
                "target": PRIMARY_TUMOR,
                "element": [
                    {
                        "code": "LUNG",
                        "target": [
                            {
                                "code": "lung-small-cell",
                                "equivalence": "equivalent",
                                "dependsOn": [
                                    {"property": histology, "system": icdo3, "value": "8041/3"},
                                    {"property": histology, "system": icdo3, "value": "8045/3"},
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    )
    write_map(tmp_path, "both.json", document)
    translator = conceptmap.load_translator(tmp_path)
    one = condition("https://hospital.example.org/dx", "LUNG", morphology="8041/3")
    assert translator.translate(one) is one
    both = copy.deepcopy(one)
    both["extension"].append(
        {
            "url": histology,
            "valueCodeableConcept": {"coding": [{"system": icdo3, "code": "8045/3"}]},
        }
    )
    assert codes_of(translator.translate(both)["code"], PRIMARY_TUMOR) == ["lung-small-cell"]


def test_a_condition_gets_its_primary_tumor_and_its_level_codings() -> None:
    """What the Condition input (branch i11-condition) reads: code and bodySite level codings."""
    translator = conceptmap.load_translator(None)
    primary = condition(ICD10CM, "C34.90", morphology="8041/3")
    primary["meta"] = {
        "profile": [
            "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"
        ]
    }
    translated = translator.translate(primary)
    assert codes_of(translated["code"], ICD10CM) == ["C34.90"]
    assert codes_of(translated["code"], PRIMARY_TUMOR) == ["lung-small-cell"]

    secondary = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p"},
        "code": concept(SNOMED, "94222008"),
        "bodySite": [concept(SNOMED, L1_BODY), concept(SNOMED, "12345"), concept(SNOMED, T12_BODY)],
    }
    translated = translator.translate(secondary)
    assert [codes_of(site, SNOMED) for site in translated["bodySite"]] == [
        [L1_BODY, L1_LEVEL],
        ["12345"],
        [T12_BODY, T12_LEVEL],
    ]
    assert secondary["bodySite"][0] == concept(SNOMED, L1_BODY)


def test_a_primary_tumor_observation_with_an_icd_10_cm_value_reads_as_the_contract_code() -> None:
    translator = conceptmap.load_translator(None)
    received = observation(
        code=concept(SPINE_FINDING, "primary-tumor"), valueCodeableConcept=concept(ICD10CM, "C61")
    )
    translated = translator.translate(received)
    assert codes_of(translated["valueCodeableConcept"], PRIMARY_TUMOR) == ["prostate"]


def test_configure_loads_once_per_folder_and_install_none_reloads(
    tmp_path: Path, fresh_translator: None
) -> None:
    first = conceptmap.configure(None)
    assert conceptmap.configure(None) is first
    assert conceptmap.active() is first
    write_map(tmp_path, "local.json", local_map())
    site = conceptmap.configure(tmp_path)
    assert site is not first
    assert conceptmap.active() is site
    conceptmap.install(None)
    assert conceptmap.active() is not site


def test_active_reads_the_site_folder_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_translator: None
) -> None:
    from fhir_app.config import get_settings

    write_map(tmp_path, "local.json", local_map())
    monkeypatch.setenv("FHIR_APP_CONCEPT_MAP_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        translated = conceptmap.translate(observation(code=concept(LOCAL, "APPEAR")))
    finally:
        get_settings.cache_clear()
    assert codes_of(translated["code"], SPINE_FINDING) == ["lesion-appearance"]


@pytest.mark.parametrize("written", ["8041/3", "80413"])
def test_icd_o_3_morphology_is_read_in_both_written_forms(written: str) -> None:
    translator = conceptmap.load_translator(None)
    translated = translator.translate(condition(ICD10CM, "C34.90", morphology=written))
    assert codes_of(translated["code"], PRIMARY_TUMOR) == ["lung-small-cell"]


def test_the_profiles_folder_setting_also_moves_the_shipped_maps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conceptmaps").mkdir()
    monkeypatch.setenv("FHIR_APP_PROFILES_DIR", str(tmp_path))
    assert conceptmap.shipped_folder() == tmp_path / "conceptmaps"
    assert conceptmap.load_translator(None).rows() == []
