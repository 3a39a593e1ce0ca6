"""Every error leaves as an OperationOutcome, with its HTTP status from one mapping.

What can go wrong, and the status it gets (every 503 with Retry-After):

| raised | status |
|---|---|
| `ServiceError` (service refusals; `ApiError` for the HTTP layer's own) | its `status` |
| `InputRejected` (the contract refuses an input) | `outcome.http_status_for(issues)` |
| Starlette `HTTPException` (unknown route 404, method not allowed 405) | its status code |
| `RequestValidationError` (a malformed header or path parameter) | 400 |
| `TransientStoreError` (lost race, busy or unreachable database, nothing stored) | 503 |
| `CommitOutcomeUnknown` (the connection failed during COMMIT) | 503 |
| a driver or pool error that escaped translation (`store_error` knows it) | 503 or 500 |
| anything else | 500, without internals; the traceback goes to the log with a reference |

The last two are answered by `UnexpectedErrors`, a plain ASGI middleware just inside Starlette's
ServerErrorMiddleware, not by an exception handler: ServerErrorMiddleware re-raises after its
handler has answered, and uvicorn then closes the connection, which would break every client's
keep-alive connection on each 500. Here the error is answered and the connection goes on.

Issue codes for statuses that carry no issues of their own come from `ISSUE_CODE_OF_STATUS`.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_app.api.responses import FhirJsonResponse
from fhir_app.fhir.inputs import InputRejected, Issue
from fhir_app.fhir.outcome import http_status_for, operation_outcome
from fhir_app.service import ServiceError, unavailable
from fhir_app.store import TransientStoreError, store_error

log = logging.getLogger("fhir_app.api")

# The methods an Allow header may name, in the order it names them.
HTTP_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")

# FHIR issue-type codes (http://hl7.org/fhir/issue-type) for errors raised by status alone.
ISSUE_CODE_OF_STATUS: Mapping[int, str] = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    429: "throttled",
    500: "exception",
    503: "transient",
}


class ApiError(ServiceError):
    """A refusal by the HTTP layer itself (401, 406, 413, 415, ...), with response headers."""

    def __init__(
        self, status: int, issues: list[Issue], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, issues)
        self.headers = dict(headers or {})

    @classmethod
    def plain(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> ApiError:
        """A one-issue error whose issue code follows from the status."""
        code = ISSUE_CODE_OF_STATUS.get(status, "processing")
        return cls(status, [Issue("error", code, text)], headers)


def outcome_response(
    status: int, issues: list[Issue], headers: Mapping[str, str] | None = None
) -> FhirJsonResponse:
    """An OperationOutcome response: the only way an error leaves this server."""
    return FhirJsonResponse(operation_outcome(issues), status_code=status, headers=headers)


async def service_error(request: Request, exc: Exception) -> Response:
    """ServiceError and ApiError: the status and issues they carry."""
    assert isinstance(exc, ServiceError)
    headers = exc.headers if isinstance(exc, ApiError) else None
    return outcome_response(exc.status, exc.issues, headers)


async def input_rejected(request: Request, exc: Exception) -> Response:
    """An input the contract refuses: the status the outcome module assigns to its issues."""
    assert isinstance(exc, InputRejected)
    return outcome_response(http_status_for(exc.issues), exc.issues)


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, method not allowed) as OperationOutcomes."""
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 404:
        text = f"There is no FHIR interaction at {request.method} {request.url.path}"
    elif status == 405:
        # Starlette names the methods of the first route whose path matched; the methods of
        # every route at this path are what the client may use (FHIR R4, RFC 9110 15.5.6).
        allowed = allowed_methods(request) or headers.get("Allow") or headers.get("allow") or ""
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
        if allowed:
            headers["Allow"] = allowed
        text = f"{request.method} is not allowed on {request.url.path}" + (
            f"; allowed: {allowed}" if allowed else ""
        )
    else:
        text = str(exc.detail)
    code = ISSUE_CODE_OF_STATUS.get(status, "processing")
    return outcome_response(status, [Issue("error", code, text)], headers)


def allowed_methods(request: Request) -> str:
    """The methods some route answers at the request's path, as an Allow value."""
    routes = getattr(request.app, "routes", [])
    allowed = [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


async def request_validation(request: Request, exc: Exception) -> Response:
    """A header, path or query value FastAPI could not read: 400, one issue per problem."""
    assert isinstance(exc, RequestValidationError)
    issues = []
    for problem in exc.errors():
        where = " ".join(str(part) for part in problem.get("loc", ()))
        issues.append(Issue("error", "invalid", f"{where}: {problem.get('msg', 'invalid')}"))
    return outcome_response(400, issues or [Issue("error", "invalid", "invalid request")])


def route_of(request: Request) -> str:
    """The route template of a request (`/fhir/{resource_type}/{resource_id}`), for logs: the
    path itself holds ids that identify patients (issue 13)."""
    return str(getattr(request.scope.get("route"), "path", None) or "(no route)")


def kind_of(exc: BaseException) -> str:
    """The exception's class, qualified: what the log may say about it."""
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}"


def redacted_traceback(exc: BaseException) -> str:
    """Where an exception (and its causes) came from, without the messages.

    Exception messages carry data: a database's "Key (resource_id)=(p01) already exists", a
    KeyError of an id. The frames and the classes locate a bug; the request's reference ties the
    log entry to the client's report.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"{kind_of(current)} (message withheld)\n{frames}")
        current = current.__cause__ or current.__context__
    return "caused by:\n".join(parts)


# Seconds a client is asked to wait before sending a request again after a database fault.
RETRY_AFTER_SECONDS = 1


async def transient(request: Request, exc: Exception) -> Response:
    """The database lost a race, was busy or unreachable: 503, try again after Retry-After."""
    log.warning(
        "transient store error on %s %s: %s", request.method, route_of(request), kind_of(exc)
    )
    assert isinstance(exc, TransientStoreError)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return outcome_response(503, [unavailable(exc)], headers)


async def unexpected(request: Request, exc: Exception) -> Response:
    """A bug or an outage: 500 with a reference to the log entry, never the internals."""
    reference = uuid.uuid4().hex[:12]
    log.error(
        "unexpected error %s on %s %s: %s\n%s",
        reference,
        request.method,
        route_of(request),
        kind_of(exc),
        redacted_traceback(exc),
    )
    text = f"Internal server error (reference {reference}); the details are in the server log"
    return outcome_response(500, [Issue("fatal", "exception", text)])


class UnexpectedErrors:
    """ASGI middleware: an exception that no handler took becomes a 503 (a database fault) or a
    500 OperationOutcome, sent here so that the server keeps the connection open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the application; answer its unexpected exceptions if no response has started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            if started:
                # Part of a response is on the wire: no other answer can follow. Letting the
                # server close the connection is the only way to tell the client it is cut.
                raise
            request = Request(scope)
            fault = store_error(exc)
            if isinstance(fault, TransientStoreError):
                response = await transient(request, fault)
            else:
                response = await unexpected(request, exc)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping above on an application."""
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(InputRejected, input_rejected)
    app.add_exception_handler(StarletteHTTPException, http_exception)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(TransientStoreError, transient)
    app.add_middleware(UnexpectedErrors)
