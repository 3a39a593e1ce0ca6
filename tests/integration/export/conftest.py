"""Fixtures of the bulk export tests: the API served for real (uvicorn in a thread, reusing the
REST tests' `live_server`) over the shared database fixtures, so each test runs on SQLite and on
PostgreSQL, with the export jobs in a folder of the test.

- `serve(**setting_overrides, service_override=None)`: start a server, returns its /fhir base.
- `fhir`: an httpx client on a server with the default test settings.
- `loaded`: the service with three example patients stored (p01, p03, p08).
- `gate`: a service whose export page reads wait until the test opens the gate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration.api.api_support import Serve, example, live_server

from fhir_app.api import create_app
from fhir_app.config import Settings
from fhir_app.service import FhirService
from fhir_app.store import UnitOfWork

EXAMPLES = (
    "patient-01-stable-blastic.json",
    "patient-03-unstable.json",
    "patient-08-several-levels.json",
)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """The folder of the export jobs."""
    return tmp_path / "exports"


@pytest.fixture
def settings(database_url: str, export_dir: Path) -> Settings:
    """Settings of the test server: the test database, small pages, the test's export folder."""
    return Settings(
        database_url=database_url,
        auth_tokens=[],
        default_page_size=20,
        max_page_size=50,
        export_dir=export_dir,
    )


@pytest.fixture
def service(make_uow: Callable[[], UnitOfWork]) -> FhirService:
    """The persistent service over the test database."""
    return FhirService(make_uow)


@pytest.fixture
def loaded(service: FhirService) -> FhirService:
    """The service with the example patients p01, p03 and p08 stored and derived."""
    for name in EXAMPLES:
        service.transaction(example(name))
    return service


@pytest.fixture
def serve(settings: Settings, service: FhirService) -> Iterator[Serve]:
    """`serve(**setting_overrides, service_override=None)` starts a server, returns /fhir."""
    with ExitStack() as stack:

        def start(*, service_override: FhirService | None = None, **overrides: Any) -> str:
            app = create_app(settings.model_copy(update=overrides), service_override or service)
            return stack.enter_context(live_server(app))

        yield start


@pytest.fixture
def fhir(serve: Serve) -> Iterator[httpx.Client]:
    """An HTTP client whose relative URLs resolve under /fhir/ of a default test server."""
    with httpx.Client(base_url=f"{serve()}/", timeout=60) as client:
        yield client


class Gate:
    """Holds every unit of work of a service until `open()`; `entered` is set by the first."""

    def __init__(self, make_uow: Callable[[], UnitOfWork]) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.service = FhirService(self.unit_of_work)
        self._make_uow = make_uow

    def unit_of_work(self) -> UnitOfWork:
        self.entered.set()
        assert self.opened.wait(timeout=60), "the test never opened the gate"
        return self._make_uow()

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gate(make_uow: Callable[[], UnitOfWork]) -> Iterator[Gate]:
    """A service over the test database whose reads wait for `gate.open()`."""
    held = Gate(make_uow)
    try:
        yield held
    finally:
        held.open()
