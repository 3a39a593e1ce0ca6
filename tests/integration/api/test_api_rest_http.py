"""HTTP-level behaviour of issue 12 on SQLite and PostgreSQL: HEAD on every GET route,
If-Modified-Since on read, and the Allow header on every 405 (FHIR R4 http.html, RFC 9110)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest
from api_support import FHIR_JSON, example, post_json, put_json


@pytest.fixture
def stored(fhir: httpx.Client) -> httpx.Client:
    """Example patient p01 stored, outputs derived."""
    post_json(fhir, "", example("patient-01-stable-blastic.json")).raise_for_status()
    return fhir


@pytest.mark.parametrize(
    "path",
    [
        "metadata",
        "Observation/p01-primary",
        "Observation/p01-primary/_history",
        "Observation/p01-primary/_history/1",
        "Observation?patient=p01",
        "Observation/_history",
        "_history",
        "Patient/p01/$everything",
        "Patient/p01/Observation",
    ],
)
def test_head_answers_like_get_without_a_body(stored: httpx.Client, path: str) -> None:
    got = stored.get(path)
    head = stored.head(path)
    assert got.status_code == 200, got.text
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    for name in ("etag", "last-modified"):
        assert head.headers.get(name) == got.headers.get(name)


def test_head_of_missing_resources_is_404_without_a_body(stored: httpx.Client) -> None:
    head = stored.head("Observation/missing")
    assert head.status_code == 404
    assert head.content == b""


def test_if_modified_since(stored: httpx.Client) -> None:
    current = stored.get("Observation/p01-primary")
    modified = current.headers["last-modified"]
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    earlier = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)

    same = stored.get("Observation/p01-primary", headers={"If-Modified-Since": modified})
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == current.headers["etag"]
    assert (
        stored.get("Observation/p01-primary", headers={"If-Modified-Since": later}).status_code
        == 304
    )
    changed = stored.get("Observation/p01-primary", headers={"If-Modified-Since": earlier})
    assert changed.status_code == 200
    assert changed.json()["id"] == "p01-primary"
    # An unreadable date is ignored (RFC 9110 13.1.3).
    odd = stored.get("Observation/p01-primary", headers={"If-Modified-Since": "yesterday"})
    assert odd.status_code == 200


def test_if_none_match_wins_over_if_modified_since(stored: httpx.Client) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    answer = stored.get(
        "Observation/p01-primary", headers={"If-None-Match": 'W/"9"', "If-Modified-Since": later}
    )
    assert answer.status_code == 200  # the version differs: RFC 9110 ignores the date


def test_if_modified_since_sees_a_new_version(stored: httpx.Client) -> None:
    first = stored.get("Observation/p01-primary").headers["last-modified"]
    resource = stored.get("Observation/p01-primary").json()
    resource["note"] = [{"text": "second look"}]
    time.sleep(1.1)  # an HTTP-date counts whole seconds
    assert put_json(stored, "Observation/p01-primary", resource).status_code == 200
    answer = stored.get("Observation/p01-primary", headers={"If-Modified-Since": first})
    assert answer.status_code == 200
    assert answer.json()["meta"]["versionId"] == "2"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "Observation/p01-primary", "DELETE, GET, HEAD, PATCH, PUT"),
        ("PATCH", "Observation", "DELETE, GET, HEAD, POST, PUT"),
        ("DELETE", "metadata", "GET, HEAD"),
        ("POST", "_history", "GET, HEAD"),
        ("PUT", "Observation/_history", "GET, HEAD"),
        ("DELETE", "Patient/p01/$everything", "GET, HEAD"),
        ("GET", "Observation/$validate", "POST"),
        ("PUT", "RiskAssessment/x", "GET, HEAD"),
        ("PATCH", "Provenance/x", "GET, HEAD"),
        ("DELETE", "DiagnosticReport/x", "GET, HEAD"),
        ("POST", "DiagnosticReport", "GET, HEAD"),
    ],
)
def test_every_405_says_what_is_allowed(
    stored: httpx.Client, method: str, path: str, allowed: str
) -> None:
    rtype = path.split("/")[0]
    body = orjson.dumps({"resourceType": rtype, "id": "x"} if rtype[0].isupper() else {})
    answer = stored.request(method, path, content=body, headers=FHIR_JSON)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == allowed
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_a_write_over_a_derived_observation_says_allow(stored: httpx.Client) -> None:
    report = stored.get("DiagnosticReport", params={"patient": "p01"}).json()["entry"][0]
    derived = report["resource"]["result"][0]["reference"].split("/_history")[0]
    answer = stored.delete(derived)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == "GET, HEAD"


def test_every_declared_interaction_is_answered(stored: httpx.Client) -> None:
    """What the CapabilityStatement declares is routed: no declared interaction is 404 or 405."""
    statement = stored.get("metadata").json()
    (rest,) = statement["rest"]
    ids = {"Observation": "p01-primary", "ImagingStudy": "p01-ct", "Patient": "p01"}
    for resource in rest["resource"]:
        rtype = resource["type"]
        rid = ids.get(rtype, "absent")
        # An update carries its id (http.html#update: 400 without one).
        bare = {"resourceType": rtype, "id": rid}
        body = stored.get(f"{rtype}/{rid}").json() if rtype in ids else bare
        patch = orjson.dumps([{"op": "add", "path": "/language", "value": "en"}])
        without_id = {k: v for k, v in body.items() if k not in ("id", "meta")}
        requests = {
            "read": ("GET", f"{rtype}/{rid}", None, FHIR_JSON),
            "vread": ("GET", f"{rtype}/{rid}/_history/1", None, FHIR_JSON),
            "history-instance": ("GET", f"{rtype}/{rid}/_history", None, FHIR_JSON),
            "history-type": ("GET", f"{rtype}/_history", None, FHIR_JSON),
            "search-type": ("GET", f"{rtype}?_count=1", None, FHIR_JSON),
            "update": ("PUT", f"{rtype}/{rid}", orjson.dumps(body), FHIR_JSON),
            "patch": (
                "PATCH",
                f"{rtype}/{rid}",
                patch,
                {"Content-Type": "application/json-patch+json"},
            ),
            "create": ("POST", rtype, orjson.dumps(without_id), FHIR_JSON),
            "delete": ("DELETE", f"{rtype}/declared-delete", None, FHIR_JSON),
        }
        for interaction in resource["interaction"]:
            method, path, content, headers = requests[interaction["code"]]
            answer = stored.request(method, path, content=content, headers=headers)
            assert answer.status_code not in (404, 405) or rid == "absent", (
                rtype,
                interaction["code"],
                answer.text,
            )
            if rid == "absent":
                # Routed, on a resource that does not exist or a body too bare to be valid.
                assert answer.status_code in (200, 204, 404, 422), (
                    rtype,
                    interaction["code"],
                    answer.text,
                )
        for operation in resource.get("operation", []):
            if operation["name"] == "validate":
                answer = post_json(stored, f"{rtype}/$validate", body)
            else:
                answer = stored.get(f"{rtype}/{rid}/${operation['name']}")
            assert answer.status_code == 200, (rtype, operation["name"], answer.text)
    assert stored.get("_history").status_code == 200
    assert stored.get("Patient/p01/Observation").status_code == 200
