"""What routes receive through `Depends`: the service, the settings, the client's preferences,
the authenticated caller and the parsed body.

The service and settings live on `app.state`, put there by `create_app`; nothing is built at
import time. The dependencies are `async def` because none of them blocks: FastAPI would
otherwise send each through the thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fhir_app.api.auth import check_bearer
from fhir_app.api.negotiation import Negotiated, negotiated
from fhir_app.api.request_body import ReceivedJson, received_json
from fhir_app.config import Settings
from fhir_app.service import FhirService


async def app_service(request: Request) -> FhirService:
    """The FhirService this application was created with."""
    service = request.app.state.service
    assert isinstance(service, FhirService)
    return service


async def app_settings(request: Request) -> Settings:
    """The Settings this application was created with."""
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


ServiceDep = Annotated[FhirService, Depends(app_service)]
SettingsDep = Annotated[Settings, Depends(app_settings)]


async def client_preferences(request: Request) -> Negotiated:
    """Prefer, Accept, `_format` and `_pretty` of the request (406 when no JSON is admitted)."""
    return negotiated(request)


NegotiatedDep = Annotated[Negotiated, Depends(client_preferences)]


async def authenticated(request: Request, settings: SettingsDep) -> None:
    """401 unless the request carries an accepted bearer token (when tokens are configured)."""
    check_bearer(request.headers.get("authorization"), settings.auth_tokens)


async def json_body(request: Request, settings: SettingsDep) -> ReceivedJson:
    """The request body, checked for media type and size and parsed with orjson."""
    return await received_json(request, settings.max_request_bytes)


BodyDep = Annotated[ReceivedJson, Depends(json_body)]


def fhir_base(request: Request) -> str:
    """The absolute base URL of the FHIR interface as this client reached it."""
    return f"{str(request.base_url).rstrip('/')}/fhir"
