"""A deterministic corpus of mutated FHIR R4 inputs for the differential tests.

Seeds: every distinct input of examples/ (one per resource type and code), the sample builders
of fhir_app.fhir.samples, a Condition (mCODE primary cancer condition) and an Observation with a
contained Patient. Each seed is mutated at every node; a mutation has a *kind*:

- kinds R4 JSON always refuses, wherever they are (json.html): `null`, `empty` (string, array,
  object), `wrong-type` (another JSON type than the element's: FHIR JSON gives every element one
  JSON type), `unknown-element`, `long-string` (over 1 MiB), `choice-twice` (two value[x]);
- `bad-primitive`: a value outside the R4 format or range of the element's primitive type
  (datatypes.html), by a table of element names -> types written from the R4 spec (below);
- `bad-code`: a code outside a required value set (Observation.status, ImagingStudy.status,
  Patient.gender);
- kinds that may or may not be valid (`drop-element`, `integer-to-decimal`): only compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from fhir_app.fhir import codes, samples
from fhir_app.fhir.inputs import JsonObject

EXAMPLES: Final = Path(__file__).resolve().parents[4] / "examples"
MAX_STRING: Final = 1024 * 1024

# Kinds every R4 validator must refuse (asserted for the new one).
ALWAYS_INVALID: Final = frozenset(
    {
        "null",
        "empty",
        "wrong-type",
        "unknown-element",
        "long-string",
        "choice-twice",
        "bad-primitive",
        "bad-code",
    }
)

# Element name -> R4 primitive type, for the elements of the seeds (R4 resource pages).
PRIMITIVE_OF_ELEMENT: Final = {
    "effectiveDateTime": "dateTime",
    "started": "dateTime",
    "recordedDate": "dateTime",
    "onsetDateTime": "dateTime",
    "valueDateTime": "dateTime",
    "start": "dateTime",
    "end": "dateTime",
    "issued": "instant",
    "lastUpdated": "instant",
    "birthDate": "date",
    "status": "code",
    "gender": "code",
    "code": "code",
    "use": "code",
    "system": "uri",
    "url": "uri",
    "uid": "id",
    "versionId": "id",
    "number": "unsignedInt",
    "numberOfSeries": "unsignedInt",
    "numberOfInstances": "unsignedInt",
    "valueInteger": "integer",
    "value": "decimal",  # a number under `value` is a Quantity's decimal in the seeds
}
BAD_VALUES: Final[dict[str, list[Any]]] = {
    "dateTime": [
        "2024-02-30",
        "2023-02-29",
        "2024-13-01",
        "2024-01-01T10:00:00",
        "2024-01-01T25:00:00Z",
        "2024-1-1",
        "24",
        "2024-01-01 10:00:00Z",
    ],
    "date": ["2023-02-29", "2024-04-31", "2024-00-10", "2024-01-01T00:00:00Z"],
    "instant": ["2024-01-01", "2024-02-30T10:00:00Z", "2024-01-01T10:00:00"],
    "code": [" final", "fi  nal", "final ", "a\u00a0 b"],
    "uri": ["http://exa mple.org"],
    "id": ["bad id!", "x" * 65, "a_b"],
    "decimal": [True],
    "integer": [1.5, 2**31, -(2**31) - 1],
    "unsignedInt": [-1, 1.5, 2**31],
}
REQUIRED_CODE_ELEMENTS: Final = {
    ("Observation", "status"),
    ("ImagingStudy", "status"),
    ("Patient", "gender"),
}
_CHOICE_KEY: Final = re.compile(r"(value|effective|onset|deceased|abatement)[A-Z]\w*")


@dataclass(frozen=True, slots=True)
class Mutation:
    """One mutated input: what was done, where, and the resource."""

    kind: str
    seed: str
    where: str
    resource: JsonObject


def condition() -> JsonObject:
    """An mCODE primary cancer condition (ICD-10-CM, ICD-O-3 morphology extension)."""
    return {
        "resourceType": "Condition",
        "id": "c1",
        "meta": {
            "profile": [
                "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"
            ]
        },
        "extension": [
            {
                "url": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/icd-o-3",
                            "code": "8140/3",
                        }
                    ]
                },
            }
        ],
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C61"}]},
        "bodySite": [{"coding": [{"system": codes.SNOMED, "code": "41216001"}]}],
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": "2023-11-02",
        "recordedDate": "2023-11-20T10:00:00+01:00",
    }


def seeds() -> dict[str, JsonObject]:
    """The valid inputs the corpus mutates, by name."""
    out: dict[str, JsonObject] = {}
    for path in sorted(EXAMPLES.glob("*.json")):
        for index, entry in enumerate(orjson.loads(path.read_bytes())["entry"]):
            resource = entry["resource"]
            coding = resource.get("code", {}).get("coding", [{}])[0]
            key = f"{resource['resourceType']}:{coding.get('system')}|{coding.get('code')}"
            if not any(name.startswith(key) for name in out):
                out[f"{key} ({path.stem} entry {index})"] = resource
    out["samples.lesion_panel"] = samples.lesion_panel(
        "o1", "p1", "L2", [("appearance", "lytic"), ("height_loss", 10)], effective="2024"
    )
    out["samples.imaging_study"] = samples.imaging_study(
        "s1", "p1", "MR", started="2024-01-02T03:04:05Z", uid="1.2.3"
    )
    out["samples.patient"] = samples.patient("p1", "Doe", "Jane", "1950-02-03", "female")
    out["condition"] = condition()
    contained = samples.observation("o2", "p1", "height_loss", 20, level="L2", effective="2024")
    contained["contained"] = [{"resourceType": "Patient", "id": "pp", "gender": "male"}]
    contained["subject"] = {"reference": "#pp"}
    out["observation with a contained Patient"] = contained
    return out


def _copy(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def _nodes(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "resourceType":
                yield from _nodes(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _nodes(value, (*path, index))


def _set(resource: JsonObject, path: tuple[Any, ...], value: Any) -> JsonObject:
    out = _copy(resource)
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return out


def _drop(resource: JsonObject, path: tuple[Any, ...]) -> JsonObject:
    out = _copy(resource)
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return out


def _where(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _wrong_types(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return ["true", 1]
    if isinstance(value, int | float):
        return [str(value), True]
    if isinstance(value, str):
        return [12345, True]
    if isinstance(value, dict):
        return ["text", [value]]
    if isinstance(value, list):
        return [value[0]] if value else []
    return []


def mutations() -> Iterator[Mutation]:
    """Every mutation of every seed, in a fixed order."""
    for seed, resource in seeds().items():
        rtype = resource["resourceType"]
        long_strings = 0
        for path, value in _nodes(resource):
            if not path:
                for key in ("colour", "_colour"):
                    yield Mutation("unknown-element", seed, key, {**_copy(resource), key: "x"})
                continue
            where = _where(path)
            name = next((p for p in reversed(path) if isinstance(p, str)), "")

            def made(
                kind: str,
                new: Any,
                seed: str = seed,
                resource: JsonObject = resource,
                where: str = where,
                path: Any = path,
            ) -> Mutation:
                return Mutation(kind, seed, where, _set(resource, path, new))

            yield made("null", None)
            if isinstance(value, str | list | dict):
                yield made("empty", type(value)())
            for other in _wrong_types(value):
                yield made("wrong-type", other)
            if isinstance(value, dict):
                yield made("unknown-element", {**value, "colour": "blue"})
                choice = next((k for k in value if _CHOICE_KEY.fullmatch(k)), None)
                if choice is not None:
                    base = re.match(r"[a-z]+", choice)
                    assert base is not None
                    extra = f"{base.group()}String" if not choice.endswith("String") else None
                    extra = extra or f"{base.group()}Boolean"
                    yield Mutation(
                        "choice-twice", seed, where, _set(resource, path, {**value, extra: "x"})
                    )
            if isinstance(path[-1], str):
                yield Mutation("drop-element", seed, where, _drop(resource, path))
            if isinstance(value, str) and long_strings < 3:
                long_strings += 1
                yield made("long-string", "x" * (MAX_STRING + 1))
            if isinstance(value, int) and not isinstance(value, bool):
                yield made("integer-to-decimal", value + 0.5)
            primitive = PRIMITIVE_OF_ELEMENT.get(name)
            if name == "id" and len(path) == 1:
                primitive = "id"
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if primitive is not None and (isinstance(value, str) or is_number):
                if primitive == "decimal" and not is_number:
                    primitive = None
                for bad in BAD_VALUES.get(primitive or "", []):
                    yield made("bad-primitive", bad)
            if len(path) == 1 and (rtype, name) in REQUIRED_CODE_ELEMENTS:
                yield made("bad-code", "not-a-code")
