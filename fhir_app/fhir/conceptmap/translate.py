"""Applying the maps: a copy of an input where each mapped coding gets the contract's coding added.

The inbound mapping then reads the copy exactly as if the feed had sent the contract code; the
received JSON is never changed (the caller stores it as received). Codings are only ever added,
next to the feed's own, and only where the contract reads codes:

- Observation: `code`, `bodySite`, `valueCodeableConcept`, `method`, and per component `code` and
  `valueCodeableConcept`;
- Condition: `code` and every `bodySite`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from fhir_app.fhir.conceptmap.load import LoadedMap, Row, Target
from fhir_app.fhir.conceptmap.rules import DEPENDS_ON_CONTEXTS, HIERARCHIES

JsonObject = dict[str, Any]
_Key = tuple[str, str]

# (element name, is a list of CodeableConcepts) per resource type, as the module docstring says.
_CONCEPTS: Final[dict[str, tuple[tuple[str, bool], ...]]] = {
    "Observation": (
        ("code", False),
        ("bodySite", False),
        ("valueCodeableConcept", False),
        ("method", False),
    ),
    "Condition": (("code", False), ("bodySite", True)),
}
_COMPONENT_CONCEPTS: Final = ("code", "valueCodeableConcept")


class Translator:
    """The rows of every loaded map, by source (system, code); site rows replace shipped ones.

    Maps are given in load order (shipped first, then the site's): a later map's row for the same
    source code replaces the earlier one, so a site can correct a shipped mapping as well as add
    its local codes.
    """

    def __init__(self, maps: Sequence[LoadedMap]) -> None:
        self.maps: tuple[LoadedMap, ...] = tuple(maps)
        rows: dict[_Key, Row] = {}
        for loaded in self.maps:
            for row in loaded.rows:
                rows[(row.source_system, row.source_code)] = row
        self._rows = rows
        # The source systems of any row: a coding of another system is passed over at once, so
        # a contract-coded input (most of them) costs a set lookup per coding.
        self._systems = frozenset(system for system, _ in rows)

    def rows(self) -> list[Row]:
        """Every row in effect (after site overrides)."""
        return list(self._rows.values())

    def targets(self, system: str, code: str, resource: JsonObject) -> list[Target]:
        """The applied targets for one source coding in the context of `resource`.

        The code's own row first; for a hierarchical system (ICD-10-CM) the nearest ancestor
        whose targets apply when the code's own row yields none.
        """
        ancestors = HIERARCHIES.get(system)
        candidates = [code, *(ancestors(code) if ancestors is not None else ())]
        for candidate in candidates:
            row = self._rows.get((system, candidate))
            if row is None:
                continue
            applied = [t for t in row.targets if t.applied and _holds(t, resource)]
            if applied:
                return applied
        return []

    def translate(self, raw: JsonObject) -> JsonObject:
        """`raw` itself when no coding maps, else a copy with the contract codings added.

        Only the path to each changed CodeableConcept is copied; `raw` and everything it holds
        stay as received (the copy shares the unchanged parts, which nobody mutates).
        """
        rtype = raw.get("resourceType")
        elements = _CONCEPTS.get(rtype) if isinstance(rtype, str) else None
        if elements is None or not self._rows:
            return raw
        result: JsonObject | None = None
        for name, many in elements:
            value = raw.get(name)
            if many:
                if not isinstance(value, list):
                    continue
                changed = [self._with_added(concept, raw) for concept in value]
                if any(new is not old for new, old in zip(changed, value, strict=True)):
                    result = result if result is not None else dict(raw)
                    result[name] = changed
            else:
                new = self._with_added(value, raw)
                if new is not value:
                    result = result if result is not None else dict(raw)
                    result[name] = new
        components = raw.get("component")
        if rtype == "Observation" and isinstance(components, list):
            copied = [self._component(component, raw) for component in components]
            if any(new is not old for new, old in zip(copied, components, strict=True)):
                result = result if result is not None else dict(raw)
                result["component"] = copied
        return raw if result is None else result

    def _component(self, component: Any, resource: JsonObject) -> Any:
        """The component itself, or a copy whose code / value carry the added codings."""
        if not isinstance(component, dict):
            return component
        result = component
        for name in _COMPONENT_CONCEPTS:
            value = component.get(name)
            new = self._with_added(value, resource)
            if new is not value:
                result = result if result is not component else dict(component)
                result[name] = new
        return result

    def _with_added(self, concept: Any, resource: JsonObject) -> Any:
        """The CodeableConcept itself, or a copy with the contract codings appended."""
        added = self._added(concept, resource)
        if not added:
            return concept
        return {**concept, "coding": [*concept["coding"], *added]}

    def _added(self, concept: Any, resource: JsonObject) -> list[JsonObject]:
        """The contract codings to add to one CodeableConcept (none already present)."""
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list):
            return []
        systems = self._systems
        if not any(isinstance(c, dict) and c.get("system") in systems for c in codings):
            return []
        present = set(_keys(codings))
        added: list[JsonObject] = []
        for system, code in list(_keys(codings)):
            for target in self.targets(system, code, resource):
                key = (target.system, target.code)
                if key in present:
                    continue
                present.add(key)
                coding: JsonObject = {"system": target.system, "code": target.code}
                if target.display is not None:
                    coding["display"] = target.display
                added.append(coding)
        return added


def _keys(codings: Iterable[Any]) -> Iterable[_Key]:
    for coding in codings:
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                yield system, code


def _holds(target: Target, resource: JsonObject) -> bool:
    """Whether every dependsOn of `target` is met by the resource (FHIR: all must hold)."""
    for condition in target.depends_on:
        found = DEPENDS_ON_CONTEXTS[condition.property](resource)
        if (condition.system, condition.value) not in found:
            return False
    return True
