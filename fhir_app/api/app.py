"""The application factory: `create_app(settings, service)`; nothing is built at import time."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp

from fhir_app.api.errors import install_error_handlers
from fhir_app.api.export import bulk_export
from fhir_app.api.interactions import early, late
from fhir_app.api.limits import BodyReadTimeout
from fhir_app.api.responses import FhirJsonResponse
from fhir_app.api.routes import protected, public
from fhir_app.api.security.audit import AuditMiddleware, AuditWriter
from fhir_app.api.security.endpoints import audit_events, well_known
from fhir_app.api.security.headers import SecurityHeadersMiddleware
from fhir_app.api.security.principal import Authenticator
from fhir_app.api.security.throttle import FailureThrottle
from fhir_app.api.security.tokens import JwksSource, TokenRules
from fhir_app.api.view import viewer
from fhir_app.config import Settings
from fhir_app.fhir import conceptmap
from fhir_app.service import PROCESSOR_VERSION, FhirService


class FhirApp(FastAPI):
    """FastAPI with the security headers outside everything, Starlette's 500 page included."""

    def build_middleware_stack(self) -> ASGIApp:
        """The usual stack, wrapped in the security headers (issue 13)."""
        return SecurityHeadersMiddleware(super().build_middleware_stack())


def create_app(settings: Settings, service: FhirService) -> FastAPI:
    """The FHIR REST interface (base `/fhir`) over `service`, configured by `settings`.

    The CapabilityStatement at `/fhir/metadata` is the description of this API, so FastAPI's
    OpenAPI pages are not served. The ConceptMaps are loaded and checked here (CONTRACT.md 3a):
    a broken map raises ConceptMapError before the app exists.
    """
    conceptmap.configure(settings.concept_map_dir)
    app = FhirApp(
        title="fhir-app",
        version=PROCESSOR_VERSION,
        default_response_class=FhirJsonResponse,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.authenticator = authenticator(settings)
    app.state.audit_writer = AuditWriter(service.uow_factory)
    install_error_handlers(app)
    app.add_middleware(BodyReadTimeout, seconds=settings.body_read_timeout)
    # Inside the error handling: the audit sees the routed scope and the final status.
    app.add_middleware(AuditMiddleware)
    for router in (well_known, audit_events, public, bulk_export, early, protected, late, viewer):
        answer_head(router)
    app.include_router(well_known)
    # Before `protected`: AuditEvent is not one of the stored resource types.
    app.include_router(audit_events)
    # `metadata` first: otherwise GET /fhir/metadata would be a search of type "metadata".
    app.include_router(public)
    # Before `protected` too: `$export...` would otherwise be taken for a resource type, and
    # `_history` (a path segment, not an id or a type) likewise.
    app.include_router(bulk_export)
    app.include_router(early)
    app.include_router(protected)
    # After `protected`: `Patient/{id}/{type}` would otherwise take `Patient/{id}/_history`.
    app.include_router(late)
    app.include_router(viewer)
    return app


def answer_head(router: APIRouter) -> None:
    """HEAD on every GET route (FHIR R4 http.html: the same headers, no body). The route answers
    as for GET; the server sends no body for HEAD (RFC 9110 9.3.2)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.methods and "GET" in route.methods:
            route.methods.add("HEAD")


def authenticator(settings: Settings) -> Authenticator:
    """How callers authenticate: the site's JWKS and/or static tokens, with the failure throttle.

    The audience defaults to the public FHIR base (what SMART clients send as `aud`).
    """
    jwks = None
    rules = None
    if settings.smart_jwks:
        jwks = JwksSource(settings.smart_jwks, settings.smart_jwks_cache_seconds)
        audience = settings.smart_audience or (
            f"{settings.public_base_url}/fhir" if settings.public_base_url else None
        )
        if not settings.smart_issuer or not audience:
            raise ValueError(
                "FHIR_APP_SMART_JWKS needs FHIR_APP_SMART_ISSUER and FHIR_APP_SMART_AUDIENCE "
                "(or FHIR_APP_PUBLIC_BASE_URL)"
            )
        rules = TokenRules(settings.smart_issuer, audience, settings.smart_clock_skew_seconds)
    throttle = FailureThrottle(settings.auth_failure_limit, settings.auth_failure_window_seconds)
    return Authenticator(list(settings.auth_tokens), jwks, rules, throttle)
