"""The JWKS source: cached, read again when expired or on an unknown kid (key rotation)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from fhir_app.api.security.tokens import (
    REFRESH_INTERVAL_SECONDS,
    InvalidToken,
    JwksSource,
    TokenRules,
    verify,
)

RULES = TokenRules("https://idp.invalid", "https://fhir.invalid/fhir")


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def publish(path: Path, *keys: RSAKey) -> None:
    path.write_bytes(orjson.dumps(KeySet(list(keys)).as_dict(private=False)))


def token(key: RSAKey) -> str:
    claims = {"iss": RULES.issuer, "aud": RULES.audience, "sub": "c", "exp": 4_000_000_000}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def test_keys_are_cached_and_rotation_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    old = RSAKey.generate_key(2048, parameters={"kid": "old"})
    new = RSAKey.generate_key(2048, parameters={"kid": "new"})
    publish(path, old)
    clock = Clock()
    source = JwksSource(str(path), cache_seconds=300, clock=clock)
    for _ in range(3):
        assert verify(token(old), source, RULES)["sub"] == "c"
    assert source.reads == 1  # cached
    publish(path, old, new)
    clock.now += 1
    # An unknown kid right after a read: not read again at once (no hammering the provider).
    with pytest.raises(InvalidToken):
        verify(token(new), source, RULES)
    clock.now += REFRESH_INTERVAL_SECONDS
    assert verify(token(new), source, RULES)["sub"] == "c"  # rotation: read again
    assert source.reads == 2
    publish(path, new)
    clock.now += 300  # expired cache: the retired key goes
    with pytest.raises(InvalidToken):
        verify(token(old), source, RULES)


def test_an_unreadable_jwks_refuses_tokens(tmp_path: Path) -> None:
    source = JwksSource(str(tmp_path / "missing.json"), cache_seconds=300)
    key = RSAKey.generate_key(2048, parameters={"kid": "k"})
    with pytest.raises(InvalidToken, match="cannot be read"):
        verify(token(key), source, RULES)
