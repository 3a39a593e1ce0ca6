"""fhir.resources' R4B models as a validator: the reference the schema gate is measured against.

fhir.resources 8.3 ships no R4 package; its R4B models stand in (R4 and R4B do not differ for the
resources taken in). The differential tests (tests/unit/fhir/validation) run both validators over
thousands of mutated inputs and prove that the gate refuses everything the models refuse, so the
hot path no longer runs the models (they validate about 20x slower); bench/validate.py compares
the two rates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import orjson
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydantic import BaseModel, ValidationError

from fhir_app.fhir.inputs import Issue, JsonObject

# The resource types the processor takes in, with their models.
SUPPORTED_INPUT_MODELS: Final[Mapping[str, type[BaseModel]]] = {
    "Observation": Observation,
    "ImagingStudy": ImagingStudy,
    "Patient": Patient,
    "Condition": Condition,
}

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
_EXTENSION_ELEMENTS: Final = frozenset({"extension", "modifierExtension"})


def model_issues(resource_type: str, raw: JsonObject) -> list[Issue]:
    """What fhir.resources' model of `resource_type` (one of SUPPORTED_INPUT_MODELS) refuses in
    `raw`, as issues with FHIRPath expressions; none when it accepts it."""
    model = SUPPORTED_INPUT_MODELS[resource_type]
    try:
        model.model_validate(raw)
    except ValidationError as exc:
        return _issues_from_validation(resource_type, exc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # fhir.resources raises bare errors on some shapes, e.g. KeyError on an unknown
        # resourceType inside `contained`.
        message = f"{resource_type} could not be read: {exc!r}"
        return [Issue("error", "structure", message)]
    return []


def _issues_from_validation(resource_type: str, exc: ValidationError) -> list[Issue]:
    issues = []
    for problem in exc.errors(include_url=False):
        loc = problem["loc"]
        kind = problem["type"]
        if _is_extension_primitive_extension(kind, loc):
            # `_valueString` etc. inside an Extension is valid R4 that fhir.resources refuses
            # (upstream issue #204).
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
        issues.append(Issue("error", code, f"{path}: {message}", (path,)))
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
