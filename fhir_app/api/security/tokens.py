"""Bearer JWTs signed by the site's identity provider, verified with joserfc.

The keys come from a JWKS (a file or an https URL), read once and kept for
`smart_jwks_cache_seconds`; a token whose `kid` is not among them makes the set be read again
at once (the provider rotated its keys), at most once per `REFRESH_INTERVAL_SECONDS` so that
tokens with made-up kids cannot make the server hammer the provider. Only asymmetric algorithms
are accepted: `none` and the HMAC ones (`HS256`...) are refused, so a public key can never be
used as a shared secret. `iss`, `aud`, `exp` and `nbf` are required and checked.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import GuestProtocol, KeySet

# Asymmetric signatures only (RFC 7518 section 3, RFC 8037).
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
REFRESH_INTERVAL_SECONDS = 10.0
MAX_JWKS_BYTES = 1024 * 1024
FETCH_TIMEOUT_SECONDS = 5.0


class InvalidToken(Exception):
    """The token is not accepted; the message says why (without the token)."""


class JwksSource:
    """The identity provider's keys from a file or URL, cached, re-read on an unknown kid."""

    def __init__(
        self,
        location: str,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.location = location
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._keys: KeySet | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self.reads = 0

    def _read(self) -> KeySet:
        if self.location.startswith(("https://", "http://")):
            with urllib.request.urlopen(self.location, timeout=FETCH_TIMEOUT_SECONDS) as answer:
                data = answer.read(MAX_JWKS_BYTES + 1)
        else:
            data = Path(self.location).read_bytes()
        if len(data) > MAX_JWKS_BYTES:
            raise InvalidToken("the JWKS is larger than 1 MiB")
        document = orjson.loads(data)
        self.reads += 1
        return KeySet.import_key_set(document)

    def keys(self, *, unknown_kid: bool = False) -> KeySet:
        """The current key set; read again when expired, or on an unknown kid (rate-limited)."""
        with self._lock:
            age = self.clock() - self._read_at
            stale = self._keys is None or age >= self.cache_seconds
            if stale or (unknown_kid and age >= REFRESH_INTERVAL_SECONDS):
                try:
                    self._keys = self._read()
                    self._read_at = self.clock()
                except (OSError, ValueError, JoseError) as error:
                    if self._keys is None:
                        raise InvalidToken(
                            f"the identity provider's keys cannot be read: {type(error).__name__}"
                        ) from None
            assert self._keys is not None
            return self._keys


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What an accepted token must say: its issuer and audience, and the clock leeway."""

    issuer: str
    audience: str
    leeway_seconds: int = 30


def _kid_in(keys: KeySet, kid: str | None) -> bool:
    return kid is None or any(key.kid == kid for key in keys)


def verify(token: str, source: JwksSource, rules: TokenRules) -> dict[str, Any]:
    """The claims of a valid token; InvalidToken otherwise (signature, algorithm, claims)."""

    def resolve(obj: GuestProtocol) -> KeySet:
        kid = obj.headers().get("kid")
        keys = source.keys()
        if not _kid_in(keys, kid):
            keys = source.keys(unknown_kid=True)
        return keys

    try:
        decoded = jwt.decode(token, resolve, algorithms=list(ALGORITHMS))
        registry = jwt.JWTClaimsRegistry(
            leeway=rules.leeway_seconds,
            iss={"essential": True, "value": rules.issuer},
            aud={"essential": True, "value": rules.audience},
            exp={"essential": True},
            nbf={"essential": False},
            sub={"essential": True},
        )
        registry.validate(decoded.claims)
    except JoseError as error:
        raise InvalidToken(_reason(error)) from None
    except (ValueError, TypeError, KeyError):
        raise InvalidToken("the token is not a well-formed signed JWT") from None
    return dict(decoded.claims)


def _reason(error: JoseError) -> str:
    """A short reason for the 401 (the class of the failure, not the token's content)."""
    text = getattr(error, "description", "") or type(error).__name__
    return str(text)
