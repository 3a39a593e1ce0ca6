"""Helpers of the ConceptMap tests: writing maps into a folder, building inputs that carry codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_app.fhir import conceptmap

BASE = "https://fhir-app.org/fhir"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
HISTOLOGY = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior"
PRIMARY_TUMOR = f"{BASE}/CodeSystem/primary-tumor"
SPINE_FINDING = f"{BASE}/CodeSystem/spine-finding"
SINS = f"{BASE}/CodeSystem/sins"
LOCAL = "https://hospital.example.org/fhir/CodeSystem/spine-reading"

Json = dict[str, Any]


def concept_map(url_id: str, groups: list[Json], **fields: Any) -> Json:
    """A minimal valid R4 ConceptMap with these groups."""
    return {
        "resourceType": "ConceptMap",
        "url": f"https://hospital.example.org/fhir/ConceptMap/{url_id}",
        "status": "active",
        **fields,
        "group": groups,
    }


def write_map(folder: Path, name: str, document: Any) -> Path:
    """Write `document` (JSON, or raw text when a str) as folder/name; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = document if isinstance(document, str) else json.dumps(document)
    path.write_text(text, encoding="utf-8")
    return path


def with_histology(resource: Json, morphology: str) -> Json:
    """`resource` with the mCODE histology extension stating an ICD-O-3 morphology."""
    extension = {
        "url": HISTOLOGY,
        "valueCodeableConcept": {"coding": [{"system": ICDO3, "code": morphology}]},
    }
    return {**resource, "extension": [extension]}


def condition(system: str, code: str, *, morphology: str | None = None) -> Json:
    """An mCODE-style primary cancer Condition coded `system#code`."""
    resource: Json = {
        "resourceType": "Condition",
        "id": "dx",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]},
    }
    return with_histology(resource, morphology) if morphology else resource


def codes_of(concept: Any, system: str) -> list[str]:
    """The codes of one system in a CodeableConcept."""
    return [c["code"] for c in concept.get("coding", []) if c.get("system") == system]


@pytest.fixture
def fresh_translator() -> Iterator[None]:
    """Leave no process-wide translator behind: other tests load the shipped maps again."""
    conceptmap.install(None)
    yield
    conceptmap.install(None)
