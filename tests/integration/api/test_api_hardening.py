"""Hardening (issue 13): no patient data in logs, Host never trusted, security headers,
throttled failed authentication."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_support import EXAMPLES, Serve, example, post_json, put_json
from security_support import PUBLIC_BASE, IdentityProvider, bearer
from sqlalchemy import Engine, insert

from fhir_app.service import FhirService, StoredResource
from fhir_app.store.schema import resource_current_table

ASYNC = {"Prefer": "respond-async"}
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("patient-*.json"))


@pytest.fixture
def idp(tmp_path: Path) -> IdentityProvider:
    """A fresh identity provider with a key made for this test."""
    return IdentityProvider(tmp_path)


def patient_data() -> set[str]:
    """Every patient id, name and identifier value of the examples."""
    found: set[str] = set()
    for name in EXAMPLE_FILES:
        for entry in example(name)["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] != "Patient":
                continue
            found.add(resource["id"])
            for human in resource.get("name", []):
                found.update(filter(None, [human.get("family"), *human.get("given", [])]))
            found.update(i["value"] for i in resource.get("identifier", []) if "value" in i)
    assert len(found) >= 10
    return found


class LeakingService(FhirService):
    """A read that hits a database error whose statement carries a patient's data."""

    def __init__(self, inner: FhirService, engine: Engine) -> None:
        super().__init__(inner.uow_factory, inner.settings, inner.clock)
        self.engine = engine

    def read(self, rtype: str, rid: str, version_id: int | None = None) -> StoredResource:
        if rid != "p01-l3":
            return super().read(rtype, rid, version_id)
        with self.engine.begin() as connection:  # a foreign-key/primary-key violation
            connection.execute(
                insert(resource_current_table).values(
                    resource_type="Patient",
                    resource_id="p01",
                    version_id=99,
                    deleted=False,
                    patient_id="p01",
                    status="Lindqvist",
                    is_output=False,
                    last_updated=self.clock(),
                    content_hash=None,
                )
            )
        raise AssertionError("the insert must fail")


def local(url: str) -> str:
    """A URL under the configured public base, relative to the test server's /fhir/."""
    return url.removeprefix(f"{PUBLIC_BASE}/fhir/")


def wait_for_manifest(client: httpx.Client, url: str) -> dict[str, Any]:
    """Poll an export until its manifest is there."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.get(url)
        if response.status_code == 200:
            manifest: dict[str, Any] = response.json()
            return manifest
        assert response.status_code == 202, response.text
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def test_a_full_session_logs_no_patient_data(
    serve: Serve,
    service: FhirService,
    engine: Engine,
    idp: IdentityProvider,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # As a deployment that turns SQL logging on would (statements at INFO, rows at DEBUG).
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    base = serve(
        **idp.settings(),
        export_dir=tmp_path / "exports",
        service_override=LeakingService(service, engine),
    )
    admin = bearer(idp.token("system/*.cruds system/AuditEvent.rs"))
    with httpx.Client(base_url=f"{base}/", headers=admin, timeout=60) as client:
        for name in EXAMPLE_FILES:
            assert post_json(client, "", example(name)).status_code == 200
        for number in range(1, 11):
            patient = f"p{number:02d}"
            assert client.get(f"Patient/{patient}").status_code == 200
            assert client.get(f"Patient/{patient}/_history").status_code == 200
            client.get("RiskAssessment", params={"patient": patient, "_count": "1"})
            client.get("DiagnosticReport", params={"subject": f"Patient/{patient}"})
            client.get("Observation", params={"patient": patient, "code": "nope"})
            client.get(f"Observation/{patient}-primary/_history/1")
            client.get("Patient", params={"_id": patient})
        observation = client.get("Observation/p01-primary").json()
        assert put_json(client, "Observation/p01-primary", observation).status_code == 200
        assert client.delete("Observation/p02-primary").status_code in (200, 204)
        broken = dict(observation, subject={"reference": "Patient/p01", "display": "Lindqvist"})
        broken["status"] = "not-a-status"
        assert post_json(client, "Observation", broken).status_code >= 400
        assert client.get("Observation/p01-nothing").status_code == 404
        # The database error (uvicorn closes the connection after a 500: a client of its own).
        with httpx.Client(base_url=f"{base}/", headers=admin) as failing:
            assert failing.get("Observation/p01-l3").status_code == 500
        kicked = client.get("$export", headers=ASYNC)
        manifest = wait_for_manifest(client, local(kicked.headers["content-location"]))
        for item in manifest["output"]:
            assert client.get(local(item["url"])).status_code == 200
        assert client.get("AuditEvent", params={"_count": "5"}).status_code == 200
        # Failed authentication with a token that names a patient.
        assert client.get("Patient/p01", headers=bearer("Lindqvist-p01")).status_code == 401
    # Everything the server logged (the test's own HTTP client logs its URLs: not the server).
    client_side = ("httpx", "httpcore")
    lines = [
        caplog.handler.format(record)
        for record in caplog.records
        if not record.name.startswith(client_side)
    ]
    assert any("/fhir/{resource_type}/{resource_id}" in line for line in lines)
    assert any("INSERT INTO resource_version" in line for line in lines)  # SQL was logged
    assert any("IntegrityError (message withheld)" in line for line in lines)
    secrets = patient_data()
    leaks = [(s, line) for line in lines for s in secrets if s in line]
    assert not leaks, leaks[:5]


# --------------------------------------------------------------------------- Host header

EVIL = {"Host": "attacker.invalid"}


def absolute_urls(document: dict[str, Any]) -> list[str]:
    """The server's own URLs in a Bundle or CapabilityStatement: links, fullUrls, implementation."""
    urls = [link["url"] for link in document.get("link", [])]
    urls += [entry["fullUrl"] for entry in document.get("entry", []) if "fullUrl" in entry]
    if "implementation" in document:
        urls.append(document["implementation"]["url"])
    return urls


def written_urls(client: httpx.Client) -> list[str]:
    """The absolute URLs the server writes for a client that sent a forged Host header."""
    urls: list[str] = []
    created = post_json(client, "Observation", new_observation(), **EVIL)
    assert created.status_code == 201, created.text
    urls.append(created.headers["location"])
    rid = created.json()["id"]
    for path in ("Observation?_count=1", f"Observation/{rid}/_history", "metadata"):
        response = client.get(path, headers=EVIL)
        assert response.status_code == 200, response.text
        urls += absolute_urls(response.json())
    kicked = client.get("$export", headers={**EVIL, **ASYNC})
    urls.append(kicked.headers["content-location"])
    status = kicked.headers["content-location"]
    manifest = wait_for_manifest(client, status.split("/fhir/", 1)[1])
    urls += [manifest["request"], *(item["url"] for item in manifest["output"])]
    return urls


def new_observation() -> dict[str, Any]:
    """An input Observation of p01 without id."""
    bundle = example("patient-01-stable-blastic.json")
    resource: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "p01-primary"
    )
    resource.pop("id")
    return resource


@pytest.mark.parametrize("public", [None, "https://fhir.example.org"])
def test_the_host_header_is_never_trusted(
    serve: Serve, service: FhirService, tmp_path: Path, public: str | None
) -> None:
    service.transaction(example("patient-01-stable-blastic.json"))
    base = serve(export_dir=tmp_path / "exports", public_base_url=public)
    with httpx.Client(base_url=f"{base}/", timeout=60) as client:
        urls = written_urls(client)
    assert len(urls) >= 6
    expected = f"{public}/fhir" if public else base
    for url in urls:
        assert "attacker" not in url, url
        assert url.startswith(expected), (url, expected)


# --------------------------------------------------------------------------- headers

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def test_security_headers_on_every_response(
    serve: Serve, service: FhirService, idp: IdentityProvider, tmp_path: Path
) -> None:
    service.transaction(example("patient-01-stable-blastic.json"))
    base = serve(**idp.settings(), export_dir=tmp_path / "exports")
    root = base.removesuffix("/fhir")
    token = bearer(idp.token("system/*.cruds"))
    with httpx.Client(base_url=f"{base}/", timeout=60) as client:
        responses: Sequence[httpx.Response] = [
            client.get("metadata"),
            client.get(f"{root}/.well-known/smart-configuration"),
            client.get("Observation/p01-primary", headers=token),
            client.get("Observation?patient=p01", headers=token),
            client.get("Observation/none", headers=token),
            client.get("Observation/p01-primary"),  # 401
            client.delete("RiskAssessment/any", headers=token),
            client.get(f"{root}/not-here"),
            client.get("$export", headers={**token, **ASYNC}),
        ]
    statuses = {r.status_code for r in responses}
    assert {200, 202, 401, 404, 405} <= statuses
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.url, name)
        assert response.headers["content-security-policy"] == (
            "default-src 'none'; frame-ancestors 'none'"
        ), response.url


# --------------------------------------------------------------------------- throttling


def test_repeated_failed_authentication_is_429(serve: Serve, idp: IdentityProvider) -> None:
    base = serve(**idp.settings(), auth_failure_limit=5, auth_failure_window_seconds=60)
    good = bearer(idp.token("system/*.rs"))
    with httpx.Client(base_url=f"{base}/") as client:
        assert client.get("Observation", headers=good).status_code == 200
        for attempt in range(5):
            wrong = client.get("Observation", headers=bearer(f"wrong-{attempt}"))
            assert wrong.status_code == 401
        throttled = client.get("Observation", headers=bearer("wrong-again"))
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert throttled.json()["resourceType"] == "OperationOutcome"
        # Good credentials from the same address are served: one failing client behind a NAT
        # or proxy must not lock out the others; its own failures still get 429.
        assert client.get("Observation", headers=good).status_code == 200
        assert client.get("Observation", headers=bearer("wrong-more")).status_code == 429
        assert client.get("metadata").status_code == 200  # public stays public
    body = orjson.loads(throttled.content)
    assert "try again" in body["issue"][0]["diagnostics"]
