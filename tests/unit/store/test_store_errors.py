"""The translation of driver and pool errors: which are transient (503, try again) and which are
not, one row per case of the table in `fhir_app.store.errors`."""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg.errors
import pytest
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from fhir_app.store import StoreError, TransientStoreError
from fhir_app.store.errors import (
    CommitOutcomeUnknown,
    ConflictRolledBack,
    commit_translated,
    store_error,
    translated,
)


def postgres(sqlstate: str, message: str = "server says no") -> psycopg.Error:
    """The psycopg exception the server's SQLSTATE maps to."""
    error: psycopg.Error = psycopg.errors.lookup(sqlstate)(message)
    return error


def wrapped(orig: BaseException, *, invalidated: bool = False) -> DBAPIError:
    """The error as SQLAlchemy raises it around a driver exception."""
    wrapper = DBAPIError.instance(
        "SELECT 1", {}, orig, psycopg.Error, connection_invalidated=invalidated
    )
    assert isinstance(wrapper, DBAPIError)
    return wrapper


def raised_by(error: BaseException) -> StoreError:
    """What `translated` turns `error` into."""

    @translated
    def failing() -> None:
        raise error

    with pytest.raises(StoreError) as caught:
        failing()
    return caught.value


TRANSIENT = [
    pytest.param(wrapped(postgres(code)), id=f"sqlstate-{code}")
    for code in (
        "08000",  # connection_exception
        "08003",  # connection_does_not_exist
        "08006",  # connection_failure
        "08001",  # sqlclient_unable_to_establish_sqlconnection
        "08004",  # sqlserver_rejected_establishment_of_sqlconnection
        "57P01",  # admin_shutdown (pg_terminate_backend, fast shutdown)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now ("the database system is shutting down / starting up")
        "57P05",  # idle_session_timeout
        "53000",  # insufficient_resources
        "53100",  # disk_full
        "53200",  # out_of_memory
        "53300",  # too_many_connections
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout)
    )
] + [
    pytest.param(
        wrapped(psycopg.OperationalError("connection refused")), id="libpq-connection-refused"
    ),
    pytest.param(
        wrapped(
            psycopg.OperationalError(
                "consuming input failed: server closed the connection unexpectedly"
            )
        ),
        id="libpq-server-closed",
    ),
    pytest.param(
        wrapped(psycopg.InterfaceError("the connection is closed"), invalidated=True),
        id="connection-invalidated",
    ),
    pytest.param(psycopg.OperationalError("the connection is lost"), id="raw-psycopg-lost"),
    pytest.param(postgres("57P01"), id="raw-psycopg-admin-shutdown"),
    pytest.param(PoolTimeoutError("QueuePool limit of size 5 overflow 10 reached"), id="pool"),
    pytest.param(DisconnectionError("pre-ping failed"), id="pool-disconnection"),
    pytest.param(
        OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")),
        id="sqlite-locked",
    ),
    pytest.param(
        OperationalError("BEGIN", {}, sqlite3.OperationalError("database is busy")),
        id="sqlite-busy",
    ),
]

NOT_TRANSIENT = [
    pytest.param(
        IntegrityError("INSERT", {}, postgres("23505", "duplicate key")), id="unique-violation"
    ),
    pytest.param(
        IntegrityError("INSERT", {}, postgres("23503", "foreign key")), id="foreign-key-violation"
    ),
    pytest.param(
        ProgrammingError("SELECT", {}, postgres("42P01", "no such relation")), id="undefined-table"
    ),
    pytest.param(
        ProgrammingError("SELECT", {}, postgres("42601", "syntax error")), id="syntax-error"
    ),
    pytest.param(wrapped(postgres("22021", "invalid byte sequence")), id="character-data"),
    pytest.param(wrapped(postgres("57P04", "database dropped")), id="database-dropped"),
    pytest.param(
        IntegrityError("INSERT", {}, sqlite3.IntegrityError("NOT NULL constraint failed")),
        id="sqlite-integrity",
    ),
    pytest.param(
        OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: resource")),
        id="sqlite-no-such-table",
    ),
    pytest.param(
        InterfaceError("SELECT", {}, psycopg.InterfaceError("bad parameter")),
        id="interface-error",
    ),
]


@pytest.mark.parametrize("error", TRANSIENT)
def test_transient_faults(error: BaseException) -> None:
    translation = raised_by(error)
    assert isinstance(translation, TransientStoreError)
    assert translation.__cause__ is error


@pytest.mark.parametrize("error", NOT_TRANSIENT)
def test_errors_a_retry_would_not_cure(error: BaseException) -> None:
    translation = raised_by(error)
    assert not isinstance(translation, TransientStoreError)


@pytest.mark.parametrize("code", ["40001", "40P01"])
def test_conflicts_are_known_to_be_rolled_back(code: str) -> None:
    assert isinstance(raised_by(wrapped(postgres(code))), ConflictRolledBack)


@pytest.mark.parametrize("code", ["08006", "57P01", "55P03"])
def test_other_transient_faults_are_not_conflicts(code: str) -> None:
    assert not isinstance(raised_by(wrapped(postgres(code))), ConflictRolledBack)


def test_bugs_are_not_store_errors() -> None:
    assert store_error(KeyError("id")) is None
    with pytest.raises(KeyError):
        translated(lambda: {}["id"])()


def test_store_errors_pass_through() -> None:
    original = TransientStoreError("already translated")
    assert store_error(original) is original
    assert raised_by(original) is original


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (wrapped(postgres("57P01")), CommitOutcomeUnknown),
        (wrapped(psycopg.OperationalError("server closed the connection")), CommitOutcomeUnknown),
        # A serialization failure at COMMIT is a definite rollback: safe to run again.
        (wrapped(postgres("40001")), ConflictRolledBack),
        (IntegrityError("COMMIT", {}, postgres("23505")), StoreError),
    ],
)
def test_a_fault_during_commit_leaves_its_outcome_unknown(
    error: BaseException, expected: type[StoreError]
) -> None:
    @commit_translated
    def commit() -> None:
        raise error

    with pytest.raises(StoreError) as caught:
        commit()
    assert type(caught.value) is expected
