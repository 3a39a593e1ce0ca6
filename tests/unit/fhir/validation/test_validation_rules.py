"""The rules of R4 JSON the schema gate checks (CONTRACT 3b), one by one, with the issue each
gives: its code and the FHIRPath of the element."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from validation_corpus import condition

from fhir_app.fhir import samples
from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.outcome import http_status_for
from fhir_app.fhir.validation import rules, schema
from fhir_app.fhir.validation.calendar import is_real_date
from fhir_app.fhir.validation.resource import INPUT_TYPES, validate_resource


def observation(**changes: Any) -> JsonObject:
    raw = samples.observation("o1", "p1", "height_loss", 20, level="L2", effective="2024-05-06")
    raw.update(changes)
    return raw


def study(**changes: Any) -> JsonObject:
    raw = samples.imaging_study("s1", "p1", "CT", started="2024-01-02T03:04:05Z", uid="1.2.3")
    raw["series"][0]["number"] = 3
    raw.update(changes)
    return raw


def issues_of(raw: JsonObject) -> list[Issue]:
    with pytest.raises(InputRejected) as caught:
        validate_resource(raw)
    return caught.value.issues


def only(raw: JsonObject) -> tuple[str, tuple[str, ...]]:
    issues = issues_of(raw)
    assert len(issues) == 1, issues
    return issues[0].code, issues[0].expression


def test_the_inputs_are_valid() -> None:
    for raw in (
        observation(),
        study(),
        samples.patient("p", "D", "J", "1950", "male"),
        condition(),
    ):
        validate_resource(raw)


# --- the examples of the issue: each refused, naming the element --------------------------------


def test_null() -> None:
    assert only(observation(issued=None)) == ("structure", ("Observation.issued",))
    raw = observation()
    raw["code"]["coding"][0]["display"] = None
    assert only(raw) == ("structure", ("Observation.code.coding[0].display",))


@pytest.mark.parametrize(("element", "empty"), [("note", []), ("code", {}), ("issued", "")])
def test_empty_array_object_string(element: str, empty: Any) -> None:
    code, expression = only(observation(**{element: empty}))
    assert (code, expression) == ("structure", (f"Observation.{element}",))


def test_a_number_for_a_date_time_is_not_converted() -> None:
    issues = issues_of(study(started=12345))
    assert [(i.code, i.expression) for i in issues] == [("structure", ("ImagingStudy.started",))]
    assert "12345" in issues[0].diagnostics


def test_a_boolean_for_an_unsigned_int_is_not_converted() -> None:
    raw = study()
    raw["series"][0]["number"] = True
    assert only(raw) == ("structure", ("ImagingStudy.series[0].number",))


def test_a_string_for_a_decimal_is_not_converted() -> None:
    raw = samples.lesion_panel(
        "o1", "p1", "L2", [("appearance", "lytic"), ("height_loss", 10)], effective="2024"
    )
    raw["component"][1]["valueQuantity"]["value"] = "10"
    assert only(raw) == ("structure", ("Observation.component[1].valueQuantity.value",))


def test_a_string_over_one_mebibyte() -> None:
    at_limit = observation(note=[{"text": "x" * rules.MAX_STRING_CHARACTERS}])
    validate_resource(at_limit)
    over = observation(note=[{"text": "é" * (rules.MAX_STRING_CHARACTERS + 1)}])
    issues = issues_of(over)
    assert [(i.code, i.expression) for i in issues] == [("invalid", ("Observation.note[0].text",))]
    assert len(issues[0].diagnostics) < 300  # the value is not repeated


@pytest.mark.parametrize(
    ("element", "value"),
    [
        ("effectiveDateTime", "2024-02-30"),
        ("effectiveDateTime", "2023-02-29"),
        ("effectiveDateTime", "2024-05-06T07:08:09"),  # a time needs its zone
        ("issued", "2024-05-06"),  # an instant has a time
        ("id", "bad id!"),
        ("id", "x" * 65),
        ("status", "final "),
        ("implicitRules", "http://a b"),
        ("language", " en"),
    ],
)
def test_a_primitive_outside_its_format(element: str, value: str) -> None:
    if element == "status":
        code, expression = only(observation(**{element: value}))
        assert (code, expression) == ("code-invalid", ("Observation.status",))
        return
    assert only(observation(**{element: value})) == ("invalid", (f"Observation.{element}",))


@pytest.mark.parametrize(
    ("element", "value", "valid"),
    [
        ("number", 0, True),
        ("number", -1, False),
        ("number", 2**31 - 1, True),
        ("number", 2**31, False),
        ("number", 1.5, False),
        ("numberOfInstances", -3, False),
    ],
)
def test_integer_ranges(element: str, value: Any, valid: bool) -> None:
    raw = study()
    raw["series"][0][element] = value
    if valid:
        validate_resource(raw)
    else:
        assert only(raw) == ("invalid", (f"ImagingStudy.series[0].{element}",))


def test_integer_range_of_a_choice_element() -> None:
    raw = observation()
    del raw["valueQuantity"]
    raw["valueInteger"] = 2**31
    assert only(raw) == ("invalid", ("Observation.valueInteger",))


def test_birth_date_is_a_real_date() -> None:
    raw = samples.patient("p1", "Doe", "Jane", "1951-02-29", "female")
    assert only(raw) == ("invalid", ("Patient.birthDate",))
    validate_resource(samples.patient("p1", "Doe", "Jane", "1952-02-29", "female"))


# --- required elements, choices, codes ----------------------------------------------------------


def test_required_primitive() -> None:
    raw = observation()
    del raw["status"]
    assert only(raw) == ("required", ("Observation.status",))


def test_required_primitive_given_by_its_extension_alone() -> None:
    # R4 json.html: a primitive may be sent as `_element` only (e.g. a data-absent-reason).
    raw = observation()
    del raw["status"]
    raw["_status"] = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "unknown",
            }
        ]
    }
    validate_resource(raw)


def test_required_complex_element_and_extension_url() -> None:
    raw = observation(extension=[{"valueString": "x"}])
    del raw["code"]
    expressions = {i.expression for i in issues_of(raw)}
    assert expressions == {("Observation.code",), ("Observation.extension[0].url",)}


def test_two_elements_of_one_choice() -> None:
    code, expression = only(observation(valueString="20 %"))
    assert (code, expression) == ("structure", ("Observation.value[x]",))
    raw = condition() | {"onsetString": "childhood"}
    assert only(raw) == ("structure", ("Condition.onset[x]",))


@pytest.mark.parametrize(("definition", "element"), sorted(rules.REQUIRED_CODES))
def test_required_code_binding(definition: str, element: str) -> None:
    """One row of rules.REQUIRED_CODES: every code of the value set passes, another does not."""
    resource_type, _, backbone = definition.partition("_")

    def with_code(code: str) -> JsonObject:
        if resource_type == "Observation":
            return observation(**{element: code})
        if resource_type == "ImagingStudy":
            return study(**{element: code})
        raw = samples.patient("p1", "Doe", "Jane", "1950", "female")
        if backbone == "Link":
            raw["link"] = [{"other": {"reference": "Patient/p2"}, "type": code}]
            return raw
        return raw | {element: code}

    for code in rules.REQUIRED_CODES[(definition, element)]:
        validate_resource(with_code(code))
    code, expression = only(with_code("not-a-code"))
    assert code == "code-invalid"
    assert expression[0].endswith(element)


def test_unknown_element_and_r4b_only_type() -> None:
    assert only(observation(colour="blue")) == ("structure", ("Observation.colour",))
    raw = observation(
        extension=[{"url": "http://example.org/x", "valueRatioRange": {"denominator": {}}}]
    )
    assert ("structure", ("Observation.extension[0].valueRatioRange",)) in {
        (i.code, i.expression) for i in issues_of(raw)
    }


def test_a_complex_element_must_be_an_object() -> None:
    assert only(observation(code="x")) == ("structure", ("Observation.code",))
    assert only(observation(note={"text": "x"})) == ("structure", ("Observation.note",))


def test_contained_resources_are_validated_as_their_type() -> None:
    raw = observation(contained=[{"resourceType": "Patient", "id": "pp", "gender": "f"}])
    assert only(raw) == ("code-invalid", ("Observation.contained[0].gender",))
    raw = observation(contained=[{"resourceType": "Spaceship", "id": "x"}])
    assert only(raw) == ("structure", ("Observation.contained[0].resourceType",))
    validate_resource(observation(contained=[{"resourceType": "Device", "id": "d"}]))
    raw = observation(
        contained=[
            {"resourceType": "Device", "id": "d", "status": 5},
            {"resourceType": "Organization", "id": "o", "active": True},
            {"resourceType": "Practitioner", "id": "p", "name": [{"family": None}]},
        ]
    )
    assert {(i.code, i.expression) for i in issues_of(raw)} == {
        ("structure", ("Observation.contained[0].status",)),
        ("structure", ("Observation.contained[2].name[0].family",)),
    }


def test_control_character_alone_is_reported() -> None:
    issues = issues_of(observation(note=[{"text": "a\x00b"}], status="done"))
    assert [(i.code, i.expression) for i in issues] == [("invalid", ("Observation.note[0].text",))]


def test_statuses_of_the_issue_kinds() -> None:
    """CONTRACT 3b: a fault of the R4 JSON format is 400, a structure one (null, a JSON type) or
    a primitive outside its regex or range (`invalid`); required and code-invalid are 422."""
    assert http_status_for(issues_of(observation(issued=None))) == 400
    assert http_status_for(issues_of(observation(id="bad id!"))) == 400
    assert http_status_for(issues_of(observation(issued="2025-05-02"))) == 400
    assert http_status_for(issues_of(observation(status=True))) == 400
    assert http_status_for(issues_of(observation(status="done"))) == 422
    assert http_status_for(issues_of(observation(status=None))) == 400
    missing = observation()
    del missing["status"]
    assert http_status_for(issues_of(missing)) == 422


def test_many_problems_are_reported_at_once_and_bounded() -> None:
    raw = observation(status="done", id="bad id!", issued=None)
    assert {i.expression[0] for i in issues_of(raw)} == {
        "Observation.status",
        "Observation.id",
        "Observation.issued",
    }
    many = observation(note=[{"text": None} for _ in range(500)])
    assert len(issues_of(many)) <= schema.MAX_ISSUES


def test_not_a_resource() -> None:
    for raw, code in (([1], "structure"), ({"id": "x"}, "required")):
        with pytest.raises(InputRejected) as caught:
            validate_resource(raw)  # type: ignore[arg-type]
        assert caught.value.issues[0].code == code
    with pytest.raises(InputRejected) as caught:
        validate_resource({"resourceType": "Encounter", "status": "planned"})
    assert caught.value.issues[0].code == "not-supported"
    assert ", ".join(INPUT_TYPES) in caught.value.issues[0].diagnostics


def test_input_is_not_changed() -> None:
    raw = observation(note=[{"text": "x"}])
    before = copy.deepcopy(raw)
    validate_resource(raw)
    assert raw == before


# --- the schema: compiled once, facts read from the StructureDefinitions ------------------------


def test_the_validator_is_compiled_once() -> None:
    assert schema.validator() is schema.validator()


def test_element_facts_from_the_structure_definitions() -> None:
    facts = schema.element_facts()
    assert facts["Observation"]["required"] == ["status"]
    assert "valueQuantity" in facts["Observation_Component"]["choices"]["value"]
    assert facts["Extension"]["required"] == ["url"]
    assert facts["ImagingStudy_Series"]["required"] == ["uid"]
    assert set(facts["Condition"]["choices"]) == {"onset", "abatement"}


def test_the_resource_types_of_the_schema() -> None:
    assert set(INPUT_TYPES) <= schema.resource_types()
    assert len(schema.resource_types()) > 140


# --- calendar -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "real"),
    [
        ("2024-02-29", True),
        ("2023-02-29", False),
        ("1900-02-29", False),
        ("2000-02-29", True),
        ("2024-04-31", False),
        ("2024-12-31T23:59:60Z", True),
        ("2024-02-30T10:00:00Z", False),
        ("2024", True),
        ("2024-02", True),
        ("2024-13-01", True),  # a month the pattern refuses: not the calendar's call
        ("later", True),
    ],
)
def test_is_real_date(value: str, real: bool) -> None:
    assert is_real_date(value) is real


# --- R4 rules beyond the schema's shapes: ext-1, the narrative's XHTML, contained ids ---------

XHTML_DIV = '<div xmlns="http://www.w3.org/1999/xhtml">'


def test_a_code_that_is_no_string_is_a_wrong_json_type() -> None:
    """`"status": true` is a JSON type fault (400), not a code outside the value set (422)."""
    issue = issues_of(observation(status=True))[0]
    assert (issue.code, issue.expression) == ("structure", ("Observation.status",))
    assert "value set" not in issue.diagnostics
    assert only(observation(text={"status": 1, "div": f"{XHTML_DIV}x</div>"}))[0] == "structure"


@pytest.mark.parametrize(
    "extension",
    [
        {"url": "http://example.org/x"},
        {
            "url": "http://example.org/x",
            "valueBoolean": True,
            "extension": [{"url": "a", "valueString": "b"}],
        },
    ],
    ids=["neither", "both"],
)
def test_an_extension_needs_a_value_or_extensions_not_both(extension: JsonObject) -> None:
    assert only(observation(extension=[extension])) == ("invalid", ("Observation.extension[0]",))
    nested = observation(component=None)
    del nested["component"]
    nested["code"]["extension"] = [extension]
    assert only(nested) == ("invalid", ("Observation.code.extension[0]",))
    assert http_status_for(issues_of(observation(extension=[extension]))) == 400


def test_extensions_that_r4_allows() -> None:
    for extension in (
        {"url": "http://example.org/x", "valueBoolean": True},
        {"url": "http://example.org/x", "extension": [{"url": "a", "valueString": "b"}]},
        {
            "url": "http://example.org/x",
            "_valueString": {"extension": [{"url": "a", "valueCode": "c"}]},
        },
    ):
        validate_resource(observation(extension=[extension]))


@pytest.mark.parametrize(
    "div",
    [
        "plain",
        "<div>no namespace</div>",
        f"{XHTML_DIV}not closed<b></div>",
        f"{XHTML_DIV}   </div>",
        '<p xmlns="http://www.w3.org/1999/xhtml">not a div</p>',
        f'<!DOCTYPE div [<!ENTITY a "b">]>{XHTML_DIV}&a;</div>',
        f"{XHTML_DIV}&nbsp;</div>",
    ],
)
def test_a_narrative_that_is_not_an_xhtml_div(div: str) -> None:
    raw = observation(text={"status": "generated", "div": div})
    assert only(raw) == ("invalid", ("Observation.text.div",))
    assert http_status_for(issues_of(raw)) == 400


def test_narratives_that_r4_allows() -> None:
    for div in (
        f"{XHTML_DIV}text</div>",
        f"{XHTML_DIV}<p>a <b>b</b> &amp; &#160;</p></div>",
        f'{XHTML_DIV}<img src="#a"/></div>',
    ):
        validate_resource(observation(text={"status": "generated", "div": div}))


def test_a_contained_resource_needs_an_id() -> None:
    raw = observation(contained=[{"resourceType": "Patient"}])
    assert only(raw) == ("invalid", ("Observation.contained[0].id",))
    assert http_status_for(issues_of(raw)) == 400
    validate_resource(observation(contained=[{"resourceType": "Patient", "id": "p"}]))
