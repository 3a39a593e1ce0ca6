"""Validating one input resource: the one validator of REST, bulk, Spark and `$assess`."""

from __future__ import annotations

import re
from typing import Final

from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.validation.rules import INPUT_TYPES
from fhir_app.fhir.validation.schema import schema_issues
from fhir_app.fhir.validation.text import control_character_issues

__all__ = ["INPUT_TYPES", "validate_resource"]

_RESOURCE_TYPE_NAME: Final = re.compile(r"[A-Z][A-Za-z]{0,63}")


def _error(code: str, diagnostics: str, *expression: str) -> InputRejected:
    return InputRejected([Issue("error", code, diagnostics, tuple(e for e in expression if e))])


def validate_resource(raw: JsonObject) -> None:
    """Validate one input resource against FHIR R4 JSON (CONTRACT 3b).

    Raises InputRejected with one issue per problem, each with a FHIRPath expression: `invalid`
    for a string holding a control character (alone: the input is not FHIR JSON), `structure`
    for JSON of the wrong shape (null, an empty string, array or object, a JSON type other than
    the element's, an unknown element, two elements of one choice), `required` for a missing
    element, `value` for a primitive that breaks its R4 format or range (or a string over 1 MiB),
    `code-invalid` for a code outside its required value set, `not-supported` for a resource
    type this processor does not take in.
    """
    if not isinstance(raw, dict):
        raise _error("structure", "Expected a JSON object (a FHIR resource)")
    resource_type = raw.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise _error("required", "resourceType is missing: not a FHIR resource")
    # First: PostgreSQL refuses U+0000, and such a string is no FHIR JSON at all.
    unreadable = control_character_issues(
        raw, resource_type if _RESOURCE_TYPE_NAME.fullmatch(resource_type) else "Resource"
    )
    if unreadable:
        raise InputRejected(unreadable)
    if resource_type not in INPUT_TYPES:
        raise _error(
            "not-supported",
            f"Resource type {resource_type} is not taken in; supported inputs are "
            f"{', '.join(INPUT_TYPES)}",
            resource_type,
        )
    issues = schema_issues(resource_type, raw)
    if issues:
        raise InputRejected(issues)
