"""A broken map is a start-up error naming the file and the element, never a silent skip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conceptmap_support import LOCAL, SINS, SNOMED, SPINE_FINDING, concept_map, write_map

from fhir_app.fhir import conceptmap
from fhir_app.fhir.conceptmap import ConceptMapError, load_file, load_folder

GOOD_ELEMENT = {"code": "lytic", "target": [{"code": "lytic", "equivalence": "equivalent"}]}


def group(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"source": LOCAL, "target": SINS, "element": [GOOD_ELEMENT]}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def element(
    source: str, target: str | None = None, equivalence: str | None = None
) -> dict[str, Any]:
    """One `group.element` with one target; None leaves the field out."""
    fields = {"code": target, "equivalence": equivalence}
    return {"code": source, "target": [{k: v for k, v in fields.items() if v is not None}]}


BROKEN: list[tuple[str, Any, str, str]] = [
    # (case, document, element named, words of the reason)
    ("invalid-json", '{"resourceType": "ConceptMap",', "(file)", "not valid JSON"),
    ("not-a-concept-map", {"resourceType": "ValueSet", "url": "x"}, "resourceType", "ConceptMap"),
    ("no-url", {"resourceType": "ConceptMap", "status": "active"}, "ConceptMap.url", "missing"),
    (
        "bad-status",
        {"resourceType": "ConceptMap", "url": "u", "status": "live"},
        "ConceptMap.status",
        "not an R4 status",
    ),
    (
        "missing-source",
        concept_map("m", [group(source=None)]),
        "ConceptMap.group[0].source",
        "missing",
    ),
    (
        "no-elements",
        concept_map("m", [group(element=None)]),
        "ConceptMap.group[0].element",
        "missing",
    ),
    (
        "missing-target",
        concept_map("m", [group(element=[{"code": "lytic"}])]),
        "ConceptMap.group[0].element[0].target",
        "missing",
    ),
    (
        "target-code-missing",
        concept_map("m", [group(element=[element("lytic", equivalence="equivalent")])]),
        "ConceptMap.group[0].element[0].target[0].code",
        "needs a target code",
    ),
    (
        "target-system-missing",
        concept_map("m", [group(target=None)]),
        "ConceptMap.group[0].target",
        "missing",
    ),
    (
        "target-system-not-the-contracts",
        concept_map("m", [group(target="http://loinc.org")]),
        "ConceptMap.group[0].target",
        "not a code system of the contract",
    ),
    (
        "target-code-not-the-contracts",
        concept_map(
            "m",
            [group(element=[element("lytic", "osteolytic", "equal")])],
        ),
        "ConceptMap.group[0].element[0].target[0].code",
        "'osteolytic' is not an input code",
    ),
    (
        "output-code-is-no-target",
        concept_map(
            "m",
            [
                group(
                    target=SPINE_FINDING,
                    element=[element("x", "lesion-classification", "equal")],
                )
            ],
        ),
        "ConceptMap.group[0].element[0].target[0].code",
        "not an input code",
    ),
    (
        "equivalence-narrower",
        concept_map(
            "m",
            [group(element=[element("lytic", "lytic", "narrower")])],
        ),
        "ConceptMap.group[0].element[0].target[0].equivalence",
        "cannot be applied",
    ),
    (
        "equivalence-relatedto",
        concept_map(
            "m",
            [group(element=[element("lytic", "lytic", "relatedto")])],
        ),
        "ConceptMap.group[0].element[0].target[0].equivalence",
        "cannot be applied",
    ),
    (
        "equivalence-not-r4",
        concept_map("m", [group(element=[element("lytic", "lytic", "same")])]),
        "ConceptMap.group[0].element[0].target[0].equivalence",
        "not an R4 ConceptMapEquivalence",
    ),
    (
        "equivalence-missing",
        concept_map("m", [group(element=[element("lytic", "lytic")])]),
        "ConceptMap.group[0].element[0].target[0].equivalence",
        "missing",
    ),
    (
        "depends-on-unknown-context",
        concept_map(
            "m",
            [
                group(
                    element=[
                        {
                            "code": "lytic",
                            "target": [
                                {
                                    "code": "lytic",
                                    "equivalence": "equivalent",
                                    "dependsOn": [
                                        {
                                            "property": "Observation.note",
                                            "system": "s",
                                            "value": "v",
                                        }
                                    ],
                                }
                            ],
                        }
                    ]
                )
            ],
        ),
        "ConceptMap.group[0].element[0].target[0].dependsOn[0].property",
        "not a context fhir-app reads",
    ),
    (
        "duplicate-source-code",
        concept_map("m", [group(), group(target=SINS)]),
        "ConceptMap.group[1].element[0].code",
        "is also ConceptMap.group[0].element[0].code",
    ),
    (
        "empty-string",
        concept_map("m", [group(source="")]),
        "ConceptMap.group[0].source",
        "non-empty string",
    ),
]


@pytest.mark.parametrize(
    ("case", "document", "where", "reason"), BROKEN, ids=[b[0] for b in BROKEN]
)
def test_a_broken_map_names_its_file_and_element(
    case: str, document: Any, where: str, reason: str, tmp_path: Path
) -> None:
    path = write_map(tmp_path, f"{case}.json", document)
    with pytest.raises(ConceptMapError) as caught:
        load_file(path)
    assert caught.value.path == path
    assert caught.value.element == where
    assert reason in caught.value.reason
    message = str(caught.value)
    assert str(path) in message
    assert where in message
    assert "\n" not in message  # one line, for the start-up message


def test_a_broken_site_map_stops_loading_the_translator(tmp_path: Path) -> None:
    write_map(tmp_path, "good.json", concept_map("good", [group()]))
    write_map(tmp_path, "bad.json", concept_map("bad", [group(target="http://loinc.org")]))
    with pytest.raises(ConceptMapError, match=r"bad\.json: ConceptMap\.group\[0\]\.target"):
        conceptmap.load_translator(tmp_path)


def test_two_maps_with_one_url_are_refused(tmp_path: Path) -> None:
    write_map(tmp_path, "a.json", concept_map("same", [group()]))
    write_map(tmp_path, "b.json", concept_map("same", [group()]))
    with pytest.raises(ConceptMapError, match="also the url of"):
        load_folder(tmp_path)


def test_a_site_folder_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConceptMapError, match="not a folder"):
        conceptmap.load_translator(tmp_path / "missing")


def test_unmatched_and_disjoint_rows_load_and_stay_unmapped(tmp_path: Path) -> None:
    document = concept_map(
        "documented",
        [
            group(
                target=SNOMED,
                element=[
                    {"code": "a", "target": [{"equivalence": "unmatched", "comment": "no level"}]},
                    {"code": "b", "target": [{"code": "66794005", "equivalence": "disjoint"}]},
                ],
            )
        ],
    )
    loaded = load_file(write_map(tmp_path, "documented.json", document))
    assert [t.applied for row in loaded.rows for t in row.targets] == [False, False]


def test_a_map_without_groups_is_valid_and_maps_nothing(tmp_path: Path) -> None:
    loaded = load_file(write_map(tmp_path, "empty.json", {**concept_map("e", []), "group": None}))
    assert loaded.rows == ()
