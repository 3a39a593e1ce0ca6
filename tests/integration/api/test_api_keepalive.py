"""An error answer never closes the client's keep-alive connection: after a 500, a 503 and a
database that cannot be reached, the same TCP connection serves the next request."""

from __future__ import annotations

import http.client
from typing import Any

import orjson
import pytest
from api_support import live_server
from sqlalchemy.engine import make_url
from support.ports import refused_port

from fhir_app.api import create_app
from fhir_app.api.dependencies import app_service
from fhir_app.config import Settings
from fhir_app.service import FhirService
from fhir_app.store import TransientStoreError, make_engine, uow_factory

ACCEPT = {"Accept": "application/fhir+json"}


def exchange(connection: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, Any]]:
    """GET `path` on the open connection; (status, JSON body). The socket must stay the same."""
    before = connection.sock
    assert before is not None
    connection.request("GET", path, headers=ACCEPT)
    response = connection.getresponse()
    body: dict[str, Any] = orjson.loads(response.read())
    assert connection.sock is before, "the connection was closed after the response"
    return response.status, body


def assert_connection_survives(base: str, failing_path: str, status: int, code: str) -> str:
    """The failing request gets `status` with an OperationOutcome of `code`; then two more
    requests (the failing one again, and the CapabilityStatement) go over the same socket."""
    host, port = base.removeprefix("http://").split("/")[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.connect()
        local = connection.sock.getsockname()
        answer, outcome = exchange(connection, failing_path)
        assert answer == status, outcome
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == code
        assert exchange(connection, failing_path)[0] == status
        answer, statement = exchange(connection, "/fhir/metadata")
        assert answer == 200
        assert statement["resourceType"] == "CapabilityStatement"
        assert connection.sock.getsockname() == local
        return str(outcome["issue"][0].get("diagnostics", ""))
    finally:
        connection.close()


def test_a_500_keeps_the_connection_open(settings: Settings, service: FhirService) -> None:
    app = create_app(settings, service)

    def broken() -> FhirService:
        raise RuntimeError("a bug in a dependency")

    app.dependency_overrides[app_service] = broken
    with live_server(app) as base:
        text = assert_connection_survives(base, "/fhir/Observation/f1", 500, "exception")
    assert "reference" in text
    assert "a bug" not in text


def test_a_503_keeps_the_connection_open(settings: Settings, service: FhirService) -> None:
    app = create_app(settings, service)

    def busy() -> FhirService:
        raise TransientStoreError("could not serialize access due to concurrent update")

    app.dependency_overrides[app_service] = busy
    with live_server(app) as base:
        assert_connection_survives(base, "/fhir/Observation/f1", 503, "transient")


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_an_unreachable_database_is_503_and_keeps_the_connection_open(
    settings: Settings, database_url: str
) -> None:
    with refused_port() as port:
        engine = make_engine(make_url(database_url).set(host="127.0.0.1", port=port))
        try:
            app = create_app(settings, FhirService(uow_factory(engine)))
            # The audit trail of these requests can never be stored: no wait for it at the end.
            with live_server(app, audit_timeout=0) as base:
                for path in ("/fhir/Observation/f1", "/fhir/RiskAssessment?patient=p1"):
                    assert_connection_survives(base, path, 503, "transient")
        finally:
            engine.dispose()
