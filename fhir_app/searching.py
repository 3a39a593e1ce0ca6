"""The search use case: a checked FHIR query (`fhir_app.fhir.search`) run over the store's index
tables (`fhir_app.store.search`), with its `_include` / `_revinclude` resources.

Between the two packages, which do not know each other: `index_query` says what each FHIR
clause means in the store's terms, and `run_search` runs the matches and the includes in one
unit of work. `FhirService.search` opens that unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fhir_app.fhir.search import (
    Clause,
    DateValue,
    ReferenceValue,
    SearchQuery,
    StringValue,
    TokenValue,
)
from fhir_app.store import StoredResource
from fhir_app.store.search.query import Criterion, IndexQuery, SearchRepository

# `:iterate` follows includes of includes this many times at most (a cycle ends earlier: a
# resource is included once).
ITERATE_ROUNDS: Final = 3


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One page of matches, the total (None with `_total=none`), whether more pages follow,
    and the resources `_include` / `_revinclude` added."""

    matches: list[StoredResource]
    total: int | None
    more: bool
    included: list[StoredResource]


def criterion(clause: Clause) -> Criterion:
    """The store's criterion of one FHIR clause."""
    parameter = clause.parameter
    index, name = parameter.index, parameter.name
    if clause.missing is not None:
        return Criterion(index, name, missing=clause.missing)
    values = clause.values
    if index == "id":
        ids = tuple(v.code for v in values if isinstance(v, TokenValue) and v.code is not None)
        return Criterion(index, name, ids=ids)
    if parameter.type == "date":
        dates = tuple((v.prefix, v.low, v.high) for v in values if isinstance(v, DateValue))
        return Criterion(index, name, dates=dates)
    if parameter.type == "token":
        tokens = tuple((v.system, v.code) for v in values if isinstance(v, TokenValue))
        return Criterion(index, name, tokens=tokens, negated=clause.negated)
    if parameter.type == "reference":
        # A typed value matches its type only; an untyped one any type the parameter targets.
        references = tuple(
            (tuple(t for t in parameter.targets if v.type in (None, t)), v.id)
            for v in values
            if isinstance(v, ReferenceValue)
        )
        return Criterion(index, name, references=references)
    strings = tuple((v.match, v.text) for v in values if isinstance(v, StringValue))
    return Criterion(index, name, strings=strings)


def index_query(query: SearchQuery, *, extra: int = 0) -> IndexQuery:
    """The store's query of a FHIR query; `extra` more rows than the page (to see whether
    another page follows when the total is not counted)."""
    return IndexQuery(
        resource_type=query.resource_type,
        criteria=tuple(criterion(clause) for clause in query.clauses),
        sort=query.sort,
        count=query.page_size + extra if query.page_size else 0,
        offset=query.offset,
        count_total=query.counts_total,
        compartment=query.compartment,
    )


def _included(
    search: SearchRepository, query: SearchQuery, matches: list[StoredResource]
) -> list[StoredResource]:
    seen = {(row.resource_type, row.resource_id) for row in matches}
    included: list[StoredResource] = []
    frontier = matches
    for round_number in range(ITERATE_ROUNDS):
        wanted = [i for i in query.includes if round_number == 0 or i.iterate]
        if not wanted or not frontier:
            break
        found: list[StoredResource] = []
        for include in wanted:
            parameter = include.parameter
            if include.reverse:
                targets = [
                    (row.resource_type, row.resource_id)
                    for row in frontier
                    if row.resource_type in parameter.targets
                ]
                rows = search.referring(
                    include.source, parameter.name, parameter.index, targets, query.compartment
                )
            else:
                ids = [row.resource_id for row in frontier if row.resource_type == include.source]
                types = (include.target,) if include.target else parameter.targets
                rows = (
                    search.referenced(
                        include.source,
                        ids,
                        parameter.name,
                        parameter.index,
                        types,
                        query.compartment,
                    )
                    if ids
                    else []
                )
            for row in rows:
                key = (row.resource_type, row.resource_id)
                if key not in seen:
                    seen.add(key)
                    found.append(row)
        included.extend(found)
        frontier = found
    return included


def run_search(search: SearchRepository, query: SearchQuery) -> SearchResult:
    """The page of matches, the total and the included resources of a checked query."""
    extra = 0 if query.counts_total else 1
    rows, total = search.find(index_query(query, extra=extra))
    if total is None:
        more = len(rows) > query.page_size
        rows = rows[: query.page_size]
    else:
        more = query.page_size > 0 and query.offset + len(rows) < total
    return SearchResult(rows, total, more, _included(search, query, rows))
