"""The FHIR R4 interactions integrators rely on beyond read, write and search (issue 12).

| interaction | route |
|---|---|
| conditional update | `PUT /fhir/{type}?criteria`: 0 matches create, 1 is updated, more 412 |
| conditional delete | `DELETE /fhir/{type}?criteria`: none 204, 1 is deleted, more 412 |
| patch | `PATCH /fhir/{type}/{id}`: JSON Patch, or JSON Merge Patch (what fhirpy sends) |
| history-type / -system | `GET /fhir/{type}/_history`, `GET /fhir/_history`: `_since`, `_count` |
| `$everything` | `GET /fhir/Patient/{id}/$everything`: `_since`, `_type`, `_count` |
| compartment search | `GET /fhir/Patient/{id}/{type}`: a search of `{type}` with `patient={id}` |
| `$validate` | `POST /fhir/{type}/$validate`, `POST /fhir/{type}/{id}/$validate` |

Paged history and `$everything` use keyset paging: the `next` link carries the position of the
last entry (`_page`), so writes made while a client pages neither repeat nor skip entries.

GET and HEAD entries of a transaction or batch are answered here too (`bundle_reader`), through
the same functions as the routes, so an entry reads exactly what the route would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Depends, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_app.api.bundles import history_bundle, query_string
from fhir_app.api.dependencies import (
    BodyDep,
    NegotiatedDep,
    ServiceDep,
    SettingsDep,
    authenticated,
    fhir_base,
)
from fhir_app.api.errors import ApiError
from fhir_app.api.limits import check_bundle_entries
from fhir_app.api.request_body import read_limited
from fhir_app.api.responses import FhirJsonResponse, etag
from fhir_app.api.routes import (
    READ_ONLY_ALLOW,
    SUPPORTED_TYPES,
    etag_matches,
    information,
    read_only_allow,
    server_capabilities,
    shape_entries,
    supported_type,
    valid_id,
    writable_type,
    write_response,
)
from fhir_app.api.search import searchset_for
from fhir_app.config import Settings
from fhir_app.fhir.bundle import BundleEntry
from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.outcome import operation_outcome
from fhir_app.fhir.parse import load_json
from fhir_app.fhir.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    JsonPatch,
    apply_merge_patch,
    json_patch_operations,
)
from fhir_app.fhir.search.dates import in_utc
from fhir_app.fhir.search.request import FORMAT_PARAMETERS
from fhir_app.service import (
    EntryReader,
    FhirService,
    HistoryCursor,
    ServiceError,
    StoredResource,
)

early = APIRouter(prefix="/fhir", dependencies=[Depends(authenticated)])
late = APIRouter(prefix="/fhir", dependencies=[Depends(authenticated)])

IfMatch = Annotated[str | None, Header(alias="If-Match")]
HISTORY_PARAMETERS = frozenset({"_since", "_count", "_page"})
EVERYTHING_PARAMETERS = frozenset({"_since", "_count", "_page", "_type"})
PATCH_MEDIA_TYPES = frozenset(
    {JSON_PATCH, MERGE_PATCH, "application/json", "application/fhir+json"}
)
_EVERYTHING_PAGE = re.compile(r"([A-Z][A-Za-z]{0,63})/([A-Za-z0-9\-.]{1,64})")


def conditional_criteria(request: Request) -> str:
    """The query of a conditional interaction (`_format` and `_pretty` are not criteria); 400
    when there is none."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in FORMAT_PARAMETERS]
    if not kept:
        raise ServiceError.of(
            400, "invalid", f"{request.method} /fhir/{{type}} needs search criteria (?name=value)"
        )
    return query_string(kept)


# --------------------------------------------------------------------------- 405s

# Paths whose last segment is a keyword (`_history`, `$validate`) would otherwise be taken for a
# resource type or id by the routes of `/fhir/{type}[/{id}]` and refused for that (400, 404):
# these answer the methods that have no route there with 405 and the methods that do.
OTHER_THAN_READ = ["POST", "PUT", "PATCH", "DELETE"]


def method_not_allowed(request: Request, allowed: str) -> ApiError:
    """405 naming the methods of this path."""
    return ApiError.plain(
        405,
        f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}",
        {"Allow": allowed},
    )


@early.api_route("/_history", methods=OTHER_THAN_READ, include_in_schema=False)
@early.api_route("/{resource_type}/_history", methods=OTHER_THAN_READ, include_in_schema=False)
def history_not_writable(request: Request) -> Response:
    """History is read only."""
    raise method_not_allowed(request, READ_ONLY_ALLOW)


@early.api_route(
    "/{resource_type}/$validate", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
def validate_is_posted(request: Request) -> Response:
    """`$validate` takes the resource in a POST."""
    raise method_not_allowed(request, "POST")


# --------------------------------------------------------------------------- conditional writes


@late.put("/{resource_type}")
def conditional_update(
    resource_type: str,
    request: Request,
    body: BodyDep,
    service: ServiceDep,
    preferences: NegotiatedDep,
    if_match: IfMatch = None,
) -> Response:
    """`PUT /fhir/{type}?criteria`: update the one match, create when none, 412 when several."""
    writable_type(resource_type)
    criteria = conditional_criteria(request)
    result = service.update_conditional(resource_type, criteria, body.document, if_match=if_match)
    return write_response(result, fhir_base(request), preferences)


@late.delete("/{resource_type}")
def conditional_delete(
    resource_type: str, request: Request, service: ServiceDep, preferences: NegotiatedDep
) -> Response:
    """`DELETE /fhir/{type}?criteria`: delete the one match; 204 when none; 412 when several
    (this server deletes single resources: CapabilityStatement conditionalDelete `single`)."""
    writable_type(resource_type)
    criteria = conditional_criteria(request)
    result = service.delete_conditional(resource_type, criteria)
    return write_response(result, fhir_base(request), preferences)


# --------------------------------------------------------------------------- patch


def patch_change(content_type: str | None, data: bytes) -> Callable[[JsonObject], JsonObject]:
    """What a PATCH body does to the current resource: a JSON Patch (an array, or declared
    `application/json-patch+json`) or a JSON Merge Patch (an object). 415 for another media
    type, 400 for a body that is not JSON."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in PATCH_MEDIA_TYPES:
        raise ApiError.plain(
            415,
            f"PATCH takes {JSON_PATCH} (or {MERGE_PATCH}), not {media or 'no Content-Type'}",
        )
    try:
        document = load_json(data)
        if media == JSON_PATCH or isinstance(document, list):
            return JsonPatch(json_patch_operations(document))
    except InputRejected as exc:
        raise ApiError(400, exc.issues) from exc
    if not isinstance(document, dict):
        raise ApiError.plain(400, "a merge patch is a JSON object (RFC 7386)")
    return lambda current: apply_merge_patch(current, document)


@late.patch("/{resource_type}/{resource_id}")
async def patch(
    resource_type: str,
    resource_id: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    preferences: NegotiatedDep,
    if_match: IfMatch = None,
) -> Response:
    """Patch an input: the result is validated, stored as a new version and derived again."""
    writable_type(resource_type)
    valid_id(resource_id)
    change = patch_change(
        request.headers.get("content-type"), await read_limited(request, settings.max_request_bytes)
    )

    def run() -> Response:
        with read_only_allow():
            result = service.patch(resource_type, resource_id, change, if_match=if_match)
        return write_response(result, fhir_base(request), preferences)

    # The write blocks on the database: off the event loop, like the synchronous routes.
    return await run_in_threadpool(run)


# --------------------------------------------------------------------------- history


def instant_parameter(name: str, value: str) -> datetime:
    """A FHIR instant (or dateTime) query value; a value without zone is UTC; 400 otherwise."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ServiceError.of(400, "invalid", f"{name}={value} is not an instant", name) from exc
    # In UTC now, clamped: the store converts to UTC, where `9999-12-31T23:00-05:00` overflows.
    return in_utc(moment)


def page_size(value: str | None, settings: Settings) -> int:
    """`_count`: at most max_page_size; 0 asks for the total only, as in a search
    (search.html#count: like `_summary=count`, no entries and no `next`)."""
    if value is None:
        return settings.default_page_size
    if not value.strip().isdigit():
        raise ServiceError.of(
            400, "invalid", f"_count={value} is not a non-negative integer", "_count"
        )
    return min(int(value), settings.max_page_size)


def count_only_bundle(kind: str, total: int, self_url: str) -> JsonObject:
    """The answer to `_count=0`: the total, no entries, no `next`."""
    return {
        "resourceType": "Bundle",
        "type": kind,
        "total": total,
        "link": [{"relation": "self", "url": self_url}],
    }


def known_parameters(
    query: Sequence[tuple[str, str]], allowed: frozenset[str], *, lenient: bool
) -> dict[str, str]:
    """The parameters of a history or `$everything` request; others are 400 unless lenient.
    `_at` is refused even then: ignoring it would return other versions than asked."""
    kept: dict[str, str] = {}
    unknown: list[str] = []
    for name, value in query:
        if name in FORMAT_PARAMETERS or value == "":
            continue
        if name in allowed:
            kept[name] = value
        elif name == "_at" or not lenient:
            unknown.append(name)
    if unknown:
        raise ServiceError(
            400,
            [
                Issue(
                    "error",
                    "not-supported",
                    f"parameter {name!r} is not supported here (supported: "
                    f"{', '.join(sorted(allowed))})",
                    (name,),
                )
                for name in unknown
            ],
        )
    return kept


def history_entry(row: StoredResource, base: str) -> JsonObject:
    """One version as a history entry, with the request that made it (FHIR R4 http.html#history):
    a deletion has no resource and is answered `410 Gone`, as instance history answers it."""
    what = f"{row.resource_type}/{row.resource_id}"
    if row.deleted:
        request, status = {"method": "DELETE", "url": what}, "410 Gone"
    elif row.version_id == 1:
        request, status = {"method": "POST", "url": row.resource_type}, "201 Created"
    else:
        request, status = {"method": "PUT", "url": what}, "200 OK"
    entry: JsonObject = {"fullUrl": f"{base}/{what}"}
    if not row.deleted:
        entry["resource"] = row.content
    entry["request"] = request
    entry["response"] = {
        "status": status,
        "etag": etag(row.version_id),
        "lastModified": row.last_updated.isoformat(),
    }
    return entry


def history_page_bundle(
    service: FhirService,
    rtype: str | None,
    rid: str | None,
    query: Sequence[tuple[str, str]],
    *,
    base: str,
    settings: Settings,
    lenient: bool,
) -> JsonObject:
    """A page of instance, type or system history as a `history` Bundle with `self` and `next`."""
    wanted = known_parameters(query, HISTORY_PARAMETERS, lenient=lenient)
    since = instant_parameter("_since", wanted["_since"]) if "_since" in wanted else None
    before = HistoryCursor.parse(wanted["_page"]) if "_page" in wanted else None
    count = page_size(wanted.get("_count"), settings)
    path = "/".join(part for part in (base, rtype, rid, "_history") if part)
    kept = [(name, wanted[name]) for name in ("_since", "_count") if name in wanted]
    self_params = [*kept, *([("_page", wanted["_page"])] if "_page" in wanted else [])]
    if count == 0:
        total = service.history_total(rtype, rid, since=since)
        return count_only_bundle("history", total, linked(path, self_params))
    rows = service.history_page(rtype, rid, since=since, before=before, count=count)
    links = [{"relation": "self", "url": linked(path, self_params)}]
    if len(rows) == count:
        after = HistoryCursor.after(rows[-1]).token()
        links.append({"relation": "next", "url": linked(path, [*kept, ("_page", after)])})
    return {
        "resourceType": "Bundle",
        "type": "history",
        "link": links,
        "entry": [history_entry(row, base) for row in rows],
    }


def linked(path: str, params: Sequence[tuple[str, str]]) -> str:
    """`path?params` (just `path` without any)."""
    return f"{path}?{query_string(params)}" if params else path


@early.get("/{resource_type}/{resource_id}/_history")
def instance_history(
    resource_type: str,
    resource_id: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    preferences: NegotiatedDep,
) -> Response:
    """Every version of a resource, newest first; paged when `_since`, `_count` or `_page` is
    given (the whole history in one Bundle otherwise, as before paging existed)."""
    supported_type(resource_type)
    valid_id(resource_id)
    query = request.query_params.multi_items()
    base = fhir_base(request)
    if any(name in HISTORY_PARAMETERS for name, _ in query):
        bundle = history_page_bundle(
            service,
            resource_type,
            resource_id,
            query,
            base=base,
            settings=settings,
            lenient=preferences.lenient,
        )
        if not bundle.get("entry") and "_page" not in dict(query):
            service.history(resource_type, resource_id)  # 404 for a resource never stored
    else:
        rows = service.history(resource_type, resource_id)
        bundle = history_bundle(rows, base=base, rtype=resource_type, rid=resource_id)
    return FhirJsonResponse(bundle, pretty=preferences.pretty)


@early.get("/_history")
def system_history(
    request: Request, service: ServiceDep, settings: SettingsDep, preferences: NegotiatedDep
) -> Response:
    """Every version of every resource the caller may list, newest first (incremental sync)."""
    bundle = history_page_bundle(
        service,
        None,
        None,
        request.query_params.multi_items(),
        base=fhir_base(request),
        settings=settings,
        lenient=preferences.lenient,
    )
    return FhirJsonResponse(bundle, pretty=preferences.pretty)


@early.get("/{resource_type}/_history")
def type_history(
    resource_type: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    preferences: NegotiatedDep,
) -> Response:
    """Every version of every resource of a type, newest first."""
    supported_type(resource_type)
    bundle = history_page_bundle(
        service,
        resource_type,
        None,
        request.query_params.multi_items(),
        base=fhir_base(request),
        settings=settings,
        lenient=preferences.lenient,
    )
    return FhirJsonResponse(bundle, pretty=preferences.pretty)


# --------------------------------------------------------------------------- $everything


def everything_bundle(
    service: FhirService,
    patient: str,
    query: Sequence[tuple[str, str]],
    *,
    base: str,
    settings: Settings,
    lenient: bool,
) -> JsonObject:
    """A page of `Patient/{id}/$everything` as a `searchset` Bundle with `self` and `next`."""
    valid_id(patient)
    wanted = known_parameters(query, EVERYTHING_PARAMETERS, lenient=lenient)
    since = instant_parameter("_since", wanted["_since"]) if "_since" in wanted else None
    count = page_size(wanted.get("_count"), settings)
    types: list[str] | None = None
    if "_type" in wanted:
        types = [t.strip() for t in wanted["_type"].split(",") if t.strip()]
        for rtype in types:
            if rtype not in SUPPORTED_TYPES:
                raise ServiceError.of(
                    400, "not-supported", f"_type {rtype!r} is not a type held here", "_type"
                )
    after: tuple[str, str] | None = None
    if "_page" in wanted:
        match = _EVERYTHING_PAGE.fullmatch(wanted["_page"])
        if match is None:
            raise ServiceError.of(
                400, "invalid", f"_page={wanted['_page']!r} is not a page of $everything", "_page"
            )
        after = (match[1], match[2])
    path = f"{base}/Patient/{patient}/$everything"
    kept = [(name, wanted[name]) for name in ("_since", "_type", "_count") if name in wanted]
    self_params = [*kept, *([("_page", wanted["_page"])] if "_page" in wanted else [])]
    if count == 0:
        total = service.everything_total(patient, since=since, types=types)
        if total == 0:
            known_patient(service, patient)
        return count_only_bundle("searchset", total, linked(path, self_params))
    rows = service.everything(patient, since=since, after=after, count=count, types=types)
    if not rows and after is None:
        known_patient(service, patient)
    links = [{"relation": "self", "url": linked(path, self_params)}]
    if len(rows) == count:
        last = f"{rows[-1].resource_type}/{rows[-1].resource_id}"
        links.append({"relation": "next", "url": linked(path, [*kept, ("_page", last)])})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
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


def known_patient(service: FhirService, patient: str) -> None:
    """404 for `$everything` of an id nothing is known of: no Patient resource and nothing in
    its compartment (a Patient resource is optional here: an id with inputs is a patient)."""
    if service.everything_total(patient) == 0:
        raise ServiceError.of(404, "not-found", f"Patient/{patient} is not known")


@early.get("/Patient/{patient_id}/$everything")
def everything(
    patient_id: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    preferences: NegotiatedDep,
) -> Response:
    """The patient's inputs (the Patient itself included) and outputs, paged."""
    bundle = everything_bundle(
        service,
        patient_id,
        request.query_params.multi_items(),
        base=fhir_base(request),
        settings=settings,
        lenient=preferences.lenient,
    )
    return FhirJsonResponse(bundle, pretty=preferences.pretty)


# --------------------------------------------------------------------------- search


def search_page(
    service: FhirService,
    rtype: str,
    query_items: Sequence[tuple[str, str]],
    *,
    base: str,
    settings: Settings,
    lenient: bool,
) -> JsonObject:
    """One searchset page of `rtype` for these query parameters: the search of
    `GET /fhir/{type}` (`fhir_app.api.search.searchset_for`), for compartment searches and
    batch entries."""
    supported_type(rtype)
    return searchset_for(service, rtype, query_items, base=base, settings=settings, lenient=lenient)


# --------------------------------------------------------------------------- $validate


def resource_to_validate(document: JsonObject) -> JsonObject:
    """The resource of a `$validate` body: the body itself, or the `resource` parameter of a
    Parameters resource (FHIR R4 resource-operation-validate)."""
    if document.get("resourceType") != "Parameters":
        return document
    for parameter in document.get("parameter", []) or []:
        if not isinstance(parameter, dict):
            continue
        if parameter.get("name") == "mode" and parameter.get("valueCode") == "delete":
            raise ServiceError.of(
                400, "not-supported", "$validate mode delete is not supported", "Parameters"
            )
        if parameter.get("name") == "resource" and isinstance(parameter.get("resource"), dict):
            resource: JsonObject = parameter["resource"]
            return resource
    raise ServiceError.of(
        400, "required", "the Parameters of $validate need a `resource` parameter", "Parameters"
    )


R4_PROFILE = "http://hl7.org/fhir/StructureDefinition/"


def validated_profiles(request: Request, document: JsonObject) -> list[str]:
    """The profiles nominated to `$validate`: `profile` in the query and, in a Parameters body,
    its `profile` parameters (valueUri / valueCanonical)."""
    profiles = [value for value in request.query_params.getlist("profile") if value]
    if document.get("resourceType") == "Parameters":
        for parameter in document.get("parameter", []) or []:
            if isinstance(parameter, dict) and parameter.get("name") == "profile":
                value = parameter.get("valueUri", parameter.get("valueCanonical"))
                if isinstance(value, str) and value:
                    profiles.append(value)
    return profiles


def check_profiles(rtype: str, profiles: Sequence[str]) -> None:
    """400 `not-supported` for a nominated profile `$validate` cannot check (FHIR R4
    Resource-validate: "If a profile is nominated, and the server cannot validate against the
    nominated profile, it SHALL return an error"). It checks the base R4 profile of the type: a
    write's checks are R4's and this contract's, not the bindings and invariants of the profiles
    in profiles/ (a write accepts an input those profiles would not, e.g. an Observation the
    contract ignores), so those are refused too rather than answered valid unchecked."""
    base = R4_PROFILE + rtype
    for profile in profiles:
        if profile.strip() not in (base, f"{base}|4.0.1"):
            raise ServiceError.of(
                400,
                "not-supported",
                f"$validate cannot validate against the profile {profile!r}; it validates "
                f"{rtype} against its base R4 profile {base} and the rules of a write",
                "profile",
            )


def validation_outcome(issues: list[Issue]) -> JsonObject:
    """The OperationOutcome `$validate` answers: the issues, or one `information` issue."""
    if not issues:
        return information("valid: the resource would be accepted")
    return operation_outcome(issues)


@early.post("/{resource_type}/$validate")
def validate_type(
    resource_type: str,
    request: Request,
    body: BodyDep,
    service: ServiceDep,
    preferences: NegotiatedDep,
) -> Response:
    """Validate a resource as a create would (R4 rules and this contract); nothing is stored.
    200 with the OperationOutcome whether valid or not, as FHIR R4 says for `$validate`; 400
    for a nominated profile other than the type's base R4 profile (`check_profiles`)."""
    supported_type(resource_type)
    check_profiles(resource_type, validated_profiles(request, body.document))
    issues = service.validate(resource_type, resource_to_validate(body.document))
    return FhirJsonResponse(validation_outcome(issues), pretty=preferences.pretty)


@early.post("/{resource_type}/{resource_id}/$validate")
def validate_instance(
    resource_type: str,
    resource_id: str,
    request: Request,
    body: BodyDep,
    service: ServiceDep,
    preferences: NegotiatedDep,
) -> Response:
    """Validate a resource as an update of `{type}/{id}` would; nothing is stored."""
    supported_type(resource_type)
    valid_id(resource_id)
    check_profiles(resource_type, validated_profiles(request, body.document))
    issues = service.validate(resource_type, resource_to_validate(body.document), resource_id)
    return FhirJsonResponse(validation_outcome(issues), pretty=preferences.pretty)


# --------------------------------------------------------------------------- compartment


@late.get("/Patient/{patient_id}/{compartment_type}")
def compartment_search(
    patient_id: str,
    compartment_type: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    preferences: NegotiatedDep,
) -> Response:
    """`GET /fhir/Patient/{id}/{type}`: the search of `{type}` within the patient's compartment
    (FHIR R4 compartmentdefinition-patient: `patient={id}`), other parameters applied."""
    valid_id(patient_id)
    query = [*request.query_params.multi_items(), ("patient", patient_id)]
    bundle = search_page(
        service,
        compartment_type,
        query,
        base=fhir_base(request),
        settings=settings,
        lenient=preferences.lenient,
    )
    return FhirJsonResponse(bundle, pretty=preferences.pretty)


# --------------------------------------------------------------------------- batch reads


@early.post("")
@early.post("/", include_in_schema=False)  # `[base]/`: some clients keep the slash
def transaction_or_batch(
    request: Request,
    body: BodyDep,
    service: ServiceDep,
    settings: SettingsDep,
    preferences: NegotiatedDep,
) -> Response:
    """A `transaction` Bundle (atomic) or a `batch` Bundle (each entry on its own)."""
    document = body.document
    if body.resource_type != "Bundle":
        raise ApiError.plain(
            400,
            f"POST /fhir takes a Bundle of type transaction or batch, not a {body.resource_type}",
        )
    check_bundle_entries(document, settings.max_bundle_entries)
    kind = document.get("type")
    # GET and HEAD entries are answered by the routes' own reads, as this caller may make them.
    reader = bundle_reader(
        service, base=fhir_base(request), settings=settings, lenient=preferences.lenient
    )
    if kind == "transaction":
        answer = service.transaction(document, reader)
    elif kind == "batch":
        answer = service.batch(document, reader)
    else:
        raise ServiceError.of(
            400,
            "invalid",
            f"POST /fhir takes a Bundle of type transaction or batch, not {kind!r}; "
            "to derive outputs without storing anything, POST the Bundle to /fhir/$assess",
            "Bundle.type",
        )
    return FhirJsonResponse(
        shape_entries(answer, preferences.return_preference), pretty=preferences.pretty
    )


def bundle_reader(
    service: FhirService, *, base: str, settings: Settings, lenient: bool
) -> EntryReader:
    """Answers the GET and HEAD entries of a transaction or batch like the routes answer them
    (through `service`, the caller's guarded service): read, vread, instance/type/system
    history, search, compartment search and `$everything`. Any other url is that entry's 400;
    a type not held here its 404."""

    def read(entry: BundleEntry) -> JsonObject:
        url = (entry.url or "").strip()
        parts = urlsplit(url)
        path = parts.path
        if parts.scheme or parts.netloc:
            if not url.startswith(f"{base}/"):
                raise ServiceError.of(400, "invalid", f"{url!r} is not a url of this server")
            path = urlsplit(url[len(base) :]).path
        query = parse_qsl(parts.query, keep_blank_values=True)
        segments = [s for s in path.strip("/").split("/") if s]
        return read_url(
            service,
            segments,
            query,
            base=base,
            settings=settings,
            lenient=lenient,
            if_none_match=entry.if_none_match,
            if_modified_since=entry.if_modified_since,
        )

    return read


def read_url(
    service: FhirService,
    segments: list[str],
    query: list[tuple[str, str]],
    *,
    base: str,
    settings: Settings,
    lenient: bool,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
) -> JsonObject:
    """The entry answering a read url, split into path segments and query. A read is
    conditional like the route's: `304 Not Modified` when `if_none_match` names the current
    version, or (without it) when it is no newer than `if_modified_since` (a FHIR instant)."""

    def history(rtype: str | None, rid: str | None) -> JsonObject:
        bundle = history_page_bundle(
            service, rtype, rid, query, base=base, settings=settings, lenient=lenient
        )
        return ok(bundle)

    def search(rtype: str, items: list[tuple[str, str]]) -> JsonObject:
        return ok(search_page(service, rtype, items, base=base, settings=settings, lenient=lenient))

    if segments == ["_history"]:
        return history(None, None)
    if segments == ["metadata"]:
        return ok(server_capabilities(base, settings))
    if not segments:
        raise ServiceError.of(400, "invalid", "a GET entry needs a url (Type, Type/id, ...)")
    rtype, rest = segments[0], segments[1:]
    supported_type(rtype)
    if not rest:
        return search(rtype, query)
    if rest == ["_history"]:
        return history(rtype, None)
    rid = rest[0]
    valid_id(rid)
    if rtype == "Patient" and rest[1:] == ["$everything"]:
        bundle = everything_bundle(
            service, rid, query, base=base, settings=settings, lenient=lenient
        )
        return ok(bundle)
    if rtype == "Patient" and len(rest) == 2 and rest[1] != "_history":
        return search(rest[1], [*query, ("patient", rid)])
    if len(rest) == 1:
        row = service.read(rtype, rid)
        if not_modified(row, if_none_match, if_modified_since):
            return {"response": {**stored_entry(row)["response"], "status": "304 Not Modified"}}
        return stored_entry(row)
    if rest[1:] == ["_history"]:
        return history(rtype, rid)
    if len(rest) == 3 and rest[1] == "_history" and rest[2].isdigit():
        return stored_entry(service.read(rtype, rid, int(rest[2])))
    raise ServiceError.of(
        400, "not-supported", f"GET {'/'.join(segments)} is not a read this server answers"
    )


def ok(resource: JsonObject) -> JsonObject:
    """An entry answered 200 with `resource`."""
    return {"resource": resource, "response": {"status": "200 OK"}}


def not_modified(
    row: StoredResource, if_none_match: str | None, if_modified_since: str | None
) -> bool:
    """Whether a conditional read entry (R4 Bundle.entry.request.ifNoneMatch, ifModifiedSince)
    is answered 304: the rules of the route (`routes.stored_response`), with ifModifiedSince an
    instant (an unreadable one is ignored, as the route ignores an unreadable HTTP-date)."""
    if if_none_match:
        return etag_matches(if_none_match, row.version_id)
    if not if_modified_since:
        return False
    try:
        since = in_utc(datetime.fromisoformat(if_modified_since.strip()))
    except ValueError:
        return False
    return row.last_updated <= since


def stored_entry(row: StoredResource) -> JsonObject:
    """A read or vread entry: the version with its ETag and lastModified."""
    return {
        "resource": row.content,
        "response": {
            "status": "200 OK",
            "etag": etag(row.version_id),
            "lastModified": row.last_updated.isoformat(),
        },
    }
