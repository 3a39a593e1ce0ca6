"""Conditional update, delete and create over REST and inside transactions and batches (issue 12,
FHIR R4 http.html#cond-update, #3.1.0.7.1, #ccreate), on SQLite and on PostgreSQL.

Conditional delete deletes single resources (CapabilityStatement `conditionalDelete: single`):
several matches are 412 and nothing is deleted.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from api_support import FHIR_JSON, issues_text, post_json, put_json, snapshot
from fhirpy import SyncFHIRClient
from sqlalchemy import Engine

from fhir_app.fhir.samples import observation

SYSTEM = "http://hospital.example/obs"


def identified(number: str, *, patient: str = "p1", value: str = "lytic") -> dict[str, Any]:
    """A lesion-appearance finding at L1 with the hospital identifier `number`, without an id."""
    body = observation("x", patient, "appearance", value, level="L1", effective="2025-01-01")
    del body["id"]
    body["identifier"] = [{"system": SYSTEM, "value": number}]
    return body


def criteria(number: str) -> str:
    return f"identifier={SYSTEM}|{number}"


def stored_with(fhir: httpx.Client, number: str) -> list[dict[str, Any]]:
    """The current Observations carrying identifier `number`."""
    found = fhir.get("Observation", params={"identifier": f"{SYSTEM}|{number}"})
    assert found.status_code == 200, found.text
    return [entry["resource"] for entry in found.json().get("entry", [])]


def entry(resource: dict[str, Any] | None, method: str, url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        out["resource"] = resource
    return out


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


# --------------------------------------------------------------------------- over REST


def test_conditional_update_creates_then_updates_the_one_match(fhir: httpx.Client) -> None:
    created = put_json(fhir, f"Observation?{criteria('7')}", identified("7"))
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert created.headers["location"].endswith(f"Observation/{rid}/_history/1")

    updated = put_json(fhir, f"Observation?{criteria('7')}", identified("7", value="blastic"))
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == rid
    assert updated.json()["meta"]["versionId"] == "2"
    [current] = stored_with(fhir, "7")
    assert current["valueCodeableConcept"]["coding"][0]["code"] == "blastic"


def test_conditional_update_with_several_matches_is_412(fhir: httpx.Client, engine: Engine) -> None:
    for rid in ("a1", "a2"):
        put_json(fhir, f"Observation/{rid}", {**identified("8"), "id": rid}).raise_for_status()
    before = snapshot(engine)
    refused = put_json(fhir, f"Observation?{criteria('8')}", identified("8", value="mixed"))
    assert refused.status_code == 412, refused.text
    assert refused.json()["issue"][0]["code"] == "multiple-matches"
    assert snapshot(engine) == before


def test_conditional_update_keeps_the_matched_id(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/m1", {**identified("9"), "id": "m1"}).raise_for_status()
    other_id = put_json(fhir, f"Observation?{criteria('9')}", {**identified("9"), "id": "zz"})
    assert other_id.status_code == 400, other_id.text
    assert "m1" in issues_text(other_id.json())
    same_id = put_json(fhir, f"Observation?{criteria('9')}", {**identified("9"), "id": "m1"})
    assert same_id.status_code == 200, same_id.text


def test_conditional_update_honours_if_match(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/v1", {**identified("10"), "id": "v1"}).raise_for_status()
    stale = put_json(
        fhir,
        f"Observation?{criteria('10')}",
        identified("10", value="mixed"),
        **{"If-Match": 'W/"3"'},
    )
    assert stale.status_code == 412, stale.text
    fresh = put_json(
        fhir,
        f"Observation?{criteria('10')}",
        identified("10", value="mixed"),
        **{"If-Match": 'W/"1"'},
    )
    assert fresh.status_code == 200, fresh.text


def test_conditional_update_without_criteria_or_of_outputs(fhir: httpx.Client) -> None:
    assert put_json(fhir, "Observation", identified("11")).status_code == 400
    assert put_json(fhir, "Observation?_format=json", identified("11")).status_code == 400
    refused = put_json(fhir, "RiskAssessment?identifier=a|b", {"resourceType": "RiskAssessment"})
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"


def test_conditional_delete_deletes_the_one_match_and_derives_again(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/d1", {**identified("12"), "id": "d1"}).raise_for_status()
    report = fhir.get("DiagnosticReport", params={"patient": "p1"}).json()
    assert report["total"] == 1
    deleted = fhir.delete(f"Observation?{criteria('12')}")
    assert deleted.status_code == 204, deleted.text
    assert fhir.get("Observation/d1").status_code == 410
    # The only finding went: the report is withdrawn (CONTRACT 3: a DELETE withdraws it).
    [withdrawn] = [e["resource"] for e in fhir.get("DiagnosticReport/_history").json()["entry"]][:1]
    assert withdrawn["status"] == "entered-in-error"


def test_conditional_delete_without_match_deletes_nothing(
    fhir: httpx.Client, engine: Engine
) -> None:
    put_json(fhir, "Observation/d2", {**identified("13"), "id": "d2"}).raise_for_status()
    before = snapshot(engine)
    nothing = fhir.delete(f"Observation?{criteria('404')}")
    assert nothing.status_code == 204, nothing.text
    told = fhir.delete(
        f"Observation?{criteria('404')}", headers={"Prefer": "return=OperationOutcome"}
    )
    assert told.status_code == 200
    assert "No Observation matched: nothing deleted" in issues_text(told.json())
    assert snapshot(engine) == before


def test_conditional_delete_with_several_matches_is_412(fhir: httpx.Client, engine: Engine) -> None:
    for rid in ("d3", "d4"):
        put_json(fhir, f"Observation/{rid}", {**identified("14"), "id": rid}).raise_for_status()
    before = snapshot(engine)
    refused = fhir.delete(f"Observation?{criteria('14')}")
    assert refused.status_code == 412, refused.text
    assert snapshot(engine) == before
    assert fhir.delete("Observation").status_code == 400  # no criteria: not "delete them all"


def test_a_create_with_criteria_in_the_query_is_conditional(fhir: httpx.Client) -> None:
    """`POST /Observation?identifier=...` (fhirpy's get_or_create): no duplicate."""
    first = post_json(fhir, f"Observation?{criteria('15')}", identified("15"))
    assert first.status_code == 201, first.text
    again = post_json(fhir, f"Observation?{criteria('15')}", identified("15", value="mixed"))
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert len(stored_with(fhir, "15")) == 1
    both = post_json(
        fhir, f"Observation?{criteria('15')}", identified("15"), **{"If-None-Exist": criteria("15")}
    )
    assert both.status_code == 400


def test_fhirpy_get_or_create_and_conditional_writes(base_url: str) -> None:
    client = SyncFHIRClient(base_url)
    resource = client.resource("Observation", **identified("16"))
    search = client.resources("Observation").search(identifier=f"{SYSTEM}|16")
    made, created = search.get_or_create(resource)
    assert created
    found, created_again = search.get_or_create(resource)
    assert not created_again
    assert found.id == made.id
    updated, created_by_update = search.update(
        client.resource("Observation", **identified("16", value="mixed"))
    )
    assert not created_by_update
    assert updated.id == made.id
    search.delete()
    assert search.fetch() == []


# --------------------------------------------------------------------------- in Bundles


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_conditional_delete_and_update_entries(fhir: httpx.Client, kind: str) -> None:
    put_json(fhir, "Observation/b1", {**identified("20"), "id": "b1"}).raise_for_status()
    put_json(fhir, "Observation/b2", {**identified("21"), "id": "b2"}).raise_for_status()
    answer = post_json(
        fhir,
        "",
        bundle(
            kind,
            entry(None, "DELETE", f"Observation?{criteria('20')}"),
            entry(identified("21", value="blastic"), "PUT", f"Observation?{criteria('21')}"),
            entry(identified("22"), "PUT", f"Observation?{criteria('22')}"),
            entry(None, "DELETE", f"Observation?{criteria('999')}"),
        ),
    )
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses == ["204 No Content", "200 OK", "201 Created", "204 No Content"]
    assert fhir.get("Observation/b1").status_code == 410
    assert fhir.get("Observation/b2").json()["meta"]["versionId"] == "2"
    assert len(stored_with(fhir, "22")) == 1


def test_a_transaction_with_an_ambiguous_conditional_delete_stores_nothing(
    fhir: httpx.Client, engine: Engine
) -> None:
    for rid in ("t1", "t2"):
        put_json(fhir, f"Observation/{rid}", {**identified("30"), "id": rid}).raise_for_status()
    before = snapshot(engine)
    answer = post_json(
        fhir,
        "",
        bundle(
            "transaction",
            entry(identified("31"), "POST", "Observation"),
            entry(None, "DELETE", f"Observation?{criteria('30')}"),
        ),
    )
    assert answer.status_code == 412, answer.text
    assert "Bundle.entry[1]" in issues_text(answer.json())
    assert snapshot(engine) == before


def test_a_batch_answers_an_ambiguous_conditional_delete_alone(fhir: httpx.Client) -> None:
    for rid in ("u1", "u2"):
        put_json(fhir, f"Observation/{rid}", {**identified("40"), "id": rid}).raise_for_status()
    answer = post_json(
        fhir,
        "",
        bundle(
            "batch",
            entry(None, "DELETE", f"Observation?{criteria('40')}"),
            entry(identified("41"), "POST", "Observation"),
        ),
    )
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["entry"]
    assert first["response"]["status"] == "412"
    assert first["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert second["response"]["status"] == "201 Created"
    assert len(stored_with(fhir, "40")) == 2


def test_conditional_delete_of_an_output_type_in_a_batch_is_405(fhir: httpx.Client) -> None:
    answer = post_json(
        fhir, "", bundle("batch", entry(None, "DELETE", "RiskAssessment?identifier=a|b"))
    )
    assert answer.json()["entry"][0]["response"]["status"] == "405"


def test_conditional_entries_with_unreadable_criteria_are_400(fhir: httpx.Client) -> None:
    answer = fhir.delete("Observation", params={"identifier": "a\x00b"}, headers=FHIR_JSON)
    assert answer.status_code == 400, answer.text


def test_parallel_conditional_updates_create_one_resource(base_url: str) -> None:
    """Eight clients at once, none matching yet: one resource is created, the others update it
    (the conditional-create claim decides, as for If-None-Exist)."""
    clients = 8
    barrier = threading.Barrier(clients, timeout=30)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=f"{base_url}/", timeout=120) as client:
            client.get("metadata").raise_for_status()
            barrier.wait()
            return put_json(client, f"Observation?{criteria('50')}", identified("50"))

    with ThreadPoolExecutor(max_workers=clients) as pool:
        responses = list(pool.map(one, range(clients)))
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    assert [r.status_code for r in responses].count(201) == 1
    assert len({r.json()["id"] for r in responses}) == 1
    with httpx.Client(base_url=f"{base_url}/") as fhir:
        assert len(stored_with(fhir, "50")) == 1
