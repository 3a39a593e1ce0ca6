"""`fhir-app process` with Conditions and Patients (CONTRACT 3 and 5, v2), SQLite and PostgreSQL.

The bulk path reads Conditions as the REST path does (the same outputs, versions and statuses),
and a Patient that arrives after the findings derives the patient again on both paths. An
Observation outside the contract without a Patient subject is stored, not rejected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from bulk_support import migrated, output_files, without_timestamps
from support.conditions import primary_condition, secondary_condition
from typer.testing import CliRunner

from fhir_app.bulk import BulkOptions, BulkProcessor
from fhir_app.cli import app
from fhir_app.fhir import codes, samples
from fhir_app.fhir.inputs import JsonObject
from fhir_app.service import FhirService, current_outputs
from fhir_app.store import bulk_uow_factory, make_engine, uow_factory


def _processor(url: str) -> BulkProcessor:
    return BulkProcessor(bulk_uow_factory(make_engine(url)), options=BulkOptions(workers=0))


def _ndjson(path: Path, resources: list[JsonObject]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def _likely(outputs: list[Any]) -> list[str]:
    (cls,) = [
        r
        for r in outputs
        if r["resourceType"] == "Observation"
        and r["code"]["coding"][0]["code"] == "lesion-classification"
        and r["bodySite"]["coding"][0]["code"] == "66794005"  # L1
    ]
    return [
        c["valueCodeableConcept"]["coding"][0]["code"]
        for c in cls["component"]
        if c["code"]["coding"][0]["code"] == codes.LIKELY_PRIMARY
    ]


def _sorted(rows: list[Any]) -> list[Any]:
    return sorted(rows, key=lambda r: (r["resourceType"], r["id"]))


FINDINGS: list[JsonObject] = [
    samples.lesion_panel(
        "c1-l1",
        "c1",
        "L1",
        [("appearance", "blastic"), ("pain", "mechanical")],
        effective="2025-03-01T10:00:00Z",
    ),
    primary_condition("c1-primary", "c1", "breast"),
    secondary_condition("c1-met", "c1", "T9"),
    {
        "resourceType": "Observation",
        "id": "c1-hr",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Group/ward-3"},
        "valueQuantity": {
            "value": 72,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    },
]
PATIENT = samples.patient("c1", "Doe", "Jane", "1950-02-03", "female")


def test_bulk_reads_conditions_as_rest_does_and_a_late_patient_derives_again(
    database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    service = FhirService(uow_factory(make_engine(migrated(empty_database_url))))
    bulk = _processor(migrated(database_url))

    def rest_outputs() -> list[Any]:
        return _sorted([without_timestamps(r) for r in current_outputs(service, {"c1"})])

    def bulk_outputs(folder: Path) -> list[Any]:
        return _sorted([r for name, rs in output_files(folder).items() for r in rs])

    service.transaction(samples.transaction(FINDINGS))
    result = bulk.run([_ndjson(tmp_path / "findings.ndjson", FINDINGS)], tmp_path / "first")
    assert (result.rejected, result.patients) == (0, 1)
    first = bulk_outputs(tmp_path / "first")
    assert first == rest_outputs()
    levels = {
        r["bodySite"]["coding"][0]["code"]
        for r in first
        if r["resourceType"] == "Observation" and "bodySite" in r
    }
    assert levels == {"66794005", "82687006"}  # L1 and T9 (the secondary Condition)
    # The known breast primary leads the blastic row; nothing is filtered without a Patient.
    assert _likely(first)[0] == "breast"
    assert "prostate" in _likely(first)
    (provenance,) = [r for r in first if r["resourceType"] == "Provenance"]
    entities = [e["what"]["reference"] for e in provenance["entity"]]
    assert {"Condition/c1-primary/_history/1", "Condition/c1-met/_history/1"} <= set(entities)

    # The Patient arrives later: female, so prostate is left out, on both paths alike.
    service.update("Patient", "c1", PATIENT)
    result = bulk.run([_ndjson(tmp_path / "patient.ndjson", [PATIENT])], tmp_path / "second")
    assert (result.rejected, result.patients) == (0, 1)
    second = bulk_outputs(tmp_path / "second")
    assert second == rest_outputs()
    assert "prostate" not in _likely(second)
    # A second derivation: two Provenances, the classification in its second version.
    assert len([r for r in second if r["resourceType"] == "Provenance"]) == 2
    l1_classification = [
        r["meta"]["versionId"]
        for r in second
        if r["resourceType"] == "Observation"
        and r["code"]["coding"][0]["code"] == "lesion-classification"
        and r["bodySite"]["coding"][0]["code"] == "66794005"
    ]
    assert l1_classification == ["2"]


def test_cli_assess_reads_conditions_and_the_patient(tmp_path: Path) -> None:
    """`fhir-app assess`: the same inputs in memory; the Patient of the same file filters."""
    feed = _ndjson(tmp_path / "feed.ndjson", [*FINDINGS, PATIENT])
    done = CliRunner().invoke(app, ["assess", str(feed)])
    assert done.exit_code == 0, done.output
    outputs = [e["resource"] for e in orjson.loads(done.stdout)["entry"]]
    levels = {
        r["bodySite"]["coding"][0]["code"]
        for r in outputs
        if r["resourceType"] == "Observation" and "bodySite" in r
    }
    assert levels == {"66794005", "82687006"}  # L1, and T9 of the secondary Condition
    likely = _likely(outputs)
    assert likely[0] == "breast"
    assert "prostate" not in likely
    (provenance,) = [r for r in outputs if r["resourceType"] == "Provenance"]
    entities = {e["what"]["reference"] for e in provenance["entity"]}
    assert {"Condition/c1-primary/_history/1", "Condition/c1-met/_history/1"} <= entities
