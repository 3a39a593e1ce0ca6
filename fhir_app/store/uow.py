"""The unit of work: one transaction, its repositories, rollback unless committed."""

from __future__ import annotations

import hashlib
import logging
import threading
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT

from fhir_app.store.audit import AuditRepository
from fhir_app.store.bulk import BulkRepository
from fhir_app.store.engine import SQLITE_BUSY_TIMEOUT_SECONDS
from fhir_app.store.errors import TransientStoreError, commit_translated, translated
from fhir_app.store.repository import CheckpointRepository, ResourceRepository
from fhir_app.store.search.query import SearchRepository

# SQLite serialises transactions (every one starts with BEGIN IMMEDIATE). Threads of one process
# that wait in SQLite's busy handler sleep and retry, which leaves a long, unfair tail of waits
# under concurrent requests; queueing them on a lock hands the database over as soon as it is
# free. Correctness still rests on the database: the lock only orders this process's writers.
_SQLITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()

log = logging.getLogger("fhir_app.store")


def _sqlite_lock(engine: Engine) -> threading.RLock | None:
    if engine.dialect.name != "sqlite":
        return None
    with _LOCKS_GUARD:
        lock = _SQLITE_LOCKS.get(engine)
        if lock is None:
            lock = _SQLITE_LOCKS[engine] = threading.RLock()
        return lock


# One transaction-scoped advisory lock per patient serialises every derivation of that patient (and
# every bulk chunk that changes its inputs) with every other one, across processes. The key is the
# first 8 bytes of sha256 over a namespace and the patient id: a collision only makes two patients
# wait for each other. Locks are taken in key order, so two units of work that derive the same
# patients never wait for each other in a cycle.
_PATIENT_LOCK_NAMESPACE = b"fhir-app/patient-derivation\0"
_LOCK_PATIENTS = text(
    "SELECT count(pg_advisory_xact_lock(key)) FROM unnest(:keys) WITH ORDINALITY AS k(key, n)"
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))


def patient_lock_key(patient_id: str) -> int:
    """The advisory-lock key of a patient's derivation (a signed 64-bit integer)."""
    digest = hashlib.sha256(_PATIENT_LOCK_NAMESPACE + patient_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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
    bulk: BulkRepository
    audit: AuditRepository  # issue 13: the AuditEvent trail
    search: SearchRepository  # issue 12: searches over the index tables

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._lock = _sqlite_lock(engine)

    def __enter__(self) -> Self:
        if self._lock is not None and not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_SECONDS):
            raise TransientStoreError("the SQLite database stayed busy; try again")
        try:
            # Opening is where an outage shows first (connection refused, the server shutting
            # down, every pooled connection busy): in the store's words, as a transient error.
            self._connection = translated(self._engine.connect)()
        except BaseException:
            self._release()
            raise
        self.resources = ResourceRepository(self._connection)
        self.checkpoints = CheckpointRepository(self._connection)
        self.bulk = BulkRepository(self._connection)
        self.audit = AuditRepository(self._connection)
        self.search = SearchRepository(self._connection)
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
        except Exception:
            # The connection died (the error that ended the block, if any, says why): the
            # server has rolled the transaction back already. Raising here would hide that
            # error behind a second one; the connection is dropped from the pool instead.
            log.warning("rollback failed; discarding the connection", exc_info=True)
            connection.invalidate()
        finally:
            try:
                connection.close()
            finally:
                self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    @commit_translated
    def commit(self) -> None:
        """Make everything done so far durable (`CommitOutcomeUnknown` when the connection
        failed during the COMMIT)."""
        self._require_open().commit()

    @translated
    def rollback(self) -> None:
        """Forget everything done since the last commit."""
        self._require_open().rollback()

    @translated
    def lock_patient_derivations(self, patient_ids: Iterable[str]) -> None:
        """Serialise this transaction's derivation of these patients with every other writer of
        them, until commit or rollback.

        Why a lock and not serializable isolation: a derivation reads all of a patient's inputs and
        rewrites all of its outputs, so under SERIALIZABLE nearly every pair of concurrent writes
        of one patient would conflict and be retried from scratch; a lock taken after the
        transaction's own inputs are written, and before the patient's inputs are read, makes the
        second writer wait for the first's commit and then read everything it committed (read
        committed takes a new snapshot per statement). So the outputs committed last are always
        derived from every committed input. PostgreSQL: `pg_advisory_xact_lock` per patient, in
        key order. SQLite: nothing to do, every transaction already holds the database's write
        lock from its first statement (`BEGIN IMMEDIATE`).
        """
        connection = self._require_open()
        if connection.dialect.name != "postgresql":
            return
        keys = sorted({patient_lock_key(p) for p in patient_ids})
        if keys:
            # unnest WITH ORDINALITY keeps the array's (sorted) order of evaluation.
            connection.execute(_LOCK_PATIENTS, {"keys": keys})

    def _require_open(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("the unit of work is not open: use it in a `with` block")
        return self._connection


# The bulk path once had a unit of work of its own; every one now has the batched repository.
BulkUnitOfWork = UnitOfWork


class UnitOfWorkFactory:
    """Units of work on one engine, for the service layer to call per use case."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self.engine)

    @property
    def shared_across_processes(self) -> bool:
        """Whether another process may open its own connections to the same database: not for
        an in-memory SQLite database, which lives in this process only."""
        url = self.engine.url
        return url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:")

    def after_fork(self) -> None:
        """In a forked child: leave the parent's pooled connections to the parent (a socket or
        SQLite handle used by two processes corrupts both) and open its own from now on."""
        self.engine.dispose(close=False)


def uow_factory(engine: Engine) -> UnitOfWorkFactory:
    """A factory of units of work on `engine`, for the service layer to call per use case."""
    return UnitOfWorkFactory(engine)


bulk_uow_factory = uow_factory
