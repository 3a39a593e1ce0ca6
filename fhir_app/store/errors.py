"""Store failures in the store's own words, so that callers never import SQLAlchemy."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

P = ParamSpec("P")
R = TypeVar("R")

# PostgreSQL SQLSTATEs after which running the same transaction again can succeed:
# serialization_failure, deadlock_detected, lock_not_available, query_canceled (timeouts).
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})


class StoreError(Exception):
    """The database refused or failed an operation."""


class TransientStoreError(StoreError):
    """The transaction lost a race (deadlock, serialization failure, busy database, dropped
    connection); running the whole unit of work again is the remedy."""


def _is_transient(error: DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    message = str(error.orig).lower()
    return isinstance(error, OperationalError) and (
        "database is locked" in message or "database is busy" in message
    )


def translated(function: Callable[P, R]) -> Callable[P, R]:
    """Re-raise driver errors of `function` as StoreError / TransientStoreError."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except DBAPIError as error:
            kind = TransientStoreError if _is_transient(error) else StoreError
            raise kind(str(error.orig)) from error

    return wrapper
