"""The CapabilityStatement's search declarations, derived from the table of parameters.

What is declared is exactly what `request.parse_search` accepts: the parameters of the table,
`_count`, `_sort`, `_total`, `_elements`, `_summary`, and every `_include` / `_revinclude` of a
reference parameter.
"""

from __future__ import annotations

from typing import Any, Final

from fhir_app.fhir.search.parameters import (
    PARAMETERS,
    includes_of,
    revincludes_of,
    sort_keys_of,
)

RESULT_PARAMETERS: Final = (
    ("_count", "number", "Page size; further pages by the Bundle's next link."),
    (
        "_total",
        "token",
        "none, estimate or accurate (the default counts exactly; none leaves the total out).",
    ),
    (
        "_totalMethod",
        "token",
        "Aidbox's spelling of _total, which fhirpy's count() sends: count, estimate or none.",
    ),
    ("_summary", "token", "true, text, data, count or false; the subset is tagged SUBSETTED."),
    ("_elements", "string", "Top-level elements to return; the subset is tagged SUBSETTED."),
)


def _documentation(text: str, modifiers: frozenset[str]) -> str:
    shown = sorted(m for m in modifiers if not m[0].isupper())
    typed = sorted(m for m in modifiers if m[0].isupper())
    notes = []
    if shown:
        notes.append("modifiers " + " ".join(f":{m}" for m in shown))
    if typed:
        notes.append("typed as " + " ".join(f":{m}" for m in typed))
    return text + (f" ({'; '.join(notes)}.)" if notes else "")


def search_declarations(rtype: str) -> dict[str, Any]:
    """`searchInclude`, `searchRevInclude` and `searchParam` of one type (empty if unsearchable)."""
    parameters = PARAMETERS.get(rtype)
    if parameters is None:
        return {}
    declared: list[dict[str, Any]] = []
    for parameter in parameters:
        entry: dict[str, Any] = {"name": parameter.name}
        if parameter.definition is not None:
            entry["definition"] = parameter.definition
        entry["type"] = parameter.type
        entry["documentation"] = _documentation(parameter.documentation, parameter.modifiers)
        declared.append(entry)
    sort_keys = ", ".join(sort_keys_of(rtype))
    for name, kind, documentation in (
        *RESULT_PARAMETERS,
        ("_sort", "string", f"By {sort_keys}; - for descending."),
    ):
        declared.append({"name": name, "type": kind, "documentation": documentation})
    result: dict[str, Any] = {}
    includes = includes_of(rtype)
    if includes:
        result["searchInclude"] = includes
    revincludes = revincludes_of(rtype)
    if revincludes:
        result["searchRevInclude"] = revincludes
    result["searchParam"] = declared
    return result
