"""Concurrent writers: the database, not Python, decides who creates a resource first.

Eight threads, each with its own connection and transaction, start together at a barrier. On
SQLite the process queues its units of work (fhir_app.store.uow), so there the threads meet at the
barrier just before asking for one, and race for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from fhir_app.fhir.search import IndexRows
from fhir_app.store import UnitOfWork
from fhir_app.store.search.query import Criterion, IndexQuery

WRITERS = 8
T0 = datetime(2024, 6, 1, tzinfo=UTC)
R = TypeVar("R")


def together(work: Callable[[int, threading.Barrier], R]) -> list[R]:
    """Run `work(i, barrier)` in WRITERS threads at once; re-raise the first failure."""
    barrier = threading.Barrier(WRITERS, timeout=30)
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        futures = [pool.submit(work, index, barrier) for index in range(WRITERS)]
        return [future.result(timeout=120) for future in futures]


@contextmanager
def started(
    make_uow: Callable[[], UnitOfWork], barrier: threading.Barrier, backend: str
) -> Iterator[UnitOfWork]:
    """A unit of work entered by all the writers together (see the module docstring)."""
    if backend == "sqlite":
        barrier.wait()
        with make_uow() as uow:
            yield uow
    else:
        with make_uow() as uow:
            barrier.wait()
            yield uow


def observation(value: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:feed", "value": "lesion-7"}],
        "subject": {"reference": "Patient/p1"},
        "valueInteger": value,
    }


def count_rows(make_uow: Callable[[], UnitOfWork], table: str) -> int:
    with make_uow() as uow:
        connection = uow.resources._connection  # the test looks under the repository
        return int(connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def test_same_put_create_gives_one_version(
    make_uow: Callable[[], UnitOfWork], backend: str
) -> None:
    def put(index: int, barrier: threading.Barrier) -> tuple[int, bool]:
        with started(make_uow, barrier, backend) as uow:
            stored, created = uow.resources.write(
                "Observation",
                "client-id",
                observation(1),
                patient_id="p1",
                status="final",
                is_output=False,
                now=T0,
            )
            uow.commit()
        return stored.version_id, created

    results = together(put)

    assert sorted(results) == [(1, False)] * (WRITERS - 1) + [(1, True)]
    with make_uow() as uow:
        history = uow.resources.history("Observation", "client-id")
    assert [s.version_id for s in history] == [1]
    assert count_rows(make_uow, "resource_current") == 1


def test_same_conditional_create_gives_one_resource(
    make_uow: Callable[[], UnitOfWork], backend: str
) -> None:
    criteria = "identifier=urn:feed|lesion-7"

    def conditional_create(index: int, barrier: threading.Barrier) -> str:
        with started(make_uow, barrier, backend) as uow:
            candidate = uow.resources.next_id()
            owner = uow.resources.claim_conditional("Observation", criteria, candidate)
            if owner == candidate:
                uow.resources.write(
                    "Observation",
                    candidate,
                    observation(1),
                    patient_id="p1",
                    status="final",
                    is_output=False,
                    index=IndexRows(tokens=(("identifier", "urn:feed", "lesion-7"),)),
                    now=T0,
                )
            uow.commit()
        return owner

    owners = together(conditional_create)

    assert len(set(owners)) == 1
    with make_uow() as uow:
        found, total = uow.search.find(
            IndexQuery(
                "Observation",
                (Criterion("token", "identifier", tokens=(("urn:feed", "lesion-7"),)),),
            )
        )
    assert total == 1
    assert found[0].resource_id == owners[0]
    assert count_rows(make_uow, "resource_version") == 1


def test_concurrent_updates_each_get_their_own_version(
    make_uow: Callable[[], UnitOfWork], backend: str
) -> None:
    with make_uow() as uow:
        uow.resources.write(
            "Observation",
            "shared",
            observation(0),
            patient_id="p1",
            status="final",
            is_output=False,
            now=T0,
        )
        uow.commit()

    def update(index: int, barrier: threading.Barrier) -> int:
        with started(make_uow, barrier, backend) as uow:
            stored, created = uow.resources.write(
                "Observation",
                "shared",
                observation(index + 1),
                patient_id="p1",
                status="final",
                is_output=False,
                now=T0,
            )
            assert created
            uow.commit()
        return stored.version_id

    versions = together(update)

    assert sorted(versions) == list(range(2, WRITERS + 2))
    with make_uow() as uow:
        history = uow.resources.history("Observation", "shared")
        current = uow.resources.current("Observation", "shared")
    assert [s.version_id for s in history] == list(range(WRITERS + 1, 0, -1))
    # Every version is one writer's content: no update was lost or merged.
    assert sorted(s.content["valueInteger"] for s in history) == list(range(WRITERS + 1))
    assert current == history[0]
