"""FHIR search as data: the table of search parameters per type and what is derived from it.

- `parameters`: the table (name, FHIR type, element read, index kind, definition);
- `index`: the index rows of a resource (one pure function for every write path);
- `request`: a request parsed and checked into a typed `SearchQuery`;
- `shape`: `_elements` / `_summary` subsets;
- `capability`: the CapabilityStatement's search declarations.

No SQL here: `fhir_app.store.search` compiles the query over the index tables.
"""

from fhir_app.fhir.search.capability import search_declarations
from fhir_app.fhir.search.dates import date_range
from fhir_app.fhir.search.index import IndexRows, index_rows, normalised
from fhir_app.fhir.search.parameters import (
    PARAMETERS,
    SearchParameter,
    includes_of,
    parameters_of,
    revincludes_of,
)
from fhir_app.fhir.search.request import (
    Clause,
    DateValue,
    Include,
    ReferenceValue,
    SearchError,
    SearchQuery,
    StringValue,
    TokenValue,
    criteria_query,
    parse_search,
)
from fhir_app.fhir.search.shape import shaped

__all__ = [
    "PARAMETERS",
    "Clause",
    "DateValue",
    "Include",
    "IndexRows",
    "ReferenceValue",
    "SearchError",
    "SearchParameter",
    "SearchQuery",
    "StringValue",
    "TokenValue",
    "criteria_query",
    "date_range",
    "includes_of",
    "index_rows",
    "normalised",
    "parameters_of",
    "parse_search",
    "revincludes_of",
    "search_declarations",
    "shaped",
]
