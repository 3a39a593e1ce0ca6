"""Fixtures of the REST interface tests: the API served for real, uvicorn on a free loopback
port in a background thread, over the shared `make_uow` database fixture (so each test runs on
SQLite and on PostgreSQL).

- `serve(**setting_overrides, service_override=None)`: start a server, returns its /fhir base.
- `base_url`, `fhir`: a server with the default test settings, and an httpx client on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from api_support import Serve, live_server

from fhir_app.api import create_app
from fhir_app.config import Settings
from fhir_app.service import FhirService
from fhir_app.store import UnitOfWork


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings of the test server: the test database, small pages to exercise paging."""
    return Settings(
        database_url=database_url,
        auth_tokens=[],
        max_request_bytes=1024 * 1024,
        default_page_size=20,
        max_page_size=50,
    )


@pytest.fixture
def service(make_uow: Callable[[], UnitOfWork]) -> FhirService:
    """The persistent service over the test database."""
    return FhirService(make_uow)


@pytest.fixture
def serve(settings: Settings, service: FhirService) -> Iterator[Serve]:
    """`serve(**setting_overrides, service=None)` starts a server and returns its /fhir base."""
    with ExitStack() as stack:

        def start(*, service_override: FhirService | None = None, **overrides: Any) -> str:
            app = create_app(settings.model_copy(update=overrides), service_override or service)
            return stack.enter_context(live_server(app))

        yield start


@pytest.fixture
def base_url(serve: Serve) -> str:
    """The /fhir base of a server with the default test settings."""
    return serve()


@pytest.fixture
def fhir(base_url: str) -> Iterator[httpx.Client]:
    """An HTTP client whose relative URLs resolve under /fhir/."""
    with httpx.Client(base_url=f"{base_url}/", timeout=60) as client:
        yield client
