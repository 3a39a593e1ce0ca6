"""The unit-of-work factory: whether other processes may open connections to its database."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_app.store import UnitOfWork, make_engine, uow_factory


@pytest.mark.parametrize(
    ("url", "shared"),
    [
        ("sqlite://", False),
        ("sqlite:///:memory:", False),
        ("postgresql+psycopg://nobody@127.0.0.1:9/none", True),
    ],
)
def test_only_an_in_memory_database_stays_in_its_process(url: str, shared: bool) -> None:
    engine = make_engine(url)
    try:
        assert uow_factory(engine).shared_across_processes is shared
    finally:
        engine.dispose()


def test_a_database_file_is_shared(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        factory = uow_factory(engine)
        assert factory.shared_across_processes
        with factory() as uow:
            assert isinstance(uow, UnitOfWork)
    finally:
        engine.dispose()


def test_after_fork_leaves_the_parents_connections_alone(tmp_path: Path) -> None:
    """The child's pool starts empty; the parent's pooled connection stays open and usable."""
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with engine.connect() as connection:
            held = connection.connection.dbapi_connection
        before = engine.pool.checkedin()
        uow_factory(engine).after_fork()
        assert before == 1
        assert engine.pool.checkedin() == 0
        assert held is not None
        held.execute("SELECT 1")  # not closed by the dispose
    finally:
        engine.dispose()
