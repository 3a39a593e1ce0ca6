"""What routes receive through `Depends`: the service, the settings, the client's preferences,
the authenticated caller and the parsed body.

The service and settings live on `app.state`, put there by `create_app`; nothing is built at
import time. The dependencies are `async def` because none of them blocks: FastAPI would
otherwise send each through the thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fhir_app.api.negotiation import Negotiated, negotiated
from fhir_app.api.request_body import ReceivedJson, received_json
from fhir_app.api.security.guarded import GuardedService
from fhir_app.api.security.principal import Authenticator, Principal, forwarding_headers
from fhir_app.config import Settings
from fhir_app.service import FhirService


async def app_settings(request: Request) -> Settings:
    """The Settings this application was created with."""
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]


async def client_preferences(request: Request) -> Negotiated:
    """Prefer, Accept, `_format` and `_pretty` of the request (406 when no JSON is admitted)."""
    return negotiated(request)


NegotiatedDep = Annotated[Negotiated, Depends(client_preferences)]


# ---- security (issue 13): the caller, and the service as that caller may use it ------------


def authenticated(request: Request) -> Principal:
    """The caller: 401 without accepted credentials, 429 after too many failures (when
    authentication is configured); kept on `request.state` for the audit trail.

    Not `async`: reading the identity provider's keys (a file, or an https fetch when they
    expire or rotate) blocks, so FastAPI runs this in its thread pool, off the event loop.
    """
    authenticator = request.app.state.authenticator
    assert isinstance(authenticator, Authenticator)
    client = request.client.host if request.client else "unknown"
    request.state.fhir_base = fhir_base(request)
    principal = authenticator.authenticate(
        request.headers.get("authorization"), client, forwarded=forwarding_headers(request.headers)
    )
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticated)]


async def app_service(request: Request, principal: PrincipalDep) -> GuardedService:
    """The FhirService of this application as this caller may use it (scopes, patient)."""
    service = request.app.state.service
    assert isinstance(service, FhirService)
    guarded = GuardedService(service, principal)
    request.state.guarded = guarded
    return guarded


ServiceDep = Annotated[FhirService, Depends(app_service)]
GuardedDep = Annotated[GuardedService, Depends(app_service)]


async def json_body(request: Request, settings: SettingsDep) -> ReceivedJson:
    """The request body, checked for media type and size and parsed with orjson."""
    return await received_json(request, settings.max_request_bytes)


BodyDep = Annotated[ReceivedJson, Depends(json_body)]


def fhir_base(request: Request) -> str:
    """The absolute base URL of the FHIR interface: `public_base_url` when set, else the address
    the server listens on. Never the Host header: a forged one would send clients that follow
    the URLs this server writes (and their tokens) elsewhere."""
    settings = request.app.state.settings
    if isinstance(settings, Settings) and settings.public_base_url:
        return f"{settings.public_base_url}/fhir"
    scheme = request.scope.get("scheme", "http")
    server = request.scope.get("server")
    if not server:
        return "/fhir"
    host, port = server[0], server[1]
    if ":" in str(host):
        host = f"[{host}]"  # an IPv6 literal
    default = (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    authority = str(host) if port is None or default else f"{host}:{port}"
    return f"{scheme}://{authority}/fhir"
