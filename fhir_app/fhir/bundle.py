"""Bundle entries as a FHIR server reads them: ids, fullUrl references and request details.

Inside a transaction or batch, resources may reference each other by `fullUrl` (often
`urn:uuid:...`). Before anything is stored, every entry gets its server id and every reference to
a fullUrl is rewritten to `Type/id`, as FHIR R4 (http.html#trules) prescribes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.parse import rewrite_references

BUNDLE_TYPES_PROCESSED = frozenset({"transaction", "batch", "collection", "searchset"})


@dataclass(slots=True)
class BundleEntry:
    """One entry of an incoming Bundle."""

    index: int
    full_url: str | None
    resource: JsonObject | None
    method: str | None  # the request method of transaction/batch entries
    url: str | None  # the request url
    if_none_exist: str | None
    if_match: str | None

    @property
    def expression(self) -> str:
        """The FHIRPath of the entry's resource, for OperationOutcome issues."""
        return f"Bundle.entry[{self.index}].resource"

    @property
    def label(self) -> str:
        """How messages name this entry."""
        return f"Bundle.entry[{self.index}]"


def bundle_entries(bundle: JsonObject) -> list[BundleEntry]:
    """The entries of a Bundle, with their request details; a malformed entry list is rejected."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise InputRejected(
            [Issue("error", "structure", "Bundle.entry must be a list", ("Bundle.entry",))]
        )
    out = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            issue = Issue(
                "error",
                "structure",
                "a Bundle entry must be an object",
                (f"Bundle.entry[{index}]",),
            )
            raise InputRejected([issue])
        request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
        assert isinstance(request, dict)
        resource = entry.get("resource")
        out.append(
            BundleEntry(
                index=index,
                full_url=_str(entry.get("fullUrl")),
                resource=resource if isinstance(resource, dict) else None,
                method=_str(request.get("method")),
                url=_str(request.get("url")),
                if_none_exist=_str(request.get("ifNoneExist")),
                if_match=_str(request.get("ifMatch")),
            )
        )
    return out


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def assign_ids(
    entries: list[BundleEntry],
    new_id: Callable[[], str],
    existing: Mapping[int, str] | None = None,
) -> None:
    """Give every entry resource its server id and rewrite fullUrl references to `Type/id`.

    A PUT keeps the id of its request url; a POST (or a resource without id) gets a new one,
    because on create the server assigns the id (FHIR R4 http.html#create), unless `existing`
    names, by entry index, the resource a conditional create matched: references then point there.
    """
    existing = existing or {}
    targets: dict[str, str] = {}
    for entry in entries:
        resource = entry.resource
        if resource is None or not isinstance(resource.get("resourceType"), str):
            continue
        rtype = resource["resourceType"]
        if entry.index in existing:
            resource["id"] = existing[entry.index]
        elif entry.method == "PUT" and entry.url and "/" in entry.url:
            resource["id"] = entry.url.split("?")[0].rsplit("/", 1)[1]
        elif entry.method == "POST" or not isinstance(resource.get("id"), str):
            resource["id"] = new_id()
        if entry.full_url:
            targets[entry.full_url] = f"{rtype}/{resource['id']}"
    if targets:
        for entry in entries:
            if entry.resource is not None:
                rewrite_references(entry.resource, targets)
