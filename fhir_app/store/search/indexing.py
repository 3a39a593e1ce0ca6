"""The search index rows of a resource, written and removed with its current version.

One rule for every write path: `ResourceRepository.write` / `delete` (REST) and
`BulkRepository.write_versions` (REST units of work and the bulk path) store the same rows, made
by one pure function above the store (`fhir_app.fhir.search.index_rows`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import groupby
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
    """The rows of every index table for (type, id, index) items, in the tables' column order,
    sorted (primary key order), each row once; a resource given twice keeps its last index.

    Duplicates go as neighbours after the sort (a string's primary key leaves out its normalised
    text, a function of the text as written): no set of every row is built, which made this a
    third of the main process's own work in a bulk chunk.
    """
    last = {(rtype, rid): index for rtype, rid, index in items}
    tokens: list[tuple[Any, ...]] = []
    references: list[tuple[Any, ...]] = []
    dates: list[tuple[Any, ...]] = []
    strings: list[tuple[Any, ...]] = []
    for (rtype, rid), index in last.items():
        tokens.extend([(rtype, rid, *row) for row in index.tokens])
        references.extend([(rtype, rid, *row) for row in index.references])
        dates.extend([(rtype, rid, *row) for row in index.dates])
        strings.extend([(rtype, rid, param, exact, value) for param, value, exact in index.strings])
    found = {
        search_token_table: tokens,
        search_reference_table: references,
        search_date_table: dates,
        search_string_table: strings,
    }
    return {table: _distinct_sorted(rows) for table, rows in found.items() if rows}


def _distinct_sorted(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    rows.sort()
    return [row for row, _ in groupby(rows)]


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
