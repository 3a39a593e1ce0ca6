"""Reading FHIR R4 JSON: documents, Bundles and NDJSON in, validated plain dicts out.

The received JSON is kept as received (plain dicts from orjson). `validate_resource` is the one
validator of every path (REST, bulk, Spark, `$assess`); it lives in `fhir_app.fhir.validation`:
the official FHIR JSON schema tightened to R4's rules and compiled with jsonschema-rs. We never
serialise through fhir.resources' models: they rewrite decimals and timestamps and are slow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import orjson

from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.validation import bundle_rules
from fhir_app.fhir.validation.resource import validate_resource
from fhir_app.fhir.validation.rules import REQUIRED_CODES
from fhir_app.fhir.validation.text import CONTROL_CHARACTER, control_character_issues

__all__ = [
    "CONTROL_CHARACTER",
    "FHIR_ID",
    "NDJSON_SUFFIXES",
    "REQUIRED_CODES",
    "control_character_issues",
    "iter_input_resources",
    "load_json",
    "validate_resource",
]


def __getattr__(name: str) -> Any:
    """`SUPPORTED_INPUT_MODELS` (fhir.resources' models of the input types), imported on first
    use: no path validates with them any more, and importing them costs every process about a
    second of start-up."""
    if name == "SUPPORTED_INPUT_MODELS":
        from fhir_app.fhir.validation.models import SUPPORTED_INPUT_MODELS

        return SUPPORTED_INPUT_MODELS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


NDJSON_SUFFIXES: Final = (".ndjson", ".jsonl", ".ndjson.txt")

# FHIR R4 datatypes.html#id, and the `Type/id` url of a PUT that names its target.
FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PUT_URL: Final = re.compile(r"[A-Z][A-Za-z]{0,63}/([A-Za-z0-9\-.]{1,64})")
_BOM: Final = b"\xef\xbb\xbf"


def error(code: str, diagnostics: str, *expression: str) -> Issue:
    """An issue of severity `error`."""
    return Issue("error", code, diagnostics, tuple(e for e in expression if e))


def rejected(code: str, diagnostics: str, *expression: str) -> InputRejected:
    """An InputRejected with one error issue."""
    return InputRejected([error(code, diagnostics, *expression)])


# The end of a label that names a Bundle entry: `Bundle.entry[3]`, `x.json: line 7 Bundle.entry[0]`.
_ENTRY_LABEL: Final = re.compile(r"(?:^|\s)(Bundle\.entry\[\d+\])$")
_RESOURCE_TYPE: Final = re.compile(r"[A-Z][A-Za-z]{0,63}")


def in_entry(label: str, issues: Iterable[Issue]) -> list[Issue]:
    """`issues` of the resource of the entry a label names (`Bundle.entry[1]`), their FHIRPath
    expressions located in the Bundle (`Observation.value` -> `Bundle.entry[1].resource.value`);
    unchanged when the label names no entry (an NDJSON line, a document)."""
    found = _ENTRY_LABEL.search(label)
    if found is None:
        return list(issues)
    entry = found.group(1)
    return [
        Issue(i.severity, i.code, i.diagnostics, tuple(entry_path(entry, e) for e in i.expression))
        for i in issues
    ]


def entry_path(entry: str, expression: str) -> str:
    """The FHIRPath of `expression` (about an entry's resource, `Observation.value`) inside the
    Bundle, `Bundle.entry[1].resource.value`: the type name is no step of that path. One already
    in the Bundle (`Bundle.entry[1].fullUrl`) is kept."""
    if expression.startswith("Bundle.entry["):
        return expression
    head, _, rest = expression.partition(".")
    if not _RESOURCE_TYPE.fullmatch(head):
        return f"{entry}.resource.{expression}"
    return f"{entry}.resource.{rest}" if rest else f"{entry}.resource"


def load_json(data: bytes | str) -> Any:
    """Parse one JSON document with orjson; a UTF-8 byte order mark is tolerated.

    Raises InputRejected (`invalid`, no expression) with orjson's message and position.
    """
    raw = data.removeprefix(_BOM) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise rejected("invalid", f"Malformed JSON: {exc}") from exc


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
    faults = bundle_refusals(document.get("type"), entries)
    # R4 JSON outside the entries' resources: a fault of the Bundle refuses every entry, a fault
    # of an entry (its fullUrl, its request) that entry.
    malformed, malformed_entries = bundle_rules.shell_issues(document)
    _resolve_full_urls(entries)
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        entry_label = f"{prefix} {where}" if prefix else where
        issues = malformed + malformed_entries.get(index, [])
        refusal = faults.get(index) or (InputRejected(issues) if issues else None)
        yield entry_label, refusal if refusal is not None else _bundle_entry_resource(entry, where)


def bundle_refusals(bundle_type: Any, entries: list[Any]) -> dict[int, InputRejected]:
    """The entries a Bundle's faults refuse (CONTRACT 3b, validation.bundle_rules), by index: in a
    batch the entries at fault; in any other Bundle (a transaction, a collection) every entry,
    since such a Bundle is taken in as a whole or not at all: the faulty ones with their own
    faults, the others with one issue naming the faulty entries."""
    faults = bundle_rules.entry_issues(entries, bundle_type)
    if not faults:
        return {}
    if not bundle_rules.refused_as_whole(bundle_type):
        return {index: InputRejected(issues) for index, issues in faults.items()}
    whole = bundle_rules.whole_refusals(len(entries), faults, bundle_type)
    return {index: InputRejected(issues) for index, issues in whole.items()}


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
        if not isinstance(resource.get("id"), str):
            # A PUT names the id the resource is stored at (as the streamed reading does).
            given = _put_id(entry.get("request"))
            if given is not None:
                resource["id"] = given
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
