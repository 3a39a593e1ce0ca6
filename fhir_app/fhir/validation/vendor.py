"""Vendor the FHIR JSON schema and the element facts it does not carry, from the npm package.

Run from the repository root after `npm pack hl7.fhir.r4b.core@4.3.0` and extracting it:

    python -m fhir_app.fhir.validation.vendor /tmp/package

It writes two files into `fhir_app/fhir/validation/schema/` (see the README there):

- `fhir.schema.json`: `package/openapi/fhir.schema.json` with its `description` texts removed (they
  are documentation, a third of the size, and never validate anything) and only the definitions
  reachable from the resource types fhir-app takes in. `contained` reaches every resource type, so
  that is nearly all of them; nothing else is changed.
- `elements.json`: per schema definition, the primitive elements with minimum cardinality 1 and
  the choice elements (`value[x]` -> `valueQuantity`, `valueString`, ...), read from the package's
  StructureDefinitions. The schema cannot say either: a required primitive may be sent as its
  `_element` extension alone, and a choice is a list of optional properties.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

SCHEMA_DIR: Final = Path(__file__).parent / "schema"
# The resource types fhir-app takes in; every definition they reach is kept.
ROOTS: Final = ("Observation", "ImagingStudy", "Patient", "Condition", "Bundle")
_REF_PREFIX: Final = "#/definitions/"


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        # A `description` text documents; an element named `description` (an object) stays.
        return {
            key: _strip(value)
            for key, value in node.items()
            if not (key == "description" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_strip(value) for value in node]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.removeprefix(_REF_PREFIX)
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def prune(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without descriptions, holding the definitions reachable from ROOTS."""
    definitions: dict[str, Any] = schema["definitions"]
    keep: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo.extend(_refs(definitions[name]))
    mapping = {
        name: target for name, target in schema["discriminator"]["mapping"].items() if name in keep
    }
    return {
        "$schema": schema["$schema"],
        "id": schema["id"],
        "discriminator": {"propertyName": "resourceType", "mapping": mapping},
        "oneOf": [{"$ref": target} for target in mapping.values()],
        "definitions": {name: _strip(definitions[name]) for name in sorted(keep)},
    }


def _target(prop: Any) -> str | None:
    """The definition a property holds (itself or as array items), when it is a `$ref`."""
    if not isinstance(prop, dict):
        return None
    ref = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
    return ref.removeprefix(_REF_PREFIX) if isinstance(ref, str) else None


def definition_paths(schema: dict[str, Any]) -> dict[str, str]:
    """FHIR element path -> schema definition, e.g. `Observation.component` ->
    `Observation_Component`: the schema names backbone elements by its own rule, so the map is
    read by following the properties from every top-level definition."""
    definitions: dict[str, Any] = schema["definitions"]
    paths: dict[str, str] = {}
    seen: set[str] = set()
    # Breadth first, each definition once: the shortest path is the one the StructureDefinition
    # describes; a recursive element (Questionnaire.item.item) is a contentReference there.
    todo = deque((name, name) for name in definitions if "_" not in name)
    while todo:
        path, name = todo.popleft()
        if name in seen:
            continue
        seen.add(name)
        paths[path] = name
        for prop, value in definitions[name].get("properties", {}).items():
            target = _target(value)
            if target is not None and "_" in target and not prop.startswith("_"):
                todo.append((f"{path}.{prop}", target))
    return paths


def _capitalised(type_code: str) -> str:
    name = type_code.rsplit(".", 1)[-1]  # http://hl7.org/fhirpath/System.String -> String
    return name[:1].upper() + name[1:]


def element_facts(package: Path, schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Required primitives and choice groups per schema definition, from the StructureDefinitions
    (snapshot) of the package's resources and complex data types."""
    definitions: dict[str, Any] = schema["definitions"]
    paths = definition_paths(schema)
    facts: dict[str, dict[str, Any]] = {}
    for file in sorted(package.glob("StructureDefinition-*.json")):
        sd = json.loads(file.read_text(encoding="utf-8"))
        if sd.get("derivation") != "specialization" or sd.get("kind") not in (
            "resource",
            "complex-type",
        ):
            continue
        for element in sd.get("snapshot", {}).get("element", []):
            parent, _, name = element["path"].rpartition(".")
            owner = paths.get(parent)
            if not parent or owner is None or owner not in definitions:
                continue
            properties = definitions[owner].get("properties", {})
            entry = facts.setdefault(owner, {"required": [], "choices": {}})
            if name.endswith("[x]"):
                base = name.removesuffix("[x]")
                options = [
                    base + _capitalised(t["code"])
                    for t in element.get("type", [])
                    if base + _capitalised(t["code"]) in properties
                ]
                if options:
                    entry["choices"][base] = sorted(set(options))
                    if element.get("min", 0) >= 1:
                        entry["required"].append(f"{base}[x]")
            elif element.get("min", 0) >= 1 and f"_{name}" in properties:
                entry["required"].append(name)
    return {
        name: {"required": sorted(set(entry["required"])), "choices": entry["choices"]}
        for name, entry in sorted(facts.items())
        if entry["required"] or entry["choices"]
    }


def main(argv: list[str]) -> int:
    """Write the vendored schema files from an extracted `hl7.fhir.r4b.core` package."""
    if len(argv) != 1:
        print(__doc__)
        return 2
    package = Path(argv[0])
    manifest = json.loads((package / "package.json").read_text(encoding="utf-8"))
    if (manifest["name"], manifest["version"]) != ("hl7.fhir.r4b.core", "4.3.0"):
        print(f"expected hl7.fhir.r4b.core 4.3.0, got {manifest['name']} {manifest['version']}")
        return 2
    full = json.loads((package / "openapi" / "fhir.schema.json").read_text(encoding="utf-8"))
    pruned = prune(full)
    facts = element_facts(package, pruned)
    for name, content in (("fhir.schema.json", pruned), ("elements.json", facts)):
        text = json.dumps(content, indent=None, separators=(",", ":"), sort_keys=True)
        (SCHEMA_DIR / name).write_text(text + "\n", encoding="utf-8")
        print(f"{name}: {len(text):,} bytes")
    print(f"{len(pruned['definitions'])} definitions; facts for {len(facts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
