"""Bearer-token authentication.

When `settings.auth_tokens` is empty the server is open (the CLI refuses to listen beyond
loopback that way unless told to). When tokens are set, every interaction needs
`Authorization: Bearer <token>`: writes because they change clinical records, reads and `$assess`
because their answers are patient data. Only `GET /fhir/metadata` stays public, so that clients
can discover the server before they authenticate (as SMART on FHIR servers do).
"""

from __future__ import annotations

import hmac

from fhir_app.api.errors import ApiError

REALM = 'Bearer realm="fhir-app"'


def token_matches(presented: str, accepted: list[str]) -> bool:
    """Constant-time comparison against every accepted token (no early exit on a match)."""
    given = presented.encode()
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(given, token.encode())
    return matched


def check_bearer(authorization: str | None, accepted: list[str]) -> None:
    """401 with WWW-Authenticate unless `authorization` carries an accepted bearer token."""
    if not accepted:
        return
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise ApiError.plain(
            401,
            "Authentication required: send Authorization: Bearer <token>",
            {"WWW-Authenticate": REALM},
        )
    if not token_matches(credentials, accepted):
        raise ApiError.plain(
            401,
            "The bearer token is not accepted",
            {"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
        )
