"""The application factory: `create_app(settings, service)`; nothing is built at import time."""

from __future__ import annotations

from fastapi import FastAPI

from fhir_app.api.errors import install_error_handlers
from fhir_app.api.export import bulk_export
from fhir_app.api.limits import BodyReadTimeout
from fhir_app.api.responses import FhirJsonResponse
from fhir_app.api.routes import protected, public
from fhir_app.config import Settings
from fhir_app.service import PROCESSOR_VERSION, FhirService


def create_app(settings: Settings, service: FhirService) -> FastAPI:
    """The FHIR REST interface (base `/fhir`) over `service`, configured by `settings`.

    The CapabilityStatement at `/fhir/metadata` is the description of this API, so FastAPI's
    OpenAPI pages are not served.
    """
    app = FastAPI(
        title="fhir-app",
        version=PROCESSOR_VERSION,
        default_response_class=FhirJsonResponse,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(BodyReadTimeout, seconds=settings.body_read_timeout)
    # `metadata` first: otherwise GET /fhir/metadata would be a search of type "metadata".
    app.include_router(public)
    # Before `protected` too: `$export...` would otherwise be taken for a resource type.
    app.include_router(bulk_export)
    app.include_router(protected)
    return app
