"""PATCH (issue 12, FHIR R4 http.html#patch): JSON Patch and JSON Merge Patch over REST, JSON
Patch as a Binary in transactions and batches, on SQLite and on PostgreSQL. A patch is an update:
validated like any write, stored as a new version, and the patient's outputs derived again."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest
from api_support import example, issues_text, post_json, put_json, snapshot
from fhirpy import SyncFHIRClient
from sqlalchemy import Engine

from fhir_app.fhir import codes

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
ALIGNMENT_VALUE = "/valueCodeableConcept/coding/0/code"


def patched(fhir: httpx.Client, path: str, operations: Any, **headers: str) -> httpx.Response:
    return fhir.patch(path, content=orjson.dumps(operations), headers={**JSON_PATCH, **headers})


def sins_total(fhir: httpx.Client, patient: str) -> dict[str, Any]:
    found = fhir.get(
        "Observation", params={"patient": patient, "code": f"{codes.CS_SINS}|{codes.SINS_TOTAL}"}
    )
    assert found.status_code == 200, found.text
    [entry] = found.json()["entry"]
    resource: dict[str, Any] = entry["resource"]
    return resource


@pytest.fixture
def p03(fhir: httpx.Client) -> httpx.Client:
    """Example patient p03 stored (subluxation at its level: 4 SINS points of alignment)."""
    post_json(fhir, "", example("patient-03-unstable.json")).raise_for_status()
    return fhir


def test_json_patch_stores_a_new_version_and_derives_again(p03: httpx.Client) -> None:
    before = sins_total(p03, "p03")
    operations = [
        {"op": "test", "path": ALIGNMENT_VALUE, "value": "subluxation-translation"},
        {"op": "replace", "path": ALIGNMENT_VALUE, "value": "normal-alignment"},
    ]
    answer = patched(p03, "Observation/p03-align", operations)
    assert answer.status_code == 200, answer.text
    assert answer.json()["meta"]["versionId"] == "2"
    assert answer.headers["etag"] == 'W/"2"'
    stored = p03.get("Observation/p03-align").json()
    assert stored["valueCodeableConcept"]["coding"][0]["code"] == "normal-alignment"
    after = sins_total(p03, "p03")
    assert int(after["meta"]["versionId"]) > int(before["meta"]["versionId"])
    assert after != before
    # Subluxation (4) became normal alignment (0): every bound of the total drops by 4.
    if "valueInteger" in before:
        assert after["valueInteger"] == before["valueInteger"] - 4
    else:
        assert after["valueRange"]["low"]["value"] == before["valueRange"]["low"]["value"] - 4


def test_if_match_is_honoured(p03: httpx.Client, engine: Engine) -> None:
    operations = [{"op": "replace", "path": "/status", "value": "amended"}]
    before = snapshot(engine)
    stale = patched(p03, "Observation/p03-align", operations, **{"If-Match": 'W/"7"'})
    assert stale.status_code == 412, stale.text
    assert snapshot(engine) == before
    fresh = patched(p03, "Observation/p03-align", operations, **{"If-Match": 'W/"1"'})
    assert fresh.status_code == 200, fresh.text


@pytest.mark.parametrize(
    ("operations", "status"),
    [
        ({"op": "replace"}, 400),  # not an array
        ([], 400),
        ([{"op": "replace", "value": 1}], 400),  # no path
        ([{"op": "frobnicate", "path": "/status"}], 400),
        ([{"op": "test", "path": "/status", "value": "preliminary"}], 422),  # the test fails
        ([{"op": "remove", "path": "/nothing/here"}], 422),
        ([{"op": "replace", "path": "/id", "value": "other"}], 422),
        ([{"op": "replace", "path": "/resourceType", "value": "Patient"}], 422),
        ([{"op": "replace", "path": "", "value": {}}], 422),
    ],
)
def test_bad_patches_are_refused_and_nothing_is_stored(
    p03: httpx.Client, engine: Engine, operations: Any, status: int
) -> None:
    before = snapshot(engine)
    refused = patched(p03, "Observation/p03-align", operations)
    assert refused.status_code == status, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/status", "not-a-status"),  # outside the required binding
        ("/subject", None),  # null is not R4 JSON
        ("/effectiveDateTime", "yesterday"),  # fails the dateTime regex
        ("/bodySite", {}),  # an empty object
    ],
)
def test_a_patch_is_validated_like_an_update(
    p03: httpx.Client, engine: Engine, path: str, value: Any
) -> None:
    """The patched resource is refused exactly as a PUT of it would be, and nothing is stored."""
    before = snapshot(engine)
    refused = patched(p03, "Observation/p03-align", [{"op": "add", "path": path, "value": value}])
    assert refused.status_code in (400, 422), refused.text
    put = p03.get("Observation/p03-align").json()
    put[path.strip("/")] = value
    assert put_json(p03, "Observation/p03-align", put).status_code == refused.status_code
    assert snapshot(engine) == before


def test_a_patch_that_breaks_the_contract_is_422(p03: httpx.Client) -> None:
    # A finding of this contract needs its vertebral level (CONTRACT 3).
    refused = patched(p03, "Observation/p03-align", [{"op": "remove", "path": "/bodySite"}])
    assert refused.status_code == 422, refused.text


def test_patch_of_missing_deleted_and_derived_resources(p03: httpx.Client) -> None:
    operations = [{"op": "replace", "path": "/status", "value": "amended"}]
    assert patched(p03, "Observation/nothing", operations).status_code == 404
    assert p03.delete("Observation/p03-left").status_code == 204
    assert patched(p03, "Observation/p03-left", operations).status_code == 410
    output = sins_total(p03, "p03")
    refused = patched(p03, f"Observation/{output['id']}", operations)
    assert refused.status_code == 405, refused.text
    assert refused.headers["allow"] == "GET, HEAD"
    risk = p03.get("RiskAssessment", params={"patient": "p03"}).json()["entry"][0]["resource"]
    refused = patched(p03, f"RiskAssessment/{risk['id']}", operations)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"


def test_patch_media_types(p03: httpx.Client) -> None:
    body = orjson.dumps([{"op": "replace", "path": "/status", "value": "amended"}])
    xml = p03.patch(
        "Observation/p03-align", content=body, headers={"Content-Type": "application/xml"}
    )
    assert xml.status_code == 415
    assert p03.patch("Observation/p03-align", content=b"[{", headers=JSON_PATCH).status_code == 400


def test_merge_patch_and_fhirpy(p03: httpx.Client, base_url: str) -> None:
    merged = p03.patch(
        "Observation/p03-align",
        content=orjson.dumps({"status": "amended", "note": [{"text": "re-read"}]}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["note"] == [{"text": "re-read"}]
    removed = p03.patch(
        "Observation/p03-align",
        content=orjson.dumps({"note": None}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert "note" not in removed.json()
    identity = p03.patch(
        "Observation/p03-align",
        content=orjson.dumps({"id": "other"}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert identity.status_code == 422

    client = SyncFHIRClient(base_url)
    result = client.patch("Observation", "p03-align", status="corrected")
    assert result["status"] == "corrected"
    assert p03.get("Observation/p03-align").json()["meta"]["versionId"] == "4"


def binary_patch(operations: Any) -> dict[str, Any]:
    return {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(orjson.dumps(operations)).decode(),
    }


def patch_entry(url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "PATCH", "url": url}}


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_patch_entries_in_bundles(p03: httpx.Client, kind: str) -> None:
    before = sins_total(p03, "p03")
    operations = [{"op": "replace", "path": ALIGNMENT_VALUE, "value": "normal-alignment"}]
    answer = post_json(
        p03,
        "",
        {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [patch_entry("Observation/p03-align", binary_patch(operations))],
        },
    )
    assert answer.status_code == 200, answer.text
    [done] = answer.json()["entry"]
    assert done["response"]["status"] == "200 OK"
    assert done["response"]["location"] == "Observation/p03-align/_history/2"
    assert sins_total(p03, "p03") != before


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Parameters", "parameter": []},  # FHIRPath Patch: not supported
        {"resourceType": "Binary", "contentType": "text/plain", "data": "eA=="},
        {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "!!"},
        {"resourceType": "Binary", "contentType": "application/json-patch+json"},
    ],
)
def test_unusable_patch_entries(p03: httpx.Client, engine: Engine, resource: Any) -> None:
    before = snapshot(engine)
    entries = [patch_entry("Observation/p03-align", resource)]
    transaction = post_json(
        p03, "", {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    )
    assert transaction.status_code == 400, transaction.text
    assert "Bundle.entry[0]" in issues_text(transaction.json())
    batch = post_json(p03, "", {"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert batch.json()["entry"][0]["response"]["status"] == "400"
    assert snapshot(engine) == before


def test_a_failing_patch_undoes_its_transaction(p03: httpx.Client, engine: Engine) -> None:
    before = snapshot(engine)
    good = [{"op": "replace", "path": ALIGNMENT_VALUE, "value": "normal-alignment"}]
    failing = [{"op": "test", "path": "/status", "value": "preliminary"}]
    answer = post_json(
        p03,
        "",
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                patch_entry("Observation/p03-align", binary_patch(good)),
                patch_entry("Observation/p03-loss", binary_patch(failing)),
            ],
        },
    )
    assert answer.status_code == 422, answer.text
    assert "Bundle.entry[1]" in issues_text(answer.json())
    assert snapshot(engine) == before


def test_put_still_works_after_a_patch(p03: httpx.Client) -> None:
    current = p03.get("Observation/p03-align").json()
    answer = patched(p03, "Observation/p03-align", [{"op": "remove", "path": "/category"}])
    assert answer.status_code == 200, answer.text
    assert put_json(p03, "Observation/p03-align", current).status_code == 200
