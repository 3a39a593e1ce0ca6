"""Search over REST: `GET /fhir/{type}?...` and `POST /fhir/{type}/_search` answer through one
function, `searchset_for`, which other interactions (GET entries of a batch, compartment search,
`$everything`) call too.

The searchset Bundle (FHIR R4 search.html, bundle.html): `total` unless `_total=none`; links
`self` (the parameters used, normalised: unknown ones left out in lenient mode), `first`,
`previous`, `next`; entries with `search.mode` `match` or `include`; matches subsetted by
`_elements` / `_summary` are tagged SUBSETTED. Pages are windows over the search's order
(`_sort`, then lastUpdated and id); `_offset` is the position of the first entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from fhir_app.api.bundles import page_url
from fhir_app.config import Settings
from fhir_app.fhir.inputs import JsonObject
from fhir_app.fhir.search import SearchError, SearchQuery, parse_search, shaped
from fhir_app.searching import SearchResult
from fhir_app.service import FhirService, ServiceError, readable_parameters


def search_page_url(base: str, query: SearchQuery, offset: int) -> str:
    """The URL of the page of `query` that starts at `offset` (the parameters used only)."""
    return page_url(base, query.resource_type, query.used, query.count, offset)


def searchset(query: SearchQuery, result: SearchResult, base: str) -> JsonObject:
    """The searchset Bundle of one page of a search."""
    size = query.page_size
    pages = [("self", query.offset), ("first", 0)]
    if query.offset > 0 and size > 0:
        pages.append(("previous", max(0, query.offset - size)))
    if result.more:
        pages.append(("next", query.offset + len(result.matches)))
    links = [
        {"relation": relation, "url": search_page_url(base, query, offset)}
        for relation, offset in pages
    ]
    entries = [
        {
            "fullUrl": f"{base}/{row.resource_type}/{row.resource_id}",
            "resource": shaped(row.content, query.summary, query.elements),
            "search": {"mode": "match"},
        }
        for row in result.matches
    ]
    entries.extend(
        {
            "fullUrl": f"{base}/{row.resource_type}/{row.resource_id}",
            "resource": row.content,
            "search": {"mode": "include"},
        }
        for row in result.included
    )
    bundle: JsonObject = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle


def searchset_for(
    service: FhirService,
    rtype: str,
    query_items: Iterable[tuple[str, str]],
    *,
    base: str,
    settings: Settings,
    lenient: bool,
) -> JsonObject:
    """The searchset Bundle of `GET {base}/{rtype}?{query_items}`.

    `service`: the request's (guarded) service, so that scopes and the patient context apply to
    the matches and the included resources alike. `query_items`: the (name, value) pairs as
    received, percent-decoded, repeated names kept (AND), e.g. `request.query_params
    .multi_items()`. `lenient`: `Prefer: handling=lenient` (unknown parameters ignored).
    The caller checks that `rtype` is served. Raises ServiceError (400) for a search that
    cannot be run.
    """
    items = list(query_items)
    readable_parameters(items)
    try:
        query = parse_search(
            rtype,
            items,
            default_count=settings.default_page_size,
            max_count=settings.max_page_size,
            lenient=lenient,
        )
    except SearchError as exc:
        raise ServiceError(exc.status, exc.issues) from exc
    return searchset(query, service.search(query), base)
