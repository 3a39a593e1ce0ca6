"""Helpers of the bulk export tests: kick-off, polling, downloads and the outputs by REST."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from fhir_app.fhir import codes

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
EXPORTED_TYPES = ("RiskAssessment", "DiagnosticReport", "Observation", "Provenance")
# The output Observations: SINS scores and classifications (CONTRACT 4a, 4b).
OUTPUT_OBSERVATION_CODES = (
    f"{codes.CS_SINS}|{codes.SINS_TOTAL},{codes.CS_SPINE_FINDING}|{codes.LESION_CLASSIFICATION},"
    f"{codes.CS_SPINE_FINDING}|{codes.NOMS_INPUTS}"
)


def kick_off(client: httpx.Client, params: Any = None, **headers: str) -> httpx.Response:
    """GET $export with Prefer: respond-async (and any other headers)."""
    return client.get("$export", params=params, headers={**ASYNC, **headers})


def status_url(response: httpx.Response) -> str:
    """The status URL of an accepted kick-off."""
    assert response.status_code == 202, response.text
    location = response.headers["content-location"]
    assert "/$export-poll-status/" in location
    return location


def wait_until_done(
    client: httpx.Client, url: str, timeout: float = 60, **headers: str
) -> httpx.Response:
    """Poll a status URL until it stops answering 202; checks every 202 on the way."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url, headers=headers)
        if response.status_code != 202:
            return response
        assert response.headers["x-progress"]
        assert response.headers["retry-after"].isdigit()
        assert time.monotonic() < deadline, f"export still running: {response.headers}"
        time.sleep(0.05)


def manifest_of(client: httpx.Client, kick_off_response: httpx.Response, **headers: str) -> Any:
    """The manifest of a kick-off, once complete."""
    done = wait_until_done(client, status_url(kick_off_response), **headers)
    assert done.status_code == 200, done.text
    assert done.headers["content-type"].startswith("application/json")
    return done.json()


def download(client: httpx.Client, url: str, **headers: str) -> list[dict[str, Any]]:
    """The resources of one NDJSON file of a manifest."""
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    assert response.content.endswith(b"\n")
    return [orjson.loads(line) for line in response.content.splitlines()]


def exported(
    client: httpx.Client, manifest: Any, **headers: str
) -> dict[str, list[dict[str, Any]]]:
    """Every file of a manifest, downloaded, by type; checks the counts and types."""
    assert manifest["error"] == []
    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        assert item["type"] not in by_type, "one file per type"
        resources = download(client, item["url"], **headers)
        assert len(resources) == item["count"]
        assert {r["resourceType"] for r in resources} == {item["type"]}
        by_type[item["type"]] = resources
    return by_type


def rest_outputs(client: httpx.Client, rtype: str, **params: str) -> list[dict[str, Any]]:
    """The current outputs of a type through REST search, every page."""
    query = {"_count": "50", **params}
    if rtype == "Observation":
        query["code"] = OUTPUT_OBSERVATION_CODES
    response = client.get(rtype, params=query)
    found: list[dict[str, Any]] = []
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        found.extend(entry["resource"] for entry in bundle.get("entry", []))
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            return found
        response = client.get(following[0])


def by_id(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Resources keyed by id (ids are unique within one type)."""
    keyed = {r["id"]: r for r in resources}
    assert len(keyed) == len(resources), "a resource appears twice"
    return keyed
