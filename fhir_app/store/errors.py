"""Store failures in the store's own words, so that callers never import SQLAlchemy.

Which driver and pool errors are transient (a later try of the same unit of work can succeed,
so the REST API answers 503 with Retry-After) and which are not (a bug or a refused statement:
500 or the error's own status):

| error | kind |
|---|---|
| SQLSTATE class 08 (connection), 53 (resources: 53300 too many connections) | transient |
| 57P01 / 57P02 / 57P03 / 57P05 (shutdown, crash, cannot connect now, idle timeout) | transient |
| 57014 (statement timeout), 55P03 (lock timeout) | transient |
| 40001 / 40P01 (serialization failure, deadlock: rolled back) | `ConflictRolledBack` |
| psycopg OperationalError without SQLSTATE (connection refused or closed) | transient |
| a connection SQLAlchemy invalidated (it recognised a disconnect) | transient |
| SQLAlchemy pool timeout (every connection busy), pool disconnection | transient |
| SQLite SQLITE_BUSY / SQLITE_LOCKED ("database is locked", "database is busy") | transient |
| integrity, programming, data errors with other SQLSTATEs; other SQLite errors | `StoreError` |

A transient fault while committing is `CommitOutcomeUnknown`: the COMMIT may have reached the
database before the connection died, so the client is told that the write may have happened.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

P = ParamSpec("P")
R = TypeVar("R")

# PostgreSQL SQLSTATEs (Appendix A of its manual) after which the same unit of work can succeed
# when run again: the database rolled the transaction back and nothing of it was stored.
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_TRANSIENT_SQLSTATES = _CONFLICT_SQLSTATES | frozenset(
    {
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown: the server is stopping, or pg_terminate_backend
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: the server is starting or shutting down
        "57P05",  # idle_session_timeout
    }
)
# Whole classes: 08 connection_exception, 53 insufficient_resources (53300 too_many_connections).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53")
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class StoreError(Exception):
    """The database refused or failed an operation."""


class DatabaseUrlError(StoreError):
    """FHIR_APP_DATABASE_URL cannot be parsed, or names a database driver that is not installed;
    the message never quotes the password."""


class UnknownSchemaRevision(StoreError):
    """The database's schema is at a migration this version of fhir-app does not have (a newer
    version wrote it, and the code was rolled back without downgrading the schema)."""


class TransientStoreError(StoreError):
    """The database was unreachable, busy, or the transaction lost a race; running the whole
    unit of work again later is the remedy. Nothing of the unit of work was stored, except for
    `CommitOutcomeUnknown`."""


class ConflictRolledBack(TransientStoreError):
    """A deadlock or serialization failure: the database itself rolled the transaction back, so
    running the unit of work again cannot store anything twice."""


class CommitOutcomeUnknown(TransientStoreError):
    """The connection failed during COMMIT: the transaction may or may not be durable."""


def _sqlstate(error: BaseException | None) -> str | None:
    sqlstate = getattr(error, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) else None


def _driver_error_kind(error: BaseException | None) -> type[StoreError]:
    """The StoreError class for an error of psycopg or sqlite3 (wrapped or raw)."""
    sqlstate = _sqlstate(error)
    if sqlstate in _CONFLICT_SQLSTATES:
        return ConflictRolledBack
    if sqlstate is not None and (
        sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES)
    ):
        return TransientStoreError
    if isinstance(error, psycopg.OperationalError) and sqlstate is None:
        # libpq's own failures carry no SQLSTATE: connection refused, timeout expired, "server
        # closed the connection unexpectedly", SSL SYSCALL errors. All are outages.
        return TransientStoreError
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        message = str(error).lower()
        if (isinstance(code, int) and code & 0xFF in _SQLITE_BUSY_CODES) or (
            isinstance(error, sqlite3.OperationalError)
            and ("database is locked" in message or "database is busy" in message)
        ):
            return TransientStoreError
    return StoreError


def store_error(error: BaseException) -> StoreError | None:
    """The StoreError that a driver, SQLAlchemy or pool error stands for (transient or not);
    None when `error` is none of those (a bug elsewhere)."""
    if isinstance(error, StoreError):
        return error
    if isinstance(error, DBAPIError):
        kind = _driver_error_kind(error.orig)
        if kind is StoreError and error.connection_invalidated:
            kind = TransientStoreError
        translation = kind(str(error.orig))
    elif isinstance(error, PoolTimeoutError | DisconnectionError):
        translation = TransientStoreError(str(error))
    elif isinstance(error, psycopg.Error | sqlite3.Error):
        translation = _driver_error_kind(error)(str(error))
    else:
        return None
    translation.__cause__ = error
    return translation


def translated(function: Callable[P, R]) -> Callable[P, R]:
    """Re-raise driver and pool errors of `function` as StoreError / TransientStoreError."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except StoreError:
            raise
        except Exception as error:
            translation = store_error(error)
            if translation is None:
                raise
            raise translation from error

    return wrapper


def commit_translated(function: Callable[P, R]) -> Callable[P, R]:
    """`translated` for a COMMIT: a transient fault other than a conflict the database rolled
    back leaves the outcome unknown (`CommitOutcomeUnknown`)."""

    inner = translated(function)

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return inner(*args, **kwargs)
        except ConflictRolledBack:
            raise
        except TransientStoreError as error:
            raise CommitOutcomeUnknown(str(error)) from error.__cause__

    return wrapper
