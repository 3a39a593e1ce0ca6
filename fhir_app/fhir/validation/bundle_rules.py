"""The rules of a Bundle as a whole (CONTRACT 3b, FHIR R4 bundle.html and http.html#trules).

A Bundle's entries are read together: references between them go by `fullUrl`, and a PUT names
its target in `request.url`. So the Bundle is refused (as a whole for a transaction, per entry
for a batch) when:

- two entries share a `fullUrl` (a reference to it could mean either). Outside a transaction or
  batch, R4's bdl-7 lets versions of one resource share it when their `meta.versionId`s differ
  (the official example Bundle-bundle-references does); a transaction or batch writes, and two
  writes to one fullUrl are refused whatever their versions;
- a `urn:uuid:` reference points at no entry (such a reference has no meaning outside the Bundle);
- a PUT entry's url names an id other than its resource's (http.html#update: the ids SHALL match;
  a server must not pick one silently).

Each fault is an `invalid` issue (400: the Bundle cannot be read as asked) naming the element by
FHIRPath, `Bundle.entry[3].resource.subject.reference`.

`shell_issues` holds the Bundle itself (all but its entries' resources, which are validated one
by one as inputs) to the rules of R4 JSON: no null, no empty value, the JSON type of each element
(`"fullUrl": 7`, `"request": {"ifNoneExist": null}`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import orjson

from fhir_app.fhir.inputs import Issue
from fhir_app.fhir.validation.schema import schema_issues

URN_UUID: Final = "urn:uuid:"
# The Bundle types whose entries are writes (http.html#transaction).
WRITING_TYPES: Final = frozenset({"transaction", "batch"})
# `Type/id` of a PUT that names its target (a conditional `Type?criteria` names none).
_PUT_URL: Final = re.compile(r"[A-Z][A-Za-z]{0,63}/([^/?#]+)")
# Enough issues to locate the faults without letting one Bundle make an outcome of any size.
MAX_ISSUES_PER_ENTRY: Final = 20
MAX_ISSUES_PER_BUNDLE: Final = 100


def _issue(path: str, text: str) -> Issue:
    return Issue("error", "invalid", f"{path}: {text}", (path,))


def entry_issues(
    entries: Sequence[Any], bundle_type: Any = "transaction"
) -> dict[int, list[Issue]]:
    """The Bundle rules each entry breaks, by entry index; entries that break none are absent.

    `entries` is `Bundle.entry` as received (before references are rewritten), `bundle_type`
    its `Bundle.type`; entries that are not objects are left to the caller's shape checks.
    """
    writes = isinstance(bundle_type, str) and bundle_type in WRITING_TYPES
    found: dict[int, list[Issue]] = {}
    full_urls: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(full_url, str):
            full_urls.setdefault(full_url, []).append(index)
    for full_url, indexes in full_urls.items():
        if len(indexes) < 2 or (not writes and _distinct_versions(entries, indexes)):
            continue
        for index in indexes:
            others = [i for i in indexes if i != index]
            found.setdefault(index, []).append(duplicate_issue(index, full_url, others))
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        where = f"Bundle.entry[{index}]"
        mismatch = _put_id_mismatch(entry, resource, where)
        if mismatch is not None:
            found.setdefault(index, []).append(mismatch)
        dangling = list(_dangling_references(resource, f"{where}.resource", full_urls))
        if dangling:
            found.setdefault(index, []).extend(dangling[:MAX_ISSUES_PER_ENTRY])
    return found


def _distinct_versions(entries: Sequence[Any], indexes: list[int]) -> bool:
    """True when the entries at `indexes` all carry a `meta.versionId`, each a different one."""
    versions = set()
    for index in indexes:
        resource = entries[index].get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        version = meta.get("versionId") if isinstance(meta, dict) else None
        if not isinstance(version, str) or version in versions:
            return False
        versions.add(version)
    return True


def _put_id_mismatch(entry: dict[str, Any], resource: dict[str, Any], where: str) -> Issue | None:
    request = entry.get("request")
    if not isinstance(request, dict):
        return None
    return put_id_issue(where, resource.get("id"), request.get("method"), request.get("url"))


def duplicate_issue(index: int, full_url: str, others: Sequence[int]) -> Issue:
    """Entry `index` shares its fullUrl with the entries `others`."""
    named = ", ".join(f"Bundle.entry[{i}]" for i in others)
    return _issue(
        f"Bundle.entry[{index}].fullUrl",
        f"{full_url!r} is also the fullUrl of {named}; each entry needs its own",
    )


def put_id_issue(where: str, given: Any, method: Any, url: Any) -> Issue | None:
    """The issue of a PUT entry (`where` = `Bundle.entry[i]`) whose request url names an id
    other than its resource's `given` one; None when they agree or there is nothing to compare
    (another method, a conditional url, a resource without id)."""
    if not isinstance(method, str) or method.upper() != "PUT" or not isinstance(url, str):
        return None
    named = _PUT_URL.fullmatch(url)
    if named is None or not isinstance(given, str) or given == named.group(1):
        return None
    return _issue(
        f"{where}.resource.id",
        f"the resource's id {given!r} differs from the id {named.group(1)!r} its request url "
        f"{url!r} names; they must be the same",
    )


def dangling_issue(where: str, reference: str) -> Issue:
    """A `urn:uuid:` reference (at FHIRPath `where`) that is the fullUrl of no entry."""
    return _issue(where, f"{reference!r} is the fullUrl of no entry of this Bundle")


def _dangling_references(
    resource: dict[str, Any], path: str, full_urls: dict[str, list[int]]
) -> Iterator[Issue]:
    # Most resources hold no urn:uuid reference at all: one serialisation and a byte search
    # spare them the walk.
    if URN_UUID.encode() not in orjson.dumps(resource):
        return
    for where, reference in _references(resource, path):
        if reference.startswith(URN_UUID) and reference not in full_urls:
            yield dangling_issue(where, reference)


def _references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every `reference` string under `node`, with its FHIRPath."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield f"{path}.reference", value
            elif isinstance(value, dict | list):
                yield from _references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _references(item, f"{path}[{index}]")


def refused_as_whole(bundle_type: Any) -> bool:
    """True when a fault of one entry refuses every entry: in any Bundle but a batch (whose
    entries are independent, http.html#transaction), the entries are taken in together."""
    return bool(bundle_type != "batch")


def refused_along(where: str, faulty: Sequence[str], bundle_type: Any = "transaction") -> Issue:
    """The issue of an entry (at `where`, `Bundle.entry[2]`) that breaks nothing itself but is
    refused with the Bundle it belongs to, because of the entries `faulty` (their labels): a
    transaction (or a collection read as one document) is taken in whole or not at all."""
    shown = ", ".join(faulty[:10]) + (f" and {len(faulty) - 10} more" if len(faulty) > 10 else "")
    kind = bundle_type if isinstance(bundle_type, str) else "Bundle"
    return Issue(
        "error",
        "processing",
        f"not taken in: the {kind} was refused because of {shown}; it is taken in whole or "
        "not at all, so nothing of it was stored",
        (where,),
    )


def whole_refusals(
    entries: int, faults: Mapping[int, list[Issue]], bundle_type: Any
) -> dict[int, list[Issue]]:
    """Every entry's issues when a Bundle refused as a whole has `faults` (by entry index): the
    faulty entries their own, the others one saying which entries refused the Bundle."""
    faulty = [f"Bundle.entry[{index}]" for index in sorted(faults)]
    return {
        index: faults[index][:MAX_ISSUES_PER_ENTRY]
        if index in faults
        else [refused_along(f"Bundle.entry[{index}]", faulty, bundle_type)]
        for index in range(entries)
    }


# Stands in for an entry's resource when the Bundle around it is checked: the smallest valid
# resource, so that only the Bundle's own elements are judged.
_PLACEHOLDER: Final = {"resourceType": "Bundle", "type": "collection"}
_ENTRY_PATH: Final = re.compile(r"Bundle\.entry\[(\d+)\]")


def shell_issues(bundle: Mapping[str, Any]) -> tuple[list[Issue], dict[int, list[Issue]]]:
    """What the Bundle breaks of R4 JSON outside its entries' resources: issues of the Bundle
    itself, and issues of each entry (fullUrl, request, ...) by entry index.

    Missing elements (a `type`, a POST's `request.url`) are left to the callers, which answer
    them in their own words (a POST without url creates its resource's type); entries that are
    not objects, or whose resource is not one, are judged here like any other element.
    """
    shell = dict(bundle)
    shell.setdefault("type", "collection")
    entries = bundle.get("entry")
    if isinstance(entries, list):
        shell["entry"] = [
            {**e, "resource": _PLACEHOLDER}
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            else e
            for e in entries
        ]
    whole: list[Issue] = []
    by_entry: dict[int, list[Issue]] = {}
    for issue in schema_issues("Bundle", shell):
        if issue.code == "required":
            continue
        found = _ENTRY_PATH.match(issue.expression[0]) if issue.expression else None
        if found is None:
            whole.append(issue)
        else:
            by_entry.setdefault(int(found.group(1)), []).append(issue)
    return whole, by_entry


def entry_shell_issues(entry: Any, index: int) -> list[Issue]:
    """`shell_issues` of one entry (numbered `index`) read alone, as a streamed Bundle is."""
    _, by_entry = shell_issues({"resourceType": "Bundle", "entry": [entry]})
    where = f"Bundle.entry[{index}]"
    return [
        Issue(
            i.severity,
            i.code,
            i.diagnostics.replace("Bundle.entry[0]", where, 1),
            tuple(e.replace("Bundle.entry[0]", where, 1) for e in i.expression),
        )
        for i in by_entry.get(0, [])
    ]
