"""Who is calling: the caller's identity, scopes and patient context, from its bearer token.

Three ways in, chosen by the settings:
- `smart_jwks` set: a bearer JWT signed by the site's identity provider, with SMART scopes;
- `auth_tokens` set: static tokens (local use on loopback; `serve` refuses them elsewhere), each
  with every permission (`system/*.cruds`), told apart as `static-token-<n>`;
- neither: an open server (loopback only, unless explicitly allowed), every permission.
Both may be set: a JWT-shaped credential is verified as a JWT, anything else as a static token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from fhir_app.api.errors import ApiError
from fhir_app.api.security.scopes import ALL, Scopes
from fhir_app.api.security.throttle import FailureThrottle
from fhir_app.api.security.tokens import InvalidToken, JwksSource, TokenRules, verify

REALM = 'Bearer realm="fhir-app"'


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    client_id: str
    subject: str | None
    scopes: Scopes
    # The patient whose compartment bounds everything this caller sees and writes.
    patient: str | None = None
    scope_context: str = "system"

    def allows(self, resource_type: str, permission: str) -> bool:
        """True when the scopes grant `permission` (`c r u d s`) on the type."""
        return self.scopes.allows(resource_type, permission)

    def needed_scope(self, resource_type: str, permission: str) -> str:
        """The scope that would have allowed it, to name in a 403."""
        return f"{self.scope_context}/{resource_type}.{permission}"


OPEN = Principal(client_id="anonymous", subject=None, scopes=ALL)


def unauthorised(text: str, error: str | None = None) -> ApiError:
    """A 401 with the WWW-Authenticate challenge of RFC 6750."""
    challenge = REALM if error is None else f'{REALM}, error="{error}"'
    return ApiError.plain(401, text, {"WWW-Authenticate": challenge})


def throttled(seconds: int) -> ApiError:
    """A 429 telling the client when to try again."""
    return ApiError.plain(
        429,
        "Too many failed authentications from this client; try again later",
        {"Retry-After": str(seconds)},
    )


def looks_like_jwt(credentials: str) -> bool:
    """Three dot-separated parts: the compact serialisation of a JWS."""
    return credentials.count(".") == 2


def principal_of_claims(claims: dict[str, Any]) -> Principal:
    """The caller a verified token describes (RFC 9068 `client_id`, else `azp`, else `sub`)."""
    subject = claims.get("sub")
    client = claims.get("client_id") or claims.get("azp") or subject
    scope = claims.get("scope", "")
    scopes = Scopes.parse(scope if isinstance(scope, str | list) else "")
    patient = claims.get("patient")
    if isinstance(patient, str) and patient:
        context = "patient"
    else:
        patient = None
        # patient/ scopes mean nothing without the patient they are about.
        scopes = scopes.without_context("patient")
        contexts = {grant.context for grant in scopes.grants}
        context = "system" if "system" in contexts or not contexts else "user"
    return Principal(
        client_id=str(client),
        subject=str(subject) if subject is not None else None,
        scopes=scopes,
        patient=patient,
        scope_context=context,
    )


@dataclass
class Authenticator:
    """Turns an Authorization header into a Principal, or a 401/429."""

    static_tokens: list[str]
    jwks: JwksSource | None
    rules: TokenRules | None
    throttle: FailureThrottle

    @property
    def open(self) -> bool:
        """No authentication configured."""
        return not self.static_tokens and self.jwks is None

    def authenticate(self, authorization: str | None, client: str) -> Principal:
        """The caller, or ApiError 401 (missing or bad credentials) / 429 (throttled)."""
        if self.open:
            return OPEN
        wait = self.throttle.retry_after(client)
        if wait is not None:
            raise throttled(wait)
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            self.throttle.failed(client)
            raise unauthorised("Authentication required: send Authorization: Bearer <token>")
        try:
            return self._principal(credentials)
        except InvalidToken as error:
            self.throttle.failed(client)
            raise unauthorised(
                f"The bearer token is not accepted: {error}", "invalid_token"
            ) from None

    def _principal(self, credentials: str) -> Principal:
        if self.jwks is not None and self.rules is not None and looks_like_jwt(credentials):
            return principal_of_claims(verify(credentials, self.jwks, self.rules))
        index = static_token_index(credentials, self.static_tokens)
        if index is None:
            raise InvalidToken("unknown token")
        return Principal(client_id=f"static-token-{index + 1}", subject=None, scopes=ALL)


def static_token_index(presented: str, accepted: list[str]) -> int | None:
    """Which accepted token this is, compared in constant time against every one."""
    given = presented.encode()
    found: int | None = None
    for index, token in enumerate(accepted):
        if hmac.compare_digest(given, token.encode()) and found is None:
            found = index
    return found
