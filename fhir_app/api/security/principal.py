"""Who is calling: the caller's identity, scopes and patient context, from its bearer token.

Three ways in, chosen by the settings:
- `smart_jwks` set: a bearer JWT signed by the site's identity provider, with SMART scopes;
- `auth_tokens` set: static tokens (local use on loopback; `serve` refuses them elsewhere), each
  with every permission (`system/*.cruds`), told apart as `static-token-<n>`; accepted only
  from a loopback client address on a request without `Forwarded` / `X-Forwarded-For` (a
  request relayed by a proxy on the same host comes from the network);
- neither: an open server (loopback only, unless explicitly allowed), every permission.
Both may be set: a JWT-shaped credential is verified as a JWT, anything else as a static token.

Failed authentications are counted per client address (`FailureThrottle`); past the limit the
failing ones are answered 429, while valid credentials from the same address are still served
(one bad client behind a NAT or proxy must not lock out the others).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
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
    if isinstance(scope, list) and not all(isinstance(item, str) for item in scope):
        raise InvalidToken("the scope claim is neither a string nor a list of strings")
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

    def authenticate(
        self, authorization: str | None, client: str, *, forwarded: bool = False
    ) -> Principal:
        """The caller, or ApiError 401 (missing or bad credentials) / 429 (failing credentials
        from a client address past the failure limit). `forwarded`: the request carries
        forwarding headers (static tokens are then refused)."""
        if self.open:
            return OPEN
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise self._failed(
                client, unauthorised("Authentication required: send Authorization: Bearer <token>")
            )
        try:
            return self._principal(credentials, local=is_loopback(client) and not forwarded)
        except InvalidToken as error:
            refusal = unauthorised(f"The bearer token is not accepted: {error}", "invalid_token")
            raise self._failed(client, refusal) from None

    def _failed(self, client: str, refusal: ApiError) -> ApiError:
        """`refusal` (counted as a failure of `client`), or 429 when `client` is past the
        limit (not counted: its failures leave the window on time)."""
        wait = self.throttle.retry_after(client)
        if wait is not None:
            return throttled(wait)
        self.throttle.failed(client)
        return refusal

    def identify(
        self, authorization: str | None, client: str, *, forwarded: bool
    ) -> Principal | None:
        """Who sent a request that no route authenticated (a 405 of the router), for its
        AuditEvent: the caller of valid credentials, else None. Nothing is counted."""
        if self.open:
            return OPEN
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return None
        try:
            return self._principal(credentials.strip(), local=is_loopback(client) and not forwarded)
        except InvalidToken:
            return None

    def _principal(self, credentials: str, *, local: bool) -> Principal:
        if self.jwks is not None and self.rules is not None and looks_like_jwt(credentials):
            return principal_of_claims(verify(credentials, self.jwks, self.rules))
        index = static_token_index(credentials, self.static_tokens)
        if index is None:
            raise InvalidToken("unknown token")
        if not local:
            # Local use only: not from the network, nor relayed by a proxy on this host.
            raise InvalidToken(
                "static tokens are accepted from loopback only, on requests without "
                "Forwarded or X-Forwarded-For headers"
            )
        return Principal(client_id=f"static-token-{index + 1}", subject=None, scopes=ALL)


def static_token_index(presented: str, accepted: list[str]) -> int | None:
    """Which accepted token this is, compared in constant time against every one."""
    given = presented.encode()
    found: int | None = None
    for index, token in enumerate(accepted):
        if hmac.compare_digest(given, token.encode()) and found is None:
            found = index
    return found


def is_loopback(address: str) -> bool:
    """True for a loopback IP address (an IPv4-mapped IPv6 one included)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def forwarding_headers(headers: Mapping[str, str]) -> bool:
    """True when a request says it was relayed (`Forwarded`, `X-Forwarded-For`)."""
    return "forwarded" in headers or "x-forwarded-for" in headers
