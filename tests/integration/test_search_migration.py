"""Migration a3c9e5f1b7d2 fills the search index of the resources stored before it, with the
same function every write path uses."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from alembic import command
from sqlalchemy import text

from fhir_app.fhir.samples import observation
from fhir_app.fhir.search import index_rows
from fhir_app.store import make_engine
from fhir_app.store.upgrade import alembic_config


def test_resources_stored_before_the_index_are_found_after_it(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "b7e1a9c4d2f0")
    finding = observation("f1", "p1", "appearance", "lytic", level="L1", effective="2025-01-01")
    finding["identifier"] = [{"system": "urn:feed", "value": "7"}]
    gone = {**finding, "id": "gone"}
    engine = make_engine(empty_database_url)
    moment = datetime(2025, 1, 2, tzinfo=UTC)
    try:
        with engine.begin() as connection:
            for resource, deleted in ((finding, False), (gone, True)):
                values = {
                    "rt": "Observation",
                    "rid": resource["id"],
                    "at": moment,
                    "deleted": deleted,
                    "content": orjson.dumps(resource).decode(),
                }
                connection.execute(
                    text(
                        "INSERT INTO resource_version (resource_type, resource_id, version_id,"
                        " last_updated, deleted, patient_id, status, is_output, content)"
                        " VALUES (:rt, :rid, 1, :at, :deleted, 'p1', 'final', false, :content)"
                    ),
                    values,
                )
                connection.execute(
                    text(
                        "INSERT INTO resource_current (resource_type, resource_id, version_id,"
                        " deleted, patient_id, status, is_output, last_updated)"
                        " VALUES (:rt, :rid, 1, :deleted, 'p1', 'final', false, :at)"
                    ),
                    values,
                )
            # A token row of the earlier code: made again, not kept twice.
            connection.execute(
                text(
                    "INSERT INTO search_token VALUES"
                    " ('Observation', 'f1', 'identifier', 'urn:feed', '7')"
                )
            )
        command.upgrade(config, "head")
        expected = index_rows(finding)
        with engine.connect() as connection:

            def rows(table: str, columns: str) -> set[tuple[object, ...]]:
                found = connection.execute(
                    text(f"SELECT resource_id, {columns} FROM {table}")
                ).all()
                return {tuple(row) for row in found}

            assert rows("search_token", "param, system, code") == {
                ("f1", *row) for row in expected.tokens
            }
            assert rows("search_reference", "param, target_type, target_id") == {
                ("f1", *row) for row in expected.references
            }
            dates = rows("search_date", "param")
            assert dates == {("f1", "date")}
    finally:
        engine.dispose()
