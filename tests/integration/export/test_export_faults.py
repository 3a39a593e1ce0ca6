"""An export that meets an unreachable database is not a failed export: its status stays 202
(queued again, waiting for the database) and it completes once the database is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
from export_support import exported, kick_off, status_url, wait_until_done
from integration.api.api_support import Serve

from fhir_app.service import FhirService
from fhir_app.store import TransientStoreError, UnitOfWork


class Outage:
    """Units of work that fail as an unreachable database does until `end()`."""

    def __init__(self, make_uow: Callable[[], UnitOfWork]) -> None:
        self._make_uow = make_uow
        self.down = threading.Event()
        self.down.set()
        self.refused = 0

    def unit_of_work(self) -> UnitOfWork:
        if self.down.is_set():
            self.refused += 1
            raise TransientStoreError("connection to server at 127.0.0.1 failed: refused")
        return self._make_uow()

    def end(self) -> None:
        self.down.clear()


def test_an_export_waits_for_the_database_and_completes(
    loaded: FhirService, serve: Serve, make_uow: Callable[[], UnitOfWork]
) -> None:
    with httpx.Client(base_url=f"{serve()}/", timeout=60) as healthy:
        expected = exported(healthy, wait_until_done(healthy, status_url(kick_off(healthy))).json())

    outage = Outage(make_uow)
    with httpx.Client(base_url=f"{serve(service_override=FhirService(outage.unit_of_work))}/") as c:
        location = status_url(kick_off(c))
        deadline = time.monotonic() + 30
        while True:
            status = c.get(location)
            assert status.status_code == 202, status.text
            assert status.headers["retry-after"].isdigit()
            if "waiting for the database" in status.headers["x-progress"]:
                break
            assert time.monotonic() < deadline, status.headers
            time.sleep(0.05)
        assert outage.refused > 0

        outage.end()
        done = wait_until_done(c, location)
        assert done.status_code == 200, done.text
        assert exported(c, done.json()) == expected
