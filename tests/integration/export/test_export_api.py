"""Bulk Data `$export` over HTTP: kick-off, status, manifest, files, filters, cancel, auth."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import Gate
from export_support import (
    ASYNC,
    EXPORTED_TYPES,
    by_id,
    exported,
    kick_off,
    manifest_of,
    rest_outputs,
    status_url,
    wait_until_done,
)
from integration.api.api_support import Serve, issues_text, post_json

from fhir_app.export import STATE_FILE
from fhir_app.service import FhirService


def assert_outcome(response: httpx.Response, status: int, text: str = "") -> None:
    """An OperationOutcome error with this status (and text in its diagnostics)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert text in issues_text(outcome)


def instant(text: str) -> datetime:
    """A FHIR instant as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def last_updated(resource: dict[str, Any]) -> datetime:
    """meta.lastUpdated of a resource."""
    return instant(resource["meta"]["lastUpdated"])


# --------------------------------------------------------------------------- the protocol


def test_kick_off_poll_manifest_and_download_equal_the_outputs_by_rest(
    loaded: FhirService, fhir: httpx.Client
) -> None:
    before = datetime.now(UTC)
    response = kick_off(fhir)
    assert response.status_code == 202
    assert response.json()["resourceType"] == "OperationOutcome"
    location = status_url(response)
    assert location.startswith(f"{fhir.base_url}$export-poll-status/")

    done = wait_until_done(fhir, location)
    assert done.status_code == 200, done.text
    assert done.headers["content-type"].startswith("application/json")
    assert done.headers["expires"].endswith(" GMT")
    manifest = done.json()
    assert set(manifest) == {"transactionTime", "request", "requiresAccessToken", "output", "error"}
    assert before <= instant(manifest["transactionTime"]) <= datetime.now(UTC)
    assert manifest["request"] == f"{fhir.base_url}$export"
    assert manifest["requiresAccessToken"] is False
    assert [item["type"] for item in manifest["output"]] == list(EXPORTED_TYPES)

    files = exported(fhir, manifest)
    for rtype in EXPORTED_TYPES:
        through_rest = rest_outputs(fhir, rtype)
        assert through_rest, rtype
        assert by_id(files[rtype]) == by_id(through_rest), rtype
    # Only outputs: no input Observation is exported.
    codes = {c["code"] for r in files["Observation"] for c in r["code"]["coding"]}
    assert codes == {"sins-total", "lesion-classification", "noms-inputs"}

    # The status stays answerable, and the same.
    assert fhir.get(location).json() == manifest


def test_a_running_export_is_202_with_progress_and_its_files_are_not_served(
    loaded: FhirService, serve: Serve, gate: Gate
) -> None:
    with httpx.Client(base_url=f"{serve(service_override=gate.service)}/") as client:
        location = status_url(kick_off(client))
        assert gate.entered.wait(timeout=30)
        running = client.get(location)
        assert running.status_code == 202
        assert running.headers["x-progress"] == "started"
        assert running.headers["retry-after"] == "2"
        job = location.rsplit("/", 1)[1]
        assert_outcome(client.get(f"$export-output/{job}/RiskAssessment.ndjson"), 404)
        gate.open()
        done = wait_until_done(client, location)
        assert done.status_code == 200, done.text
        assert exported(client, done.json())["RiskAssessment"]


def test_post_kick_off_with_parameters(loaded: FhirService, fhir: httpx.Client) -> None:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
            {"name": "_type", "valueString": "RiskAssessment"},
            {"name": "_type", "valueString": "DiagnosticReport"},
            {"name": "_since", "valueInstant": "2000-01-01T00:00:00Z"},
        ],
    }
    response = post_json(fhir, "$export", parameters, **ASYNC)
    manifest = manifest_of(fhir, response)
    assert manifest["request"] == f"{fhir.base_url}$export"
    assert [item["type"] for item in manifest["output"]] == ["RiskAssessment", "DiagnosticReport"]
    files = exported(fhir, manifest)
    assert by_id(files["RiskAssessment"]) == by_id(rest_outputs(fhir, "RiskAssessment"))

    bundle = {"resourceType": "Bundle", "type": "collection"}
    assert_outcome(post_json(fhir, "$export", bundle, **ASYNC), 400, "Parameters")
    no_value = {"resourceType": "Parameters", "parameter": [{"name": "_type"}]}
    assert_outcome(post_json(fhir, "$export", no_value, **ASYNC), 400, "_type")


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"_type": "RiskAssessment,Provenance"}, ["RiskAssessment", "Provenance"]),
        (
            [("_type", "Observation"), ("_type", "DiagnosticReport")],
            ["DiagnosticReport", "Observation"],
        ),
        ({"_type": " Observation , "}, ["Observation"]),
    ],
)
def test_type_chooses_the_files(
    loaded: FhirService, fhir: httpx.Client, params: Any, expected: list[str]
) -> None:
    manifest = manifest_of(fhir, kick_off(fhir, params))
    assert [item["type"] for item in manifest["output"]] == expected
    assert "_type=" in manifest["request"]
    files = exported(fhir, manifest)
    for rtype in expected:
        assert by_id(files[rtype]) == by_id(rest_outputs(fhir, rtype))


@pytest.mark.parametrize("types", ["Patient", "ImagingStudy", "Foo", "RiskAssessment,Condition"])
def test_unknown_or_input_types_are_400(fhir: httpx.Client, types: str) -> None:
    assert_outcome(kick_off(fhir, {"_type": types}), 400, "cannot be exported")


def test_since_exports_only_what_a_rederivation_changed(
    loaded: FhirService, fhir: httpx.Client
) -> None:
    everything = manifest_of(fhir, kick_off(fhir))
    time.sleep(0.01)
    since = datetime.now(UTC)
    time.sleep(0.01)
    # Withdrawing p03's pain finding derives p03's outputs again; p01 and p08 stay as they were.
    assert fhir.delete("Observation/p03-pain").status_code == 204

    changed = exported(fhir, manifest_of(fhir, kick_off(fhir, {"_since": since.isoformat()})))
    assert set(changed) == {"RiskAssessment", "DiagnosticReport", "Observation", "Provenance"}
    for rtype, resources in changed.items():
        assert all(last_updated(r) >= since for r in resources)
        expected = list(rest_outputs(fhir, rtype, _lastUpdated=f"ge{since.isoformat()}"))
        assert by_id(resources) == by_id(expected), rtype
        if rtype != "Provenance":
            assert {r["subject"]["reference"] for r in resources} == {"Patient/p03"}
    assert any(r["meta"]["versionId"] != "1" for r in changed["RiskAssessment"])
    provenance_of_p03 = by_id(rest_outputs(fhir, "Provenance", patient="p03"))
    assert set(by_id(changed["Provenance"])) <= set(provenance_of_p03)

    # `_since` is inclusive: the exact lastUpdated of an output brings it in.
    first = min(everything["output"], key=lambda item: item["type"])
    oldest = min(exported(fhir, everything)[first["type"]], key=last_updated)
    at = exported(
        fhir,
        manifest_of(
            fhir,
            kick_off(fhir, {"_since": oldest["meta"]["lastUpdated"], "_type": first["type"]}),
        ),
    )
    assert oldest["id"] in by_id(at[first["type"]])

    # Nothing changed after now: an empty output list.
    nothing = manifest_of(fhir, kick_off(fhir, {"_since": datetime.now(UTC).isoformat()}))
    assert nothing["output"] == []


@pytest.mark.parametrize(
    "since", ["2025-01-01", "2025-01-01T10:00:00", "2025-02-30T10:00:00Z", "yesterday"]
)
def test_since_must_be_an_instant(fhir: httpx.Client, since: str) -> None:
    assert_outcome(kick_off(fhir, {"_since": since}), 400, "_since")


@pytest.mark.parametrize("fmt", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
def test_output_formats(loaded: FhirService, fhir: httpx.Client, fmt: str) -> None:
    manifest = manifest_of(fhir, kick_off(fhir, {"_outputFormat": fmt, "_type": "Provenance"}))
    assert [item["type"] for item in manifest["output"]] == ["Provenance"]


def test_other_output_formats_are_400(fhir: httpx.Client) -> None:
    assert_outcome(kick_off(fhir, {"_outputFormat": "text/csv"}), 400, "_outputFormat")


def test_unsupported_parameters_are_400_unless_lenient(
    loaded: FhirService, fhir: httpx.Client
) -> None:
    assert_outcome(
        kick_off(fhir, {"_typeFilter": "RiskAssessment?status=final"}), 400, "_typeFilter"
    )
    assert_outcome(kick_off(fhir, {"patient": "Patient/p01"}), 400, "patient")
    assert_outcome(kick_off(fhir, {"colour": "blue"}), 400, "colour")
    lenient = kick_off(
        fhir,
        {"_typeFilter": "RiskAssessment?status=final", "colour": "blue"},
        Prefer="respond-async, handling=lenient",
    )
    assert manifest_of(fhir, lenient)["output"]


# --------------------------------------------------------------------------- refusals


def test_kick_off_without_respond_async_is_400(fhir: httpx.Client) -> None:
    assert_outcome(fhir.get("$export"), 400, "respond-async")
    assert_outcome(fhir.get("$export", headers={"Prefer": "return=minimal"}), 400)
    assert_outcome(post_json(fhir, "$export", {"resourceType": "Parameters"}), 400)


def test_kick_off_accepting_no_json_is_406(fhir: httpx.Client) -> None:
    assert_outcome(kick_off(fhir, Accept="application/xml"), 406)


@pytest.mark.parametrize("job", ["0123456789abcdef0123456789abcdef", "nope", "..%2F..%2Fetc"])
def test_unknown_job_is_404(fhir: httpx.Client, job: str) -> None:
    assert_outcome(fhir.get(f"$export-poll-status/{job}"), 404)
    assert_outcome(fhir.delete(f"$export-poll-status/{job}"), 404)
    assert_outcome(fhir.get(f"$export-output/{job}/Observation.ndjson"), 404)


def test_unknown_job_says_so(fhir: httpx.Client) -> None:
    response = fhir.get("$export-poll-status/0123456789abcdef0123456789abcdef")
    assert_outcome(response, 404, "is not known")


def test_only_the_files_of_the_manifest_are_served(
    loaded: FhirService, fhir: httpx.Client, export_dir: Path
) -> None:
    manifest = manifest_of(fhir, kick_off(fhir, {"_type": "RiskAssessment"}))
    job = manifest["output"][0]["url"].split("/")[-2]
    for name in (STATE_FILE, "Observation.ndjson", ".lock", "RiskAssessment.ndjson.part"):
        assert_outcome(fhir.get(f"$export-output/{job}/{name}"), 404)
    assert (export_dir / job / STATE_FILE).is_file()


# --------------------------------------------------------------------------- cancel


def test_cancel_a_complete_export_removes_its_files(
    loaded: FhirService, fhir: httpx.Client, export_dir: Path
) -> None:
    response = kick_off(fhir)
    location = status_url(response)
    manifest = manifest_of(fhir, response)
    job = location.rsplit("/", 1)[1]
    assert (export_dir / job).is_dir()

    cancelled = fhir.delete(location)
    assert cancelled.status_code == 202
    assert cancelled.json()["resourceType"] == "OperationOutcome"
    assert not (export_dir / job).exists()
    assert_outcome(fhir.get(location), 404)
    assert_outcome(fhir.get(manifest["output"][0]["url"]), 404)
    assert_outcome(fhir.delete(location), 404)
    assert list(export_dir.iterdir()) == []


def test_cancel_a_running_export_stops_it(
    loaded: FhirService, serve: Serve, gate: Gate, export_dir: Path
) -> None:
    with httpx.Client(base_url=f"{serve(service_override=gate.service)}/") as client:
        location = status_url(kick_off(client))
        assert gate.entered.wait(timeout=30)
        assert client.delete(location).status_code == 202
        assert_outcome(client.get(location), 404)
        gate.open()
        # The job stops at its next page and leaves nothing behind.
        deadline = time.monotonic() + 30
        while list(export_dir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(export_dir.iterdir()) == []
        assert_outcome(client.get(location), 404)


# --------------------------------------------------------------------------- auth


def test_tokens_protect_kick_off_status_and_files(loaded: FhirService, serve: Serve) -> None:
    base = serve(auth_tokens=["s3cret"])
    token = {"Authorization": "Bearer s3cret"}
    with httpx.Client(base_url=f"{base}/") as client:
        assert_outcome(kick_off(client), 401, "Authentication required")
        response = kick_off(client, **token)
        location = status_url(response)
        assert_outcome(client.get(location), 401)
        manifest = manifest_of(client, response, **token)
        assert manifest["requiresAccessToken"] is True
        url = manifest["output"][0]["url"]
        assert_outcome(client.get(url), 401)
        assert_outcome(client.get(url, headers={"Authorization": "Bearer nope"}), 401)
        assert exported(client, manifest, **token)
        assert_outcome(client.delete(location), 401)
        assert client.delete(location, headers=token).status_code == 202


# --------------------------------------------------------------------------- restarts


def test_status_survives_a_restart_and_an_interrupted_job_runs_again(
    loaded: FhirService, serve: Serve, export_dir: Path
) -> None:
    with httpx.Client(base_url=f"{serve()}/") as first:
        response = kick_off(first, {"_type": "RiskAssessment,DiagnosticReport"})
        job = status_url(response).rsplit("/", 1)[1]
        manifest = manifest_of(first, response)
        files = exported(first, manifest)

    # A new server process (here: a new application) on the same export folder.
    with httpx.Client(base_url=f"{serve()}/") as second:
        location = f"{second.base_url}$export-poll-status/{job}"
        again = second.get(location)
        assert again.status_code == 200
        assert again.json()["transactionTime"] == manifest["transactionTime"]
        assert exported(second, again.json()) == files

        # As if the server had stopped in the middle: state unfinished, files half written.
        state_path = export_dir / job / STATE_FILE
        state = orjson.loads(state_path.read_bytes())
        state.update(status="in-progress", output=[], completed=None, progress="halfway")
        state_path.write_bytes(orjson.dumps(state))
        (export_dir / job / "RiskAssessment.ndjson").write_bytes(b'{"half":')
        (export_dir / job / "DiagnosticReport.ndjson").unlink()

        resumed = wait_until_done(second, location)
        assert resumed.status_code == 200, resumed.text
        rerun = resumed.json()
        assert instant(rerun["transactionTime"]) > instant(manifest["transactionTime"])
        assert exported(second, rerun) == files


def test_finished_jobs_expire(loaded: FhirService, serve: Serve, export_dir: Path) -> None:
    # A retention of 0.36 s.
    with httpx.Client(base_url=f"{serve(export_retention_hours=1e-4)}/") as client:
        location = status_url(kick_off(client, {"_type": "DiagnosticReport"}))
        assert wait_until_done(client, location).status_code in (200, 404)
        job = location.rsplit("/", 1)[1]
        time.sleep(0.5)
        assert_outcome(client.get(location), 404)
        assert not (export_dir / job).exists()

        # A later kick-off removes expired jobs that nobody polls.
        other = status_url(kick_off(client, {"_type": "DiagnosticReport"}))
        assert wait_until_done(client, other).status_code in (200, 404)
        time.sleep(0.5)
        status_url(kick_off(client, {"_type": "DiagnosticReport"}))
        assert not (export_dir / other.rsplit("/", 1)[1]).exists()
