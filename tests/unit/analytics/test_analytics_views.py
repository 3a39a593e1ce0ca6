"""The ViewDefinitions of profiles/views and the evaluator: same rows as the lesion table."""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import VIEWS_DIR

from fhir_app.analytics.lesions import LesionRow, current_versions, fhir_moment, lesion_rows
from fhir_app.analytics.views import (
    ViewError,
    column_names,
    evaluate,
    load_views,
    reference_key,
)
from fhir_app.domain.assessment import consultation_advice
from fhir_app.domain.levels import LEVEL_BY_SNOMED, VertebralLevel
from fhir_app.domain.sins_answers import SinsComponent
from fhir_app.fhir import codes

Resources = list[dict[str, Any]]
Views = dict[str, dict[str, Any]]
Key = tuple[str, str]

CONSTANTS = {
    "sins": codes.CS_SINS,
    "snomed": codes.SNOMED,
    "spine": codes.CS_SPINE_FINDING,
    "primary": codes.CS_PRIMARY_TUMOR,
    "escc": codes.CS_ESCC,
    "ordinal": codes.EXT_ORDINAL_VALUE,
    "level": codes.EXT_VERTEBRAL_LEVEL,
    "probability": codes.CS_RISK_PROBABILITY,
}


# --- the artefacts -------------------------------------------------------------------------


def test_the_four_views_are_there(views: Views) -> None:
    assert sorted(views) == [
        "lesion_classification",
        "risk_assessment",
        "sins_component",
        "sins_score",
    ]


def test_views_are_shareable_view_definitions(views: Views) -> None:
    for view in views.values():
        assert view["resourceType"] == "ViewDefinition"
        assert (VIEWS_DIR / f"ViewDefinition-{view['id']}.json").is_file()
        assert view["url"] == f"{codes.BASE}/ViewDefinition/{view['id']}"
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", view["name"])
        assert view["fhirVersion"] == [codes.FHIR_VERSION]
        assert view["resource"] in ("Observation", "RiskAssessment")
        columns = [c for s in _selects(view["select"]) for c in s.get("column", [])]
        assert columns
        assert all(c.get("type") and c.get("description") for c in columns)


def _selects(selects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for select in selects:
        found.append(select)
        found.extend(_selects(select.get("select", []) + select.get("unionAll", [])))
    return found


def test_view_constants_are_the_contract_codes(views: Views) -> None:
    for view in views.values():
        for constant in view["constant"]:
            name = constant["name"]
            if name == "consultation":
                # The view reads the advice by its opening words (CONTRACT 4c).
                assert consultation_advice((VertebralLevel.T5,)).startswith(constant["valueString"])
            else:
                assert constant["valueUri"] == CONSTANTS[name], name


def test_views_stay_out_of_the_profile_generators_folder() -> None:
    # profiles/build_profiles.py owns profiles/*-*.json and deletes what it does not generate.
    assert VIEWS_DIR.name == "views"
    assert not list(VIEWS_DIR.parent.glob("ViewDefinition-*.json"))


# --- the same rows as the lesion table -----------------------------------------------------


def _keyed(rows: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    keyed: dict[Key, dict[str, Any]] = {}
    for row in rows:
        key = (row["patient"], LEVEL_BY_SNOMED[row["level_code"]].label)
        assert key not in keyed
        keyed[key] = row
    return keyed


def _flat(outputs: Resources) -> dict[Key, LesionRow]:
    return {(row.patient, row.level): row for row in lesion_rows(outputs)}


def test_sins_score_view_equals_the_lesion_table(outputs: Resources, views: Views) -> None:
    flat = _flat(outputs)
    scores = _keyed(evaluate(views["sins_score"], outputs))
    assert scores.keys() == flat.keys()
    for key, row in flat.items():
        score = scores[key]
        assert (score["total"], score["low"], score["high"]) == (
            row.sins_total,
            row.sins_low,
            row.sins_high,
        ), key
        assert score["category"] == row.category, key
        assert fhir_moment(score["effective"]) == row.effective, key


def test_sins_component_view_equals_the_lesion_table(outputs: Resources, views: Views) -> None:
    flat = _flat(outputs)
    rows = evaluate(views["sins_component"], outputs)
    assert len(rows) == 6 * len(flat)
    seen: set[tuple[str, str, str]] = set()
    for component in rows:
        key = (component["patient"], LEVEL_BY_SNOMED[component["level_code"]].label)
        prefix = component["component"].replace("-", "_")
        seen.add((*key, component["component"]))
        assert component["answer"] == getattr(flat[key], prefix), (key, prefix)
        assert component["points"] == getattr(flat[key], f"{prefix}_points"), (key, prefix)
        if component["answer"] is None:
            # Open: a range of points, or no finding at all.
            assert (component["low"] is not None) != (component["absent_reason"] is not None)
    assert len(seen) == len(rows)
    assert {c for *_, c in seen} == {c.value for c in SinsComponent}


def test_classification_view_equals_the_lesion_table(outputs: Resources, views: Views) -> None:
    flat = _flat(outputs)
    classifications = _keyed(evaluate(views["lesion_classification"], outputs))
    assert classifications.keys() == flat.keys()
    for key, row in flat.items():
        classification = classifications[key]
        assert classification["appearance"] == row.appearance, key
        assert classification["appearance_open"] is (row.appearance is None), key
        assert classification["likely_primary_1"] == row.likely_primary_1, key
        assert classification["known_primary"] == row.known_primary, key
        assert classification["escc_grade"] == row.escc_grade, key


def test_risk_assessment_view_equals_the_lesion_table(outputs: Resources, views: Views) -> None:
    flat = _flat(outputs)
    risks = _keyed(evaluate(views["risk_assessment"], outputs))
    assert risks.keys() == flat.keys()
    for key, row in flat.items():
        risk = risks[key]
        assert risk["category"] == row.category, key
        assert risk["surgical_consultation"] is row.surgical_consultation, key
        assert risk["status"] == row.status, key
        assert fhir_moment(risk["occurrence"]) == row.effective, key


def test_last_updated_is_the_latest_of_the_three_views(outputs: Resources, views: Views) -> None:
    flat = _flat(outputs)
    by_view = [
        _keyed(evaluate(views[name], outputs))
        for name in ("sins_score", "lesion_classification", "risk_assessment")
    ]
    for key, row in flat.items():
        assert max(fhir_moment(rows[key]["last_updated"]) for rows in by_view) == row.last_updated


def test_views_leave_out_withdrawn_outputs_as_the_table_does(
    outputs: Resources, views: Views
) -> None:
    changed = copy.deepcopy(outputs)
    for resource in changed:
        if resource.get("subject", {}).get("reference") == "Patient/p03":
            resource["status"] = "entered-in-error"
    current = current_versions(changed)
    flat = _flat(current)
    assert ("p03", "L1") not in flat
    for name in ("sins_score", "lesion_classification", "risk_assessment"):
        assert _keyed(evaluate(views[name], current)).keys() == flat.keys()


# --- the evaluator -------------------------------------------------------------------------

PATIENTS: Resources = [
    {
        "resourceType": "Patient",
        "id": "a",
        "name": [{"use": "official", "family": "Ash", "given": ["Ann", "Bea"]}, {"family": "Oak"}],
        "generalPractitioner": [{"reference": "Practitioner/gp1/_history/3"}],
    },
    {"resourceType": "Patient", "id": "b", "active": False},
    {"resourceType": "Observation", "id": "o", "status": "final", "valueInteger": 5},
]


def _view(select: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ViewDefinition", "resource": "Patient", "select": select, **extra}


def test_columns_of_the_view_resource_type_only() -> None:
    rows = evaluate(_view([{"column": [{"name": "id", "path": "getResourceKey()"}]}]), PATIENTS)
    assert rows == [{"id": "a"}, {"id": "b"}]


def test_for_each_makes_a_row_per_element_crossed_with_the_parent_columns() -> None:
    view = _view(
        [
            {"column": [{"name": "id", "path": "id"}]},
            {"forEach": "name", "column": [{"name": "family", "path": "family"}]},
        ]
    )
    assert evaluate(view, PATIENTS) == [{"id": "a", "family": "Ash"}, {"id": "a", "family": "Oak"}]


def test_for_each_or_null_keeps_a_row_of_nulls() -> None:
    view = _view(
        [
            {"column": [{"name": "id", "path": "id"}]},
            {
                "forEachOrNull": "name",
                "column": [{"name": "family", "path": "family"}],
                "select": [{"column": [{"name": "use", "path": "use"}]}],
            },
        ]
    )
    assert evaluate(view, PATIENTS) == [
        {"id": "a", "family": "Ash", "use": "official"},
        {"id": "a", "family": "Oak", "use": None},
        {"id": "b", "family": None, "use": None},
    ]


def test_union_all_concatenates_branches() -> None:
    view = _view(
        [
            {
                "column": [{"name": "id", "path": "id"}],
                "unionAll": [
                    {"forEach": "name.given", "column": [{"name": "word", "path": "$this"}]},
                    {"forEach": "name.family", "column": [{"name": "word", "path": "$this"}]},
                ],
            }
        ]
    )
    assert [r["word"] for r in evaluate(view, PATIENTS)] == ["Ann", "Bea", "Ash", "Oak"]
    assert column_names(view) == ["id", "word"]


def test_where_constants_and_reference_keys() -> None:
    view = _view(
        [
            {
                "column": [
                    {"name": "id", "path": "id"},
                    {"name": "gp", "path": "generalPractitioner.getReferenceKey(Practitioner)"},
                    {"name": "org", "path": "generalPractitioner.getReferenceKey(Organization)"},
                ]
            }
        ],
        where=[{"path": "name.where(use = %use).exists()"}],
        constant=[{"name": "use", "valueCode": "official"}],
    )
    assert evaluate(view, PATIENTS) == [{"id": "a", "gp": "gp1", "org": None}]


def test_choice_types_resolve_with_the_r4_model() -> None:
    view = {
        "resource": "Observation",
        "select": [{"column": [{"name": "v", "path": "value.ofType(integer)", "type": "integer"}]}],
    }
    assert evaluate(view, PATIENTS) == [{"v": 5}]


def test_collection_columns_and_decimals() -> None:
    view = _view(
        [{"column": [{"name": "given", "path": "name.given", "collection": True}]}],
        where=[{"path": "id = 'a'"}],
    )
    assert evaluate(view, PATIENTS) == [{"given": ["Ann", "Bea"]}]
    decimal = {"resource": "Observation", "select": [{"column": [{"name": "d", "path": "1.5"}]}]}
    assert evaluate(decimal, PATIENTS) == [{"d": Decimal("1.5")}]


def test_the_resources_are_not_changed(outputs: Resources, views: Views) -> None:
    before = orjson.dumps(outputs)
    for view in views.values():
        evaluate(view, outputs)
    assert orjson.dumps(outputs) == before


@pytest.mark.parametrize(
    ("view", "message"),
    [
        ({"select": [{"column": [{"name": "id", "path": "id"}]}]}, "resource"),
        (_view([]), "at least one select"),
        (
            _view([{"column": [{"name": "id", "path": "id"}, {"name": "id", "path": "id"}]}]),
            "unique",
        ),
        (_view([{"column": [{"name": "1st", "path": "id"}]}]), "must match"),
        (_view([{"column": [{"name": "id"}]}]), "needs a FHIRPath"),
        (_view([{"repeatAll": ["item"], "column": [{"name": "id", "path": "id"}]}]), "unsupported"),
        (_view([{"repeat": [], "column": [{"name": "id", "path": "id"}]}]), "list of FHIRPath"),
        (_view([{"repeat": "item", "column": [{"name": "id", "path": "id"}]}]), "list of FHIRPath"),
        (_view([{"repeat": ["item("], "column": [{"name": "id", "path": "id"}]}]), "parse"),
        (
            _view(
                [{"forEach": "name", "repeat": ["name"], "column": [{"name": "f", "path": "id"}]}]
            ),
            "one of forEach",
        ),
        (
            _view(
                [{"column": [{"name": "id", "path": "id"}]}],
                constant=[{"name": "rowIndex", "valueInteger": 1}],
            ),
            "reserved",
        ),
        (
            _view(
                [
                    {
                        "forEach": "name",
                        "forEachOrNull": "name",
                        "column": [{"name": "f", "path": "family"}],
                    }
                ]
            ),
            "one of forEach",
        ),
        (
            _view(
                [
                    {
                        "unionAll": [
                            {"column": [{"name": "a", "path": "id"}]},
                            {"column": [{"name": "b", "path": "id"}]},
                        ]
                    }
                ]
            ),
            "same columns",
        ),
        (_view([{"column": [{"name": "id", "path": "id.("}]}]), "does not parse"),
        (_view([{"column": [{"name": "id", "path": "id id"}]}]), "does not parse"),
        (_view([{"column": [{"name": "id", "path": "id"}]}], where=[{"path": "id ="}]), "parse"),
        (_view([{"column": [{"name": "id", "path": "id"}]}], constant=[{"name": "x"}]), "value"),
    ],
)
def test_views_outside_the_subset_are_refused(view: dict[str, Any], message: str) -> None:
    with pytest.raises(ViewError, match=message):
        evaluate(view, PATIENTS)


def test_several_values_in_a_single_column_are_refused() -> None:
    view = _view([{"column": [{"name": "family", "path": "name.family"}]}])
    with pytest.raises(ViewError, match="2 values"):
        evaluate(view, PATIENTS)


def test_a_where_path_must_give_a_boolean() -> None:
    view = _view([{"column": [{"name": "id", "path": "id"}]}], where=[{"path": "name.family"}])
    with pytest.raises(ViewError, match="one boolean"):
        evaluate(view, PATIENTS)
    empty = _view([{"column": [{"name": "id", "path": "id"}]}], where=[{"path": "active"}])
    # `active` is empty for a and false for b: neither is included.
    assert evaluate(empty, PATIENTS) == []


@pytest.mark.parametrize(
    ("reference", "resource_type", "key"),
    [
        ("Patient/p08", None, "p08"),
        ("Patient/p08/_history/2", "Patient", "p08"),
        ("https://example.org/fhir/Patient/p08", "Patient", "p08"),
        ("Patient/p08", "Practitioner", None),
        ("#device", None, None),
        ("urn:uuid:1f0e9c1a-7b4d-4c7e-9f0a-2d4c6e8a0b1c", None, None),
    ],
)
def test_reference_keys(reference: str, resource_type: str | None, key: str | None) -> None:
    assert reference_key(reference, resource_type) == key


def test_load_views_refuses_two_views_of_one_name(tmp_path: Path, views: Views) -> None:
    view = views["sins_score"]
    for name in ("ViewDefinition-a.json", "ViewDefinition-b.json"):
        (tmp_path / name).write_bytes(orjson.dumps(view))
    with pytest.raises(ViewError, match="second view"):
        load_views(tmp_path)


# --- repeat, %rowIndex, join(), lowBoundary() / highBoundary() ------------------------------


def test_repeat_walks_nested_elements_depth_first_with_their_row_index() -> None:
    deep: dict[str, Any] = {"linkId": "9"}
    for level in range(8, 0, -1):
        deep = {"linkId": str(level), "item": [deep]}
    response = {"resourceType": "QuestionnaireResponse", "id": "q", "item": [deep, {"linkId": "x"}]}
    view = {
        "resource": "QuestionnaireResponse",
        "select": [
            {
                "repeat": ["item"],
                "column": [
                    {"name": "link", "path": "linkId"},
                    {"name": "n", "path": "%rowIndex"},
                ],
            }
        ],
    }
    rows = evaluate(view, [response])
    assert [r["link"] for r in rows] == [str(i) for i in range(1, 10)] + ["x"]
    assert [r["n"] for r in rows] == list(range(10))


def test_row_index_outside_any_iteration_is_zero_and_inner_selects_inherit_it() -> None:
    view = _view(
        [
            {"column": [{"name": "top", "path": "%rowIndex"}]},
            {
                "forEach": "name",
                "select": [{"column": [{"name": "inner", "path": "%rowIndex"}]}],
            },
        ],
        where=[{"path": "id = 'a'"}],
    )
    assert evaluate(view, PATIENTS) == [{"top": 0, "inner": 0}, {"top": 0, "inner": 1}]


def test_join_of_nothing_is_the_empty_string_and_of_non_strings_is_refused() -> None:
    view = _view([{"column": [{"name": "g", "path": "name.given.join('+')"}]}])
    assert evaluate(view, PATIENTS) == [{"g": "Ann+Bea"}, {"g": ""}]
    with pytest.raises(ViewError, match="join"):
        evaluate(_view([{"column": [{"name": "g", "path": "(1 | 2).join()"}]}]), PATIENTS)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("1.587.lowBoundary()", Decimal("1.5865")),
        ("1.587.highBoundary()", Decimal("1.5875")),
        ("(-1.587).lowBoundary()", Decimal("-1.5875")),
        ("1.587.lowBoundary(2)", Decimal("1.58")),
        ("1.587.highBoundary(2)", Decimal("1.59")),
        ("1.587.lowBoundary(6)", Decimal("1.586500")),
        ("1.lowBoundary()", Decimal("0.5")),
        ("@2014.lowBoundary(6)", "2014-01"),
        ("@2014.highBoundary()", "2014-12-31"),
        ("@2016-02.highBoundary()", "2016-02-29"),
        ("@2014-01-01T08.lowBoundary()", "2014-01-01T08:00:00.000+14:00"),
        ("@2014-01-01T08:05+02:00.highBoundary()", "2014-01-01T08:05:59.999+02:00"),
        ("@2014-01-01T08.highBoundary(8)", "2014-01-01"),
        ("@T10:30.lowBoundary()", "10:30:00.000"),
        ("@T10:30.highBoundary()", "10:30:59.999"),
        ("@T10:30.highBoundary(4)", "10:30"),
        ("@2014.lowBoundary(5)", None),
        ("'text'.lowBoundary()", None),
        ("{}.highBoundary()", None),
    ],
)
def test_boundaries(path: str, value: Any) -> None:
    """FHIRPath 3.0's boundaries: half a unit of the last digit; the ends of a partial moment."""
    view = _view([{"column": [{"name": "b", "path": path}]}], where=[{"path": "id = 'b'"}])
    assert evaluate(view, PATIENTS) == [{"b": value}]


def test_boundaries_of_a_date_and_a_date_time_follow_the_element_type() -> None:
    dated = [
        {"resourceType": "Patient", "id": "p", "birthDate": "1970-06"},
        {"resourceType": "Observation", "id": "o", "valueDateTime": "1970-06"},
    ]
    patient = _view([{"column": [{"name": "b", "path": "birthDate.highBoundary()"}]}])
    observation = {
        "resource": "Observation",
        "select": [{"column": [{"name": "b", "path": "value.ofType(dateTime).highBoundary()"}]}],
    }
    assert evaluate(patient, dated) == [{"b": "1970-06-30"}]
    assert evaluate(observation, dated) == [{"b": "1970-06-30T23:59:59.999-12:00"}]
