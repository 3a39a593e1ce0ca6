"""The search index rows of a resource, written and removed with its current version.

One rule for every write path: `ResourceRepository.write` / `delete` (REST) and
`BulkRepository.write_versions` (REST units of work and the bulk path) store the same rows, made
by one pure function above the store (`fhir_app.fhir.search.index_rows`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from sqlalchemy import Connection, Table, delete

from fhir_app.store.schema import (
    search_date_table,
    search_index_tables,
    search_reference_table,
    search_string_table,
    search_token_table,
)

# Ids per DELETE ... IN (...): well below SQLite's bound-parameter limit.
_DELETE_BATCH: Final = 500


class IndexValues(Protocol):
    """The index rows of one resource (`fhir_app.fhir.search.IndexRows` is one)."""

    @property
    def tokens(self) -> Sequence[tuple[str, str, str]]:
        """(param, system or "", code)."""

    @property
    def references(self) -> Sequence[tuple[str, str, str]]:
        """(param, target type, target id)."""

    @property
    def dates(self) -> Sequence[tuple[str, datetime, datetime]]:
        """(param, low, high), half-open, aware UTC."""

    @property
    def strings(self) -> Sequence[tuple[str, str, str]]:
        """(param, normalised text, text as written)."""


def index_table_rows(
    items: Iterable[tuple[str, str, IndexValues]],
) -> dict[Table, list[tuple[Any, ...]]]:
    """The rows of every index table for (type, id, index) items, in the tables' column order;
    duplicates removed (the primary keys cover every column but a string's normalised text)."""
    rows: dict[Table, set[tuple[Any, ...]]] = defaultdict(set)
    for rtype, rid, index in items:
        rows[search_token_table].update((rtype, rid, *row) for row in index.tokens)
        rows[search_reference_table].update((rtype, rid, *row) for row in index.references)
        rows[search_date_table].update((rtype, rid, *row) for row in index.dates)
        rows[search_string_table].update(
            (rtype, rid, param, exact, value) for param, value, exact in index.strings
        )
    return {table: sorted(found) for table, found in rows.items() if found}


def insert_index(connection: Connection, items: Iterable[tuple[str, str, IndexValues]]) -> None:
    """INSERT the index rows of these resources (their old rows must be gone)."""
    for table, rows in index_table_rows(items).items():
        names = [column.name for column in table.columns]
        connection.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in rows])


def delete_index(connection: Connection, keys: Iterable[tuple[str, str]]) -> None:
    """DELETE every index row of these resources."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for rtype, rid in keys:
        by_type[rtype].append(rid)
    for rtype, ids in by_type.items():
        for start in range(0, len(ids), _DELETE_BATCH):
            batch = ids[start : start + _DELETE_BATCH]
            for table in search_index_tables:
                connection.execute(
                    delete(table).where(
                        table.c.resource_type == rtype, table.c.resource_id.in_(batch)
                    )
                )
