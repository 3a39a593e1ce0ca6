"""The index rows of a resource, read from the table of search parameters.

One pure function for every write path (REST, transaction, bulk, the derived outputs and the
migration that back-fills the index): what a resource can be found by is decided here only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from fhir_app.fhir.search.dates import InvalidDate, date_range, period_range
from fhir_app.fhir.search.parameters import PARAMETERS

# `Type/id`, optionally version-specific, optionally absolute (`https://host/fhir/Type/id`).
REFERENCE: Final = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)


@dataclass(frozen=True, slots=True)
class IndexRows:
    """What a resource is found by, one tuple per value, each starting with the parameter name.

    tokens: (param, system or "" when the coding has none, code or identifier value);
    references: (param, target type, target id); dates: (param, low, high), a half-open UTC
    range; strings: (param, text normalised by `normalised`, the text as written for :exact).
    """

    tokens: tuple[tuple[str, str, str], ...] = ()
    references: tuple[tuple[str, str, str], ...] = ()
    dates: tuple[tuple[str, datetime, datetime], ...] = ()
    strings: tuple[tuple[str, str, str], ...] = ()


def normalised(text: str) -> str:
    """Text as string search compares it: accents removed, case folded, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


# The steps of each path after its resource type, split once (the table's paths are few).
_STEPS: Final[dict[str, tuple[str, ...]]] = {}
_ABSENT: Final = object()


def _steps(path: str) -> tuple[str, ...]:
    steps = _STEPS.get(path)
    if steps is None:
        steps = _STEPS[path] = tuple(path.split(".")[1:])
    return steps


def values_at(resource: dict[str, Any], path: str) -> list[Any]:
    """The values of a simple path (`Observation.subject`, `ImagingStudy.series.modality`);
    lists are flattened; a choice element (`effective`) reads whichever `effective[x]` is set."""
    nodes: list[Any] = [resource]
    for part in _steps(path):
        found: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            value = node.get(part, _ABSENT)
            if value is not _ABSENT:
                if isinstance(value, list):
                    found.extend(value)
                else:
                    found.append(value)
                continue
            size = len(part)
            for key, value in node.items():
                if key.startswith(part) and len(key) > size and key[size].isupper():
                    if isinstance(value, list):
                        found.extend(value)
                    else:
                        found.append(value)
        if not found:
            return found
        nodes = found
    return nodes


def reference_target(value: Any) -> tuple[str, str] | None:
    """(type, id) of a Reference to a resource on a server; None for contained (`#x`),
    `urn:` and display-only references."""
    if not isinstance(value, dict):
        return None
    text = value.get("reference")
    if not isinstance(text, str) or text.startswith(("#", "urn:")):
        return None
    found = REFERENCE.search(text)
    return None if found is None else (found["type"], found["id"])


def _tokens(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, str):
        yield "", value
    elif isinstance(value, dict):
        codings = value.get("coding") if "coding" in value else [value]
        for coding in codings if isinstance(codings, list) else []:
            if not isinstance(coding, dict):
                continue
            system = coding.get("system")
            # A Coding has a code; an Identifier a value.
            code = coding.get("code", coding.get("value"))
            if isinstance(code, str):
                yield system if isinstance(system, str) else "", code


def _date(value: Any) -> tuple[datetime, datetime] | None:
    try:
        if isinstance(value, str):
            return _date_range(value)
        if isinstance(value, dict) and ("start" in value or "end" in value):
            start, end = value.get("start"), value.get("end")
            return period_range(
                start if isinstance(start, str) else None, end if isinstance(end, str) else None
            )
    except InvalidDate:
        return None  # stored resources were validated; an odd value is simply not findable
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # HumanName
        for key in ("text", "family", "given", "prefix", "suffix"):
            part = value.get(key)
            for text in part if isinstance(part, list) else [part]:
                if isinstance(text, str):
                    yield text


# Per resource type: (parameter name, index kind, the steps of each of its paths), built once.
_PLANS: Final[dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]]] = {}


def _plan(resource_type: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    plan = _PLANS.get(resource_type)
    if plan is None:
        plan = _PLANS[resource_type] = tuple(
            (parameter.name, parameter.index, parameter.paths)
            for parameter in PARAMETERS.get(resource_type, ())
        )
    return plan


# Dates repeat across a patient's resources (and its outputs repeat its inputs' dates).
_date_range: Final = lru_cache(maxsize=4096)(date_range)


def index_rows(resource: dict[str, Any]) -> IndexRows:
    """The index rows of a resource, from the search parameters of its type."""
    tokens: set[tuple[str, str, str]] = set()
    references: set[tuple[str, str, str]] = set()
    dates: set[tuple[str, datetime, datetime]] = set()
    strings: set[tuple[str, str, str]] = set()
    for name, kind, paths in _plan(str(resource.get("resourceType"))):
        for path in paths:
            for value in values_at(resource, path):
                if kind == "token":
                    tokens.update((name, s, c) for s, c in _tokens(value))
                elif kind == "reference":
                    target = reference_target(value)
                    if target is not None:
                        references.add((name, *target))
                elif kind == "date":
                    span = _date(value)
                    if span is not None:
                        dates.add((name, *span))
                elif kind == "string":
                    strings.update((name, normalised(t), t) for t in _strings(value))
    return IndexRows(
        tuple(sorted(tokens)),
        tuple(sorted(references)),
        tuple(sorted(dates)),
        tuple(sorted(strings)),
    )
