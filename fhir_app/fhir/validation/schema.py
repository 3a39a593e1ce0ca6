"""The first gate: the official FHIR JSON schema, tightened to the rules of R4 JSON, compiled once
per process with jsonschema-rs (a few hundredths of a second and about 13 MB, on first use).

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
- a contained resource is validated as its own type, by a validator of that type (the schema's
  `oneOf` over every resource type reports only that none matched, and holding every type in
  one validator costs 100 MB).
"""

from __future__ import annotations

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
from fhir_app.fhir.validation.narrative import is_xhtml_div

_REF: Final = "#/definitions/"
_CALENDAR_FORMAT: Final = "fhir-calendar-date"
_XHTML_FORMAT: Final = "fhir-xhtml-div"
# How many issues one input reports at most: enough to fix it, never an outcome of any size.
MAX_ISSUES: Final = 50
# Values longer than this are not repeated in a diagnostic.
_SHOWN_VALUE_CHARACTERS: Final = 80
# When two issues name one element, the one that says more about the input is kept.
_PRIORITY: Final = {"structure": 0, "invalid": 1, "required": 2, "code-invalid": 3, "value": 4}
# The issue code of a primitive that breaks R4 JSON's lexical rules (its regex, its range, a
# string over 1 MiB, a day its month does not have): CONTRACT 3b counts it with the JSON format's
# faults, refused with 400 like `structure` (outcome.HTTP_STATUS_BY_ISSUE_CODE), not with the 422
# of a rule that valid R4 breaks (a required binding, a cardinality, the contract's own rules).
FORMAT_FAULT: Final = "invalid"


def _load(name: str) -> Any:
    return json.loads(
        resources.files("fhir_app.fhir.validation").joinpath("schema", name).read_text("utf-8")
    )


@cache
def element_facts() -> dict[str, dict[str, Any]]:
    """schema/elements.json: required primitives and choice elements per definition."""
    facts: dict[str, dict[str, Any]] = _load("elements.json")
    return facts


@cache
def required_elements() -> dict[str, frozenset[str]]:
    """Per resource type, its top-level elements with a minimum cardinality of 1 in R4: the
    schema's `required` (complex elements; `resourceType` left out) and the required primitives
    of elements.json (the schema cannot require those: `status` may come as `_status`)."""
    definitions = _load("fhir.schema.json")["definitions"]
    facts = element_facts()
    return {
        rtype: frozenset(
            {
                *definitions.get(rtype, {}).get("required", ()),
                *facts.get(rtype, {}).get("required", ()),
            }
        )
        - {"resourceType"}
        for rtype in _load("fhir.schema.json")["discriminator"]["mapping"]
    }


@cache
def resource_types() -> frozenset[str]:
    """Every resource type the vendored schema describes (those a contained resource may be)."""
    return frozenset(_load("fhir.schema.json")["discriminator"]["mapping"])


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
    schema, facts = _load("fhir.schema.json"), element_facts()
    definitions: dict[str, Any] = schema["definitions"]
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
        elif kind is None and "enum" in node:
            # A code of a required binding: a JSON string first (`true` is a wrong type, 400).
            node["type"] = "string"
    definitions["xhtml"] = {
        "type": "string",
        "minLength": 1,
        "maxLength": rules.MAX_STRING_CHARACTERS,
        "format": _XHTML_FORMAT,
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
    # R4 ext-1: an extension has a value or nested extensions, not both, not neither (a
    # primitive value may come as its `_valueX` extension alone).
    values = facts["Extension"]["choices"]["value"]
    definitions["Extension"].setdefault("allOf", []).append(
        {
            "oneOf": [
                {"required": ["extension"]},
                {"anyOf": [{"required": [n]} for v in values for n in (v, f"_{v}")]},
            ]
        }
    )
    for (name, element), codes in rules.REQUIRED_CODES.items():
        # The JSON type first: `"status": true` is a wrong type (400), not a code outside the
        # value set (422).
        definitions[name]["properties"][element] = {"type": "string", "enum": sorted(codes)}
    # A contained resource (or a Bundle entry's) is an object of a known resource type here;
    # `schema_issues` then validates each contained one against its own type's validator. Left
    # to the schema, every validator would hold all 141 resource types: 100 MB instead of 13.
    definitions["ResourceList"] = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"enum": resource_names}},
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


# The types of the validator every process compiles: the inputs, and Bundle (its own elements).
MAIN_TYPES: Final = (*rules.INPUT_TYPES, "Bundle")


def _compile(resource_types: tuple[str, ...]) -> Any:
    """A validator of `resource_types` (each resource against its own type's definition) over
    the definitions they reach, no others: what jsonschema-rs compiles grows with them."""
    # Tightened afresh and dropped after compiling: kept, the definitions would hold 13 MB.
    definitions = tightened()
    reach: set[str] = set()
    todo = list(resource_types)
    while todo:
        name = todo.pop()
        if name not in reach:
            reach.add(name)
            todo.extend(ref.removeprefix(_REF) for ref in _refs(definitions[name]))
    root = {
        "allOf": [
            {
                "if": {"required": ["resourceType"], "properties": {"resourceType": {"const": t}}},
                "then": {"$ref": f"{_REF}{t}"},
            }
            for t in resource_types
        ],
        "definitions": {name: definitions[name] for name in sorted(reach)},
    }
    return jsonschema_rs.Draft7Validator(
        root,
        formats={_CALENDAR_FORMAT: is_real_date, _XHTML_FORMAT: is_xhtml_div},
        validate_formats=True,
    )


def _refs(node: Any) -> Iterator[str]:
    for item in _walk(node):
        ref = item.get("$ref")
        if isinstance(ref, str):
            yield ref


@cache
def validator() -> Any:
    """The compiled validator of MAIN_TYPES, built on first use and kept (one for all of them:
    they share most definitions)."""
    return _compile(MAIN_TYPES)


@cache
def _contained_validator(resource_type: str) -> Any:
    """The validator of another resource type, for contained resources, built when one is met."""
    return _compile((resource_type,))


def compile_seconds() -> float:
    """Seconds to load, tighten and compile the validator from nothing (for bench/)."""
    element_facts.cache_clear()
    resource_types.cache_clear()
    validator.cache_clear()
    _contained_validator.cache_clear()
    start = time.perf_counter()
    validator()
    return time.perf_counter() - start


def schema_issues(resource_type: str, raw: JsonObject, root: str | None = None) -> list[Issue]:
    """What the tightened schema finds wrong with `raw`, a resource of `resource_type` (one of
    MAIN_TYPES, or any resource type when it is contained), one issue per element, by FHIRPath
    from `root` (default: the type), the most telling first; none when it is valid.

    Contained resources are validated each against its own type (R4 allows no contained
    resource inside a contained one, so one level is all there is).
    """
    root = root or resource_type
    compiled = validator() if resource_type in MAIN_TYPES else _contained_validator(resource_type)
    by_path: dict[str, Issue] = {}
    if not compiled.is_valid(raw):
        for problem in compiled.iter_errors(raw):
            for issue in _issues_of(root, problem):
                path = issue.expression[0]
                kept = by_path.get(path)
                if kept is None or _PRIORITY[issue.code] < _PRIORITY[kept.code]:
                    by_path[path] = issue
            if len(by_path) >= MAX_ISSUES:
                break
    contained = raw.get("contained")
    if isinstance(contained, list) and root == resource_type:
        known = resource_types()
        for index, item in enumerate(contained):
            kind = item.get("resourceType") if isinstance(item, dict) else None
            if isinstance(item, dict) and "id" not in item and "_id" not in item:
                # R4 Resource.id: a contained resource has one (dom-3: it is referenced by it).
                where = f"{root}.contained[{index}].id"
                by_path[where] = _issue(
                    FORMAT_FAULT, where, "a contained resource needs an id (FHIR R4 dom-3)"
                )
            if isinstance(kind, str) and kind in known and len(by_path) < MAX_ISSUES:
                for issue in schema_issues(kind, item, f"{root}.contained[{index}]"):
                    by_path.setdefault(issue.expression[0], issue)
    return sorted(by_path.values(), key=lambda i: (_PRIORITY[i.code], i.expression))


def _fhirpath(root: str, instance_path: Iterable[str | int]) -> str:
    path = root
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


def _issues_of(root: str, problem: Any) -> list[Issue]:
    kind = problem.kind.name
    details = problem.kind.as_dict()
    instance = problem.instance
    path = _fhirpath(root, problem.instance_path)
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
        return [_issue(FORMAT_FAULT, path, f"{_shown(instance)} is not a valid FHIR {what}")]
    if kind == "type":
        expected = " or ".join(_EXPECTED.get(t, t) for t in details["types"])
        got = _JSON_KIND.get(type(instance), "a value")
        if isinstance(instance, bool | int | float | str):
            got = f"{got} ({_shown(instance)})"
        return [_issue("structure", path, f"expected {expected}, got {got}; no conversion")]
    if kind == "not" and "dependencies" in problem.schema_path:
        return [_choice_issue(root, problem)]
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
                FORMAT_FAULT,
                path,
                f"a string of {len(instance):,} characters; FHIR R4 allows at most "
                f"{rules.MAX_STRING_CHARACTERS:,}",
            )
        ]
    if kind == "oneOf" and "Extension" in problem.schema_path:
        return [_extension_issue(path, instance)]
    if kind == "format" and problem.kind.as_dict().get("format") == _XHTML_FORMAT:
        return [
            _issue(
                FORMAT_FAULT,
                path,
                "not a well-formed XHTML <div> in the XHTML namespace with some content "
                "(FHIR R4 txt-1, txt-2)",
            )
        ]
    if kind == "format":
        return [_issue(FORMAT_FAULT, path, f"{_shown(instance)} is not a date of the calendar")]
    if kind in ("pattern", "minimum", "maximum"):
        what = _primitive_name(problem.schema_path)
        return [_issue(FORMAT_FAULT, path, f"{_shown(instance)} is not a valid FHIR {what}")]
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


def _choice_issue(root: str, problem: Any) -> Issue:
    """Two elements of one choice: `Observation.value[x]`."""
    parts = list(problem.schema_path)
    option = str(parts[parts.index("dependencies") + 1])
    definition = str(parts[1]) if parts[:1] == ["definitions"] else ""
    facts = element_facts()
    choices: dict[str, list[str]] = facts.get(definition, {}).get("choices", {})
    base, options = next(
        ((base, options) for base, options in choices.items() if option in options),
        ("value", [option]),
    )
    path = f"{_fhirpath(root, problem.instance_path)}.{base}[x]"
    present = [name for name in problem.instance if name in options and name != option]
    return _issue(
        "structure",
        path,
        f"only one {base}[x] is allowed, got {', '.join(sorted([option, *present]))}",
    )


def _required_choice_issue(path: str, problem: Any) -> Issue:
    parts = list(problem.schema_path)
    definition = str(parts[1]) if parts[:1] == ["definitions"] else ""
    facts = element_facts()
    required = [r for r in facts.get(definition, {}).get("required", ()) if str(r).endswith("[x]")]
    element = required[0] if required else "value[x]"
    return _issue("required", f"{path}.{element}", "required element is missing")


def _extension_issue(path: str, instance: Any) -> Issue:
    """An Extension that breaks R4 ext-1: a value and nested extensions, or neither."""
    nested = isinstance(instance, dict) and "extension" in instance
    has = "both a value[x] and nested extensions" if nested else "neither a value[x] nor nested"
    if not nested:
        has += " extensions"
    return _issue(FORMAT_FAULT, path, f"an extension has {has}; it needs one of them (R4 ext-1)")
