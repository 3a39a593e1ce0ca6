"""The indexes that keep searches fast at a million resources exist after the migrations, and
PostgreSQL's plans for the main searches use them: on 20,000 resources of 500 patients, analysed,
with sequential scans switched off so that a table this small gets the plan a large one would."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, inspect, select, text

from fhir_app.fhir.search import parse_search
from fhir_app.searching import index_query
from fhir_app.store.schema import ResourceCurrent, search_reference_table
from fhir_app.store.search.query import _conditions

pytestmark = pytest.mark.postgres

EXPECTED = {
    "resource_current": {"ix_resource_current_patient", "ix_resource_current_type_updated"},
    "resource_version": {"ix_resource_version_updated", "ix_resource_version_type_updated"},
    "search_token": {"ix_search_token_code"},
    "search_reference": {"ix_search_reference_target"},
    "search_date": {"ix_search_date_range"},
    "search_string": {"ix_search_string_value"},
}


@pytest.fixture
def backend() -> str:
    """These plans are PostgreSQL's."""
    return "postgresql"


def test_the_search_indexes_exist(engine: Engine) -> None:
    inspector = inspect(engine)
    for table, names in EXPECTED.items():
        assert names <= {index["name"] for index in inspector.get_indexes(table)}, table


def plan(engine: Engine, statement: str, **params: object) -> str:
    with engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")
        rows = connection.execute(text(f"EXPLAIN {statement}"), params).all()
    return "\n".join(row[0] for row in rows)


def compiled(engine: Engine, rtype: str, *items: tuple[str, str]) -> str:
    """The count query of a search, as SQL text."""
    query = index_query(parse_search(rtype, items, default_count=20, max_count=50))
    statement = select(func.count()).select_from(ResourceCurrent).where(*_conditions(query))
    return str(statement.compile(engine, compile_kwargs={"literal_binds": True}))


FILL = [
    "INSERT INTO resource_version (resource_type, resource_id, version_id, last_updated, deleted,"
    " patient_id, status, is_output, content) SELECT 'Observation', 'o' || g, 1,"
    " timestamptz '2024-01-01' + g * interval '1 minute', false, 'p' || mod(g, 500), 'final',"
    " false, '{}'::jsonb FROM generate_series(1, 20000) g",
    "INSERT INTO resource_current (resource_type, resource_id, version_id, deleted, patient_id,"
    " status, is_output, last_updated) SELECT resource_type, resource_id, version_id, deleted,"
    " patient_id, status, is_output, last_updated FROM resource_version",
    "INSERT INTO search_token SELECT resource_type, resource_id, 'code', 'http://s',"
    " 'c' || mod(substr(resource_id, 2)::int, 1000) FROM resource_current",
    "INSERT INTO search_reference SELECT resource_type, resource_id, 'subject', 'Patient',"
    " patient_id FROM resource_current",
    "INSERT INTO search_date SELECT resource_type, resource_id, 'date', last_updated,"
    " last_updated + interval '1 day' FROM resource_current",
    "ANALYZE",
]


def test_plans_use_the_indexes(engine: Engine) -> None:
    with engine.begin() as connection:
        for statement in FILL:
            connection.exec_driver_sql(statement)
    patient = plan(engine, compiled(engine, "Observation", ("patient", "p1")))
    assert "ix_resource_current_patient" in patient
    code = plan(engine, compiled(engine, "Observation", ("code", "http://s|c7")))
    assert "ix_search_token_code" in code
    subject = plan(engine, compiled(engine, "Observation", ("subject", "Patient/p1")))
    assert "ix_search_reference_target" in subject
    date = plan(engine, compiled(engine, "Observation", ("date", "2024-01-03")))
    assert "ix_search_date_range" in date or "pk_search_date" in date
    r = search_reference_table.c
    include = plan(
        engine,
        f"SELECT {r.target_id.name} FROM search_reference WHERE resource_type = 'DiagnosticReport'"
        " AND resource_id IN ('a', 'b') AND param = 'result'",
    )
    assert "pk_search_reference" in include
    since = plan(
        engine,
        "SELECT resource_type, resource_id FROM resource_version WHERE last_updated > :since"
        " ORDER BY last_updated LIMIT 100",
        since=datetime(2024, 1, 13, tzinfo=UTC),
    )
    assert "ix_resource_version_updated" in since
