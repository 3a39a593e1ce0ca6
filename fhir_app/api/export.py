"""FHIR Bulk Data export (Bulk Data Access IG v2, system level) of the outputs.

- kick-off: `GET /fhir/$export?_type=&_since=&_outputFormat=`, or `POST /fhir/$export` with a
  Parameters resource; `Prefer: respond-async` is required; 202 with `Content-Location`.
- status: `GET /fhir/$export-poll-status/{job}`: 202 with `X-Progress` and `Retry-After` while
  the job runs, 200 with the manifest (`application/json`) when it is complete, 500 with an
  OperationOutcome when it failed, 404 when unknown.
- cancel: `DELETE /fhir/$export-poll-status/{job}`: 202; its files are removed, later polls 404.
- files: `GET /fhir/$export-output/{job}/{Type}.ndjson`, as `application/fhir+ndjson`.

Every route needs the bearer token when tokens are configured, the files too (the manifest then
says `requiresAccessToken: true`). A token with a patient context exports that patient's
compartment only: the job records the patient, and its files hold only that patient's outputs
(the manifest is the usual one). Kick-off parameters this server does not support (`_elements`,
`patient`, `includeAssociatedData`, `_typeFilter`) and unknown ones are 400 unless the client
sends `Prefer: handling=lenient`. What is exported, and how consistent it is:
`fhir_app.export`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from fhir_app.api.dependencies import (
    BodyDep,
    NegotiatedDep,
    PrincipalDep,
    SettingsDep,
    authenticated,
    fhir_base,
)
from fhir_app.api.errors import ApiError, outcome_response
from fhir_app.api.responses import FhirJsonResponse, http_date
from fhir_app.api.security.guarded import forbidden
from fhir_app.api.security.principal import Principal
from fhir_app.config import Settings
from fhir_app.export import (
    NDJSON,
    ExportJob,
    ExportJobs,
    ExportRequest,
    export_request,
    manifest,
)
from fhir_app.fhir.inputs import Issue
from fhir_app.fhir.outcome import operation_outcome
from fhir_app.service import FhirService, ServiceError

bulk_export = APIRouter(prefix="/fhir", dependencies=[Depends(authenticated)])

# Seconds a client is asked to wait between status requests of a running export.
RETRY_AFTER_SECONDS = 2
FILE_CHUNK_BYTES = 64 * 1024
# Bulk Data kick-off parameters this server does not implement (export.html#query-parameters).
UNSUPPORTED_PARAMETERS = frozenset({"_elements", "patient", "includeAssociatedData", "_typeFilter"})
# Response-format parameters of FHIR, meaningless here and ignored.
FORMAT_PARAMETERS = frozenset({"_format", "_pretty"})
# Parameters resource value[x] that may carry a kick-off parameter's text.
PARAMETER_VALUES = ("valueString", "valueInstant", "valueDateTime", "valueCode", "valueUri")

_jobs_guard = threading.Lock()


async def export_jobs(request: Request) -> ExportJobs:
    """The export jobs of this application, made on first use from its service and settings."""
    state = request.app.state
    with _jobs_guard:
        jobs = getattr(state, "export_jobs", None)
        if jobs is None:
            settings: Settings = state.settings
            service: FhirService = state.service
            jobs = ExportJobs(
                service,
                settings.export_dir,
                retention=timedelta(hours=settings.export_retention_hours),
            )
            state.export_jobs = jobs
    assert isinstance(jobs, ExportJobs)
    return jobs


JobsDep = Annotated[ExportJobs, Depends(export_jobs)]


def information(text: str) -> dict[str, Any]:
    """An informational OperationOutcome."""
    return operation_outcome([Issue("information", "informational", text)])


def require_respond_async(request: Request) -> None:
    """400 unless the client sent `Prefer: respond-async` (Bulk Data kick-off requirement)."""
    for header in request.headers.getlist("prefer"):
        for item in header.split(","):
            if item.split(";", 1)[0].strip().lower() == "respond-async":
                return
    raise ApiError.plain(400, "$export runs asynchronously: send the header Prefer: respond-async")


def parsed_request(params: Iterable[tuple[str, str]], *, lenient: bool) -> ExportRequest:
    """The export asked for by kick-off parameters (query or Parameters, as name/value pairs)."""
    types: list[str] = []
    single: dict[str, str] = {}
    refused: list[Issue] = []
    for name, value in params:
        if name in FORMAT_PARAMETERS:
            continue
        if name == "_type":
            types.append(value)
        elif name in ("_since", "_outputFormat"):
            if name in single:
                raise ServiceError.of(400, "invalid", f"{name} is given more than once", name)
            single[name] = value
        elif name in UNSUPPORTED_PARAMETERS:
            refused.append(
                Issue(
                    "error",
                    "not-supported",
                    f"$export parameter {name} is not supported by this server "
                    "(send Prefer: handling=lenient to have it ignored)",
                    (name,),
                )
            )
        else:
            refused.append(
                Issue(
                    "error",
                    "not-supported",
                    f"{name!r} is not a parameter of $export (supported: _outputFormat, _type, "
                    "_since; send Prefer: handling=lenient to have unknown ones ignored)",
                    (name,),
                )
            )
    if refused and not lenient:
        raise ServiceError(400, refused)
    return export_request(
        types=types, since=single.get("_since"), output_format=single.get("_outputFormat")
    )


def parameters_of(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The name/value pairs of a Parameters resource; 400 for a parameter without text value."""
    entries = document.get("parameter") or []
    if not isinstance(entries, list):
        raise ServiceError.of(400, "structure", "Parameters.parameter must be a list", "parameter")
    for index, entry in enumerate(entries):
        where = f"Parameters.parameter[{index}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise ServiceError.of(400, "required", f"{where} has no name", where)
        values = [entry[key] for key in PARAMETER_VALUES if key in entry]
        if len(values) != 1 or not isinstance(values[0], str):
            raise ServiceError.of(
                400,
                "invalid",
                f"{where} ({name}) needs one text value (valueString, valueInstant, valueCode)",
                where,
            )
        yield name, values[0]


def accepted(job: ExportJob, request: Request) -> Response:
    """202 Accepted with the status URL in Content-Location."""
    status_url = f"{fhir_base(request)}/$export-poll-status/{job.id}"
    return FhirJsonResponse(
        information(f"Export job {job.id} accepted; poll {status_url} for its status"),
        status_code=202,
        headers={"Content-Location": status_url},
    )


def may_export(principal: Principal, wanted: ExportRequest) -> None:
    """403 unless the caller may read every exported type.

    A patient-context token may export too: its job is bounded to that patient (`kick_off`
    passes `principal.patient` to the job), so the read permission is all that is checked here.
    """
    for rtype in wanted.types:
        if not principal.allows(rtype, "r"):
            raise forbidden(principal, rtype, "r")


def owned(job: ExportJob, principal: Principal) -> ExportJob:
    """The job when this caller started it; 404 otherwise (other clients' jobs are not shown)."""
    if job.owner is not None and job.owner != principal.client_id:
        raise ApiError.plain(404, f"Export job {job.id} is not known")
    return job


@bulk_export.get("/$export")
def kick_off(
    request: Request, preferences: NegotiatedDep, jobs: JobsDep, principal: PrincipalDep
) -> Response:
    """Start an export of the outputs from query parameters."""
    require_respond_async(request)
    wanted = parsed_request(request.query_params.multi_items(), lenient=preferences.lenient)
    may_export(principal, wanted)
    url = f"{fhir_base(request)}/$export"
    if request.url.query:
        url += f"?{request.url.query}"
    return accepted(
        jobs.start(wanted, url, owner=principal.client_id, patient=principal.patient), request
    )


@bulk_export.post("/$export")
def kick_off_with_parameters(
    request: Request,
    body: BodyDep,
    preferences: NegotiatedDep,
    jobs: JobsDep,
    principal: PrincipalDep,
) -> Response:
    """Start an export of the outputs from a Parameters resource (query parameters also count)."""
    require_respond_async(request)
    if body.resource_type != "Parameters":
        raise ApiError.plain(
            400, f"POST $export takes a Parameters resource, not a {body.resource_type}"
        )
    params = [*parameters_of(body.document), *request.query_params.multi_items()]
    wanted = parsed_request(params, lenient=preferences.lenient)
    may_export(principal, wanted)
    # Bulk Data IG: the manifest's `request` of a POST kick-off is the URL without parameters.
    url = f"{fhir_base(request)}/$export"
    return accepted(
        jobs.start(wanted, url, owner=principal.client_id, patient=principal.patient), request
    )


@bulk_export.get("/$export-poll-status/{job_id}")
def export_status(
    job_id: str,
    request: Request,
    settings: SettingsDep,
    jobs: JobsDep,
    principal: PrincipalDep,
) -> Response:
    """202 while the job runs, its manifest when complete, 500 when it failed."""
    job = owned(jobs.job(job_id), principal)
    if job.status in ("queued", "in-progress"):
        return Response(
            status_code=202,
            headers={"X-Progress": job.progress, "Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    transaction_time = job.started_at()
    if job.status == "error" or transaction_time is None:
        return outcome_response(
            500, [Issue("fatal", "exception", job.error or "The export failed")]
        )
    base = fhir_base(request)
    document = manifest(
        transaction_time=transaction_time,
        request_url=job.request_url,
        requires_access_token=bool(settings.auth_tokens or settings.smart_jwks),
        files=job.files,
        url_of=lambda name: f"{base}/$export-output/{job.id}/{name}",
    )
    return FhirJsonResponse(
        document,
        media_type="application/json",
        headers={"Expires": http_date(jobs.expires(job))},
    )


@bulk_export.delete("/$export-poll-status/{job_id}")
def cancel_export(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    """Cancel the job (a running one stops) and remove its files."""
    owned(jobs.job(job_id), principal)
    jobs.cancel(job_id)
    return FhirJsonResponse(
        information(f"Export job {job_id} cancelled; its files are removed"), status_code=202
    )


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := handle.read(FILE_CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


@bulk_export.get("/$export-output/{job_id}/{file_name}")
def export_file(job_id: str, file_name: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    """One NDJSON file of a complete export, streamed."""
    owned(jobs.job(job_id), principal)
    path = jobs.output_file(job_id, file_name)
    try:
        # Opened here, so that a cancel or expiry from now on cannot cut the download short.
        handle = path.open("rb")
    except FileNotFoundError:
        raise ApiError.plain(404, f"Export job {job_id} has no file {file_name!r}") from None
    size = os.fstat(handle.fileno()).st_size
    return StreamingResponse(
        _chunks(handle), media_type=NDJSON, headers={"Content-Length": str(size)}
    )
