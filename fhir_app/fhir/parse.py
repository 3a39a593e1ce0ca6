"""Reading FHIR R4 JSON: documents, Bundles and NDJSON in, validated plain dicts out.

The received JSON is kept as received (plain dicts from orjson). fhir.resources validates it, but we
never serialise through its models: they rewrite decimals and timestamps and are slow.

fhir.resources 8.3 ships no R4 package; its R4B models stand in. R4 and R4B do not differ for the
resources accepted here (Observation, ImagingStudy, Patient). What fhir.resources does not check
(required code bindings such as `Observation.status`) is checked here from one table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

import orjson
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydantic import BaseModel, ValidationError

from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject

# The resource types the processor takes in. Patient is stored but derives nothing.
SUPPORTED_INPUT_MODELS: Final[Mapping[str, type[BaseModel]]] = {
    "Observation": Observation,
    "Condition": Condition,
    "ImagingStudy": ImagingStudy,
    "Patient": Patient,
}

# Required bindings (FHIR R4 4.0.1) that fhir.resources leaves unchecked: (type, element) -> codes.
REQUIRED_CODES: Final[Mapping[tuple[str, str], frozenset[str]]] = {
    ("Observation", "status"): frozenset(
        {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    ("ImagingStudy", "status"): frozenset(
        {"registered", "available", "cancelled", "entered-in-error", "unknown"}
    ),
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
}

NDJSON_SUFFIXES: Final = (".ndjson", ".jsonl", ".ndjson.txt")

# FHIR R4 strings (datatypes.html#string) hold no character below U+0020 but tab, CR and LF.
CONTROL_CHARACTER: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
# How orjson writes those characters (`\u0000`, `\b`, `\f`). A cheap first gate over the
# serialised JSON: an escaped backslash before `b` or `f` matches too, so a hit is confirmed by
# walking the tree, which also finds where the character is.
_ESCAPED_CONTROL: Final = re.compile(rb"\\u00[01]|\\[bf]")
# FHIR R4 datatypes.html#id, and the `Type/id` url of a PUT that names its target.
FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PUT_URL: Final = re.compile(r"[A-Z][A-Za-z]{0,63}/([A-Za-z0-9\-.]{1,64})")
# Enough to locate the problem without letting one input make an outcome of any size.
MAX_CONTROL_CHARACTER_ISSUES: Final = 20
_BOM: Final = b"\xef\xbb\xbf"


def error(code: str, diagnostics: str, *expression: str) -> Issue:
    """An issue of severity `error`."""
    return Issue("error", code, diagnostics, tuple(e for e in expression if e))


def rejected(code: str, diagnostics: str, *expression: str) -> InputRejected:
    """An InputRejected with one error issue."""
    return InputRejected([error(code, diagnostics, *expression)])


def load_json(data: bytes | str) -> Any:
    """Parse one JSON document with orjson; a UTF-8 byte order mark is tolerated.

    Raises InputRejected (`invalid`, no expression) with orjson's message and position.
    """
    raw = data.removeprefix(_BOM) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise rejected("invalid", f"Malformed JSON: {exc}") from exc


def control_character_issues(node: Any, path: str) -> list[Issue]:
    """`invalid` issues for every string (or object key) of `node` that holds a control
    character FHIR R4 forbids, each at its FHIRPath under `path`; none for clean JSON.

    It runs on every input, so the common case costs one orjson serialisation and one regex
    search; only a hit walks the tree.
    """
    try:
        clean = _ESCAPED_CONTROL.search(orjson.dumps(node)) is None
    except (TypeError, orjson.JSONEncodeError):
        clean = False  # not plain JSON (e.g. an integer orjson cannot write): walk it
    if clean:
        return []
    issues: list[Issue] = []
    _find_control_characters(node, path, issues)
    return issues


def _find_control_characters(node: Any, path: str, issues: list[Issue]) -> None:
    if len(issues) >= MAX_CONTROL_CHARACTER_ISSUES:
        return
    if isinstance(node, str):
        found = CONTROL_CHARACTER.search(node)
        if found is not None:
            issues.append(_control_character_issue(path, found.group(), "value"))
    elif isinstance(node, dict):
        for key, value in node.items():
            key_text = str(key)
            found = CONTROL_CHARACTER.search(key_text)
            if found is not None:
                shown = orjson.dumps(key_text).decode()
                issues.append(_control_character_issue(path, found.group(), f"key {shown}"))
                continue
            _find_control_characters(value, f"{path}.{key_text}", issues)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _find_control_characters(item, f"{path}[{index}]", issues)


def _control_character_issue(path: str, character: str, what: str) -> Issue:
    return error(
        "invalid",
        f"{path}: {what} contains the control character U+{ord(character):04X}; FHIR R4 "
        "strings allow no control characters but tab, carriage return and line feed",
        path,
    )


def iter_input_resources(
    data: bytes, *, filename_hint: str | None = None
) -> Iterator[tuple[str, JsonObject | InputRejected]]:
    """Each resource of an input file with a label that locates it, or the rejection of that part.

    Accepts a single resource, a Bundle (its `entry[].resource`s; label `Bundle.entry[3]`), or
    NDJSON, one resource per line (label `line 7`; a Bundle on a line is expanded,
    `line 7 Bundle.entry[0]`). A bad line or entry is one rejection and the rest go on.

    References between entries by `fullUrl` (`urn:uuid:...`) are rewritten to `Type/id`, as a
    FHIR server reads a Bundle.

    NDJSON is chosen by the file name (`.ndjson`, `.jsonl`) or, without one, when the document does
    not parse as a whole but one of its first two non-blank lines is a resource on its own. Callers
    still run `validate_resource` on every object yielded.
    """
    data = data.removeprefix(_BOM)
    hint = (filename_hint or "").lower()
    if hint.endswith(NDJSON_SUFFIXES):
        yield from _iter_ndjson(data)
        return
    try:
        document = load_json(data)
    except InputRejected as whole_document_error:
        if _looks_like_ndjson(data):
            yield from _iter_ndjson(data)
        else:
            yield "document", whole_document_error
        return
    yield from _iter_document(document, "")


def _iter_document(document: Any, prefix: str) -> Iterator[tuple[str, JsonObject | InputRejected]]:
    """A parsed document: a Bundle's entries, or the resource itself."""
    label = prefix or "document"
    if not isinstance(document, dict):
        yield label, rejected("structure", "Expected a JSON object (a FHIR resource or Bundle)")
        return
    if document.get("resourceType") != "Bundle":
        yield label, document
        return
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        yield label, rejected("structure", "Bundle.entry must be an array", "Bundle.entry")
        return
    _resolve_full_urls(entries)
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        entry_label = f"{prefix} {where}" if prefix else where
        yield entry_label, _bundle_entry_resource(entry, where)


def _resolve_full_urls(entries: list[Any]) -> None:
    """Rewrite references to another entry's `fullUrl` (often `urn:uuid:`) as `Type/id`.

    This is how a FHIR server reads a Bundle (R4 http.html#trules), so that `subject` and
    `derivedFrom` name the patient and study by id. The target's id is its own, else the id of
    its PUT url, else the uuid of a `urn:uuid:` fullUrl (then given to the resource as its id).
    """
    targets: dict[str, str] = {}
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(full_url, str):
            continue
        resource_type = resource.get("resourceType")
        resource_id = resource.get("id") or _put_id(entry.get("request"))
        if resource_id is None and full_url.startswith("urn:uuid:"):
            resource_id = resource["id"] = full_url.removeprefix("urn:uuid:")
        if isinstance(resource_type, str) and isinstance(resource_id, str):
            targets[full_url] = f"{resource_type}/{resource_id}"
    if targets:
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                rewrite_references(entry["resource"], targets)


def _put_id(request: Any) -> str | None:
    """The id of a `PUT Type/id` request url; None for any other url (a conditional
    `Type?identifier=...`, or one that is malformed: validation then judges the resource)."""
    if not isinstance(request, dict) or request.get("method") != "PUT":
        return None
    url = request.get("url")
    found = _PUT_URL.fullmatch(url) if isinstance(url, str) else None
    return found.group(1) if found else None


def rewrite_references(node: Any, targets: Mapping[str, str]) -> None:
    """Rewrite every `reference` found in `targets` (fullUrl -> `Type/id`), in place."""
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and reference in targets:
            node["reference"] = targets[reference]
        for value in node.values():
            if isinstance(value, dict | list):
                rewrite_references(value, targets)
    elif isinstance(node, list):
        for item in node:
            rewrite_references(item, targets)


def _bundle_entry_resource(entry: Any, where: str) -> JsonObject | InputRejected:
    """The resource of one Bundle entry, or why there is none to take in."""
    if not isinstance(entry, dict):
        return rejected("structure", f"{where} must be an object", where)
    resource = entry.get("resource")
    if isinstance(resource, dict):
        return resource
    if resource is not None:
        return rejected("structure", f"{where}.resource must be an object", f"{where}.resource")
    request = entry.get("request")
    method = request.get("method") if isinstance(request, dict) else None
    if method == "DELETE":
        return rejected(
            "not-supported",
            f"{where} is a DELETE; files carry resources only, use DELETE on the REST interface",
            f"{where}.request",
        )
    return rejected("required", f"{where} has no resource", f"{where}.resource")


def _non_blank_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(data.splitlines(), start=1):
        if line.strip():
            yield number, line


def _looks_like_ndjson(data: bytes) -> bool:
    """True when one of the first two non-blank lines is a whole resource by itself."""
    lines = _non_blank_lines(data)
    first_two = [line for _, line in (next(lines, (0, b"")), next(lines, (0, b""))) if line]
    if len(first_two) < 2:
        return False
    for line in first_two:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and "resourceType" in value:
            return True
    return False


def _iter_ndjson(data: bytes) -> Iterator[tuple[str, JsonObject | InputRejected]]:
    for number, line in _non_blank_lines(data):
        label = f"line {number}"
        try:
            document = load_json(line)
        except InputRejected as exc:
            yield label, exc
            continue
        yield from _iter_document(document, label)


def validate_resource(raw: JsonObject) -> None:
    """Validate one input resource against FHIR R4 (fhir.resources R4B models) and required codes.

    Raises InputRejected with one issue per problem, each with a FHIRPath expression: `invalid`
    for a string holding a control character (alone: the input is not FHIR JSON), `required`
    for a missing element, `structure` for JSON of the wrong shape or an unknown element, `value`
    for a malformed value, `code-invalid` for a code outside its required value set,
    `not-supported` for a resource type this processor does not take in.
    """
    if not isinstance(raw, dict):
        raise rejected("structure", "Expected a JSON object (a FHIR resource)")
    resource_type = raw.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise rejected("required", "resourceType is missing: not a FHIR resource")
    # Before the models: fhir.resources accepts these characters, and PostgreSQL refuses U+0000.
    unreadable = control_character_issues(
        raw, resource_type if _RESOURCE_TYPE_NAME.fullmatch(resource_type) else "Resource"
    )
    if unreadable:
        raise InputRejected(unreadable)
    model = SUPPORTED_INPUT_MODELS.get(resource_type)
    if model is None:
        supported = ", ".join(SUPPORTED_INPUT_MODELS)
        raise rejected(
            "not-supported",
            f"Resource type {resource_type} is not taken in; supported inputs are {supported}",
            resource_type,
        )
    issues: list[Issue] = []
    try:
        model.model_validate(raw)
    except ValidationError as exc:
        issues.extend(_issues_from_validation(resource_type, exc))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # fhir.resources raises bare errors on some shapes, e.g. KeyError on an unknown
        # resourceType inside `contained`.
        issues.append(error("structure", f"{resource_type} could not be read: {exc!r}"))
    issues.extend(_required_code_issues(resource_type, raw))
    if issues:
        raise InputRejected(issues)


def _required_code_issues(resource_type: str, raw: JsonObject) -> list[Issue]:
    issues = []
    for (type_name, element), allowed in REQUIRED_CODES.items():
        if type_name != resource_type:
            continue
        value = raw.get(element)
        if isinstance(value, str) and value not in allowed:
            issues.append(
                error(
                    "code-invalid",
                    f"{resource_type}.{element} '{value}' is not in the FHIR R4 value set "
                    f"({', '.join(sorted(allowed))})",
                    f"{resource_type}.{element}",
                )
            )
    return issues


# pydantic error types that mean "this JSON does not have the shape of the element".
_STRUCTURE_ERROR_TYPES: Final = frozenset(
    {
        "extra_forbidden",
        "model_validation_format",
        "json_invalid",
        "model_type",
        "model_attributes_type",
        "dataclass_type",
        "is_instance_of",
        "fhir-validation-wrong-resource-type",
    }
)
_REQUIRED_ERROR_TYPES: Final = frozenset({"missing", "model_field_validation.missing"})
_CHOICE_MESSAGE: Final = "Any of one field value is expected"
_ELEMENT_NAME: Final = re.compile(r"_?[a-z][A-Za-z0-9]*")
_RESOURCE_TYPE_NAME: Final = re.compile(r"[A-Z][A-Za-z]{0,63}")
_EXTENSION_ELEMENTS: Final = frozenset({"extension", "modifierExtension"})


def _issues_from_validation(resource_type: str, exc: ValidationError) -> list[Issue]:
    issues = []
    for problem in exc.errors(include_url=False):
        loc = problem["loc"]
        kind = problem["type"]
        if _is_extension_primitive_extension(kind, loc):
            # `_valueString` etc. inside an Extension is valid R4 that fhir.resources refuses
            # (upstream issue #204); real EHRs send it, so it is let through unvalidated.
            continue
        message = str(problem["msg"]).removeprefix("Value error, ")
        path = _fhirpath(resource_type, loc)
        if message.startswith(_CHOICE_MESSAGE):
            path = f"{path}.{_choice_element(message)}[x]"
            code = "structure"
            message = f"only one {_choice_element(message)}[x] is allowed"
        elif kind in _REQUIRED_ERROR_TYPES:
            code = "required"
            message = "required element is missing"
        elif kind in _STRUCTURE_ERROR_TYPES or kind.endswith("_type"):
            code = "structure"
        else:
            code = "value"
        shown = problem.get("input")
        if code == "value" and isinstance(shown, str | int | float | bool):
            message = f"{message} (got {orjson.dumps(shown).decode()})"
        issues.append(error(code, f"{path}: {message}", path))
    return issues


def _is_extension_primitive_extension(kind: str, loc: tuple[int | str, ...]) -> bool:
    return (
        kind == "extra_forbidden"
        and len(loc) >= 3
        and isinstance(loc[-1], str)
        and loc[-1].startswith("_value")
        and isinstance(loc[-2], int)
        and loc[-3] in _EXTENSION_ELEMENTS
    )


def _fhirpath(resource_type: str, loc: tuple[int | str, ...]) -> str:
    """A pydantic location as FHIRPath: ('component', 1, 'valueQuantity') -> X.component[1]..."""
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        elif part != "root" and _ELEMENT_NAME.fullmatch(part):
            path += f".{part}"
    return path


def _choice_element(message: str) -> str:
    """`value` from "... expected from this list ['valueBoolean', 'valueDateTime'] ..."."""
    names = re.findall(r"'([A-Za-z]+)'", message)
    if not names:
        return "value"
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    # Cut back to a boundary every name continues with a capital after: valueD... -> value.
    while prefix and not all(len(n) > len(prefix) and n[len(prefix)].isupper() for n in names):
        prefix = prefix[:-1]
    return prefix or "value"
