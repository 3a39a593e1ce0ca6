"""HTTP protocol rules: status codes, headers, media types, limits, auth; every error an
OperationOutcome."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from api_support import (
    FHIR_JSON,
    Serve,
    issues_text,
    live_server,
    post_json,
    put_json,
    snapshot,
)
from sqlalchemy import Engine

from fhir_app.api import create_app
from fhir_app.config import Settings
from fhir_app.fhir.samples import observation
from fhir_app.service import FhirService, StoredResource
from fhir_app.store import TransientStoreError


def finding(obs_id: str = "f1", patient: str = "p1", value: str = "lytic") -> dict[str, Any]:
    """A lesion-appearance finding at L1."""
    return observation(obs_id, patient, "appearance", value, level="L1", effective="2025-01-01")


def assert_outcome(response: httpx.Response, status: int, code: str | None = None) -> str:
    """The response is an OperationOutcome with this status (and first issue code)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"], outcome
    if code is not None:
        assert outcome["issue"][0]["code"] == code, outcome
    return issues_text(outcome)


# --------------------------------------------------------------------------- create / update


def test_create_answers_201_with_location_etag_and_last_modified(
    fhir: httpx.Client, base_url: str
) -> None:
    body = finding()
    body.pop("id")
    response = post_json(fhir, "Observation", body)
    assert response.status_code == 201, response.text
    created = response.json()
    rid = created["id"]
    assert response.headers["location"] == f"{base_url}/Observation/{rid}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["last-modified"].endswith(" GMT")
    assert created["meta"]["versionId"] == "1"


def test_create_ignores_a_client_id(fhir: httpx.Client) -> None:
    response = post_json(fhir, "Observation", finding("client-chosen"))
    assert response.status_code == 201
    assert response.json()["id"] != "client-chosen"


def test_conditional_create_returns_the_match(fhir: httpx.Client) -> None:
    body = {**finding(), "identifier": [{"system": "urn:feed", "value": "42"}]}
    criteria = "identifier=urn:feed|42"
    first = post_json(fhir, "Observation", body, **{"If-None-Exist": criteria})
    second = post_json(fhir, "Observation", body, **{"If-None-Exist": criteria})
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]


def test_prefer_return_minimal_and_operation_outcome(fhir: httpx.Client) -> None:
    minimal = put_json(fhir, "Observation/f1", finding(), Prefer="return=minimal")
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"].endswith("/Observation/f1/_history/1")
    outcome = put_json(
        fhir, "Observation/f1", finding(value="blastic"), Prefer="return=OperationOutcome"
    )
    assert outcome.status_code == 200
    assert outcome.json()["issue"][0]["severity"] == "information"
    assert outcome.headers["etag"] == 'W/"2"'


def test_if_match(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/f1", finding()).raise_for_status()
    put_json(fhir, "Observation/f1", finding(value="mixed")).raise_for_status()
    stale = put_json(fhir, "Observation/f1", finding(value="blastic"), **{"If-Match": 'W/"1"'})
    assert "If-Match" in assert_outcome(stale, 412, "conflict")
    fresh = put_json(fhir, "Observation/f1", finding(value="blastic"), **{"If-Match": 'W/"2"'})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] == 'W/"3"'
    assert_outcome(put_json(fhir, "Observation/f1", finding(), **{"If-Match": "nonsense"}), 400)


def test_if_none_match_on_read(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/f1", finding()).raise_for_status()
    unchanged = fhir.get("Observation/f1", headers={"If-None-Match": 'W/"1"'})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert fhir.get("Observation/f1", headers={"If-None-Match": 'W/"9"'}).status_code == 200


def test_id_in_body_must_match_the_url(fhir: httpx.Client) -> None:
    text = assert_outcome(put_json(fhir, "Observation/f2", finding("f1")), 400)
    assert "f1" in text


def test_an_update_without_an_id_is_400(fhir: httpx.Client, engine: Engine) -> None:
    """R4 http.html#update: "If no id element is provided [...] the server SHALL respond with
    an HTTP 400 error code"; in a Bundle too. A conditional update needs none."""
    put_json(fhir, "Observation/f1", finding()).raise_for_status()
    anonymous = {k: v for k, v in finding("f1", value="blastic").items() if k != "id"}
    before = snapshot(engine)
    text = assert_outcome(put_json(fhir, "Observation/f1", anonymous), 400, "required")
    assert "no id" in text
    assert_outcome(put_json(fhir, "Observation/f9", anonymous), 400, "required")
    validated = post_json(fhir, "Observation/f1/$validate", anonymous)
    assert validated.status_code == 200, validated.text
    assert "no id" in issues_text(validated.json())
    entry = {"resource": anonymous, "request": {"method": "PUT", "url": "Observation/f1"}}
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    assert "Bundle.entry[0]" in assert_outcome(post_json(fhir, "", transaction), 400, "required")
    batch = post_json(fhir, "", {**transaction, "type": "batch"})
    assert batch.status_code == 200, batch.text
    assert batch.json()["entry"][0]["response"]["status"] == "400"
    assert snapshot(engine) == before
    conditional = post_json(
        fhir,
        "",
        {
            **transaction,
            "entry": [{**entry, "request": {"method": "PUT", "url": "Observation?_id=f1"}}],
        },
    )
    assert conditional.status_code == 200, conditional.text
    assert fhir.get("Observation/f1").json()["meta"]["versionId"] == "2"


def test_invalid_resource_is_422_naming_the_element(fhir: httpx.Client) -> None:
    response = put_json(fhir, "Observation/f1", {**finding(), "status": "done"})
    assert "Observation.status" in assert_outcome(response, 422)


def test_wrong_resource_type_for_the_endpoint(fhir: httpx.Client) -> None:
    assert_outcome(put_json(fhir, "ImagingStudy/f1", finding()), 400)


# --------------------------------------------------------------------------- outputs are read-only


@pytest.mark.parametrize("rtype", ["RiskAssessment", "DiagnosticReport", "Provenance"])
def test_writes_to_outputs_are_405(fhir: httpx.Client, rtype: str) -> None:
    body = {"resourceType": rtype, "id": "x1", "status": "final"}
    created = post_json(fhir, rtype, body)
    assert_outcome(created, 405, "not-supported")
    assert created.headers["allow"] == "GET, HEAD"
    assert_outcome(put_json(fhir, f"{rtype}/x1", body), 405)
    assert_outcome(fhir.delete(f"{rtype}/x1"), 405)


def test_derived_observation_cannot_be_overwritten(fhir: httpx.Client) -> None:
    """Read-only like the output types: every write is 405 with `Allow: GET, HEAD`."""
    put_json(fhir, "Observation/f1", finding()).raise_for_status()
    derived = fhir.get("Observation", params={"subject": "Patient/p1"}).json()["entry"]
    output = next(e["resource"] for e in derived if e["resource"]["id"] != "f1")
    url = f"Observation/{output['id']}"
    for answer in (
        put_json(fhir, url, output),
        put_json(fhir, url, finding(output["id"])),
        fhir.delete(url),
        fhir.patch(
            url,
            content=b'[{"op": "replace", "path": "/status", "value": "amended"}]',
            headers={"Content-Type": "application/json-patch+json"},
        ),
    ):
        assert_outcome(answer, 405, "not-supported")
        assert answer.headers["allow"] == "GET, HEAD"
    entry = {"resource": output, "request": {"method": "PUT", "url": url}}
    batch = post_json(fhir, "", {"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert batch.json()["entry"][0]["response"]["status"] == "405"
    assert fhir.get(url).json() == output


# --------------------------------------------------------------------------- 404 / 405 / 410


def test_unknown_routes_types_and_resources_are_404(fhir: httpx.Client) -> None:
    assert_outcome(fhir.get("Observation/a/b/c/d"), 404, "not-found")
    assert_outcome(fhir.get("/nothing-here"), 404, "not-found")
    assert "Encounter" in assert_outcome(fhir.get("Encounter/1"), 404)
    assert_outcome(fhir.get("Encounter"), 404)
    assert_outcome(fhir.get("Observation/missing"), 404, "not-found")
    assert_outcome(fhir.get("Observation/missing/_history"), 404)
    assert_outcome(fhir.get("Observation/missing/_history/1"), 404)
    assert_outcome(fhir.get("Observation/missing/_history/one"), 404)


def test_method_not_allowed_is_405(fhir: httpx.Client) -> None:
    response = fhir.delete("metadata")
    assert "DELETE" in assert_outcome(response, 405, "not-supported")
    assert response.headers["allow"] == "GET, HEAD"
    refused = fhir.post("Observation/f1", content=b"{}", headers=FHIR_JSON)
    assert_outcome(refused, 405, "not-supported")
    assert refused.headers["allow"] == "DELETE, GET, HEAD, PATCH, PUT"
    assert_outcome(fhir.get("$assess"), 404)


def test_invalid_id_is_400(fhir: httpx.Client) -> None:
    assert_outcome(put_json(fhir, "Observation/" + "x" * 65, finding("x" * 65)), 400)
    assert_outcome(fhir.get("Observation/bad_id"), 400)


def test_deleted_resource_is_410_and_its_history_remains(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/f1", finding()).raise_for_status()
    assert fhir.delete("Observation/f1").status_code == 204
    assert_outcome(fhir.get("Observation/f1"), 410, "deleted")
    assert fhir.get("Observation/f1/_history/1").status_code == 200
    assert_outcome(fhir.get("Observation/f1/_history/2"), 410)
    # Deleting again is not an error (FHIR R4 http.html#delete).
    assert fhir.delete("Observation/f1").status_code == 204
    # Delete with Prefer: return=OperationOutcome says what happened.
    put_json(fhir, "Observation/f1", finding()).raise_for_status()
    said = fhir.delete("Observation/f1", headers={"Prefer": "return=OperationOutcome"})
    assert said.status_code == 200
    assert said.json()["issue"][0]["severity"] == "information"


# --------------------------------------------------------------------------- bodies


def test_malformed_json_is_400(fhir: httpx.Client) -> None:
    response = fhir.post("Observation", content=b'{"resourceType": ', headers=FHIR_JSON)
    assert "JSON" in assert_outcome(response, 400, "invalid")
    assert_outcome(fhir.post("Observation", content=b"[1, 2]", headers=FHIR_JSON), 400)
    assert_outcome(fhir.post("Observation", content=b"", headers=FHIR_JSON), 400)
    assert_outcome(fhir.post("Observation", content=b'{"a": 1}', headers=FHIR_JSON), 400)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "application/fhir+xml", "application/json; charset=latin-1"],
)
def test_other_media_types_are_415(fhir: httpx.Client, content_type: str) -> None:
    response = fhir.post(
        "Observation", content=orjson.dumps(finding()), headers={"Content-Type": content_type}
    )
    assert_outcome(response, 415, "not-supported")


def test_missing_media_type_is_415(fhir: httpx.Client) -> None:
    assert_outcome(fhir.post("Observation", content=orjson.dumps(finding())), 415)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/fhir+json; charset=utf-8"]
)
def test_json_media_types_are_accepted(fhir: httpx.Client, content_type: str) -> None:
    response = fhir.put(
        "Observation/f1", content=orjson.dumps(finding()), headers={"Content-Type": content_type}
    )
    assert response.status_code == 201


def test_body_over_the_limit_is_413_by_content_length(serve: Serve, engine: Engine) -> None:
    base = serve(max_request_bytes=2000)
    rows = snapshot(engine)
    big = {**finding(), "note": [{"text": "x" * 3000}]}
    with httpx.Client(base_url=f"{base}/") as client:
        response = put_json(client, "Observation/f1", big)
        assert "2000" in assert_outcome(response, 413, "too-costly")
        # Under the limit passes.
        assert put_json(client, "Observation/f1", finding()).status_code == 201
    rows_after = snapshot(engine)
    assert len(rows_after["resource_version"]) > len(rows["resource_version"])


def test_body_over_the_limit_is_413_when_streamed(serve: Serve, engine: Engine) -> None:
    base = serve(max_request_bytes=2000)
    rows = snapshot(engine)
    payload = orjson.dumps({**finding(), "note": [{"text": "x" * 4000}]})

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the server can only count what arrives.
        for start in range(0, len(payload), 500):
            yield payload[start : start + 500]

    with httpx.Client(base_url=f"{base}/") as client:
        response = client.put("Observation/f1", content=chunks(), headers=FHIR_JSON)
        assert "content-length" not in response.request.headers
        assert_outcome(response, 413)
    assert snapshot(engine) == rows


def test_accept_without_json_is_406(fhir: httpx.Client) -> None:
    assert_outcome(fhir.get("metadata", headers={"Accept": "application/fhir+xml"}), 406)
    assert_outcome(fhir.get("metadata", params={"_format": "xml"}), 406)
    assert fhir.get("metadata", headers={"Accept": "application/fhir+json"}).status_code == 200
    assert fhir.get("metadata", headers={"Accept": "*/*"}).status_code == 200
    assert fhir.get("metadata", params={"_format": "json"}).status_code == 200


def test_pretty(fhir: httpx.Client) -> None:
    assert b"\n" in fhir.get("metadata", params={"_pretty": "true"}).content
    assert b"\n" not in fhir.get("metadata").content


# --------------------------------------------------------------------------- search


def make_findings(fhir: httpx.Client, count: int, patient: str = "p1") -> None:
    """`count` findings of one patient at different levels."""
    levels = ["L1", "L2", "L3", "L4", "L5", "T10", "T11", "T12"]
    for index in range(count):
        body = observation(
            f"f{index}",
            patient,
            "appearance",
            "lytic",
            level=levels[index % len(levels)],
            effective="2025-01-01",
        )
        put_json(fhir, f"Observation/f{index}", body).raise_for_status()


def link(bundle: dict[str, Any], relation: str) -> str | None:
    """The URL of a Bundle link."""
    for item in bundle["link"]:
        if item["relation"] == relation:
            url: str = item["url"]
            return url
    return None


def test_search_pages_follow_next_links(fhir: httpx.Client) -> None:
    make_findings(fhir, 5)
    seen: list[str] = []
    url: str | None = "RiskAssessment?patient=p1&_count=2"
    pages = 0
    while url:
        page = fhir.get(url).json()
        assert page["total"] == 5
        assert len(page["entry"]) <= 2
        seen.extend(e["resource"]["id"] for e in page["entry"])
        url = link(page, "next")
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5


def test_count_is_capped_and_zero_gives_the_total(serve: Serve) -> None:
    base = serve(default_page_size=2, max_page_size=3)
    with httpx.Client(base_url=f"{base}/") as client:
        make_findings(client, 5)
        default = client.get("RiskAssessment").json()
        assert len(default["entry"]) == 2
        capped = client.get("RiskAssessment", params={"_count": "500"}).json()
        assert len(capped["entry"]) == 3
        assert "_count=3" in str(link(capped, "self"))
        for only_total_params in ({"_count": "0"}, {"_summary": "count", "_total": "accurate"}):
            only_total = client.get("RiskAssessment", params=only_total_params).json()
            assert only_total["total"] == 5
            assert "entry" not in only_total  # FHIR JSON has no empty arrays


def test_search_by_code_and_last_updated(fhir: httpx.Client) -> None:
    make_findings(fhir, 2)
    code = "https://fhir-app.org/fhir/CodeSystem/spine-finding|lesion-classification"
    found = fhir.get("Observation", params={"code": code}).json()
    assert found["total"] == 2
    assert fhir.get("Observation", params={"code": "lesion-classification"}).json()["total"] == 2
    # Two findings, their SINS and classification Observations, and the NOMS inputs.
    assert fhir.get("Observation", params={"_lastUpdated": "ge2000-01-01"}).json()["total"] == 7
    assert fhir.get("Observation", params={"_lastUpdated": "lt2000-01-01"}).json()["total"] == 0
    assert_outcome(fhir.get("Observation", params={"_lastUpdated": "yesterday"}), 400)
    # CONTRACT section 5: RiskAssessment by its method, Provenance by its activity.
    sins_method = "https://fhir-app.org/fhir/CodeSystem/sins|sins"
    assert fhir.get("RiskAssessment", params={"code": sins_method}).json()["total"] == 2
    assert fhir.get("RiskAssessment", params={"code": "other"}).json()["total"] == 0
    provenance = fhir.get("Provenance", params={"code": "CREATE"}).json()
    assert provenance["total"] >= 1


def test_unknown_search_parameters_are_400_unless_lenient(fhir: httpx.Client) -> None:
    make_findings(fhir, 1)
    text = assert_outcome(fhir.get("RiskAssessment", params={"colour": "blue"}), 400)
    assert "colour" in text
    assert_outcome(fhir.get("RiskAssessment", params={"code:text": "x"}), 400)
    assert "_summary=short" in assert_outcome(
        fhir.get("RiskAssessment", params={"_summary": "short"}), 400
    )
    lenient = fhir.get(
        "RiskAssessment", params={"colour": "blue"}, headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 200
    assert lenient.json()["total"] == 1
    assert "colour" not in str(link(lenient.json(), "self"))


@pytest.mark.parametrize("bad", [{"_count": "-1"}, {"_count": "ten"}, {"_offset": "x"}])
def test_bad_paging_values_are_400(fhir: httpx.Client, bad: dict[str, str]) -> None:
    assert_outcome(fhir.get("RiskAssessment", params=bad), 400)


# --------------------------------------------------------------------------- auth


def test_tokens_protect_everything_but_metadata(serve: Serve) -> None:
    base = serve(auth_tokens=["s3cret", "other"])
    with httpx.Client(base_url=f"{base}/") as client:
        missing = put_json(client, "Observation/f1", finding())
        assert_outcome(missing, 401, "login")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = put_json(client, "Observation/f1", finding(), Authorization="Bearer nope")
        assert_outcome(wrong, 401)
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        basic = put_json(client, "Observation/f1", finding(), Authorization="Basic czNjcmV0")
        assert_outcome(basic, 401)
        assert_outcome(client.get("Observation/f1"), 401)
        assert_outcome(client.get("RiskAssessment"), 401)
        assert_outcome(post_json(client, "$assess", {"resourceType": "Bundle"}), 401)
        assert client.get("metadata").status_code == 200

        good = put_json(client, "Observation/f1", finding(), Authorization="Bearer s3cret")
        assert good.status_code == 201
        read = client.get("Observation/f1", headers={"Authorization": "Bearer other"})
        assert read.status_code == 200


def test_no_tokens_means_open(fhir: httpx.Client) -> None:
    assert put_json(fhir, "Observation/f1", finding()).status_code == 201


# --------------------------------------------------------------------------- 500 and 422


class BrokenService(FhirService):
    """A service whose search fails the way a bug would."""

    def search(
        self, rtype: str, params: Sequence[tuple[str, str]], *, count: int, offset: int
    ) -> tuple[list[StoredResource], int]:
        raise RuntimeError("password=hunter2 at /srv/secret/path.py")


def test_unexpected_errors_are_500_without_internals(serve: Serve, service: FhirService) -> None:
    base = serve(service_override=BrokenService(service.uow_factory))
    with httpx.Client(base_url=f"{base}/") as client:
        response = client.get("Observation")
    text = assert_outcome(response, 500, "exception")
    assert "hunter2" not in response.text
    assert "secret" not in response.text
    assert "reference" in text


def test_request_validation_errors_are_operation_outcomes(
    settings: Settings, service: FhirService
) -> None:
    app = create_app(settings, service)

    # No route of the API declares a typed parameter; this one proves the handler is in place.
    @app.get("/probe")
    def probe(number: int) -> dict[str, int]:
        return {"number": number}

    with live_server(app) as base, httpx.Client() as client:
        response = client.get(f"{base.removesuffix('/fhir')}/probe", params={"number": "x"})
    assert "number" in assert_outcome(response, 400, "invalid")


# --------------------------------------------------------------------------- metadata


def test_metadata(fhir: httpx.Client, base_url: str) -> None:
    response = fhir.get("metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["software"]["name"] == "fhir-app"
    assert statement["software"]["version"]
    assert statement["implementation"]["url"] == base_url
    assert "json" in " ".join(statement["format"])
    types = {r["type"] for rest in statement["rest"] for r in rest["resource"]}
    assert {"Observation", "ImagingStudy", "RiskAssessment", "DiagnosticReport"} <= types


class BusyService(FhirService):
    """A service whose database keeps losing races."""

    def read(self, rtype: str, rid: str, version_id: int | None = None) -> StoredResource:
        raise TransientStoreError("could not serialize access due to concurrent update")


def test_transient_store_errors_are_503_with_retry_after(
    serve: Serve, service: FhirService
) -> None:
    base = serve(service_override=BusyService(service.uow_factory))
    with httpx.Client(base_url=f"{base}/") as client:
        response = client.get("Observation/f1")
    assert_outcome(response, 503, "transient")
    assert response.headers["retry-after"] == "1"
    assert "serialize" not in response.text
