"""The bench population generator produces contract-valid, deterministic, realistic inputs."""

from __future__ import annotations

import importlib.util
import io
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from fhir_app.domain.levels import LEVEL_BY_LABEL, SpinalRegion
from fhir_app.fhir import codes
from fhir_app.fhir.parse import iter_input_resources
from fhir_app.service import assess

BENCH = Path(__file__).resolve().parents[3] / "bench"


def _load_generator() -> ModuleType:
    # bench/ is a folder of scripts, not a package: load the module from its file.
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def _level_of_risk(risk: dict) -> tuple[str, str]:
    (extension,) = [e for e in risk["extension"] if e["url"] == codes.EXT_VERTEBRAL_LEVEL]
    snomed = extension["valueCodeableConcept"]["coding"][0]["code"]
    return risk["subject"]["reference"].removeprefix("Patient/"), snomed


def test_population_is_accepted_and_yields_one_output_set_per_level() -> None:
    patients = list(generate.iter_patients(60, seed=7))
    items = [(r["id"], r) for p in patients for r in p.resources]

    result = assess(items)

    assert result.rejections == []
    assert result.accepted == len(items)
    by_type = Counter(o["resourceType"] for o in result.outputs)
    assert by_type["DiagnosticReport"] == len(patients)
    expected_levels = {
        (p.patient_id, LEVEL_BY_LABEL[label].snomed) for p in patients for label in p.levels
    }
    risks = [o for o in result.outputs if o["resourceType"] == "RiskAssessment"]
    assert sorted(_level_of_risk(r) for r in risks) == sorted(expected_levels)


def test_exact_size_patients_are_accepted_with_their_levels() -> None:
    patients = [generate.patient_inputs(i, seed=2, size=20) for i in range(40)]
    assert {len(p.resources) for p in patients} == {20}
    items = [(r["id"], r) for p in patients for r in p.resources]

    result = assess(items)

    assert result.rejections == []
    risks = [o for o in result.outputs if o["resourceType"] == "RiskAssessment"]
    assert len(risks) == sum(len(p.levels) for p in patients)


def _ndjson(seed: int, patients: int = 50) -> bytes:
    sink = io.BytesIO()
    generate.write_population(sink, patients, seed)
    return sink.getvalue()


def test_generation_is_deterministic_per_seed() -> None:
    assert _ndjson(5) == _ndjson(5)
    assert _ndjson(5) != _ndjson(6)
    # A patient rebuilt alone is the same patient as in the stream.
    assert generate.patient_inputs(17, seed=5) == list(generate.iter_patients(18, seed=5))[17]


def test_bundle_and_ndjson_carry_the_same_resources() -> None:
    sink = io.BytesIO()
    summary = generate.write_population(sink, 20, 3, fmt="bundle")
    from_bundle = [r for _, r in iter_input_resources(sink.getvalue(), filename_hint="p.json")]
    from_ndjson = [orjson.loads(line) for line in _ndjson(3, 20).splitlines()]

    assert from_bundle == from_ndjson
    assert summary.resources == len(from_ndjson)


def test_resources_target_stops_at_the_first_patient_that_reaches_it() -> None:
    patients = list(generate.iter_patients(resources=500, seed=1))
    total = sum(len(p.resources) for p in patients)
    assert total >= 500
    assert total - len(patients[-1].resources) < 500
    with pytest.raises(ValueError, match="exactly one"):
        list(generate.iter_patients(10, resources=10))


def test_population_has_the_intended_mix() -> None:
    patients = list(generate.iter_patients(400, seed=11))
    resources = [r for p in patients for r in p.resources]
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    statuses = Counter(r["status"] for r in observations)
    modalities = Counter(
        r["series"][0]["modality"]["code"] for r in resources if r["resourceType"] == "ImagingStudy"
    )
    level_ids = {(p.patient_id, label) for p in patients for label in p.levels}
    panel_levels = {
        (r["subject"]["reference"].removeprefix("Patient/"), r["id"].rsplit("-", 2)[-2].upper())
        for r in observations
        if r["code"]["coding"][0]["code"] == codes.VERTEBRAL_LESION
    }
    regions = Counter(LEVEL_BY_LABEL[label].region for _, label in level_ids)
    codes_seen = {r["code"]["coding"][0]["code"] for r in observations}

    assert 0.4 < len(panel_levels) / len(level_ids) < 0.6  # panel and standalone about 50/50
    assert panel_levels <= level_ids
    assert statuses["preliminary"] > 0
    assert statuses["entered-in-error"] > 0
    assert modalities["CT"] > 0
    assert modalities["MR"] > 0
    assert any(r.get("derivedFrom") for r in observations)
    assert any("bodySite" not in r and r["code"]["coding"][0]["code"] == codes.PAIN_CHARACTER
               for r in observations)  # fmt: skip
    thoracolumbar = regions[SpinalRegion.THORACIC] + regions[SpinalRegion.LUMBAR]
    assert thoracolumbar / len(level_ids) > 0.75
    assert {1, 2, 3, 4} == {len(p.levels) for p in patients}
    assert {codes.DCM_ATTENUATION, codes.DCM_T1, codes.DCM_T2, codes.PRIMARY_TUMOR} <= codes_seen
