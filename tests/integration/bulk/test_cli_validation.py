"""`fhir-app process` and `assess` with strict R4 validation (CONTRACT 3b): a resource R4 JSON
forbids is a rejected input with an OperationOutcome line naming the element; a Bundle breaking
the Bundle rules has its entries rejected (all of them, unless it is a batch); the rest is
stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from bulk_support import run_process

from fhir_app.fhir.samples import imaging_study, observation

U1 = "urn:uuid:6a1f0d3e-0000-4000-8000-000000000001"
U2 = "urn:uuid:6a1f0d3e-0000-4000-8000-000000000002"
U3 = "urn:uuid:6a1f0d3e-0000-4000-8000-000000000003"


def finding(obs_id: str) -> dict[str, Any]:
    return observation(obs_id, "p1", "appearance", "lytic", level="L1", effective="2025-01-01")


def outcomes(out: Path) -> list[dict[str, Any]]:
    path = out / "OperationOutcome.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def expressions(outcome: dict[str, Any]) -> list[str]:
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def test_process_rejects_what_r4_json_forbids_and_stores_the_rest(
    database_url: str, tmp_path: Path
) -> None:
    study = imaging_study("s1", "p1", "CT", started="2025-01-01", uid="1.2.3")
    lines = [
        finding("f1"),
        {**finding("f2"), "issued": None},
        {**study, "started": 12345},
        {**finding("f3"), "note": []},
    ]
    source = tmp_path / "in.ndjson"
    source.write_bytes(b"\n".join(orjson.dumps(r) for r in lines) + b"\n")
    out = tmp_path / "out"
    result = run_process(database_url, [source], out, "--workers", "0")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert "1 accepted, 3 rejected" in result.stderr
    assert [expressions(o) for o in outcomes(out)] == [
        ["Observation.issued"],
        ["ImagingStudy.started"],
        ["Observation.note"],
    ]
    assert (out / "RiskAssessment.ndjson").read_bytes().strip()


def bundle(kind: str) -> dict[str, Any]:
    """Three findings; the third references a urn:uuid no entry has."""
    dangling = {**finding("f3"), "derivedFrom": [{"reference": U3.replace("3", "9")}]}
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": U1,
                "resource": finding("f1"),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": U2,
                "resource": finding("f2"),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": U3,
                "resource": dangling,
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


@pytest.mark.parametrize(("kind", "rejected"), [("transaction", 3), ("batch", 1)])
def test_process_rejects_the_entries_of_a_bundle_breaking_a_rule(
    database_url: str, tmp_path: Path, kind: str, rejected: int
) -> None:
    source = tmp_path / "bundle.json"
    source.write_bytes(orjson.dumps(bundle(kind)))
    out = tmp_path / "out"
    result = run_process(database_url, [source], out, "--workers", "0")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert f"{3 - rejected} accepted, {rejected} rejected" in result.stderr
    found = outcomes(out)
    assert len(found) == rejected
    if kind == "batch":
        [outcome] = found
        assert "Bundle.entry[2].resource.derivedFrom.reference" in expressions(outcome)
    else:
        # Read whole (a transaction is one record): the faulty entry names its element, the
        # others the entry that refused the transaction.
        assert "Bundle.entry[2].resource.derivedFrom[0].reference" in expressions(found[2])
        for outcome in found[:2]:
            assert "because of Bundle.entry[2]" in outcome["issue"][0]["diagnostics"]


def test_assess_names_the_dangling_reference(tmp_path: Path) -> None:
    source = tmp_path / "bundle.json"
    source.write_bytes(orjson.dumps(bundle("transaction")))
    result = subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", "assess", str(source)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert "Bundle.entry[2].resource.derivedFrom[0].reference" in result.stderr
