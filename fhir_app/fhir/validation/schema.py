"""The first gate: the official FHIR JSON schema, tightened to the rules of R4 JSON, compiled once
per process with jsonschema-rs (about 0.15 s, on first use).

The schema (schema/fhir.schema.json, vendored from hl7.fhir.r4b.core 4.3.0; see schema/README.md)
says which elements each type has and the JSON type and pattern of each primitive. On its own it
is weaker than FHIR R4 JSON (json.html, datatypes.html); `tightened` adds, before compiling:

- every complex type is a JSON object (the schema says only which properties it may have, so
  `"code": "x"` for a CodeableConcept would pass) and is not empty; every array is not empty;
  every string is not empty and at most 1 MiB (rules.MAX_STRING_CHARACTERS); an xhtml `div` is
  a string;
- integer, unsignedInt and positiveInt are JSON integers within their ranges (the patterns apply
  to strings only); date, dateTime and instant are real calendar dates (calendar.py);
- a resource's `id` is an `id` (1-64 of A-Z a-z 0-9 - .), not any string;
- required primitive elements (schema/elements.json, from the StructureDefinitions): the value
  or its `_element` extension must be there; at most one element of each choice (`value[x]`);
- the required code bindings of rules.REQUIRED_CODES; R4B-only data types are removed;
- a contained resource is validated as its own type (the schema's `oneOf` over every resource
  type reports only that none matched).
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any, Final

import jsonschema_rs
import orjson

from fhir_app.fhir.inputs import Issue, JsonObject
from fhir_app.fhir.validation import rules
from fhir_app.fhir.validation.calendar import is_real_date

_REF: Final = "#/definitions/"
_CALENDAR_FORMAT: Final = "fhir-calendar-date"
# How many issues one input reports at most: enough to fix it, never an outcome of any size.
MAX_ISSUES: Final = 50
# Values longer than this are not repeated in a diagnostic.
_SHOWN_VALUE_CHARACTERS: Final = 80
# When two issues name one element, the one that says more about the input is kept.
_PRIORITY: Final = {"structure": 0, "required": 1, "code-invalid": 2, "value": 3}


def _load(name: str) -> Any:
    return json.loads(
        resources.files("fhir_app.fhir.validation").joinpath("schema", name).read_text("utf-8")
    )


@cache
def _facts() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    return _load("fhir.schema.json"), _load("elements.json")


def resource_types() -> frozenset[str]:
    """Every resource type the vendored schema describes (those a contained resource may be)."""
    schema, _ = _facts()
    return frozenset(schema["discriminator"]["mapping"])


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def tightened() -> dict[str, Any]:
    """The definitions of the vendored schema with the rules of R4 JSON added (module docstring)."""
    schema, facts = _facts()
    definitions: dict[str, Any] = copy.deepcopy(schema["definitions"])
    resource_names = sorted(schema["discriminator"]["mapping"])
    patterns = {name: definitions[name].get("pattern") for name in definitions}
    integer_by_pattern = {patterns[name]: name for name in rules.INTEGER_RANGES}
    calendar_patterns = {patterns[name] for name in rules.CALENDAR_TYPES}
    # Primitive schemas appear as definitions and inline (choice elements such as valueString).
    for node in list(_walk(definitions)):
        kind = node.get("type")
        if kind == "string":
            node["minLength"] = 1
            node["maxLength"] = rules.MAX_STRING_CHARACTERS
            if node.get("pattern") in calendar_patterns:
                node["format"] = _CALENDAR_FORMAT
        elif kind == "number" and node.get("pattern") in integer_by_pattern:
            low, high = rules.INTEGER_RANGES[integer_by_pattern[node["pattern"]]]
            node.update(type="integer", minimum=low, maximum=high)
        elif kind == "array":
            node["minItems"] = 1
    definitions["xhtml"] = {
        "type": "string",
        "minLength": 1,
        "maxLength": rules.MAX_STRING_CHARACTERS,
    }
    for name, definition in definitions.items():
        properties = definition.get("properties")
        if properties is None:
            continue
        definition["type"] = "object"
        definition["minProperties"] = 1
        for dropped in rules.R4B_ONLY_PROPERTIES.get(name, ()):
            properties.pop(dropped, None)
            properties.pop(f"_{dropped}", None)
        _add_element_rules(definition, facts.get(name, {}))
    for name in resource_names:
        definitions[name]["properties"]["id"] = {"$ref": f"{_REF}id"}
    for (name, element), codes in rules.REQUIRED_CODES.items():
        definitions[name]["properties"][element] = {"enum": sorted(codes)}
    definitions["ResourceList"] = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"enum": resource_names}},
        "allOf": [
            {
                "if": {"required": ["resourceType"], "properties": {"resourceType": {"const": t}}},
                "then": {"$ref": f"{_REF}{t}"},
            }
            for t in resource_names
        ],
    }
    return definitions


def _add_element_rules(definition: dict[str, Any], facts: Mapping[str, Any]) -> None:
    rules_here: list[dict[str, Any]] = []
    choices: Mapping[str, list[str]] = facts.get("choices", {})
    for element in facts.get("required", ()):
        if element.endswith("[x]"):
            options = choices[element.removesuffix("[x]")]
            names = [*options, *(f"_{option}" for option in options)]
            rules_here.append({"anyOf": [{"required": [n]} for n in names]})
        else:
            rules_here.append(
                {"if": {"not": {"required": [f"_{element}"]}}, "then": {"required": [element]}}
            )
    if rules_here:
        definition["allOf"] = rules_here
    dependencies: dict[str, Any] = {}
    for options in choices.values():
        for option in options:
            others = [{"required": [other]} for other in options if other != option]
            dependencies[option] = {"not": {"anyOf": others}}
    if dependencies:
        definition["dependencies"] = dependencies


@cache
def _definitions() -> dict[str, Any]:
    return tightened()


@cache
def validator() -> Any:
    """The compiled validator of the input types (rules.INPUT_TYPES) and of Bundle, built on
    first use and kept: one validator for all of them, because each would compile the whole
    schema again (`contained` reaches every definition); a resource is checked against its own
    type's definition."""
    root = {
        "allOf": [
            {
                "if": {"required": ["resourceType"], "properties": {"resourceType": {"const": t}}},
                "then": {"$ref": f"{_REF}{t}"},
            }
            for t in (*rules.INPUT_TYPES, "Bundle")
        ],
        "definitions": _definitions(),
    }
    return jsonschema_rs.Draft7Validator(
        root,
        formats={_CALENDAR_FORMAT: is_real_date},
        validate_formats=True,
    )


def compile_seconds() -> float:
    """Seconds to load, tighten and compile the validator from nothing (for bench/)."""
    _facts.cache_clear()
    _definitions.cache_clear()
    validator.cache_clear()
    start = time.perf_counter()
    validator()
    return time.perf_counter() - start


def schema_issues(resource_type: str, raw: JsonObject) -> list[Issue]:
    """What the tightened schema finds wrong with `raw`, a resource of `resource_type` (one of
    rules.INPUT_TYPES, or Bundle), one issue per element (FHIRPath), the most telling first;
    none when it is valid."""
    compiled = validator()
    if compiled.is_valid(raw):
        return []
    by_path: dict[str, Issue] = {}
    for problem in compiled.iter_errors(raw):
        for issue in _issues_of(resource_type, problem):
            path = issue.expression[0]
            kept = by_path.get(path)
            if kept is None or _PRIORITY[issue.code] < _PRIORITY[kept.code]:
                by_path[path] = issue
        if len(by_path) >= MAX_ISSUES:
            break
    return sorted(by_path.values(), key=lambda i: (_PRIORITY[i.code], i.expression))


def _fhirpath(resource_type: str, instance_path: Iterable[str | int]) -> str:
    path = resource_type
    for part in instance_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _shown(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= _SHOWN_VALUE_CHARACTERS else f"{text[:_SHOWN_VALUE_CHARACTERS]}…"


_JSON_KIND: Final = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}
_EXPECTED: Final = {
    "string": "a JSON string",
    "integer": "a JSON integer",
    "number": "a JSON number",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a JSON array",
}


def _issue(code: str, path: str, text: str) -> Issue:
    return Issue("error", code, f"{path}: {text}", (path,))


def _issues_of(resource_type: str, problem: Any) -> list[Issue]:
    kind = problem.kind.name
    details = problem.kind.as_dict()
    instance = problem.instance
    path = _fhirpath(resource_type, problem.instance_path)
    if kind == "additionalProperties":
        return [
            _issue("structure", f"{path}.{name}", "unknown element (not in FHIR R4)")
            for name in details["unexpected"]
        ]
    if kind == "required":
        return [_issue("required", f"{path}.{details['property']}", "required element is missing")]
    if instance is None:
        return [_issue("structure", path, "null is not allowed in FHIR JSON; leave it out")]
    if instance in ("", [], {}) and kind != "type":
        what = _JSON_KIND[type(instance)]
        return [_issue("structure", path, f"{what} that is empty is not allowed in FHIR JSON")]
    if kind == "type" and details["types"] == ["integer"] and type(instance) is float:
        # A JSON number, as R4 JSON writes integers, with a fraction: a value, not a type, fault.
        what = _primitive_name(problem.schema_path)
        return [_issue("value", path, f"{_shown(instance)} is not a valid FHIR {what}")]
    if kind == "type":
        expected = " or ".join(_EXPECTED.get(t, t) for t in details["types"])
        got = _JSON_KIND.get(type(instance), "a value")
        if isinstance(instance, bool | int | float | str):
            got = f"{got} ({_shown(instance)})"
        return [_issue("structure", path, f"expected {expected}, got {got}; no conversion")]
    if kind == "not" and "dependencies" in problem.schema_path:
        return [_choice_issue(resource_type, problem)]
    if kind == "anyOf":
        return [_required_choice_issue(path, problem)]
    if kind == "enum" and problem.instance_path[-1:] == ["resourceType"]:
        return [_issue("structure", path, f"{_shown(instance)} is not a FHIR R4 resource type")]
    if kind == "enum":
        allowed = ", ".join(str(option) for option in details["options"])
        return [
            _issue(
                "code-invalid",
                path,
                f"{_shown(instance)} is not in the FHIR R4 value set ({allowed})",
            )
        ]
    if kind == "maxLength":
        return [
            _issue(
                "value",
                path,
                f"a string of {len(instance):,} characters; FHIR R4 allows at most "
                f"{rules.MAX_STRING_CHARACTERS:,}",
            )
        ]
    if kind == "format":
        return [_issue("value", path, f"{_shown(instance)} is not a date of the calendar")]
    if kind in ("pattern", "minimum", "maximum"):
        what = _primitive_name(problem.schema_path)
        return [_issue("value", path, f"{_shown(instance)} is not a valid FHIR {what}")]
    if kind == "const":
        return [_issue("structure", path, f"expected {_shown(details.get('expected_value'))}")]
    return [_issue("structure", path, str(problem.message)[:200])]


def _primitive_name(schema_path: Iterable[str | int]) -> str:
    """The FHIR primitive a failing pattern belongs to: the definition (`dateTime`) or, for an
    inline choice element (`valueDateTime`), the type its name ends with."""
    parts = [str(part) for part in schema_path]
    if len(parts) >= 3 and parts[0] == "definitions" and parts[2] != "properties":
        return parts[1]
    name = parts[-2] if len(parts) >= 2 else "value"
    found = re.search(r"[A-Z][A-Za-z0-9]*$", name)
    if found is None:
        return "value"
    type_name = found.group()
    return type_name[0].lower() + type_name[1:]


def _choice_issue(resource_type: str, problem: Any) -> Issue:
    """Two elements of one choice: `Observation.value[x]`."""
    parts = list(problem.schema_path)
    option = str(parts[parts.index("dependencies") + 1])
    definition = str(parts[1]) if parts[:1] == ["definitions"] else ""
    _, facts = _facts()
    choices: dict[str, list[str]] = facts.get(definition, {}).get("choices", {})
    base, options = next(
        ((base, options) for base, options in choices.items() if option in options),
        ("value", [option]),
    )
    path = f"{_fhirpath(resource_type, problem.instance_path)}.{base}[x]"
    present = [name for name in problem.instance if name in options and name != option]
    return _issue(
        "structure",
        path,
        f"only one {base}[x] is allowed, got {', '.join(sorted([option, *present]))}",
    )


def _required_choice_issue(path: str, problem: Any) -> Issue:
    parts = list(problem.schema_path)
    definition = str(parts[1]) if parts[:1] == ["definitions"] else ""
    _, facts = _facts()
    required = [r for r in facts.get(definition, {}).get("required", ()) if str(r).endswith("[x]")]
    element = required[0] if required else "value[x]"
    return _issue("required", f"{path}.{element}", "required element is missing")
