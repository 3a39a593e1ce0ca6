"""Findings of the security review (SMART v2 scopes, discovery, audit completeness), each with
the request that showed it: a scope reads nothing through a write it allows; discovery at the
FHIR base and only what is configured; every entry of a Bundle, every POST `_search` criterion
and every routed 405 audited; static tokens bound to loopback; the failure throttle spares
valid tokens; patient contexts confirm nothing of other patients; no 500s from client input.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_support import FHIR_JSON, Serve, example, post_json, put_json
from security_support import IdentityProvider, bearer

from fhir_app.service import FhirService

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
STATIC = "s" * 40


@pytest.fixture
def idp(tmp_path: Path) -> IdentityProvider:
    return IdentityProvider(tmp_path)


@pytest.fixture
def base(serve: Serve, idp: IdentityProvider, service: FhirService) -> str:
    """A SMART server with patients p01 and p03 stored."""
    for name in ("patient-01-stable-blastic.json", "patient-03-unstable.json"):
        service.transaction(example(name))
    return serve(**idp.settings())


@pytest.fixture
def client(base: str, idp: IdentityProvider) -> Iterator[Callable[..., httpx.Client]]:
    made: list[httpx.Client] = []

    def make(scope: str, **claims: Any) -> httpx.Client:
        one = httpx.Client(
            base_url=f"{base}/", headers=bearer(idp.token(scope, **claims)), timeout=60
        )
        made.append(one)
        return one

    yield make
    for one in made:
        one.close()


def events_of(client: Callable[..., httpx.Client], client_id: str) -> list[dict[str, Any]]:
    """The AuditEvents of one client, oldest first."""
    auditor = client("system/AuditEvent.rs", client_id="auditor", sub="auditor")
    found = auditor.get("AuditEvent", params={"agent": client_id, "_count": "100"})
    return [entry["resource"] for entry in found.json()["entry"]]


def new_observation(patient: str, rid: str | None = None) -> dict[str, Any]:
    body = next(
        e["resource"]
        for e in example("patient-01-stable-blastic.json")["entry"]
        if e["resource"]["id"] == "p01-primary"
    )
    body = {**body, "subject": {"reference": f"Patient/{patient}"}}
    body.pop("id")
    return body if rid is None else {**body, "id": rid}


def binary_patch(operations: Any) -> dict[str, Any]:
    return {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(orjson.dumps(operations)).decode(),
    }


def batch(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch", "entry": list(entries)}


def is_outcome_without_content(response: httpx.Response) -> None:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert "valueCodeableConcept" not in response.text
    assert "Patient/p01" not in response.text


# --------------------------------------------------------------------------- 1. conditional create


def test_a_conditional_create_needs_search_and_answers_a_match_only_with_read(
    client: Callable[..., httpx.Client],
) -> None:
    body = new_observation("p03")
    create_only = client("system/Observation.c")
    refused = post_json(create_only, "Observation", body, **{"If-None-Exist": "_id=p01-primary"})
    assert refused.status_code == 403
    assert "system/Observation.s" in refused.text
    assert post_json(create_only, "Observation?_id=p01-primary", body).status_code == 403
    in_batch = batch(
        {
            "request": {"method": "POST", "url": "Observation", "ifNoneExist": "_id=p01-primary"},
            "resource": body,
        }
    )
    assert post_json(create_only, "", in_batch).status_code == 403

    searcher = client("system/Observation.cs", client_id="searcher")
    matched = post_json(searcher, "Observation", body, **{"If-None-Exist": "_id=p01-primary"})
    assert matched.status_code == 200
    is_outcome_without_content(matched)
    [entry] = post_json(searcher, "", in_batch).json()["entry"]
    assert entry["response"]["status"] == "200 OK"
    assert "resource" not in entry
    assert entry["response"]["outcome"]["resourceType"] == "OperationOutcome"

    reader = client("system/Observation.crs")
    full = post_json(reader, "Observation", body, **{"If-None-Exist": "_id=p01-primary"})
    assert full.json()["id"] == "p01-primary"
    # The AuditEvent of the conditional create records the search it made.
    [create_event, _batch, batch_entry] = events_of(client, "searcher")
    assert create_event["subtype"][0]["code"] == "create"
    query = next(e for e in create_event["entity"] if e["role"]["code"] == "24")
    assert base64.b64decode(query["query"]).decode() == "_id="
    assert any(e["role"]["code"] == "24" for e in batch_entry["entity"])


# --------------------------------------------------------------------------- 2. patch without r


def test_an_update_scope_reads_nothing_through_patch_or_put(
    client: Callable[..., httpx.Client],
) -> None:
    updater = client("system/Observation.u")
    same = orjson.dumps([{"op": "test", "path": "/status", "value": "final"}])
    guess = orjson.dumps([{"op": "test", "path": "/status", "value": "amended"}])
    # A `test` operation compares the stored resource with the caller's guess: 200 or 422 would
    # tell what is stored, so without `r` it is refused before the resource is looked at.
    for probe in (same, guess):
        refused = updater.patch("Observation/p01-primary", content=probe, headers=JSON_PATCH)
        assert refused.status_code == 403
        assert "system/Observation.r" in refused.text
        assert "final" not in refused.text
    unchanged = orjson.dumps([{"op": "replace", "path": "/status", "value": "final"}])
    noop = updater.patch("Observation/p01-primary", content=unchanged, headers=JSON_PATCH)
    assert noop.status_code == 200
    is_outcome_without_content(noop)
    merge = updater.patch("Observation/p01-primary", content=b"{}", headers=MERGE_PATCH)
    assert merge.status_code == 200
    is_outcome_without_content(merge)
    stored = client("system/Observation.r").get("Observation/p01-primary").json()
    stored.pop("meta")
    put = put_json(updater, "Observation/p01-primary", stored)
    assert put.status_code == 200
    is_outcome_without_content(put)
    entry = {
        "request": {"method": "PATCH", "url": "Observation/p01-primary"},
        "resource": binary_patch([{"op": "replace", "path": "/status", "value": "final"}]),
    }
    [answered] = post_json(updater, "", batch(entry)).json()["entry"]
    assert answered["response"]["status"] == "200 OK"
    assert "resource" not in answered
    tested = {**entry, "resource": binary_patch([{"op": "test", "path": "/status", "value": "x"}])}
    assert post_json(updater, "", batch(tested)).status_code == 403
    # With read on the type, a failed test still names the path only, never the stored value.
    both = client("system/Observation.ru")
    failed = both.patch("Observation/p01-primary", content=guess, headers=JSON_PATCH)
    assert failed.status_code == 422
    assert "/status" in failed.text
    assert "final" not in failed.text
    assert "<class" not in failed.text
    # With read on the type, the stored resource is the answer, as before.
    both = client("system/Observation.ru")
    read_too = both.patch("Observation/p01-primary", content=same, headers=JSON_PATCH)
    assert read_too.json()["resourceType"] == "Observation"


# --------------------------------------------------------------------------- 3. discovery


def test_discovery_at_the_fhir_base_says_only_what_is_configured(
    serve: Serve, idp: IdentityProvider
) -> None:
    smart = serve(**idp.settings())
    static = serve(auth_tokens=[STATIC])
    with httpx.Client() as anonymous:
        at_root = anonymous.get(f"{smart.removesuffix('/fhir')}/.well-known/smart-configuration")
        at_base = anonymous.get(f"{smart}/.well-known/smart-configuration")
        assert at_base.status_code == 200
        assert at_base.json() == at_root.json()
        assert "permission-v2" in at_base.json()["capabilities"]
        local = anonymous.get(f"{static}/.well-known/smart-configuration")
        assert local.status_code == 200
        document = local.json()
        assert document["capabilities"] == []
        assert "authorization_code" not in local.text
        assert "client-confidential-asymmetric" not in local.text
        security = anonymous.get(f"{static}/metadata").json()["rest"][0]["security"]
    assert "service" not in security
    assert "SMART-on-FHIR" not in orjson.dumps(security).decode()


# --------------------------------------------------------------------------- 4. audit


def part_of(event: dict[str, Any]) -> str | None:
    for entity in event.get("entity", []):
        for detail in entity.get("detail", []):
            if detail["type"] == "bundle-event":
                return str(detail["valueString"])
    return None


def test_each_entry_of_a_batch_is_audited_with_its_own_outcome(
    client: Callable[..., httpx.Client],
) -> None:
    writer = client("system/*.cruds", client_id="tx-writer")
    answer = post_json(
        writer,
        "",
        batch(
            {
                "request": {"method": "PUT", "url": "Observation/tx-a"},
                "resource": new_observation("p01", "tx-a"),
            },
            {"request": {"method": "DELETE", "url": "Observation/tx-b"}},
            {"request": {"method": "GET", "url": "Observation/p01-nothing"}},
            {"request": {"method": "GET", "url": "Observation/p03-align"}},
            {"request": {"method": "GET", "url": "Observation?patient=p03&code=abc"}},
        ),
    )
    assert [e["response"]["status"][:3] for e in answer.json()["entry"]] == [
        "201",
        "204",
        "404",
        "200",
        "200",
    ]
    bundle_event, *entries = events_of(client, "tx-writer")
    assert bundle_event["subtype"][0]["code"] == "batch"
    assert {part_of(e) for e in entries} == {f"AuditEvent/{bundle_event['id']}"}
    seen = [
        (
            e["subtype"][0]["code"],
            e["action"],
            e["outcome"],
            e["entity"][0]["what"].get("reference") or e["entity"][0]["what"].get("type"),
        )
        for e in entries
    ]
    assert seen == [
        ("update", "U", "0", "Observation/tx-a"),
        ("delete", "D", "0", "Observation/tx-b"),
        ("read", "R", "4", "Observation/p01-nothing"),
        ("read", "R", "0", "Observation/p03-align"),
        ("search-type", "E", "0", "Observation"),
    ]
    assert {"reference": "Patient/p03"} in [e["what"] for e in entries[3]["entity"]]
    search = entries[4]["entity"][0]
    assert base64.b64decode(search["query"]).decode() == "patient=&code=abc"
    assert "p03" not in search["description"]


def test_post_search_criteria_and_routed_405s_are_audited(
    client: Callable[..., httpx.Client],
) -> None:
    reader = client("system/*.rs", client_id="probe")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    found = reader.post("Observation/_search", content=b"patient=p01&code=abc", headers=form)
    assert found.status_code == 200
    refused = [
        reader.post("AuditEvent", content=b"{}", headers=FHIR_JSON),
        reader.put("AuditEvent/abc", content=b"{}", headers=FHIR_JSON),
        reader.delete("AuditEvent/abc"),
        reader.delete("Observation/p01-primary/_history/1"),
        reader.post("Observation/p01-primary", content=b"{}", headers=FHIR_JSON),
    ]
    assert [r.status_code for r in refused] == [405] * 5
    search, *refusals = events_of(client, "probe")
    query = search["entity"][0]
    assert base64.b64decode(query["query"]).decode() == "patient=&code=abc"
    assert query["description"] == "/fhir/Observation/_search?patient=&code=abc"
    assert [(e["action"], e["outcome"]) for e in refusals] == [
        ("C", "4"),
        ("U", "4"),
        ("D", "4"),
        ("D", "4"),
        ("C", "4"),
    ]
    assert refusals[3]["entity"][0]["what"]["reference"] == "Observation/p01-primary"


# --------------------------------------------------------------------------- 5. static tokens


def test_a_static_token_is_refused_on_a_forwarded_request(
    serve: Serve, service: FhirService
) -> None:
    base = serve(auth_tokens=[STATIC])
    with httpx.Client(base_url=f"{base}/", headers=bearer(STATIC)) as local:
        assert local.get("Observation").status_code == 200
        for header in ({"X-Forwarded-For": "203.0.113.5"}, {"Forwarded": "for=203.0.113.5"}):
            relayed = local.get("Observation", headers=header)
            assert relayed.status_code == 401
            assert "loopback only" in relayed.text


# --------------------------------------------------------------------------- 7, 9, 10 patients


def test_a_patient_context_learns_nothing_of_other_patients_through_writes(
    client: Callable[..., httpx.Client],
) -> None:
    mine = client("patient/*.cruds", patient="p03")
    other = "ImagingStudy?identifier=urn:oid:1.2.826.0.1.1001"  # p01's study
    for refused in (mine.delete(other), put_json(mine, other, new_observation("p03"))):
        assert refused.status_code == 403
        assert "p01" not in refused.text
    # 9. $validate runs the write's patient checks.
    body = new_observation("p03", "p01-primary")
    assert post_json(mine, "Observation/p01-primary/$validate", body).status_code == 403
    assert post_json(mine, "Observation/$validate", new_observation("p01")).status_code == 403
    # 10. another patient's deleted resource stays theirs: not readable, not re-creatable.
    admin = client("system/*.cruds")
    assert put_json(admin, "Observation/mv3", new_observation("p01", "mv3")).status_code == 201
    assert admin.delete("Observation/mv3").status_code == 204
    assert mine.get("Observation/mv3").status_code == 404
    assert put_json(mine, "Observation/mv3", new_observation("p03", "mv3")).status_code == 403
    assert admin.get("Observation/mv3").status_code == 410


# --------------------------------------------------------------------------- 8. client input


def test_client_input_that_crashed_is_answered_4xx(
    client: Callable[..., httpx.Client], base: str, idp: IdentityProvider
) -> None:
    reader = client("system/*.rs")
    huge = reader.get("Observation/p01-primary/_history/99999999999999999999999")
    assert huge.status_code == 404
    odd = idp.token(["system/*.rs", 5])  # a scope list with a number in it
    with httpx.Client(base_url=f"{base}/", headers=bearer(odd)) as oddly:
        refused = oddly.get("Observation")
    assert refused.status_code == 401
    assert "invalid_token" in refused.headers["WWW-Authenticate"]
