"""A test identity provider: RSA keys made in the test (joserfc), a JWKS file, signed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import orjson
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

ISSUER = "https://idp.test.invalid"
AUDIENCE = "https://fhir.test.invalid/fhir"
PUBLIC_BASE = "https://fhir.test.invalid"


def b64(data: bytes) -> str:
    """base64url without padding (RFC 7515)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IdentityProvider:
    """Signs tokens with a key of its own; publishes the public half as a JWKS file."""

    def __init__(self, folder: Path) -> None:
        self.jwks_path = folder / "jwks.json"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "key-1"})
        self.publish([self.key])

    def publish(self, keys: list[RSAKey]) -> None:
        """Write the JWKS file with the public halves of `keys`."""
        document = KeySet(list(keys)).as_dict(private=False)
        self.jwks_path.write_bytes(orjson.dumps(document))

    def settings(self) -> dict[str, Any]:
        """The setting overrides of a server trusting this provider."""
        return {
            "smart_jwks": str(self.jwks_path),
            "smart_issuer": ISSUER,
            "smart_audience": AUDIENCE,
            "public_base_url": PUBLIC_BASE,
        }

    def claims(self, scope: str, **extra: Any) -> dict[str, Any]:
        """Valid claims for `scope` (overridable)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "client-a",
            "client_id": "client-a",
            "scope": scope,
            "iat": now,
            "exp": now + 300,
        }
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, scope: str, *, key: RSAKey | None = None, **extra: Any) -> str:
        """A signed RS256 token."""
        signer = key or self.key
        header = {"alg": "RS256", "kid": signer.kid}
        return jwt.encode(header, self.claims(scope, **extra), signer)

    def unsigned(self, scope: str) -> str:
        """A token with `alg: none` (must be refused)."""
        header = b64(orjson.dumps({"alg": "none", "typ": "JWT", "kid": "key-1"}))
        return f"{header}.{b64(orjson.dumps(self.claims(scope)))}."

    def hmac_with_public_key(self, scope: str) -> str:
        """An HS256 token whose secret is the public key (the classic confusion attack)."""
        header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "key-1"}))
        payload = b64(orjson.dumps(self.claims(scope)))
        secret = self.key.as_pem(private=False)
        signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}
