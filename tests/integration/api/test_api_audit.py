"""AuditEvent (issue 13): one per interaction, with its outcome; searchable, never writable."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import FHIR_JSON, Serve, example, post_json, put_json
from fhir.resources.R4B import get_fhir_model_class
from security_support import IdentityProvider, bearer
from support.validator import errors, require_medplum, validate_with_medplum

from fhir_app.api.security.audit import AuditWriter
from fhir_app.service import FhirService
from fhir_app.store import AuditQuery, AuditRow, TransientStoreError, UnitOfWork

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def idp(tmp_path: Path) -> IdentityProvider:
    """A fresh identity provider with a key made for this test."""
    return IdentityProvider(tmp_path)


@pytest.fixture
def base(serve: Serve, idp: IdentityProvider, service: FhirService, tmp_path: Path) -> str:
    """A SMART server with patient p01 stored."""
    service.transaction(example("patient-01-stable-blastic.json"))
    return serve(**idp.settings(), export_dir=tmp_path / "exports")


@pytest.fixture
def auditor(base: str, idp: IdentityProvider) -> Iterator[httpx.Client]:
    """A client allowed to search the audit trail."""
    token = idp.token("system/AuditEvent.rs", client_id="auditor", sub="auditor")
    with httpx.Client(base_url=f"{base}/", headers=bearer(token)) as client:
        yield client


def events_of(auditor: httpx.Client, client_id: str) -> list[dict[str, Any]]:
    """The AuditEvents of one client, oldest first."""
    bundle = auditor.get("AuditEvent", params={"agent": client_id, "_count": "100"}).json()
    return [entry["resource"] for entry in bundle["entry"]]


def part_of(event: dict[str, Any]) -> str | None:
    """The Bundle event an entry's event belongs to (None for an event of a request)."""
    for entity in event.get("entity", []):
        for detail in entity.get("detail", []):
            if detail["type"] == "bundle-event":
                return str(detail["valueString"])
    return None


def test_each_interaction_produces_one_event(
    base: str, idp: IdentityProvider, auditor: httpx.Client
) -> None:
    token = idp.token("system/*.cruds", client_id="writer", sub="user-7")
    with httpx.Client(base_url=f"{base}/", headers=bearer(token)) as client:
        steps: list[tuple[str, str, str, str | None, httpx.Response]] = []

        def step(code: str, action: str, what: str | None, response: httpx.Response) -> None:
            steps.append((code, action, response.request.method, what, response))

        read = client.get("Observation/p01-primary")
        step("read", "R", "Observation/p01-primary", read)
        observation = read.json()
        observation.pop("meta")
        step(
            "vread",
            "R",
            "Observation/p01-primary",
            client.get("Observation/p01-primary/_history/1"),
        )
        step(
            "history-instance",
            "R",
            "Observation/p01-primary",
            client.get("Observation/p01-primary/_history"),
        )
        step("search-type", "E", None, client.get("Observation", params={"patient": "p01"}))
        created = post_json(
            client, "Observation", {k: v for k, v in observation.items() if k != "id"}
        )
        step("create", "C", None, created)
        new_id = created.json().get("id")
        step(
            "update",
            "U",
            f"Observation/{new_id}",
            put_json(client, f"Observation/{new_id}", {**observation, "id": new_id}),
        )
        step("delete", "D", f"Observation/{new_id}", client.delete(f"Observation/{new_id}"))
        step(
            "transaction",
            "E",
            None,
            post_json(client, "", example("patient-02-potentially-unstable.json")),
        )
        step("operation", "E", None, client.get("$export", headers=ASYNC))
    recorded = events_of(auditor, "writer")
    # The transaction's entries have an event each, naming the Bundle's event.
    entry_events = [e for e in recorded if part_of(e) is not None]
    events = [e for e in recorded if part_of(e) is None]
    assert len(events) == len(steps)
    transaction = events[7]
    assert {part_of(e) for e in entry_events} == {f"AuditEvent/{transaction['id']}"}
    sent = example("patient-02-potentially-unstable.json")["entry"]
    assert len(entry_events) == len(sent)
    for event, entry in zip(entry_events, sent, strict=True):
        assert event["action"] == {"POST": "C", "PUT": "U"}[entry["request"]["method"]]
        assert event["outcome"] == "0"
        assert event["entity"][0]["what"]["reference"].startswith(entry["resource"]["resourceType"])
    for event, (code, action, method, what, response) in zip(events, steps, strict=True):
        assert response.status_code < 400, response.text
        assert event["type"]["code"] == "rest"
        assert event["subtype"][0]["code"] == code, (method, event)
        assert event["action"] == action
        assert event["outcome"] == "0"
        assert event["agent"][0]["who"]["identifier"]["value"] == "writer"
        assert event["agent"][1]["who"]["identifier"]["value"] == "user-7"
        assert event["source"]["observer"]["display"] == "fhir-app"
        if what is not None:
            assert event["entity"][0]["what"]["reference"] == what
    search = events[3]["entity"][0]
    query = base64.b64decode(search["query"]).decode()
    assert query == "patient="  # the parameter is recorded, the patient is not
    assert "p01" not in search["description"]
    assert {"reference": "Patient/p01"} in [e["what"] for e in events[3]["entity"]]


def test_refusals_are_recorded_with_outcome_4(
    base: str, idp: IdentityProvider, auditor: httpx.Client
) -> None:
    token = idp.token("system/Observation.r", client_id="reader")
    with httpx.Client(base_url=f"{base}/") as client:
        assert client.get("Observation/p01-primary").status_code == 401
        refused = client.delete("Observation/p01-primary", headers=bearer(token))
        assert refused.status_code == 403
        missing = client.get("Observation/nope", headers=bearer(token))
        assert missing.status_code == 404
    outcomes = [(e["subtype"][0]["code"], e["outcome"]) for e in events_of(auditor, "reader")]
    assert outcomes == [("delete", "4"), ("read", "4")]
    anonymous = events_of(auditor, "unauthenticated")
    assert [(e["subtype"][0]["code"], e["outcome"]) for e in anonymous] == [("read", "4")]


def test_audit_search_parameters_and_paging(
    base: str, idp: IdentityProvider, auditor: httpx.Client
) -> None:
    token = idp.token("system/*.rs", client_id="pager")
    with httpx.Client(base_url=f"{base}/", headers=bearer(token)) as client:
        for _ in range(5):
            client.get("Observation/p01-primary")
        client.get("RiskAssessment", params={"patient": "p01"})
        client.get("Observation/absent")
    first = auditor.get("AuditEvent", params={"agent": "pager", "_count": "2"}).json()
    assert first["total"] == 7
    assert len(first["entry"]) == 2
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert next_url.startswith("https://fhir.test.invalid/fhir/AuditEvent?")
    by_type = auditor.get("AuditEvent", params={"agent": "pager", "entity-type": "RiskAssessment"})
    assert by_type.json()["total"] == 1
    failed = auditor.get("AuditEvent", params={"agent": "pager", "outcome": "4"})
    assert failed.json()["total"] == 1
    later = auditor.get("AuditEvent", params={"agent": "pager", "date": "gt2100-01-01"})
    assert later.json()["total"] == 0
    earlier = auditor.get("AuditEvent", params={"agent": "pager", "date": "ge2000-01-01"})
    assert earlier.json()["total"] == 7
    one = first["entry"][0]["resource"]
    assert auditor.get(f"AuditEvent/{one['id']}").json() == one
    assert auditor.get("AuditEvent", params={"nonsense": "1"}).status_code == 400


def test_the_audit_trail_is_not_writable_nor_open_to_other_scopes(
    base: str, idp: IdentityProvider, auditor: httpx.Client
) -> None:
    assert auditor.get("AuditEvent").json()["total"] == 0  # its own search is recorded after
    event = auditor.get("AuditEvent").json()["entry"][0]["resource"]
    body = {"resourceType": "AuditEvent"}
    for method, path in (
        ("POST", "AuditEvent"),
        ("PUT", f"AuditEvent/{event['id']}"),
        ("DELETE", f"AuditEvent/{event['id']}"),
    ):
        response = auditor.request(method, path, json=body, headers=FHIR_JSON)
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "GET, HEAD"
    reader = idp.token("system/Observation.rs", client_id="nosy")
    refused = auditor.get("AuditEvent", headers=bearer(reader))
    assert refused.status_code == 403
    assert "system/AuditEvent.s" in refused.text


def test_audit_events_and_the_capability_statement_are_valid_r4(
    base: str, idp: IdentityProvider, auditor: httpx.Client
) -> None:
    token = idp.token("system/*.cruds", client_id="validator", sub="person-1")
    with httpx.Client(base_url=f"{base}/", headers=bearer(token)) as client:
        client.get("Observation/p01-primary")
        client.get("Observation", params={"patient": "p01", "code": "x|y"})
        client.delete("RiskAssessment/none")
        client.get("$export", headers=ASYNC)
        statement = client.get("metadata").json()
    events = events_of(auditor, "validator")
    assert len(events) == 4
    for event in events:
        get_fhir_model_class("AuditEvent").model_validate(event)
    get_fhir_model_class("CapabilityStatement").model_validate(statement)
    if medplum_available():
        results = validate_with_medplum([*events, statement])
        assert [errors(issues) for issues in results] == [[]] * len(results)


def medplum_available() -> bool:
    """Whether the independent validator can run here (node and its packages)."""
    try:
        require_medplum()
    except pytest.skip.Exception:
        return False
    return True


def writer_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "fhir-app-audit" and t.is_alive()}


def audit_row(event_id: str) -> AuditRow:
    return AuditRow(
        event_id=event_id,
        recorded=datetime(2026, 1, 15, 9, 30, tzinfo=UTC),
        interaction="read",
        action="R",
        outcome="0",
        client_id="closer",
        subject=None,
        entity_type="Observation",
        patient_id=None,
        content={"resourceType": "AuditEvent", "id": event_id},
    )


def test_closing_the_writer_stores_what_is_queued_and_stops_its_thread(
    make_uow: Callable[[], UnitOfWork],
) -> None:
    before = writer_threads()  # those of other apps in this process
    writer = AuditWriter(make_uow)
    writer.submit(audit_row("a1"))
    writer.submit(audit_row("a2"))
    assert writer.close() is True
    assert writer_threads() <= before
    writer.submit(audit_row("a3"))  # a later event starts the writer again
    assert writer.close() is True
    with make_uow() as uow:
        _, total = uow.audit.search(AuditQuery(agents=["closer"]), count=0, offset=0)
    assert total == 3
    assert writer.dropped == 0


def test_closing_the_writer_on_a_database_that_refuses_drops_the_rest_and_stops() -> None:
    def refused() -> UnitOfWork:
        raise TransientStoreError("the database is gone")

    before = writer_threads()
    writer = AuditWriter(refused)
    writer.submit(audit_row("b1"))
    assert writer.close(timeout=0.2) is False
    assert writer.dropped == 1
    assert writer_threads() <= before
