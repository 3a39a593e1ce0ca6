"""What the client asked for in headers and format parameters: `Prefer`, `Accept`, `_format`.

- `Prefer: return=minimal | representation | OperationOutcome` (FHIR R4 http.html#ops) chooses
  the body of a write; representation is the default.
- `Prefer: handling=strict | lenient` (http.html#search): strict (the default) refuses unknown
  search parameters with 400; lenient ignores them and leaves them out of the `self` link.
- Only JSON is served. An `Accept` header or `_format` that admits no JSON is 406.
- `_pretty=true` indents the response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from fhir_app.api.errors import ApiError

ReturnPreference = Literal["representation", "minimal", "OperationOutcome"]
RETURN_PREFERENCES: dict[str, ReturnPreference] = {
    "representation": "representation",
    "minimal": "minimal",
    "operationoutcome": "OperationOutcome",
}

# Media ranges and `_format` values that admit the JSON this server produces.
JSON_FORMATS = frozenset(
    {
        "json",
        "application/json",
        "application/fhir+json",
        "application/json+fhir",  # the DSTU2 name, still sent by older clients
        "*/*",
        "application/*",
    }
)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The client's preferences for one request."""

    return_preference: ReturnPreference = "representation"
    lenient: bool = False
    pretty: bool = False


def parse_prefer(values: list[str]) -> tuple[ReturnPreference, bool]:
    """`return=...` and `handling=...` from every Prefer header; unknown ones are ignored (RFC
    7240 section 2)."""
    preference: ReturnPreference = "representation"
    lenient = False
    for header in values:
        for item in header.split(","):
            token = item.split(";", 1)[0].strip()
            name, _, value = token.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "return" and value.lower() in RETURN_PREFERENCES:
                preference = RETURN_PREFERENCES[value.lower()]
            elif name == "handling" and value.lower() in ("strict", "lenient"):
                lenient = value.lower() == "lenient"
    return preference, lenient


def admits_json(accept: str) -> bool:
    """True when an Accept header admits JSON (a media range with q=0 refuses it)."""
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() not in JSON_FORMATS:
            continue
        refused = any(
            p.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params
        )
        if not refused:
            return True
    return False


def negotiated(request: Request) -> Negotiated:
    """The preferences of a request; 406 when it asks for something other than JSON."""
    query = request.query_params
    fmt = query.get("_format")
    if fmt is not None and fmt.split(";", 1)[0].strip().lower() not in JSON_FORMATS:
        raise ApiError.plain(
            406, f"_format={fmt} is not served; this server speaks application/fhir+json only"
        )
    accept = request.headers.get("accept")
    if fmt is None and accept and not admits_json(accept):
        raise ApiError.plain(
            406,
            f"Accept: {accept} admits no JSON; this server speaks application/fhir+json only",
        )
    preference, lenient = parse_prefer(request.headers.getlist("prefer"))
    pretty = query.get("_pretty", "").lower() == "true"
    return Negotiated(preference, lenient, pretty)
