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


def write_bundle(folder: Path, name: str, entries: list[dict[str, Any]]) -> Path:
    path = folder / name
    path.write_bytes(
        orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    )
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


def control_bundle(folder: Path) -> Path:
    """A good finding and one whose note holds U+0000."""
    bad = {**finding("f2"), "note": [{"text": "a\x00b"}]}
    return write_bundle(
        folder,
        "control.json",
        [
            {"resource": finding(), "request": {"method": "PUT", "url": "Observation/f1"}},
            {"resource": bad, "request": {"method": "PUT", "url": "Observation/f2"}},
        ],
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
    assert outcome["issue"][0]["expression"] == ["Observation.note[0].text"]
    # The accepted finding was stored and derived from.
    assert (out / "RiskAssessment.ndjson").read_bytes().strip()
