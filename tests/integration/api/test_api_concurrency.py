"""Concurrent HTTP requests: the database, not luck, decides who creates a resource.

Eight threads, each with its own HTTP connection, start together at a barrier and send the same
request to the live server, whose thread pool runs them at once (on PostgreSQL truly in
parallel; SQLite serialises the writers on its lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
from api_support import post_json, put_json

from fhir_app.fhir.samples import observation

CLIENTS = 8
R = TypeVar("R")


def together(base_url: str, request: Callable[[httpx.Client], R]) -> list[R]:
    """Send `request` from CLIENTS threads at once, each on its own connection."""
    barrier = threading.Barrier(CLIENTS, timeout=30)

    def one(_: int) -> R:
        with httpx.Client(base_url=f"{base_url}/", timeout=120) as client:
            client.get("metadata").raise_for_status()  # connect before the race starts
            barrier.wait()
            return request(client)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(one, range(CLIENTS)))


def lesion_finding() -> dict[str, Any]:
    """A finding with a business identifier, the key of conditional creates."""
    body = observation("ignored", "pc", "appearance", "lytic", level="T8", effective="2025-03-01")
    body.pop("id")
    body["identifier"] = [{"system": "urn:ris:finding", "value": "acc-77"}]
    return body


def test_parallel_conditional_creates_make_one_resource(base_url: str, fhir: httpx.Client) -> None:
    criteria = "identifier=urn:ris:finding|acc-77"
    responses = together(
        base_url,
        lambda c: post_json(c, "Observation", lesion_finding(), **{"If-None-Exist": criteria}),
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (CLIENTS - 1) + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    found = fhir.get("Observation", params={"identifier": "urn:ris:finding|acc-77"}).json()
    assert found["total"] == 1
    # One input, derived once: one RiskAssessment at version 1.
    risks = fhir.get("RiskAssessment", params={"patient": "pc"}).json()
    assert [e["resource"]["meta"]["versionId"] for e in risks["entry"]] == ["1"]


def test_parallel_put_creates_of_one_id_make_one_resource(
    base_url: str, fhir: httpx.Client
) -> None:
    body = {**lesion_finding(), "id": "same-id"}
    responses = together(base_url, lambda c: put_json(c, "Observation/same-id", body))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (CLIENTS - 1) + [201], [r.text for r in responses]
    assert {r.headers["etag"] for r in responses} == {'W/"1"'}
    history = fhir.get("Observation/same-id/_history").json()
    assert history["total"] == 1
    assert fhir.get("Observation", params={"_id": "same-id"}).json()["total"] == 1


def test_parallel_updates_each_make_a_version(base_url: str, fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/busy", {**lesion_finding(), "id": "busy"}).raise_for_status()
    counter = iter(range(CLIENTS))
    lock = threading.Lock()

    def update(client: httpx.Client) -> httpx.Response:
        with lock:
            index = next(counter)
        body = {**lesion_finding(), "id": "busy", "note": [{"text": f"reading {index}"}]}
        return put_json(client, "Observation/busy", body)

    responses = together(base_url, update)
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    versions = sorted(int(r.headers["etag"].strip('W/"')) for r in responses)
    assert versions == list(range(2, CLIENTS + 2))
    assert fhir.get("Observation/busy/_history").json()["total"] == CLIENTS + 1
