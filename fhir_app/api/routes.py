"""The FHIR R4 RESTful interactions under `/fhir` (CONTRACT section 5, FHIR R4 http.html).

| interaction | route |
|---|---|
| capabilities | `GET /fhir/metadata` (public even when tokens are set) |
| `$assess` | `POST /fhir/$assess`: a Bundle of inputs in, a collection of outputs back |
| create | `POST /fhir/{type}`, conditional with `If-None-Exist` or criteria in the query |
| update | `PUT /fhir/{type}/{id}` (create at a client id), `If-Match` for version checks |
| delete | `DELETE /fhir/{type}/{id}` |
| read / vread | `GET /fhir/{type}/{id}[/_history/{vid}]`, If-None-Match, If-Modified-Since |
| search | `GET /fhir/{type}?...`, `POST /fhir/{type}/_search` (fhir_app/api/search.py) |

Transactions and batches, history, conditional update and delete, PATCH, `$everything`,
compartment search and `$validate` are in `fhir_app.api.interactions`. Every GET route answers
HEAD too (`app.answer_head`).

Inputs (Observation, Condition, ImagingStudy, Patient) are written; outputs (RiskAssessment,
DiagnosticReport, Provenance, and the derived Observations) are read-only: 405 with
`Allow: GET, HEAD`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_app.api.bundles import query_string
from fhir_app.api.capability import capability_statement
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
from fhir_app.api.negotiation import Negotiated, ReturnPreference
from fhir_app.api.responses import FhirJsonResponse, etag, http_date
from fhir_app.api.search import searchset_for
from fhir_app.api.security.endpoints import AUDIT_EVENT_CAPABILITY, rest_security
from fhir_app.config import Settings
from fhir_app.fhir.inputs import Issue, JsonObject
from fhir_app.fhir.outcome import operation_outcome
from fhir_app.fhir.parse import iter_input_resources
from fhir_app.fhir.search.request import FORMAT_PARAMETERS
from fhir_app.service import (
    INPUT_TYPES,
    OUTPUT_TYPES,
    ServiceError,
    StoredResource,
    WriteResult,
    assess,
    rejection_status,
)

SUPPORTED_TYPES = INPUT_TYPES | OUTPUT_TYPES
# FHIR R4 datatypes.html#id
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

public = APIRouter(prefix="/fhir")
protected = APIRouter(prefix="/fhir", dependencies=[Depends(authenticated)])

IfNoneExist = Annotated[str | None, Header(alias="If-None-Exist")]
IfMatch = Annotated[str | None, Header(alias="If-Match")]
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]
IfModifiedSince = Annotated[str | None, Header(alias="If-Modified-Since")]


# --------------------------------------------------------------------------- checks


def supported_type(rtype: str) -> None:
    """404 for a resource type this server does not hold (FHIR R4 http.html#read)."""
    if rtype not in SUPPORTED_TYPES:
        raise ApiError.plain(
            404,
            f"Resource type {rtype!r} is not supported here; supported: "
            f"{', '.join(sorted(SUPPORTED_TYPES))}",
        )


def writable_type(rtype: str) -> None:
    """405 for a type that fhir-app derives and nobody else may write."""
    supported_type(rtype)
    if rtype not in INPUT_TYPES:
        raise ApiError.plain(
            405,
            f"{rtype} resources are derived by fhir-app and cannot be written; inputs are "
            f"{', '.join(sorted(INPUT_TYPES))}",
            # FHIR R4 http.html: a 405 says what the resource does allow.
            {"Allow": READ_ONLY_ALLOW},
        )


# What a read-only resource (an output) answers to a write: 405 with this Allow.
READ_ONLY_ALLOW = "GET, HEAD"


@contextmanager
def read_only_allow() -> Iterator[None]:
    """A 405 of the service (a write of a derived resource) answered with its Allow header."""
    try:
        yield
    except ServiceError as exc:
        if exc.status == 405 and not isinstance(exc, ApiError):
            raise ApiError(405, exc.issues, {"Allow": READ_ONLY_ALLOW}) from exc
        raise


def valid_id(rid: str) -> None:
    """400 for a logical id outside FHIR's id syntax."""
    if not FHIR_ID.fullmatch(rid):
        raise ApiError.plain(400, f"{rid!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)")


def etag_matches(header: str, version_id: int) -> bool:
    """If-None-Match against a version: `W/"3"`, `"3"` or a bare `3` (as fhirpy sends), `*`."""
    for candidate in header.split(","):
        text = candidate.strip().removeprefix("W/").strip('"')
        if text == "*" or text == str(version_id):
            return True
    return False


# --------------------------------------------------------------------------- responses


def version_headers(version_id: int, last_updated: datetime | None) -> dict[str, str]:
    """ETag and Last-Modified of a stored version."""
    headers = {"ETag": etag(version_id)}
    if last_updated is not None:
        headers["Last-Modified"] = http_date(last_updated)
    return headers


def information(text: str) -> JsonObject:
    """An OperationOutcome reporting success, for `Prefer: return=OperationOutcome`."""
    return operation_outcome([Issue("information", "informational", text)])


def write_response(result: WriteResult, base: str, preferences: Negotiated) -> Response:
    """The answer to a create, update or delete, shaped by `Prefer: return=`."""
    what = f"{result.resource_type}/{result.resource_id}"
    if not result.resource_id:  # a conditional delete that matched nothing
        what = f"No {result.resource_type} matched: nothing"
    if result.status == 204:
        if preferences.return_preference == "OperationOutcome":
            return FhirJsonResponse(information(f"{what} deleted"), pretty=preferences.pretty)
        return Response(status_code=204)
    headers: dict[str, str] = {}
    if result.version_id is not None:
        headers = version_headers(result.version_id, result.last_updated)
        headers["Location"] = f"{base}/{result.location}"
    body: JsonObject | None = result.resource
    if preferences.return_preference == "minimal":
        body = None
    elif preferences.return_preference == "OperationOutcome":
        verb = "created" if result.status == 201 else "stored"
        body = information(f"{what} {verb} at version {result.version_id}")
    return FhirJsonResponse(
        body, status_code=result.status, headers=headers, pretty=preferences.pretty
    )


def shape_entries(bundle: JsonObject, preference: ReturnPreference) -> JsonObject:
    """Apply `Prefer: return=` to every entry of a transaction or batch response."""
    if preference == "representation":
        return bundle
    for entry in bundle.get("entry", []):
        resource = entry.pop("resource", None)
        response = entry.setdefault("response", {})
        if preference == "OperationOutcome" and "outcome" not in response:
            where = response.get("location") or (
                f"{resource['resourceType']}/{resource['id']}" if resource else "entry"
            )
            response["outcome"] = information(f"{where}: {response.get('status', '')}".strip())
    return bundle


# --------------------------------------------------------------------------- capabilities


def server_capabilities(base: str, settings: Settings) -> JsonObject:
    """The CapabilityStatement of this server at `base` (`GET /fhir/metadata`, and a batch's
    `GET metadata` entry)."""
    statement = capability_statement(base)
    for rest in statement.get("rest", []):
        rest["security"] = rest_security(settings)  # issue 13
        rest.setdefault("resource", []).append(AUDIT_EVENT_CAPABILITY)
    return statement


@public.get("/metadata")
def metadata(request: Request, settings: SettingsDep, preferences: NegotiatedDep) -> Response:
    """The CapabilityStatement of this server."""
    statement = server_capabilities(fhir_base(request), settings)
    return FhirJsonResponse(statement, pretty=preferences.pretty)


@public.api_route("/metadata", methods=["POST", "PUT", "PATCH", "DELETE"])
def metadata_not_writable(request: Request) -> Response:
    """405: the CapabilityStatement is read only (and `metadata` is no resource type, which the
    conditional update and delete routes of `/fhir/{type}` would otherwise take it for)."""
    raise ApiError.plain(
        405,
        f"{request.method} is not allowed on /fhir/metadata: the CapabilityStatement is read only",
        {"Allow": READ_ONLY_ALLOW},
    )


# --------------------------------------------------------------------------- system level


@protected.post("/$assess")
def assess_operation(
    body: BodyDep, service: ServiceDep, settings: SettingsDep, preferences: NegotiatedDep
) -> Response:
    """Derive the outputs of a Bundle of inputs (any Bundle type) without storing anything.

    Every input must be accepted: a rejected one is 422 naming its entry (400 when it is not
    FHIR JSON at all), and nothing is derived from a partial set (it would understate the
    findings).
    """
    if body.resource_type != "Bundle":
        raise ApiError.plain(400, f"$assess takes a Bundle of inputs, not a {body.resource_type}")
    check_bundle_entries(body.document, settings.max_bundle_entries)
    result = assess(
        iter_input_resources(body.data),
        service.settings,
        max_outputs=settings.max_assess_outputs,
    )
    if result.rejections:
        issues = [
            Issue(i.severity, i.code, f"{r.label}: {i.diagnostics}", i.expression)
            for r in result.rejections
            for i in r.issues
        ]
        raise ServiceError(rejection_status(issues), issues)
    return FhirJsonResponse(result.bundle(), pretty=preferences.pretty)


# --------------------------------------------------------------------------- type level


@protected.get("/{resource_type}")
def search(
    resource_type: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    preferences: NegotiatedDep,
) -> Response:
    """Search the current resources of a type: a `searchset` page with paging links."""
    supported_type(resource_type)
    bundle = searchset_for(
        service,
        resource_type,
        request.query_params.multi_items(),
        base=fhir_base(request),
        settings=settings,
        lenient=preferences.lenient,
    )
    return FhirJsonResponse(bundle, pretty=preferences.pretty)


FORM = "application/x-www-form-urlencoded"


@protected.post("/{resource_type}/_search")
async def search_by_post(
    resource_type: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    preferences: NegotiatedDep,
) -> Response:
    """The same search with the parameters in a form body (and the query), http.html#search."""
    supported_type(resource_type)
    body = await request.body()
    media_type = request.headers.get("content-type", FORM).split(";")[0].strip().lower()
    if body and media_type != FORM:
        raise ApiError.plain(415, f"POST _search takes {FORM}, not {media_type}")
    if len(body) > settings.max_request_bytes:
        raise ApiError.plain(413, f"The form is larger than {settings.max_request_bytes} bytes")
    try:
        form = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise ApiError.plain(400, "The form is not UTF-8") from exc
    items = [*request.query_params.multi_items(), *form]
    # The search runs its queries synchronously: off the event loop.
    bundle = await run_in_threadpool(
        lambda: searchset_for(
            service,
            resource_type,
            items,
            base=fhir_base(request),
            settings=settings,
            lenient=preferences.lenient,
        )
    )
    return FhirJsonResponse(bundle, pretty=preferences.pretty)


@protected.post("/{resource_type}")
def create(
    resource_type: str,
    request: Request,
    body: BodyDep,
    service: ServiceDep,
    preferences: NegotiatedDep,
    if_none_exist: IfNoneExist = None,
) -> Response:
    """Create an input with a server-assigned id; with If-None-Exist, only when none matches.

    Search criteria in the query (`POST /fhir/Patient?identifier=...`, what fhirpy's
    `get_or_create` sends) are If-None-Exist criteria too: never silently ignored.
    """
    writable_type(resource_type)
    criteria = [
        (name, value)
        for name, value in request.query_params.multi_items()
        if name not in FORMAT_PARAMETERS
    ]
    if criteria and if_none_exist is not None:
        raise ServiceError.of(
            400,
            "invalid",
            "send the conditional-create criteria once: in If-None-Exist or in the query",
        )
    if criteria:
        if_none_exist = query_string(criteria)
    result = service.create(resource_type, body.document, if_none_exist=if_none_exist)
    return write_response(result, fhir_base(request), preferences)


# --------------------------------------------------------------------------- instance level


@protected.get("/{resource_type}/{resource_id}")
def read(
    resource_type: str,
    resource_id: str,
    service: ServiceDep,
    preferences: NegotiatedDep,
    if_none_match: IfNoneMatch = None,
    if_modified_since: IfModifiedSince = None,
) -> Response:
    """The current version; 304 when If-None-Match names it (or, without If-None-Match, when
    it was not modified after If-Modified-Since), 410 when deleted."""
    supported_type(resource_type)
    valid_id(resource_id)
    row = service.read(resource_type, resource_id)
    return stored_response(row, preferences, if_none_match, if_modified_since)


def not_modified_since(header: str, last_updated: datetime) -> bool:
    """RFC 9110 13.1.3: the version is no newer than the If-Modified-Since date (whole seconds,
    the precision of an HTTP-date). An unreadable date is ignored, as RFC 9110 says."""
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_updated.replace(microsecond=0) <= since


def stored_response(
    row: StoredResource,
    preferences: Negotiated,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
) -> Response:
    """A stored version with its ETag and Last-Modified; 304 when the client has it already
    (If-None-Match; If-Modified-Since only without If-None-Match, RFC 9110 13.1.3)."""
    headers = version_headers(row.version_id, row.last_updated)
    if if_none_match:
        if etag_matches(if_none_match, row.version_id):
            return Response(status_code=304, headers=headers)
    elif if_modified_since and not_modified_since(if_modified_since, row.last_updated):
        return Response(status_code=304, headers=headers)
    return FhirJsonResponse(row.content, headers=headers, pretty=preferences.pretty)


@protected.put("/{resource_type}/{resource_id}")
def update(
    resource_type: str,
    resource_id: str,
    request: Request,
    body: BodyDep,
    service: ServiceDep,
    preferences: NegotiatedDep,
    if_match: IfMatch = None,
) -> Response:
    """Update an input, or create it at this id; If-Match makes it conditional on the version."""
    writable_type(resource_type)
    valid_id(resource_id)
    with read_only_allow():
        result = service.update(resource_type, resource_id, body.document, if_match=if_match)
    return write_response(result, fhir_base(request), preferences)


@protected.delete("/{resource_type}/{resource_id}")
def delete(
    resource_type: str,
    resource_id: str,
    request: Request,
    service: ServiceDep,
    preferences: NegotiatedDep,
) -> Response:
    """Delete an input; the outputs are derived again without it."""
    writable_type(resource_type)
    valid_id(resource_id)
    with read_only_allow():
        result = service.delete(resource_type, resource_id)
    return write_response(result, fhir_base(request), preferences)


@protected.get("/{resource_type}/{resource_id}/_history/{version_id}")
def vread(
    resource_type: str,
    resource_id: str,
    version_id: str,
    service: ServiceDep,
    preferences: NegotiatedDep,
) -> Response:
    """One version of a resource."""
    supported_type(resource_type)
    valid_id(resource_id)
    if not version_id.isdigit():
        raise ApiError.plain(
            404, f"{resource_type}/{resource_id}/_history/{version_id} is not known"
        )
    row = service.read(resource_type, resource_id, int(version_id))
    return stored_response(row, preferences)
