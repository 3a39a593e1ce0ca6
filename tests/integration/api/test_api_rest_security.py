"""The interactions of issue 12 under SMART scopes and patient contexts, and their AuditEvents,
on SQLite and on PostgreSQL.

Scopes: PATCH `u`; conditional update `u` + `c` + `s`; conditional delete `d` + `s`; type history
`r` + `s` on the type; system history only the types with `r` + `s` (403 when none);
`$everything` `r` on Patient, then only the types the token may read; `$validate` the permission
of the write it tries (`c`, or `u` for an instance). A patient-context token sees its patient only.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_support import Serve, example, post_json, put_json
from security_support import IdentityProvider, bearer

from fhir_app.fhir.samples import observation
from fhir_app.service import FhirService

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
AMEND = orjson.dumps([{"op": "replace", "path": "/status", "value": "amended"}])


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
        token = idp.token(scope, **claims)
        one = httpx.Client(base_url=f"{base}/", headers=bearer(token), timeout=60)
        made.append(one)
        return one

    yield make
    for one in made:
        one.close()


def finding(rid: str, patient: str) -> dict[str, Any]:
    body = observation(rid, patient, "appearance", "lytic", level="L1", effective="2025-01-01")
    body["identifier"] = [{"system": "http://hospital.example/obs", "value": rid}]
    return body


def test_patch_needs_update(client: Callable[..., httpx.Client]) -> None:
    reader = client("system/Observation.rs")
    refused = reader.patch("Observation/p01-primary", content=AMEND, headers=JSON_PATCH)
    assert refused.status_code == 403
    assert "system/Observation.u" in refused.text
    writer = client("system/Observation.u")
    done = writer.patch("Observation/p01-primary", content=AMEND, headers=JSON_PATCH)
    assert done.status_code == 200, done.text


def test_conditional_writes_need_their_permissions(client: Callable[..., httpx.Client]) -> None:
    criteria = "Observation?identifier=http://hospital.example/obs|c1"
    updater = client("system/Observation.cu")
    refused = put_json(updater, criteria, finding("c1", "p01"))
    assert refused.status_code == 403
    assert "system/Observation.s" in refused.text
    full = client("system/Observation.cus")
    assert put_json(full, criteria, finding("c1", "p01")).status_code == 201
    deleter = client("system/Observation.d")
    assert deleter.delete(criteria).status_code == 403
    assert client("system/Observation.ds").delete(criteria).status_code == 204


def test_history_scopes(client: Callable[..., httpx.Client]) -> None:
    observations = client("system/Observation.rs")
    assert observations.get("Observation/_history").status_code == 200
    assert observations.get("RiskAssessment/_history").status_code == 403
    system = observations.get("_history", params={"_count": 50}).json()
    types = {e["fullUrl"].split("/fhir/", 1)[1].split("/")[0] for e in system["entry"]}
    assert types == {"Observation"}
    read_only = client("system/Observation.r")
    assert read_only.get("Observation/_history").status_code == 403
    assert read_only.get("_history").status_code == 403
    assert (
        read_only.get("Observation/p01-primary/_history", params={"_count": 1}).status_code == 200
    )


def test_a_patient_token_sees_its_patient_only(client: Callable[..., httpx.Client]) -> None:
    mine = client("patient/*.rs", patient="p01")
    for path in ("_history", "Observation/_history", "DiagnosticReport/_history"):
        bundle = mine.get(path, params={"_count": 50}).json()
        assert bundle["entry"], path
        for entry in bundle["entry"]:
            assert "p03" not in entry["fullUrl"], entry
            if "resource" in entry:
                text = orjson.dumps(entry["resource"]).decode()
                assert "Patient/p03" not in text
    # History pages: following next never reaches another patient either.
    first = mine.get("_history", params={"_count": 2}).json()
    following = [link["url"] for link in first["link"] if link["relation"] == "next"]
    page = mine.get(following[0].split("/fhir/", 1)[1]).json()
    assert all("p03" not in entry["fullUrl"] for entry in page["entry"])

    assert mine.get("Patient/p03/$everything").status_code == 404
    everything = mine.get("Patient/p01/$everything", params={"_count": 100}).json()
    assert everything["entry"]
    assert mine.get("Patient/p03/Observation").json()["total"] == 0
    assert mine.get("Observation/p03-align/_history", params={"_count": 5}).status_code == 404

    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation/p03-align"}},
            {"request": {"method": "GET", "url": "Observation/p01-primary"}},
            {"request": {"method": "GET", "url": "Observation?patient=p03"}},
        ],
    }
    other, own, search = post_json(mine, "", batch).json()["entry"]
    assert other["response"]["status"] == "404"
    assert own["response"]["status"] == "200 OK"
    assert search["resource"]["total"] == 0


def test_a_patient_token_writes_its_patient_only(client: Callable[..., httpx.Client]) -> None:
    mine = client("patient/*.cruds", patient="p01")
    other = mine.patch("Observation/p03-align", content=AMEND, headers=JSON_PATCH)
    assert other.status_code == 403
    move = orjson.dumps([{"op": "replace", "path": "/subject/reference", "value": "Patient/p03"}])
    assert (
        mine.patch("Observation/p01-primary", content=move, headers=JSON_PATCH).status_code == 403
    )
    assert (
        mine.patch("Observation/p01-primary", content=AMEND, headers=JSON_PATCH).status_code == 200
    )
    # Conditional writes whose criteria match another patient's resource are refused.
    criteria = "Observation?_id=p03-align"
    assert put_json(mine, criteria, finding("p03-align", "p01")).status_code == 403
    assert mine.delete(criteria).status_code == 403
    own = "Observation?_id=p01-primary"
    assert mine.delete(own).status_code == 204


def test_validate_needs_the_permission_of_the_write(client: Callable[..., httpx.Client]) -> None:
    reader = client("system/Observation.rs")
    assert post_json(reader, "Observation/$validate", finding("v1", "p01")).status_code == 403
    creator = client("system/Observation.c")
    assert post_json(creator, "Observation/$validate", finding("v1", "p01")).status_code == 200
    assert post_json(creator, "Observation/v1/$validate", finding("v1", "p01")).status_code == 403


def test_new_interactions_are_audited(
    base: str, idp: IdentityProvider, client: Callable[..., httpx.Client]
) -> None:
    actor = client("system/*.cruds", client_id="integrator", sub="integrator")
    criteria = "Observation?identifier=http://hospital.example/obs|a1"
    steps = [
        ("patch", "U", actor.patch("Observation/p01-primary", content=AMEND, headers=JSON_PATCH)),
        ("update", "U", put_json(actor, criteria, finding("a1", "p01"))),
        ("delete", "D", actor.delete(criteria)),
        ("history-type", "R", actor.get("Observation/_history")),
        ("history-system", "R", actor.get("_history", params={"_since": "2020-01-01"})),
        ("operation", "E", actor.get("Patient/p01/$everything")),
        ("search-type", "E", actor.get("Patient/p01/Observation")),
        ("operation", "E", post_json(actor, "Observation/$validate", finding("a2", "p01"))),
        ("read", "R", actor.head("Observation/p01-primary")),
    ]
    for _code, _action, response in steps:
        assert response.status_code < 400, response.text
    auditor = client("system/AuditEvent.rs", client_id="auditor")
    bundle = auditor.get("AuditEvent", params={"agent": "integrator", "_count": 100}).json()
    events = [entry["resource"] for entry in bundle["entry"]]
    assert [(e["subtype"][0]["code"], e["action"]) for e in events] == [
        (code, action) for code, action, _ in steps
    ]
    conditional = events[1]["entity"][0]
    assert base64.b64decode(conditional["query"]).decode() == "identifier="  # value left out
    assert {"reference": "Patient/p01"} in [e["what"] for e in events[5]["entity"]]


def patch_bundle(url: str, operations: Any) -> dict[str, Any]:
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(orjson.dumps(operations)).decode(),
    }
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": binary, "request": {"method": "PATCH", "url": url}}],
    }


def test_patch_entries_need_update_on_their_target_not_on_binary(
    client: Callable[..., httpx.Client],
) -> None:
    amend = [{"op": "replace", "path": "/status", "value": "amended"}]
    reader = client("system/Observation.rs")
    assert post_json(reader, "", patch_bundle("Observation/p01-primary", amend)).status_code == 403
    writer = client("system/Observation.u")
    answer = post_json(writer, "", patch_bundle("Observation/p01-primary", amend))
    assert answer.status_code == 200, answer.text
    assert answer.json()["entry"][0]["response"]["status"] == "200 OK"


def test_a_patient_token_cannot_patch_a_resource_away_in_a_bundle(
    client: Callable[..., httpx.Client],
) -> None:
    mine = client("patient/*.cruds", patient="p01")
    move = [{"op": "replace", "path": "/subject/reference", "value": "Patient/p03"}]
    refused = post_json(mine, "", patch_bundle("Observation/p01-primary", move))
    assert refused.status_code == 403, refused.text
    amend = [{"op": "replace", "path": "/status", "value": "amended"}]
    assert post_json(mine, "", patch_bundle("Observation/p03-align", amend)).status_code == 403
    done = post_json(mine, "", patch_bundle("Observation/p01-primary", amend))
    assert done.json()["entry"][0]["response"]["status"] == "200 OK"
