"""Modifier extensions (FHIR R4 extensibility.html#modifierExtension): an extension that changes
the meaning of the element holding it, e.g. one that negates a finding. A system SHALL NOT ignore
one it does not understand; fhir-app understands none, so a contract input whose read elements
carry one is refused (422 `not-supported`), never read as if the modifier were not there."""

from __future__ import annotations

from typing import Any

from fhir_app.fhir.inputs import InputRejected, Issue


def modifier_issues(node: Any, path: str) -> list[Issue]:
    """One `not-supported` issue per modifier extension of `node` (an element at FHIRPath
    `path`, e.g. `Observation` or `Observation.component[1]`); none when it carries none."""
    found = node.get("modifierExtension") if isinstance(node, dict) else None
    if not isinstance(found, list):
        return []
    issues = []
    for index, extension in enumerate(found):
        url = extension.get("url") if isinstance(extension, dict) else None
        where = f"{path}.modifierExtension[{index}]"
        issues.append(
            Issue(
                "error",
                "not-supported",
                f"{where}: the modifier extension {url!r} changes the meaning of {path}, and "
                "fhir-app does not understand it; it cannot read this input safely (FHIR R4: a "
                "modifier extension SHALL NOT be ignored)",
                (where,),
            )
        )
    return issues


def refuse_unknown_modifiers(node: Any, path: str) -> None:
    """Raise InputRejected when `node` (at FHIRPath `path`) carries a modifier extension."""
    issues = modifier_issues(node, path)
    if issues:
        raise InputRejected(issues)
