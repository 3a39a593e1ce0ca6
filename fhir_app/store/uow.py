"""The unit of work: one transaction, its repositories, rollback unless committed."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine

from fhir_app.store.errors import translated
from fhir_app.store.repository import CheckpointRepository, ResourceRepository


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

    def __enter__(self) -> Self:
        self._connection = self._engine.connect()
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
            connection.close()

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
