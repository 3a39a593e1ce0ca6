"""Routes of the security layer: the SMART discovery document (public; at the host root and at
the FHIR base, `/fhir/.well-known/smart-configuration`, where SMART App Launch 2.x clients look)
and the AuditEvent search and read (`system/AuditEvent.rs`; never writable: 405).

The discovery document and `rest.security` say only what is configured: without an identity
provider (no `smart_jwks`: static tokens or no authentication) no SMART grant, capability or
security service is advertised.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from fhir_app.api.dependencies import (
    GuardedDep,
    NegotiatedDep,
    SettingsDep,
    authenticated,
    fhir_base,
)
from fhir_app.api.errors import ApiError
from fhir_app.api.responses import FhirJsonResponse
from fhir_app.api.security.audit import AuditWriter
from fhir_app.api.security.scopes import V1_PERMISSIONS
from fhir_app.config import Settings
from fhir_app.fhir.inputs import JsonObject
from fhir_app.service import ServiceError, parse_date_param
from fhir_app.store import AuditQuery

well_known = APIRouter()
audit_events = APIRouter(prefix="/fhir", dependencies=[Depends(authenticated)])

SMART_SERVICE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR",
            "display": "SMART-on-FHIR",
        }
    ],
    "text": "OAuth2 bearer tokens (SMART on FHIR v2 scopes)",
}
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
AUDIT_PARAMETERS = frozenset({"date", "_lastUpdated", "agent", "entity-type", "outcome"})
READ_ONLY = {"Allow": "GET, HEAD"}
CAPABILITIES = [
    "client-confidential-asymmetric",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
    "context-standalone-patient",
]


# The AuditEvent routes below, as the CapabilityStatement declares them.
AUDIT_EVENT_CAPABILITY: JsonObject = {
    "type": "AuditEvent",
    "documentation": "The audit trail: read and search with system/AuditEvent.rs; written by "
    "the server only (405)",
    "interaction": [{"code": "read"}, {"code": "search-type"}],
    "searchParam": [
        {"name": "date", "type": "date"},
        {"name": "_lastUpdated", "type": "date"},
        {"name": "agent", "type": "token", "documentation": "client id or token subject"},
        {"name": "entity-type", "type": "token"},
        {"name": "outcome", "type": "token"},
    ],
}


def scopes_supported() -> list[str]:
    """The scope patterns this server understands (examples of each context)."""
    return [
        "system/*.cruds",
        "user/*.cruds",
        "patient/*.cruds",
        "system/AuditEvent.rs",
        *(f"system/*.{v1}" for v1 in V1_PERMISSIONS),
    ]


def smart_configuration(settings: Settings) -> JsonObject:
    """The SMART App Launch 2.x discovery document of this server's identity provider; without
    one (no `smart_jwks`) no SMART capability, scope or grant is true, so none is listed."""
    if not settings.smart_jwks:
        return {
            "capabilities": [],
            "grant_types_supported": [],
            "code_challenge_methods_supported": [],
        }
    document: JsonObject = {
        "capabilities": CAPABILITIES,
        "scopes_supported": scopes_supported(),
        "grant_types_supported": ["client_credentials", "authorization_code"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }
    if settings.smart_issuer:
        document["issuer"] = settings.smart_issuer
    if settings.smart_jwks and settings.smart_jwks.startswith("https://"):
        document["jwks_uri"] = settings.smart_jwks
    if settings.smart_authorize_url:
        document["authorization_endpoint"] = settings.smart_authorize_url
    if settings.smart_token_url:
        document["token_endpoint"] = settings.smart_token_url
    return document


def rest_security(settings: Settings) -> JsonObject:
    """CapabilityStatement.rest.security: SMART-on-FHIR, with the OAuth URIs when configured;
    without an identity provider, no security service (static tokens are for loopback only)."""
    if not settings.smart_jwks:
        described = (
            "Static bearer tokens for local use (loopback only)"
            if settings.auth_tokens
            else "No authentication (loopback only unless explicitly allowed)"
        )
        return {"cors": False, "description": f"{described}; no SMART on FHIR identity provider"}
    security: JsonObject = {"cors": False, "service": [SMART_SERVICE]}
    uris = [
        {"url": name, "valueUri": value}
        for name, value in (
            ("authorize", settings.smart_authorize_url),
            ("token", settings.smart_token_url),
        )
        if value
    ]
    if uris:
        security["extension"] = [{"url": OAUTH_URIS, "extension": uris}]
    security["description"] = (
        "Bearer JWTs signed by the site's identity provider; SMART v2 scopes "
        "(system/, user/, patient/ with c r u d s); a patient claim bounds the patient context; "
        "see /.well-known/smart-configuration"
    )
    return security


@well_known.get("/.well-known/smart-configuration")
@well_known.get("/fhir/.well-known/smart-configuration")
def smart_configuration_route(settings: SettingsDep) -> Response:
    """The SMART discovery document (public, like the CapabilityStatement)."""
    return FhirJsonResponse(smart_configuration(settings), media_type="application/json")


def audit_query(request: Request, settings: Settings) -> tuple[AuditQuery, int, int]:
    """The filters and the page of an AuditEvent search; 400 for what is not supported."""
    recorded = []
    agents: list[str] = []
    types: list[str] = []
    outcomes: list[str] = []
    count, offset = settings.default_page_size, 0
    for name, value in request.query_params.multi_items():
        if value == "" or name in ("_format", "_pretty"):
            continue
        if name in ("date", "_lastUpdated"):
            recorded.append(parse_date_param(value))
        elif name == "agent":
            agents.extend(v for v in value.split(",") if v)
        elif name == "entity-type":
            types.extend(v for v in value.split(",") if v)
        elif name == "outcome":
            outcomes.extend(v.rpartition("|")[2] for v in value.split(",") if v)
        elif name in ("_count", "_offset"):
            if not value.isdigit():
                raise ServiceError.of(400, "invalid", f"{name}={value} is not a number", name)
            if name == "_count":
                count = min(int(value), settings.max_page_size)
            else:
                offset = int(value)
        else:
            supported = ", ".join(sorted(AUDIT_PARAMETERS | {"_count"}))
            raise ServiceError.of(
                400,
                "not-supported",
                f"AuditEvent search parameter {name!r} is not supported ({supported})",
                name,
            )
    query = AuditQuery(recorded=recorded, agents=agents, entity_types=types, outcomes=outcomes)
    return query, count, offset


def flush_audit(request: Request) -> None:
    """Store the events still queued first, so that the answer includes them."""
    writer = getattr(request.app.state, "audit_writer", None)
    if isinstance(writer, AuditWriter):
        writer.flush()


@audit_events.get("/AuditEvent")
def search_audit_events(
    request: Request, guarded: GuardedDep, settings: SettingsDep, preferences: NegotiatedDep
) -> Response:
    """Search the audit trail (oldest first); a patient-context client sees its patient's."""
    guarded.require("AuditEvent", "s")
    query, count, offset = audit_query(request, settings)
    flush_audit(request)
    patient = guarded.principal.patient
    if patient is not None:
        query = AuditQuery(
            recorded=query.recorded,
            agents=query.agents,
            entity_types=query.entity_types,
            outcomes=query.outcomes,
            patient_id=patient,
        )
    with guarded.uow_factory() as uow:
        events, total = uow.audit.search(query, count=count, offset=offset)
    base = fhir_base(request)
    params = [
        (name, value)
        for name, value in request.query_params.multi_items()
        if name not in ("_count", "_offset")
    ]

    def page_url(at: int) -> str:
        return f"{base}/AuditEvent?" + urlencode([*params, ("_count", count), ("_offset", at)])

    links = [{"relation": "self", "url": page_url(offset)}]
    if count and offset + count < total:
        links.append({"relation": "next", "url": page_url(offset + count)})
    bundle: JsonObject = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/AuditEvent/{event['id']}",
                "resource": event,
                "search": {"mode": "match"},
            }
            for event in events
        ],
    }
    return FhirJsonResponse(bundle, pretty=preferences.pretty)


@audit_events.get("/AuditEvent/{event_id}")
def read_audit_event(
    event_id: str, request: Request, guarded: GuardedDep, preferences: NegotiatedDep
) -> Response:
    """One AuditEvent; 404 outside the client's patient context."""
    guarded.require("AuditEvent", "r")
    flush_audit(request)
    with guarded.uow_factory() as uow:
        found = uow.audit.get(event_id)
    patient = guarded.principal.patient
    if found is None or (patient is not None and found["patient_id"] != patient):
        raise ApiError.plain(404, f"AuditEvent/{event_id} is not known")
    return FhirJsonResponse(found["content"], pretty=preferences.pretty)


def not_writable() -> ApiError:
    """405: the audit trail is written by the server only."""
    return ApiError.plain(
        405, "AuditEvents are written by the server only; they cannot be changed", READ_ONLY
    )


@audit_events.api_route("/AuditEvent", methods=["POST", "PUT", "DELETE", "PATCH"])
def write_audit_events() -> Response:
    """405: the audit trail cannot be written over REST."""
    raise not_writable()


@audit_events.api_route("/AuditEvent/{event_id}", methods=["POST", "PUT", "DELETE", "PATCH"])
def write_audit_event(event_id: str) -> Response:
    """405: the audit trail cannot be written over REST."""
    raise not_writable()
