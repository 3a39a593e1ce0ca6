"""`index_table_rows`: the rows every write path stores in the search index tables, each once and
in primary key order, whatever the resources (the bulk path's COPY relies on both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fhir_app.fhir.samples import patient
from fhir_app.fhir.search import IndexRows, index_rows
from fhir_app.store.schema import search_index_tables, search_string_table
from fhir_app.store.search.indexing import index_table_rows

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def reference(items: list[tuple[str, str, IndexRows]]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows by a set of every row, as the tables' primary keys see them."""
    rows: dict[str, set[tuple[Any, ...]]] = {table.name: set() for table in search_index_tables}
    last = {(rtype, rid): index for rtype, rid, index in items}
    for (rtype, rid), index in last.items():
        rows["search_token"].update((rtype, rid, *row) for row in index.tokens)
        rows["search_reference"].update((rtype, rid, *row) for row in index.references)
        rows["search_date"].update((rtype, rid, *row) for row in index.dates)
        rows["search_string"].update((rtype, rid, p, e, v) for p, v, e in index.strings)
    return {name: sorted(found) for name, found in rows.items() if found}


def primary_keys_unique(rows: dict[Any, list[tuple[Any, ...]]]) -> bool:
    for table, table_rows in rows.items():
        positions = [i for i, column in enumerate(table.columns) if column.primary_key]
        keys = [tuple(row[i] for i in positions) for row in table_rows]
        if len(set(keys)) != len(keys):
            return False
    return True


def example_items() -> list[tuple[str, str, IndexRows]]:
    items = []
    for path in sorted(EXAMPLES.glob("*.json")):
        document = orjson.loads(path.read_bytes())
        resources = [e["resource"] for e in document.get("entry", [])] or [document]
        items += [(r["resourceType"], r["id"], index_rows(r)) for r in resources if "id" in r]
    return items


def test_the_examples_rows_are_each_once_in_key_order() -> None:
    items = example_items()
    assert len(items) > 50
    rows = index_table_rows(items)
    assert {table.name: found for table, found in rows.items()} == reference(items)
    assert primary_keys_unique(rows)
    assert all(found == sorted(found) for found in rows.values())


names = st.text(alphabet="aAeEéÉ -'\u0301", min_size=1, max_size=6).filter(str.strip)


@given(
    people=st.lists(
        st.tuples(st.sampled_from(["p1", "p2", "p3"]), names, names), min_size=1, max_size=6
    )
)
def test_a_resource_given_twice_keeps_its_last_index_and_rows_stay_unique(
    people: list[tuple[str, str, str]],
) -> None:
    """Names that differ only by case, accents or spaces normalise alike; a patient sent twice in
    one write is indexed as its last version."""
    items = [
        (
            "Patient",
            pid,
            index_rows(patient(pid, family, given, "1960-01-01", "female")),
        )
        for pid, family, given in people
    ]
    rows = index_table_rows(items)
    assert {table.name: found for table, found in rows.items()} == reference(items)
    assert primary_keys_unique(rows)
    last = {pid: (family, given) for pid, family, given in people}
    exact = {(row[1], row[3]) for row in rows[search_string_table]}
    assert exact == {
        (pid, text) for pid, (family, given) in last.items() for text in (family, given)
    }


def test_rows_given_twice_in_one_index_are_stored_once() -> None:
    twice = IndexRows(tokens=(("code", "s", "c"), ("code", "s", "c"), ("code", "s", "a")))
    rows = index_table_rows([("Observation", "o1", twice)])
    assert list(rows.values()) == [
        [("Observation", "o1", "code", "s", "a"), ("Observation", "o1", "code", "s", "c")]
    ]
