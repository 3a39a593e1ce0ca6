"""Twins: the same clinical facts coded with the contract's codes and with standard and local codes
give identical derived outputs (CONTRACT.md 3a: a mapped input is read exactly as if it had come
with the contract's code).

Every example patient in examples/ is recoded: each vertebral level with a SNOMED vertebral body
code of the shipped map becomes that body code, a breast or prostate primary becomes its ICD-10-CM
code (shipped map), a height loss becomes RadElement RDE2004 (shipped map), and every other
contract code becomes a site-local code that a site ConceptMap
in a temporary folder maps back (the way a site maps RadElement or its own codes). The outputs of
`$assess` on both twins must be equal, key for key.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
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
    concept_map,
    write_map,
)

from fhir_app.fhir import conceptmap
from fhir_app.fhir.conceptmap.rules import CONTRACT_TARGETS
from fhir_app.service import assess

EXAMPLES = sorted((Path(__file__).resolve().parents[4] / "examples").glob("patient-*.json"))
ESCC = "https://fhir-app.org/fhir/CodeSystem/escc"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# Contract systems whose codes the twin replaces by site-local codes.
LOCALISED = (SPINE_FINDING, SINS, ESCC, PRIMARY_TUMOR)
PRIMARY_ICD10CM = {"breast": "C50.912", "prostate": "C61"}

Json = dict[str, Any]


def body_code_of_level() -> dict[str, str]:
    """Level SNOMED code -> vertebral body SNOMED code, the inverse of the shipped map."""
    inverse: dict[str, str] = {}
    for row in conceptmap.load_translator(None).rows():
        for target in row.targets:
            if row.source_system == SNOMED and target.system == SNOMED and target.applied:
                inverse[target.code] = row.source_code
    return inverse


BODY_OF = body_code_of_level()


def local_code(system: str, code: str) -> str:
    return f"{system.rsplit('/', 1)[-1]}:{code}"


def site_map() -> Json:
    """Every localised contract code back to itself, one group per target system."""
    groups = [
        {
            "source": LOCAL,
            "target": system,
            "element": [
                {
                    "code": local_code(system, code),
                    "target": [{"code": code, "equivalence": "equal"}],
                }
                for code in sorted(CONTRACT_TARGETS[system])
            ],
        }
        for system in LOCALISED
    ]
    return concept_map("twins", groups)


def recode(concept: Any, *, site: bool = False) -> None:
    """Replace the contract codings of a CodeableConcept in place by standard or local codes."""
    if not isinstance(concept, dict):
        return
    recoded = []
    for coding in concept.get("coding", []):
        system, code = coding.get("system"), coding.get("code")
        if site and system == SNOMED and code in BODY_OF:
            recoded.append({"system": SNOMED, "code": BODY_OF[code]})
        elif (system, code) == (SPINE_FINDING, "vertebral-body-height-loss"):
            recoded.append({"system": "http://radelement.org", "code": "RDE2004"})
        elif system == PRIMARY_TUMOR and code in PRIMARY_ICD10CM:
            recoded.append({"system": ICD10CM, "code": PRIMARY_ICD10CM[code]})
        elif system in LOCALISED:
            recoded.append({"system": LOCAL, "code": local_code(system, code)})
        else:
            recoded.append(coding)
    concept["coding"] = recoded


def standard_twin(bundle: Json) -> Json:
    """The bundle with every Observation recoded (see the module docstring)."""
    twin = copy.deepcopy(bundle)
    for entry in twin["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] != "Observation":
            continue
        recode(resource.get("code"))
        recode(resource.get("bodySite"), site=True)
        recode(resource.get("valueCodeableConcept"))
        for component in resource.get("component", []):
            recode(component.get("code"))
            recode(component.get("valueCodeableConcept"))
    return twin


def contract_codings(bundle: Json) -> int:
    """How many codings of the recoded kinds the bundle still carries."""
    text = json.dumps(bundle)
    return sum(text.count(f'"system": "{system}"') for system in LOCALISED)


def outputs(bundle: Json) -> list[Json]:
    items = [(f"entry[{i}]", e["resource"]) for i, e in enumerate(bundle["entry"])]
    result = assess(items, now=NOW)
    assert not result.rejections, [r.outcome() for r in result.rejections]
    return result.outputs


@pytest.fixture
def site_maps(tmp_path: Path, fresh_translator: None) -> None:
    write_map(tmp_path, "twins.json", site_map())
    conceptmap.configure(tmp_path)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_standard_coded_twins_derive_identical_outputs(path: Path, site_maps: None) -> None:
    contract = json.loads(path.read_text(encoding="utf-8"))
    twin = standard_twin(contract)
    assert contract_codings(twin) == 0 < contract_codings(contract)
    expected = outputs(contract)
    assert expected
    assert outputs(twin) == expected


def test_the_twins_use_the_shipped_body_codes_of_c3_to_l5() -> None:
    assert len(BODY_OF) == 22
    twin = standard_twin(json.loads(EXAMPLES[0].read_text(encoding="utf-8")))
    sites = [e["resource"].get("bodySite") for e in twin["entry"]]
    assert {"system": SNOMED, "code": BODY_OF["36470004"]} in [
        c for s in sites if s for c in s["coding"]
    ]  # patient 01's L3 lesion arrives as the body of L3
