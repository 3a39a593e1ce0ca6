"""Shared fixtures: a fresh database per test, on SQLite and on PostgreSQL.

Fixtures (each test that uses one runs twice, `[sqlite]` and `[postgresql]`):

- `database_url`: a fresh database at the newest schema, built by the real Alembic migrations
  (each backend is migrated once per session into a template that every test copies).
- `empty_database_url`: a fresh database without any table, for migration tests.
- `engine`: `make_engine(database_url)`, disposed after the test.
- `make_uow`: `uow_factory(engine)`, a new UnitOfWork per call.

PostgreSQL: the server at FHIR_APP_TEST_POSTGRES_URL (an admin URL; default
`postgresql+psycopg://postgres@127.0.0.1:5432/postgres`); each test gets its own database
`fhirapp_test_<random>`, dropped afterwards. Its tests carry the `postgres` marker
(`-m "not postgres"` leaves them out) and are skipped when the server cannot be reached, except
under CI=true, where that is a failure.

Parallel workers: `python3 tasks.py test` runs the suite in pytest-xdist worker processes
(`-n`, `--dist loadgroup`); a plain `pytest` runs it in one. Session fixtures are per worker (each
migrates its own templates), so nothing here may be shared between tests but through a fresh
name: databases get random names, files go under `tmp_path`, servers bind port 0 (or take a port
from tests/support/ports.py), and a live server's AuditEvent writer is closed before its database
is dropped. Tests that must share one expensive process run in one worker (ONE_WORKER below: the
Spark session's).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from fhir_app.store import UnitOfWork, make_engine, migrate, normalize_database_url, uow_factory

DEFAULT_POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

# Test files whose tests all run in one pytest-xdist worker, by group name: they share a module
# fixture starting a heavy process (the Spark session's JVM), which a split would start in each
# worker. The files also carry `pytest.mark.xdist_group(name)`, which is how pytest-xdist groups
# under --dist loadgroup; with pytest 9.2 that mark alone no longer takes effect (pytest-xdist
# 3.8.0 still renames the node ids, which pytest 9.2 ignores: pytest-xdist issue 1386), so the
# scheduler below groups these by path as well.
ONE_WORKER = {"tests/integration/spark/test_spark_process.py": "spark"}

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--dist loadgroup, the files of ONE_WORKER each one unit of work (one worker)."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class OneWorkerGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            group = ONE_WORKER.get(nodeid.split("::", 1)[0])
            return group if group is not None else super()._split_scope(nodeid)

    return OneWorkerGroups(config, log)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test run: "sqlite" or "postgresql"."""
    name: str = request.param
    return name


def _admin_engine(url: URL) -> Engine:
    # CREATE / DROP DATABASE cannot run inside a transaction.
    return create_engine(
        url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5}
    )


@pytest.fixture(scope="session")
def postgres_admin_url() -> URL:
    """The admin URL of the test PostgreSQL server; skips (or fails under CI) when unreachable."""
    url = normalize_database_url(
        os.environ.get("FHIR_APP_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL)
    )
    engine = _admin_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except OperationalError as error:
        reason = (
            f"PostgreSQL unreachable at {url.render_as_string(hide_password=True)} "
            f"({error.orig}); set FHIR_APP_TEST_POSTGRES_URL to an admin URL"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    finally:
        engine.dispose()
    return url


def _create_postgres_database(admin_url: URL, *, template: str | None = None) -> URL:
    name = f"fhirapp_test_{secrets.token_hex(6)}"
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as connection:
            suffix = f" TEMPLATE {template}" if template else ""
            connection.exec_driver_sql(f"CREATE DATABASE {name}{suffix}")
    finally:
        engine.dispose()
    return admin_url.set(database=name)


def _drop_postgres_database(admin_url: URL, url: URL) -> None:
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as connection:
            # FORCE: a test that leaked a connection must not leak its database too.
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)")
    finally:
        engine.dispose()


def _url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _postgres_template(postgres_admin_url: URL) -> Iterator[str]:
    url = _create_postgres_database(postgres_admin_url)
    try:
        migrate(_url_text(url))
        yield str(url.database)
    finally:
        _drop_postgres_database(postgres_admin_url, url)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "fhir-app.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def empty_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A fresh database without any table (URL as text)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin_url: URL = request.getfixturevalue("postgres_admin_url")
    url = _create_postgres_database(admin_url)
    try:
        yield _url_text(url)
    finally:
        _drop_postgres_database(admin_url, url)


class _BackgroundDrops:
    """Drops test databases on a worker thread: a drop then overlaps with the next test instead
    of delaying it. `finish()` waits for all and re-raises the first failure."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-test-db")
        self._pending: list[Future[None]] = []

    def drop(self, admin_url: URL, url: URL) -> None:
        self._pending.append(self._executor.submit(_drop_postgres_database, admin_url, url))

    def finish(self) -> None:
        self._executor.shutdown(wait=True)
        for dropped in self._pending:
            dropped.result()


@pytest.fixture(scope="session")
def _postgres_drops() -> Iterator[_BackgroundDrops]:
    drops = _BackgroundDrops()
    try:
        yield drops
    finally:
        drops.finish()


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the newest schema, built by the migrations (URL as text)."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        path = tmp_path / "fhir-app.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    admin_url: URL = request.getfixturevalue("postgres_admin_url")
    drops: _BackgroundDrops = request.getfixturevalue("_postgres_drops")
    url = _create_postgres_database(
        admin_url, template=request.getfixturevalue("_postgres_template")
    )
    try:
        yield _url_text(url)
    finally:
        drops.drop(admin_url, url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An application engine on `database_url`, disposed after the test."""
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def make_uow(engine: Engine) -> Callable[[], UnitOfWork]:
    """A factory of units of work on the test database."""
    return uow_factory(engine)
