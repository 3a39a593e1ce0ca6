"""The unit of work: one transaction, its repositories, rollback unless committed."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine

from fhir_app.store.engine import SQLITE_BUSY_TIMEOUT_SECONDS
from fhir_app.store.errors import TransientStoreError, translated
from fhir_app.store.repository import CheckpointRepository, ResourceRepository

# SQLite serialises transactions (every one starts with BEGIN IMMEDIATE). Threads of one process
# that wait in SQLite's busy handler sleep and retry, which leaves a long, unfair tail of waits
# under concurrent requests; queueing them on a lock hands the database over as soon as it is
# free. Correctness still rests on the database: the lock only orders this process's writers.
_SQLITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _sqlite_lock(engine: Engine) -> threading.RLock | None:
    if engine.dialect.name != "sqlite":
        return None
    with _LOCKS_GUARD:
        lock = _SQLITE_LOCKS.get(engine)
        if lock is None:
            lock = _SQLITE_LOCKS[engine] = threading.RLock()
        return lock


class UnitOfWork:
    """A transaction and the repositories that work inside it.

    ```
    with uow_factory(engine)() as uow:
        uow.resources.write(...)
        uow.commit()
    ```
    Leaving the block without `commit()`, or by an exception, rolls everything back. After a
    commit the same unit of work may go on; the next statement opens a new transaction.
    A unit of work belongs to one thread.
    """

    resources: ResourceRepository
    checkpoints: CheckpointRepository

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._lock = _sqlite_lock(engine)

    def __enter__(self) -> Self:
        if self._lock is not None and not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_SECONDS):
            raise TransientStoreError("the SQLite database stayed busy; try again")
        try:
            self._connection = self._engine.connect()
        except BaseException:
            self._release()
            raise
        self.resources = ResourceRepository(self._connection)
        self.checkpoints = CheckpointRepository(self._connection)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.rollback()
        finally:
            try:
                connection.close()
            finally:
                self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    @translated
    def commit(self) -> None:
        """Make everything done so far durable."""
        self._require_open().commit()

    def rollback(self) -> None:
        """Forget everything done since the last commit."""
        self._require_open().rollback()

    def _require_open(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("the unit of work is not open: use it in a `with` block")
        return self._connection


def uow_factory(engine: Engine) -> Callable[[], UnitOfWork]:
    """A factory of units of work on `engine`, for the service layer to call per use case."""

    def new_unit_of_work() -> UnitOfWork:
        return UnitOfWork(engine)

    return new_unit_of_work
