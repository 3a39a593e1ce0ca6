"""A database fault at every stage of a unit of work is a TransientStoreError: opening the
connection, a statement, the COMMIT (whose outcome is then unknown); the pool recovers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from support.ports import refused_port

from fhir_app.store import (
    CommitOutcomeUnknown,
    ConflictRolledBack,
    TransientStoreError,
    UnitOfWork,
    make_engine,
    uow_factory,
)

pytestmark = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
FINDING = {"resourceType": "Observation", "status": "final"}


def terminate(admin_url: URL, uow: UnitOfWork) -> None:
    """Kill the server process behind the unit of work's connection, as an admin would."""
    pid = uow.resources._connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()


def write(uow: UnitOfWork, rid: str) -> None:
    uow.resources.write(
        "Observation", rid, FINDING, patient_id="p", status="final", is_output=False, now=T0
    )


def opening_fails_within(url: URL, seconds: float) -> None:
    """Opening a unit of work on `url` fails as transient, in less than `seconds`."""
    engine = make_engine(url)
    try:
        started = time.monotonic()
        with pytest.raises(TransientStoreError), uow_factory(engine)():
            pass
        assert time.monotonic() - started < seconds
    finally:
        engine.dispose()


def test_opening_a_connection_to_an_unreachable_database(database_url: str) -> None:
    with refused_port() as port:
        opening_fails_within(make_url(database_url).set(host="127.0.0.1", port=port), 5)


def test_a_connection_lost_mid_statement(
    make_uow: Callable[[], UnitOfWork], postgres_admin_url: URL
) -> None:
    def read_after_termination() -> None:
        with make_uow() as uow:
            write(uow, "a")
            terminate(postgres_admin_url, uow)
            uow.resources.current("Observation", "a")

    with pytest.raises(TransientStoreError):
        read_after_termination()
    with make_uow() as uow:  # the pool replaced the dead connection
        assert uow.resources.current("Observation", "a") is None


def test_a_connection_lost_at_commit_leaves_the_outcome_unknown(
    make_uow: Callable[[], UnitOfWork], postgres_admin_url: URL
) -> None:
    def commit_after_termination() -> None:
        with make_uow() as uow:
            write(uow, "b")
            terminate(postgres_admin_url, uow)
            uow.commit()

    with pytest.raises(CommitOutcomeUnknown):
        commit_after_termination()
    with make_uow() as uow:
        assert uow.resources.current("Observation", "b") is None


def test_a_failing_rollback_does_not_hide_the_fault(
    make_uow: Callable[[], UnitOfWork],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_rollback() -> None:
        raise OperationalError("ROLLBACK", {}, Exception("server closed the connection"))

    def fail_inside() -> None:
        with make_uow() as uow:
            monkeypatch.setattr(uow.resources._connection, "rollback", broken_rollback)
            raise TransientStoreError("the fault")

    with pytest.raises(TransientStoreError, match="the fault"):
        fail_inside()
    assert "discarding the connection" in caplog.text
    with make_uow() as again:
        assert again.resources.current("Observation", "c") is None


def test_a_real_deadlock_is_a_conflict_the_database_rolled_back(
    make_uow: Callable[[], UnitOfWork],
) -> None:
    with make_uow() as uow:
        write(uow, "x")
        write(uow, "y")
        uow.commit()
    outcomes: dict[str, BaseException | None] = {}

    def cross(name: str, first: str, second: str, ready: threading.Barrier) -> None:
        try:
            with make_uow() as uow:
                write(uow, first)  # locks `first`
                ready.wait(timeout=10)
                write(uow, second)  # waits for the other's lock: one of the two must lose
                uow.commit()
            outcomes[name] = None
        except BaseException as error:
            outcomes[name] = error

    ready = threading.Barrier(2)
    threads = [
        threading.Thread(target=cross, args=("one", "x", "y", ready)),
        threading.Thread(target=cross, args=("two", "y", "x", ready)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    losers = [error for error in outcomes.values() if error is not None]
    assert len(outcomes) == 2
    assert len(losers) == 1, outcomes
    assert isinstance(losers[0], ConflictRolledBack), repr(losers[0])


def test_a_server_that_never_answers_times_out_promptly(database_url: str) -> None:
    # A socket that listens but never accepts: the TCP handshake succeeds, no reply ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = make_url(database_url).set(
            host="127.0.0.1", port=silent.getsockname()[1], query={"connect_timeout": "2"}
        )
        opening_fails_within(url, 6)


def test_postgresql_connections_carry_the_timeouts(engine: Engine) -> None:
    with engine.connect() as connection:
        parameters = connection.connection.driver_connection.info.get_parameters()
    assert parameters["connect_timeout"] == "5"
    assert parameters["keepalives_idle"] == "30"
    assert parameters["tcp_user_timeout"] == "30000"
    assert engine.pool.timeout() == 10
