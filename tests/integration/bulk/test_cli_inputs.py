"""`fhir-app assess` and `process` on the inputs that once gave tracebacks: a conditional update
url in a Bundle entry, and control characters in strings. A clear line per rejected input, exit
code 1 when something was rejected, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from bulk_support import run_process

from fhir_app.fhir.samples import observation, patient

CONDITIONAL_URL = "Observation?identifier=http://hospital.example/obs|42"


def finding(obs_id: str = "f1") -> dict[str, Any]:
    """A lesion-appearance finding of patient p1 at L1."""
    return observation(obs_id, "p1", "appearance", "lytic", level="L1", effective="2025-01-01")


def write_bundle(
    folder: Path, name: str, entries: list[dict[str, Any]], kind: str = "transaction"
) -> Path:
    path = folder / name
    path.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}))
    return path


def conditional_bundle(folder: Path) -> Path:
    """The patient, and a finding PUT to a conditional url, referenced by its urn."""
    resource = {
        **finding(),
        "identifier": [{"system": "http://hospital.example/obs", "value": "42"}],
    }
    del resource["id"]
    return write_bundle(
        folder,
        "conditional.json",
        [
            {
                "fullUrl": "urn:uuid:8f0c1a52-1f7e-4a4b-9d57-0f6d2d1c1e01",
                "resource": patient("p1", "Doe", "Jane", "1960-01-01", "female"),
                "request": {"method": "PUT", "url": "Patient/p1"},
            },
            {
                "fullUrl": "urn:uuid:2b7f3a55-5d0f-4c7e-8f83-6f0e2a1a9c02",
                "resource": resource,
                "request": {"method": "PUT", "url": CONDITIONAL_URL},
            },
        ],
    )


def control_bundle(folder: Path, kind: str = "batch") -> Path:
    """A good finding and one whose note holds U+0000 (a batch: each entry on its own)."""
    bad = {**finding("f2"), "note": [{"text": "a\x00b"}]}
    return write_bundle(
        folder,
        f"control-{kind}.json",
        [
            {"resource": finding(), "request": {"method": "PUT", "url": "Observation/f1"}},
            {"resource": bad, "request": {"method": "PUT", "url": "Observation/f2"}},
        ],
        kind,
    )


def assess(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", "assess", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_assess_takes_a_conditional_update_entry(tmp_path: Path) -> None:
    result = assess(conditional_bundle(tmp_path))
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    outputs = orjson.loads(result.stdout)["entry"]
    assert any(e["resource"]["resourceType"] == "RiskAssessment" for e in outputs)


def test_assess_names_the_control_character_and_exits_1(tmp_path: Path) -> None:
    result = assess(control_bundle(tmp_path))
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "Bundle.entry[1]" in line
    assert "Observation.note[0].text" in line
    assert "U+0000" in line


@pytest.mark.parametrize("workers", ["0", "2"])
def test_process_takes_a_conditional_update_entry(
    database_url: str, tmp_path: Path, workers: str
) -> None:
    result = run_process(
        database_url, [conditional_bundle(tmp_path)], tmp_path / "out", "--workers", workers
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "RiskAssessment.ndjson").read_bytes().strip()


def test_process_rejects_the_control_character_and_stores_the_rest(
    database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_process(database_url, [control_bundle(tmp_path)], out, "--workers", "0")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert "U+0000" in result.stderr
    assert "1 accepted, 1 rejected" in result.stderr
    [outcome] = [
        orjson.loads(line) for line in (out / "OperationOutcome.ndjson").read_bytes().splitlines()
    ]
    assert outcome["issue"][0]["code"] == "invalid"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].resource.note[0].text"]
    # The accepted finding was stored and derived from.
    assert (out / "RiskAssessment.ndjson").read_bytes().strip()


# --- a transaction is all or nothing; read errors; modifier extensions ---------------------------


def outcomes(out: Path) -> list[dict[str, Any]]:
    path = out / "OperationOutcome.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@pytest.mark.parametrize("workers", ["0", "2"])
def test_process_refuses_a_transaction_whole(
    database_url: str, tmp_path: Path, workers: str
) -> None:
    """R4 / CONTRACT 5: a transaction Bundle with one refused entry stores nothing; every entry
    gets an OperationOutcome; a batch of the same entries stores the good one."""
    out = tmp_path / "out"
    result = run_process(
        database_url,
        [control_bundle(tmp_path, "transaction")],
        out,
        "--workers",
        workers,
        "--chunk-size",
        "1",
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert "0 accepted, 2 rejected" in result.stderr
    first, second = outcomes(out)
    assert first["issue"][0]["code"] == "processing"
    assert "because of Bundle.entry[1]" in first["issue"][0]["diagnostics"]
    assert first["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert second["issue"][0]["expression"] == ["Bundle.entry[1].resource.note[0].text"]
    assert not (out / "RiskAssessment.ndjson").exists()
    batch = run_process(database_url, [control_bundle(tmp_path, "batch")], tmp_path / "b")
    assert "1 accepted, 1 rejected" in batch.stderr
    assert (tmp_path / "b" / "RiskAssessment.ndjson").read_bytes().strip()


def test_process_refuses_a_transaction_on_an_ndjson_line_whole(
    database_url: str, tmp_path: Path
) -> None:
    good = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": finding("f1"), "request": {"method": "PUT", "url": "Observation/f1"}},
        ],
    }
    bad = orjson.loads(control_bundle(tmp_path, "transaction").read_bytes())
    path = tmp_path / "lines.ndjson"
    path.write_bytes(orjson.dumps(bad) + b"\n" + orjson.dumps(good) + b"\n")
    result = run_process(database_url, [path], tmp_path / "out", "--workers", "0")
    assert "1 accepted, 2 rejected" in result.stderr, result.stderr
    expressions = [o["issue"][0]["expression"] for o in outcomes(tmp_path / "out")]
    assert expressions == [["Bundle.entry[0]"], ["Bundle.entry[1].resource.note[0].text"]]


def test_a_transaction_is_one_record_of_the_stream(tmp_path: Path) -> None:
    """However many entries, a transaction Bundle is one record: one chunk, one database
    transaction with its checkpoint, so a kill -9 never leaves half of it stored."""
    from fhir_app.fhir.stream import RecordKind, iter_records

    entries = [
        {"resource": finding(f"f{n}"), "request": {"method": "PUT", "url": f"Observation/f{n}"}}
        for n in range(5)
    ]
    records = list(iter_records(write_bundle(tmp_path, "t.json", entries)))
    assert [r.kind for r in records] == [RecordKind.TRANSACTION]
    collection = list(iter_records(write_bundle(tmp_path, "c.json", entries, "collection")))
    assert [r.kind for r in collection] == [RecordKind.RESOURCE] * 5


def test_an_unreadable_input_is_one_line_and_exit_2(database_url: str, tmp_path: Path) -> None:
    """An OSError while reading (EIO on /proc/self/mem) is a usage error, not a traceback."""
    result = run_process(database_url, [Path("/proc/self/mem")], tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: file '/proc/self/mem' could not be read: Input/output error"
    ]
    assessed = assess(Path("/proc/self/mem"))
    assert assessed.returncode == 2
    assert "Traceback" not in assessed.stderr
    assert "could not be read: Input/output error" in assessed.stderr


def test_a_read_error_during_a_run_is_one_line_and_exit_2(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that fails while being read (a lost mount): the run stops with exit 2 and one line."""
    from typer.testing import CliRunner

    from fhir_app import bulk, cli

    def failing(path: Path, *, start: int = 0) -> Any:
        raise OSError(5, "Input/output error")
        yield  # pragma: no cover

    monkeypatch.setattr(bulk, "iter_records", failing)
    monkeypatch.setenv("FHIR_APP_DATABASE_URL", database_url)
    cli.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli.app, ["process", str(control_bundle(tmp_path)), "--out", str(tmp_path / "o")]
        )
    finally:
        cli.get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "could not be read: Input/output error" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_process_refuses_a_finding_with_a_modifier_extension(
    database_url: str, tmp_path: Path
) -> None:
    negated = {
        **finding("f9"),
        "modifierExtension": [{"url": "http://example.org/negated", "valueBoolean": True}],
    }
    path = tmp_path / "m.ndjson"
    path.write_bytes(orjson.dumps(negated) + b"\n" + orjson.dumps(finding("f1")) + b"\n")
    result = run_process(database_url, [path], tmp_path / "out", "--workers", "0")
    assert result.returncode == 1
    [outcome] = outcomes(tmp_path / "out")
    assert (outcome["issue"][0]["code"], outcome["issue"][0]["expression"]) == (
        "not-supported",
        ["Observation.modifierExtension[0]"],
    )
    assessed = assess(path)
    assert assessed.returncode == 1
    assert "Observation.modifierExtension[0]" in assessed.stderr


def test_process_and_assess_take_an_ultrasound_study_and_a_leap_second(
    database_url: str, tmp_path: Path
) -> None:
    us = {
        "resourceType": "ImagingStudy",
        "id": "us1",
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "started": "2025-05-02T11:00:00Z",
        "series": [
            {
                "uid": "1.2.3",
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "US",
                },
            }
        ],
    }
    leap = {
        **finding("f1"),
        "effectiveDateTime": "2016-12-31T23:59:60Z",
        "derivedFrom": [{"reference": "ImagingStudy/us1"}],
    }
    path = tmp_path / "in.ndjson"
    path.write_bytes(orjson.dumps(us) + b"\n" + orjson.dumps(leap) + b"\n")
    result = run_process(database_url, [path], tmp_path / "out", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert "2 accepted, 0 rejected" in result.stderr
    [report] = [
        orjson.loads(line)
        for line in (tmp_path / "out" / "DiagnosticReport.ndjson").read_bytes().splitlines()
    ]
    assert "imagingStudy" not in report
    assessed = assess(path)
    assert assessed.returncode == 0, assessed.stderr
