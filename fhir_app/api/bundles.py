"""The Bundles the REST interface answers with: `history` (searchset pages: api/search.py).

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
