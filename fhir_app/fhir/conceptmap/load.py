"""Reading and checking FHIR R4 ConceptMap files: a broken map is an error naming file and element.

Every `*.json` file of a folder is one ConceptMap. The check is strict on what fhir-app relies on
(rules.py) and on the R4 shape of the elements it reads; a file that breaks it raises
ConceptMapError, which the entry points turn into a one-line start-up failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from fhir_app.fhir.conceptmap.rules import (
    APPLIED_EQUIVALENCES,
    CONTRACT_TARGETS,
    DEPENDS_ON_CONTEXTS,
    REFUSED_EQUIVALENCES,
    UNMAPPED_EQUIVALENCES,
)

_EQUIVALENCES: Final = APPLIED_EQUIVALENCES | UNMAPPED_EQUIVALENCES | REFUSED_EQUIVALENCES


class ConceptMapError(Exception):
    """A ConceptMap that cannot be used: the file, the element (FHIRPath) and why."""

    def __init__(self, path: Path, element: str, reason: str) -> None:
        super().__init__(f"{path}: {element}: {reason}")
        self.path = path
        self.element = element
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DependsOn:
    """A condition of a target: the resource carries `system#value` in context `property`."""

    property: str
    system: str
    value: str


@dataclass(frozen=True, slots=True)
class Target:
    """One mapping of a source code: the contract coding it adds, and when."""

    system: str
    code: str
    display: str | None
    equivalence: str
    depends_on: tuple[DependsOn, ...]
    origin: str  # `file: ConceptMap.group[i].element[j].target[k]`, for messages and tests

    @property
    def applied(self) -> bool:
        """Whether the translator applies this target (rules.APPLIED_EQUIVALENCES)."""
        return self.equivalence in APPLIED_EQUIVALENCES


@dataclass(frozen=True, slots=True)
class Row:
    """One `group.element` of a map: a source code and its targets (possibly none: unmapped)."""

    source_system: str
    source_code: str
    targets: tuple[Target, ...]
    url: str  # the ConceptMap's canonical URL


@dataclass(frozen=True, slots=True)
class LoadedMap:
    """One checked ConceptMap file."""

    path: Path
    url: str
    rows: tuple[Row, ...]


def _required(value: Any, path: Path, element: str) -> str:
    """A non-empty string, or a ConceptMapError naming `element`."""
    if value is None:
        raise ConceptMapError(path, element, "is missing")
    if not isinstance(value, str) or not value.strip():
        raise ConceptMapError(path, element, "must be a non-empty string")
    return value


def _optional(value: Any, path: Path, element: str) -> str | None:
    """None when absent, else as `_required`."""
    return None if value is None else _required(value, path, element)


def _list(value: Any, path: Path, element: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise ConceptMapError(path, element, "must be a non-empty array")
    return value


def _depends_on(value: Any, path: Path, element: str) -> DependsOn:
    if not isinstance(value, dict):
        raise ConceptMapError(path, element, "must be an object")
    prop = _required(value.get("property"), path, f"{element}.property")
    if prop not in DEPENDS_ON_CONTEXTS:
        known = ", ".join(sorted(DEPENDS_ON_CONTEXTS))
        raise ConceptMapError(
            path, f"{element}.property", f"'{prop}' is not a context fhir-app reads ({known})"
        )
    system = _required(value.get("system"), path, f"{element}.system")
    code = _required(value.get("value"), path, f"{element}.value")
    return DependsOn(prop, system, code)


def _target(value: Any, target_system: str | None, path: Path, element: str) -> Target:
    if not isinstance(value, dict):
        raise ConceptMapError(path, element, "must be an object")
    equivalence = _required(value.get("equivalence"), path, f"{element}.equivalence")
    if equivalence not in _EQUIVALENCES:
        raise ConceptMapError(
            path, f"{element}.equivalence", f"'{equivalence}' is not an R4 ConceptMapEquivalence"
        )
    if equivalence in REFUSED_EQUIVALENCES:
        raise ConceptMapError(
            path,
            f"{element}.equivalence",
            f"'{equivalence}' cannot be applied: a mapping must be one of "
            f"{', '.join(sorted(APPLIED_EQUIVALENCES))} (or unmatched/disjoint, left unmapped)",
        )
    code = _optional(value.get("code"), path, f"{element}.code")
    if code is None and equivalence not in UNMAPPED_EQUIVALENCES:
        raise ConceptMapError(path, f"{element}.code", "is missing: a mapping needs a target code")
    if code is not None:
        if target_system is None:
            raise ConceptMapError(
                path, element.rsplit(".element", 1)[0] + ".target", "is missing: the target system"
            )
        allowed = CONTRACT_TARGETS.get(target_system)
        if allowed is None:
            raise ConceptMapError(
                path,
                element.rsplit(".element", 1)[0] + ".target",
                f"'{target_system}' is not a code system of the contract's inputs",
            )
        if code not in allowed:
            raise ConceptMapError(
                path, f"{element}.code", f"'{code}' is not an input code of {target_system}"
            )
    display = _optional(value.get("display"), path, f"{element}.display")
    depends = tuple(
        _depends_on(d, path, f"{element}.dependsOn[{i}]")
        for i, d in enumerate(_list(value.get("dependsOn"), path, f"{element}.dependsOn"))
    )
    return Target(
        target_system or "",
        code or "",
        display,
        equivalence,
        depends,
        f"{path.name}: {element}",
    )


def _group_rows(group: Any, url: str, path: Path, where: str) -> Iterable[Row]:
    if not isinstance(group, dict):
        raise ConceptMapError(path, where, "must be an object")
    source = _required(group.get("source"), path, f"{where}.source")
    target_system = _optional(group.get("target"), path, f"{where}.target")
    elements = _list(group.get("element"), path, f"{where}.element")
    if not elements:
        raise ConceptMapError(path, f"{where}.element", "is missing: a group maps codes")
    for j, element in enumerate(elements):
        at = f"{where}.element[{j}]"
        if not isinstance(element, dict):
            raise ConceptMapError(path, at, "must be an object")
        code = _required(element.get("code"), path, f"{at}.code")
        targets = tuple(
            _target(t, target_system, path, f"{at}.target[{k}]")
            for k, t in enumerate(_list(element.get("target"), path, f"{at}.target"))
        )
        if not targets:
            raise ConceptMapError(
                path,
                f"{at}.target",
                "is missing: give a target, or one with equivalence 'unmatched' for a code "
                "that stays unmapped",
            )
        yield Row(source, code, targets, url)


def load_file(path: Path) -> LoadedMap:
    """Read and check one ConceptMap file; raises ConceptMapError naming the element."""
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ConceptMapError(path, "(file)", f"is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise ConceptMapError(path, "(file)", f"cannot be read: {exc.strerror}") from exc
    if not isinstance(document, dict) or document.get("resourceType") != "ConceptMap":
        got = document.get("resourceType") if isinstance(document, dict) else type(document)
        raise ConceptMapError(path, "resourceType", f"must be 'ConceptMap', got {got!r}")
    url = _required(document.get("url"), path, "ConceptMap.url")
    status = document.get("status")
    if status not in {"draft", "active", "retired", "unknown"}:
        raise ConceptMapError(path, "ConceptMap.status", f"{status!r} is not an R4 status")
    rows: list[Row] = []
    seen: dict[tuple[str, str], str] = {}
    for i, group in enumerate(_list(document.get("group"), path, "ConceptMap.group")):
        for j, row in enumerate(_group_rows(group, url, path, f"ConceptMap.group[{i}]")):
            key = (row.source_system, row.source_code)
            where = f"ConceptMap.group[{i}].element[{j}].code"
            if key in seen:
                # One element per source code, its targets together: a second one would silently
                # replace the first.
                raise ConceptMapError(
                    path, where, f"'{row.source_code}' of {row.source_system} is also {seen[key]}"
                )
            seen[key] = where
            rows.append(row)
    return LoadedMap(path, url, tuple(rows))


def load_folder(folder: Path) -> list[LoadedMap]:
    """Every `*.json` ConceptMap of `folder`, in name order; a missing folder is an error."""
    if not folder.is_dir():
        raise ConceptMapError(folder, "(folder)", "is not a folder of ConceptMap JSON files")
    maps = [load_file(path) for path in sorted(folder.glob("*.json"))]
    seen: dict[str, Path] = {}
    for loaded in maps:
        if loaded.url in seen:
            raise ConceptMapError(
                loaded.path,
                "ConceptMap.url",
                f"'{loaded.url}' is also the url of {seen[loaded.url]}",
            )
        seen[loaded.url] = loaded.path
    return maps
