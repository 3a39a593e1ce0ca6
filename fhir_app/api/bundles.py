"""The Bundles the REST interface answers with: `searchset` pages and `history`.

Entries carry absolute `fullUrl`s (`{base}/Type/id`), as FHIR R4 bundle.html requires for
resources that live on a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlencode

from fhir_app.api.responses import etag
from fhir_app.fhir.inputs import JsonObject
from fhir_app.service import StoredResource


def query_string(params: Sequence[tuple[str, str]]) -> str:
    """URL query text that keeps FHIR's `|`, `/`, `:` and `,` readable."""
    return urlencode(list(params), quote_via=quote, safe="|/:,")


def page_url(
    base: str, rtype: str, params: Sequence[tuple[str, str]], count: int, offset: int
) -> str:
    """The URL of one page of a search."""
    paging = [("_count", str(count)), ("_offset", str(offset))]
    return f"{base}/{rtype}?{query_string([*params, *paging])}"


def searchset(
    rows: Sequence[StoredResource],
    total: int,
    *,
    base: str,
    rtype: str,
    params: Sequence[tuple[str, str]],
    count: int,
    offset: int,
) -> JsonObject:
    """One page of search results with `self`, `first`, `previous` and `next` links.

    Pages are windows over the store's stable order (lastUpdated, then id); `_offset` is the
    position of the first entry.
    """
    links = [
        {"relation": "self", "url": page_url(base, rtype, params, count, offset)},
        {"relation": "first", "url": page_url(base, rtype, params, count, 0)},
    ]
    if offset > 0 and count > 0:
        previous = max(0, offset - count)
        links.append(
            {"relation": "previous", "url": page_url(base, rtype, params, count, previous)}
        )
    if count > 0 and offset + len(rows) < total:
        links.append(
            {"relation": "next", "url": page_url(base, rtype, params, count, offset + len(rows))}
        )
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/{row.resource_type}/{row.resource_id}",
                "resource": row.content,
                "search": {"mode": "match"},
            }
            for row in rows
        ],
    }


def history_bundle(
    rows: Sequence[StoredResource], *, base: str, rtype: str, rid: str
) -> JsonObject:
    """Every version of one resource, newest first, each with the request that made it.

    A deletion is an entry without a resource, answered `410 Gone` (FHIR R4 http.html#history).
    """
    entries: list[JsonObject] = []
    for row in rows:
        if row.deleted:
            request = {"method": "DELETE", "url": f"{rtype}/{rid}"}
            status = "410 Gone"
        elif row.version_id == 1:
            request = {"method": "POST", "url": rtype}
            status = "201 Created"
        else:
            request = {"method": "PUT", "url": f"{rtype}/{rid}"}
            status = "200 OK"
        entry: JsonObject = {"fullUrl": f"{base}/{rtype}/{rid}"}
        if not row.deleted:
            entry["resource"] = row.content
        entry["request"] = request
        entry["response"] = {
            "status": status,
            "etag": etag(row.version_id),
            "lastModified": row.last_updated.isoformat(),
        }
        entries.append(entry)
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": len(entries),
        "link": [{"relation": "self", "url": f"{base}/{rtype}/{rid}/_history"}],
        "entry": entries,
    }
