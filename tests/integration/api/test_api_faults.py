"""Database faults under load: a live server on PostgreSQL while its connections are terminated
(`pg_terminate_backend`) and while the database is unreachable (the app reaches PostgreSQL through
a TCP proxy that the test cuts and restores).

What must hold: clients see only 2xx and 503 + Retry-After OperationOutcomes (never a 500, never
a dropped keep-alive connection); every acknowledged write is stored with its content; once the
fault ends the service recovers by itself.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from api_support import live_server
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool
from support.tcp_proxy import TcpProxy

from fhir_app.api import create_app
from fhir_app.config import Settings
from fhir_app.fhir.samples import observation
from fhir_app.service import FhirService
from fhir_app.store import make_engine, uow_factory

pytestmark = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

CLIENTS = 4
ENTRIES = 3  # findings per transaction
TERMINATE_SECONDS = 4.0
TERMINATE_EVERY_SECONDS = 0.2
OUTAGE_SECONDS = 3.0
FINAL_ROUND = 5  # transactions per client after the faults, all of which must succeed
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@dataclass
class Tally:
    """What one client saw."""

    acknowledged: dict[str, float] = field(default_factory=dict)  # Observation id -> its HU
    statuses: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # anything but 2xx and a proper 503


class Client:
    """One keep-alive HTTP connection that writes transactions and checks every answer."""

    def __init__(self, port: int, number: int, tally: Tally) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.connection.connect()
        self.socket = self.connection.sock
        self.number = number
        self.tally = tally
        self.sent = 0

    def close(self) -> None:
        self.connection.close()

    def transaction(self) -> int:
        """Send one transaction of ENTRIES findings; returns the status (0: connection lost)."""
        self.sent += 1
        findings = {
            f"fault-{self.number}-{self.sent}-{k}": float(self.number * 10_000 + self.sent * 10 + k)
            for k in range(ENTRIES)
        }
        patient = f"fault-p{self.number}-{self.sent % 3}"
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": observation(
                        rid, patient, "ct", hu, level="L2", effective="2025-05-01"
                    ),
                    "request": {"method": "PUT", "url": f"Observation/{rid}"},
                }
                for rid, hu in findings.items()
            ],
        }
        try:
            self.connection.request("POST", "/fhir", body=orjson.dumps(bundle), headers=FHIR_JSON)
            response = self.connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.tally.failures.append(f"connection lost: {error!r}")
            self.connection.close()
            self.connection.connect()
            self.socket = self.connection.sock
            return 0
        self.tally.statuses.append(response.status)
        if self.connection.sock is not self.socket:
            self.tally.failures.append(f"the server closed the connection after {response.status}")
            self.connection.connect()
            self.socket = self.connection.sock
        if 200 <= response.status < 300:
            self.tally.acknowledged.update(findings)
        elif response.status == 503:
            self._check_unavailable(response, body)
        else:
            self.tally.failures.append(f"{response.status}: {body[:300]!r}")
        return response.status

    def _check_unavailable(self, response: http.client.HTTPResponse, body: bytes) -> None:
        outcome: dict[str, Any] = orjson.loads(body)
        if response.getheader("Retry-After") is None:
            self.tally.failures.append("503 without Retry-After")
        if outcome.get("resourceType") != "OperationOutcome" or outcome["issue"][0]["code"] != (
            "transient"
        ):
            self.tally.failures.append(f"503 without a transient OperationOutcome: {body[:300]!r}")


def via_proxy(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the test database's PostgreSQL server."""
    upstream = make_url(database_url)
    with TcpProxy(upstream.host or "127.0.0.1", upstream.port or 5432) as running:
        yield running


def terminate_backends(admin_url: URL, database: str, until: float) -> int:
    """Terminate every connection to `database` (the app's) again and again until `until`."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    terminated = 0
    try:
        with admin.connect() as connection:
            while time.monotonic() < until:
                killed = connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :database AND pid <> pg_backend_pid()"
                    ),
                    {"database": database},
                ).scalar_one()
                terminated += int(killed)
                time.sleep(TERMINATE_EVERY_SECONDS)
    finally:
        admin.dispose()
    return terminated


def test_database_faults_under_load_are_503_and_lose_no_acknowledged_write(
    database_url: str, postgres_admin_url: URL, proxy: TcpProxy
) -> None:
    started = time.monotonic()
    engine = make_engine(via_proxy(database_url, proxy))
    service = FhirService(uow_factory(engine))
    app = create_app(Settings(database_url=database_url, auth_tokens=[]), service)
    tallies = [Tally() for _ in range(CLIENTS)]
    stop = threading.Event()

    with live_server(app) as base:
        port = int(base.split(":")[2].split("/")[0])
        clients = [Client(port, number, tally) for number, tally in enumerate(tallies)]

        def load(client: Client) -> None:
            while not stop.is_set():
                if client.transaction() == 503:
                    time.sleep(0.05)  # as a client honouring Retry-After would, but shorter

        workers = [threading.Thread(target=load, args=(c,), daemon=True) for c in clients]
        for worker in workers:
            worker.start()
        try:
            time.sleep(1.0)  # load on a healthy database first
            terminated = terminate_backends(
                postgres_admin_url,
                str(make_url(database_url).database),
                until=time.monotonic() + TERMINATE_SECONDS,
            )
            proxy.cut()
            time.sleep(OUTAGE_SECONDS)
            proxy.restore()
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=60)

        statuses_under_faults = [s for t in tallies for s in t.statuses]
        # Recovery without any help: every client's next transactions all succeed.
        final = [[c.transaction() for _ in range(FINAL_ROUND)] for c in clients]
        for c in clients:
            c.close()

        # Every acknowledged write is there, with the content that was sent.
        lost = []
        reader = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for tally in tallies:
                for rid, hu in tally.acknowledged.items():
                    reader.request("GET", f"/fhir/Observation/{rid}", headers=FHIR_JSON)
                    response = reader.getresponse()
                    body = response.read()
                    if response.status != 200 or orjson.loads(body)["valueQuantity"]["value"] != hu:
                        lost.append(f"{rid}: {response.status} {body[:200]!r}")
        finally:
            reader.close()
    engine.dispose()

    failures = [f for t in tallies for f in t.failures]
    assert failures == [], failures[:10]
    assert final == [[200] * FINAL_ROUND] * CLIENTS, final
    assert lost == [], lost[:10]
    acknowledged = sum(len(t.acknowledged) for t in tallies)
    # The faults happened and were seen, and the load went on around them.
    assert terminated > 0
    assert statuses_under_faults.count(503) > 0, statuses_under_faults
    assert acknowledged > CLIENTS * FINAL_ROUND * ENTRIES
    assert time.monotonic() - started < 30
