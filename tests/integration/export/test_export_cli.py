"""`fhir-app export` and `fhir-app report` against a stored population (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from export_support import EXPORTED_TYPES, by_id
from PIL import Image
from typer.testing import CliRunner, Result

from fhir_app.analytics.lesions import COLUMN_NAMES, csv_records, lesion_rows
from fhir_app.cli import EXIT_OK, EXIT_USAGE, app
from fhir_app.config import get_settings
from fhir_app.service import FhirService, current_outputs

PATIENTS = ("p01", "p03", "p08")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`run(*args)`: the command line on the test database; returns the click Result."""
    monkeypatch.setenv("FHIR_APP_DATABASE_URL", database_url)
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), catch_exceptions=False)

    yield invoke
    get_settings.cache_clear()


def outputs_by_type(service: FhirService, patients: Any = PATIENTS) -> dict[str, list[Any]]:
    """The current outputs of the patients, by resource type, read by the service."""
    grouped: dict[str, list[Any]] = defaultdict(list)
    for resource in current_outputs(service, patients):
        grouped[resource["resourceType"]].append(resource)
    return grouped


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    """The resources of an NDJSON file."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def read_csv(path: Path) -> list[list[str]]:
    """Every record of a CSV file, the header first."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def sins_lesions(resources: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(patient, SNOMED level) of every current SINS Observation: one lesion each."""
    return {
        (r["subject"]["reference"].removeprefix("Patient/"), r["bodySite"]["coding"][0]["code"])
        for r in resources
        if r["resourceType"] == "Observation"
        and r["code"]["coding"][0]["code"] == "sins-total"
        and r["status"] != "entered-in-error"
    }


# --------------------------------------------------------------------------- export


def test_export_writes_one_ndjson_per_type_and_a_manifest(
    loaded: FhirService, run: Any, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    before = datetime.now(UTC)
    result = run("export", "--out", str(out))
    assert result.exit_code == EXIT_OK, result.output
    assert "transactionTime" in result.stderr

    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["requiresAccessToken"] is False
    assert manifest["error"] == []
    assert datetime.fromisoformat(manifest["transactionTime"]) >= before
    assert [item["type"] for item in manifest["output"]] == list(EXPORTED_TYPES)
    expected = outputs_by_type(loaded)
    for item in manifest["output"]:
        path = out / f"{item['type']}.ndjson"
        assert item["url"] == path.resolve().as_uri()
        resources = read_ndjson(path)
        assert len(resources) == item["count"]
        assert by_id(resources) == by_id(expected[item["type"]])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", *(f"{t}.ndjson" for t in EXPORTED_TYPES)]
    )


def test_export_type_and_since_and_stale_files(
    loaded: FhirService, run: Any, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    assert run("export", "--out", str(out)).exit_code == EXIT_OK
    time.sleep(0.01)
    since = datetime.now(UTC)
    time.sleep(0.01)
    loaded.delete("Observation", "p03-pain")

    result = run(
        "export",
        "--out",
        str(out),
        "--type",
        "RiskAssessment,Observation",
        "--type",
        "Provenance",
        "--since",
        since.isoformat().replace("+00:00", "Z"),
    )
    assert result.exit_code == EXIT_OK, result.output
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert [item["type"] for item in manifest["output"]] == [
        "RiskAssessment",
        "Observation",
        "Provenance",
    ]
    assert "_since=" in manifest["request"]
    # The DiagnosticReport file of the first export is gone: the folder matches its manifest.
    assert not (out / "DiagnosticReport.ndjson").exists()
    p03 = outputs_by_type(loaded, ["p03"])
    for item in manifest["output"]:
        resources = read_ndjson(out / f"{item['type']}.ndjson")
        changed = [
            r
            for r in p03[item["type"]]
            if datetime.fromisoformat(r["meta"]["lastUpdated"]) >= since
        ]
        assert changed
        assert by_id(resources) == by_id(changed)


def test_export_flat_writes_the_lesion_table(loaded: FhirService, run: Any, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = run("export", "--out", str(out), "--flat")
    assert result.exit_code == EXIT_OK, result.output

    outputs = current_outputs(loaded, PATIENTS)
    rows = lesion_rows(outputs)
    assert len(rows) == len(sins_lesions(outputs)) > 0
    assert read_csv(out / "lesions.csv") == list(csv_records(rows))
    table = pq.read_table(out / "lesions.parquet")
    assert table.column_names == list(COLUMN_NAMES)
    assert table.num_rows == len(rows)
    assert table.column("patient").to_pylist() == [row.patient for row in rows]
    assert table.column("level").to_pylist() == [row.level for row in rows]


def test_flat_export_since_has_every_lesion_of_the_changed_patients(
    loaded: FhirService, run: Any, tmp_path: Path
) -> None:
    since = datetime.now(UTC)
    time.sleep(0.01)
    loaded.delete("Observation", "p03-pain")
    out = tmp_path / "export"
    result = run("export", "--out", str(out), "--flat", "--since", since.isoformat())
    assert result.exit_code == EXIT_OK, result.output
    rows = lesion_rows(current_outputs(loaded, ["p03"]))
    assert rows
    assert read_csv(out / "lesions.csv") == list(csv_records(rows))


@pytest.mark.parametrize(
    "args",
    [
        ["--type", "Patient"],
        ["--type", "RiskAssessment,ImagingStudy"],
        ["--since", "2025-01-01"],
        ["--since", "2025-01-01T00:00:00"],
    ],
)
def test_export_usage_errors_exit_2(run: Any, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "export"
    result = run("export", "--out", str(out), *args)
    assert result.exit_code == EXIT_USAGE
    assert "error:" in result.stderr
    assert not out.exists()


def test_export_out_must_be_a_folder(run: Any, tmp_path: Path) -> None:
    taken = tmp_path / "file"
    taken.write_text("x")
    assert run("export", "--out", str(taken)).exit_code == EXIT_USAGE
    assert run("export").exit_code == EXIT_USAGE  # --out is required


def test_export_of_an_empty_database(run: Any, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = run("export", "--out", str(out), "--flat")
    assert result.exit_code == EXIT_OK, result.output
    assert orjson.loads((out / "manifest.json").read_bytes())["output"] == []
    assert read_csv(out / "lesions.csv") == [list(COLUMN_NAMES)]


# --------------------------------------------------------------------------- report


def assert_png(path: Path) -> None:
    """A PNG that decodes, of a plausible chart size."""
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert image.format == "PNG"
        assert width > 800
        assert height > 400


def test_report_prints_summaries_and_writes_chart_and_table(
    loaded: FhirService, run: Any, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = run("report", "--out", str(out))
    assert result.exit_code == EXIT_OK, result.output
    outputs = current_outputs(loaded, PATIENTS)
    rows = lesion_rows(outputs)
    assert "Vertebral metastasis registry" in result.stdout
    assert "Lesions per level by SINS category" in result.stdout
    overview = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.stdout.splitlines()
        if line.count("│") == 3
    }
    assert overview["Patients"] == str(len(PATIENTS))
    assert overview["Lesions (patient and level)"] == str(len(sins_lesions(outputs)))
    for row in rows:
        assert f"│ {row.level} " in result.stdout
    assert_png(out / "lesions-per-level.png")
    assert read_csv(out / "lesions.csv") == list(csv_records(rows))


def test_report_defaults_to_the_working_folder(
    loaded: FhirService, run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("report")
    assert result.exit_code == EXIT_OK, result.output
    assert_png(tmp_path / "lesions-per-level.png")
    rows = lesion_rows(current_outputs(loaded, PATIENTS))
    assert read_csv(tmp_path / "lesions.csv") == list(csv_records(rows))


def test_report_of_an_empty_database(run: Any, tmp_path: Path) -> None:
    result = run("report", "--out", str(tmp_path))
    assert result.exit_code == EXIT_OK, result.output
    assert_png(tmp_path / "lesions-per-level.png")
    assert read_csv(tmp_path / "lesions.csv") == [list(COLUMN_NAMES)]


def test_report_out_must_be_a_folder(run: Any, tmp_path: Path) -> None:
    taken = tmp_path / "file"
    taken.write_text("x")
    assert run("report", "--out", str(taken)).exit_code == EXIT_USAGE
