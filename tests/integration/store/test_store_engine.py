"""Engine configuration and the translation of driver errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from fhir_app.store import (
    StoreError,
    TransientStoreError,
    UnitOfWork,
    checkpoint_key,
    content_hash,
    make_engine,
    normalize_database_url,
    uow_factory,
)
from fhir_app.store.errors import translated

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///./fhir-app.db", "sqlite:///./fhir-app.db"),
    ],
)
def test_postgresql_urls_use_psycopg(given: str, expected: str) -> None:
    assert normalize_database_url(given).render_as_string(hide_password=False) == expected


def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA foreign_keys").scalar_one() == 1
            assert pragma("PRAGMA journal_mode").scalar_one() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar_one() == 30_000
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_one_database_for_every_unit_of_work() -> None:
    engine = make_engine("sqlite://")
    make_uow = uow_factory(engine)
    try:
        with make_uow() as uow:
            connection = uow.resources._connection
            connection.exec_driver_sql("CREATE TABLE probe (value INTEGER)")
            connection.exec_driver_sql("INSERT INTO probe VALUES (7)")
            uow.commit()
        with make_uow() as uow:
            value = uow.resources._connection.exec_driver_sql("SELECT value FROM probe")
            assert value.scalar_one() == 7
    finally:
        engine.dispose()


def test_foreign_keys_hold_on_every_backend(engine: Engine) -> None:
    with engine.connect() as connection, pytest.raises(IntegrityError):
        connection.exec_driver_sql(
            "INSERT INTO bulk_run_patient (run_key, patient_id) VALUES ('no such run', 'p')"
        )


# Row-lock timeouts are a PostgreSQL matter (SQLite waits on the whole database instead).
@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_lock_timeout_is_transient(make_uow: Callable[[], UnitOfWork]) -> None:
    content = {"resourceType": "Observation", "status": "final"}
    with make_uow() as uow:
        uow.resources.write(
            "Observation", "a", content, patient_id="p", status="final", is_output=False, now=T0
        )
        uow.commit()
    with make_uow() as holder, make_uow() as waiter:
        holder.resources.write(
            "Observation",
            "a",
            {**content, "status": "amended"},
            patient_id="p",
            status="amended",
            is_output=False,
            now=T0,
        )
        waiter.resources._connection.exec_driver_sql("SET lock_timeout = '200ms'")
        with pytest.raises(TransientStoreError):
            waiter.resources.write(
                "Observation",
                "a",
                {**content, "status": "corrected"},
                patient_id="p",
                status="corrected",
                is_output=False,
                now=T0,
            )


def test_a_busy_sqlite_database_is_transient() -> None:
    @translated
    def busy() -> None:
        raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))

    with pytest.raises(TransientStoreError):
        busy()


def test_other_driver_errors_are_store_errors() -> None:
    @translated
    def broken() -> None:
        raise IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("NOT NULL failed"))

    with pytest.raises(StoreError) as raised:
        broken()
    assert not isinstance(raised.value, TransientStoreError)


def test_content_hash_ignores_server_meta_and_key_order() -> None:
    sent = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    served = {
        "code": {"text": "x"},
        "id": "a",
        "meta": {"versionId": "3", "lastUpdated": "2024-01-01T00:00:00Z"},
        "status": "final",
        "resourceType": "Observation",
    }
    assert content_hash(sent) == content_hash(served)
    assert content_hash(sent) != content_hash({**sent, "status": "amended"})
    assert content_hash(sent) != content_hash({**sent, "meta": {"profile": ["urn:p"]}})


def test_checkpoint_key_changes_with_the_file(tmp_path: Path) -> None:
    source = tmp_path / "input.ndjson"
    source.write_text("{}\n")
    first = checkpoint_key(source)
    assert checkpoint_key(source) == first
    source.write_text("{}\n{}\n")
    assert checkpoint_key(source) != first
    assert len(first) == 64
