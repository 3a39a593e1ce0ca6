"""Bundle entries as a FHIR server reads them: ids, fullUrl references and request details.

Inside a transaction or batch, resources may reference each other by `fullUrl` (often
`urn:uuid:...`). Before anything is stored, every entry gets its server id and every reference to
a fullUrl is rewritten to `Type/id`, as FHIR R4 (http.html#trules) prescribes.

An entry's `request.url` is read here, once, into an `EntryTarget`: `Type` (create), `Type/id`
(update, patch, delete) or `Type?criteria` (conditional update and delete). A url of any other
shape, or an entry holding a control character, is a problem of that entry (400), never an
exception later on. GET and HEAD entries (reads and searches) have no target here: their url is
any read url of the REST interface, which the API layer answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.parse import FHIR_ID, control_character_issues, rewrite_references
from fhir_app.fhir.validation.bundle_rules import entry_issues, shell_issues

BUNDLE_TYPES_PROCESSED = frozenset({"transaction", "batch", "collection", "searchset"})
# The interactions a transaction or batch entry may ask for.
ENTRY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE", "GET", "HEAD"})
# The entries that read: answered by the REST interface's read and search, not written.
READ_METHODS: Final = frozenset({"GET", "HEAD"})
# A resource type name as FHIR spells them (StructureDefinition.type of a resource).
_RESOURCE_TYPE: Final = re.compile(r"[A-Z][A-Za-z]{0,63}")


@dataclass(frozen=True, slots=True)
class EntryTarget:
    """What an entry's request url names: a type, and an id or conditional criteria."""

    resource_type: str
    resource_id: str | None = None
    criteria: str | None = None  # the query of `Type?criteria`, still percent-encoded


@dataclass(slots=True)
class BundleEntry:
    """One entry of an incoming Bundle."""

    index: int
    full_url: str | None
    resource: JsonObject | None
    method: str | None  # the request method of transaction/batch entries, upper case
    url: str | None  # the request url
    if_none_exist: str | None
    if_match: str | None
    target: EntryTarget | None = None  # read from `url`; None when there is a problem
    problems: list[Issue] = field(default_factory=list)  # why it cannot be read: 400
    # The conditional read of a GET entry (R4 Bundle.entry.request): 304 when they match.
    if_none_match: str | None = None
    if_modified_since: str | None = None  # a FHIR instant, not an HTTP-date

    @property
    def expression(self) -> str:
        """The FHIRPath of the entry's resource, for OperationOutcome issues."""
        return f"Bundle.entry[{self.index}].resource"

    @property
    def reads(self) -> bool:
        """A GET or HEAD entry (a read or a search)."""
        return self.method in READ_METHODS

    @property
    def label(self) -> str:
        """How messages name this entry."""
        return f"Bundle.entry[{self.index}]"


def bundle_entries(bundle: JsonObject) -> list[BundleEntry]:
    """The entries of a Bundle, with their request details read.

    A malformed entry list, or a control character or a breach of R4 JSON outside the entries,
    is rejected for the whole Bundle (InputRejected); a problem inside one entry (outside its
    resource, which is validated later as an input), or a Bundle rule it breaks
    (validation.bundle_rules), is listed in its `problems`, so that a batch can answer that
    entry alone.
    """
    outside = {key: value for key, value in bundle.items() if key != "entry"}
    unreadable = control_character_issues(outside, "Bundle")
    if unreadable:
        raise InputRejected(unreadable)
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise InputRejected(
            [Issue("error", "structure", "Bundle.entry must be a list", ("Bundle.entry",))]
        )
    # R4 JSON outside the entries' resources (those are validated as inputs, one by one).
    malformed, malformed_entries = shell_issues(bundle)
    if malformed:
        raise InputRejected(malformed)
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
        method = _str(request.get("method"))
        read = BundleEntry(
            index=index,
            full_url=_str(entry.get("fullUrl")),
            resource=resource if isinstance(resource, dict) else None,
            method=method.upper() if method is not None else None,
            url=_str(request.get("url")),
            if_none_exist=_str(request.get("ifNoneExist")),
            if_match=_str(request.get("ifMatch")),
            if_none_match=_str(request.get("ifNoneMatch")),
            if_modified_since=_str(request.get("ifModifiedSince")),
        )
        read.problems = control_character_issues(entry, read.label)
        if not read.problems:
            read.problems = malformed_entries.get(index, [])
        if not read.problems:
            try:
                read.target = entry_target(read)
            except InputRejected as exc:
                read.problems = exc.issues
        if not read.problems and (missing := _put_without_id(read)) is not None:
            read.problems = [missing]
        out.append(read)
    # What the entries break together (duplicate fullUrls, dangling urn:uuid references, a PUT
    # whose url names another id): a transaction is refused, a batch answers those entries.
    for index, issues in entry_issues(entries, bundle.get("type")).items():
        out[index].problems.extend(issues)
    return out


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _refused(entry: BundleEntry, code: str, text: str) -> InputRejected:
    where = f"{entry.label}.request.url"
    return InputRejected([Issue("error", code, f"{where}: {text}", (where,))])


def _put_without_id(entry: BundleEntry) -> Issue | None:
    """The issue of a PUT entry to `Type/id` whose resource has no id: FHIR R4 http.html#update
    "If no id element is provided [...] the server SHALL respond with an HTTP 400 error code".
    A conditional update (`Type?criteria`) names no id and is not held to it."""
    target = entry.target
    if entry.method != "PUT" or entry.resource is None or target is None:
        return None
    if target.resource_id is None or "id" in entry.resource:
        return None
    return Issue(
        "error",
        "required",
        f"{entry.label}: the resource has no id; a PUT to {entry.url!r} carries the id "
        f"{target.resource_id!r}",
        (f"{entry.expression}.id",),
    )


def entry_target(entry: BundleEntry) -> EntryTarget | None:
    """The target of a transaction or batch entry's request url (FHIR R4 http.html#transaction).

    POST `Type` (the resource's type when the url is absent), PUT `Type/id` or `Type?criteria`,
    PATCH `Type/id`, DELETE `Type/id` or `Type?criteria`. None when the entry has no method (a
    collection's entry) or reads (GET, HEAD). Raises InputRejected (`invalid` or `not-supported`)
    for any other url.
    """
    if entry.method is None or entry.method in READ_METHODS:
        return None
    if entry.method not in ENTRY_METHODS:
        raise _refused(
            entry,
            "not-supported",
            f"method {entry.method!r} is not supported (GET, HEAD, POST, PUT, PATCH, DELETE)",
        )
    url = entry.url
    if not url:
        resource_type = entry.resource.get("resourceType") if entry.resource else None
        if entry.method == "POST" and isinstance(resource_type, str):
            url = resource_type
        else:
            raise _refused(entry, "required", f"a {entry.method} entry needs request.url")
    path, question, query = url.partition("?")
    if "://" in path or path.startswith("/"):
        raise _refused(
            entry, "invalid", f"{url!r} must be relative to the base: Type, Type/id or Type?query"
        )
    segments = path.split("/")
    resource_type = segments[0]
    if not _RESOURCE_TYPE.fullmatch(resource_type):
        raise _refused(entry, "invalid", f"{url!r} does not start with a resource type")
    if question and not query:
        raise _refused(entry, "invalid", f"{url!r} has an empty query")
    if len(segments) > 2 or (len(segments) == 2 and question):
        raise _refused(entry, "invalid", f"{url!r} is not Type, Type/id or Type?query")
    resource_id = segments[1] if len(segments) == 2 else None
    if resource_id is not None and not FHIR_ID.fullmatch(resource_id):
        raise _refused(
            entry, "invalid", f"{resource_id!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)"
        )
    if entry.method == "POST" and (resource_id is not None or question):
        raise _refused(entry, "invalid", f"a POST entry's url is the resource type, not {url!r}")
    if entry.method == "PATCH" and resource_id is None:
        raise _refused(entry, "not-supported", f"a PATCH entry needs Type/id, not {url!r}")
    if entry.method in ("PUT", "DELETE") and resource_id is None and not question:
        raise _refused(entry, "invalid", f"a {entry.method} entry needs Type/id, not {url!r}")
    return EntryTarget(resource_type, resource_id, query if question else None)


def assign_ids(
    entries: list[BundleEntry],
    new_id: Callable[[], str],
    existing: Mapping[int, str] | None = None,
) -> None:
    """Give every entry resource its server id and rewrite fullUrl references to `Type/id`.

    A PUT keeps the id of its request url (a resource naming another id is refused by
    `bundle_entries`, never renamed here); a POST (or a resource without id) gets a new one,
    because on create the server assigns the id (FHIR R4 http.html#create). `existing` names, by
    entry index, the id the server chose for an entry otherwise: the resource a conditional
    create matched, or the target of a conditional update; references then point there.
    """
    existing = existing or {}
    targets: dict[str, str] = {}
    for entry in entries:
        resource = entry.resource
        if resource is None or not isinstance(resource.get("resourceType"), str):
            continue
        if entry.method == "PATCH":
            continue  # its resource is the patch (a Binary), not a resource stored here
        rtype = resource["resourceType"]
        if entry.index in existing:
            resource["id"] = existing[entry.index]
        elif entry.method == "PUT" and entry.target and entry.target.resource_id:
            if resource.get("id") not in (None, entry.target.resource_id):
                continue  # refused (bundle_rules): its references are not pointed anywhere
            resource["id"] = entry.target.resource_id
        elif entry.method == "POST" or not isinstance(resource.get("id"), str):
            resource["id"] = new_id()
        if entry.full_url:
            targets[entry.full_url] = f"{rtype}/{resource['id']}"
    if targets:
        for entry in entries:
            if entry.resource is not None:
                rewrite_references(entry.resource, targets)
