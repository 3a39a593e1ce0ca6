"""The authentication gate: static tokens bound to loopback, the throttle spares valid tokens."""

from __future__ import annotations

import pytest

from fhir_app.api.errors import ApiError
from fhir_app.api.security.principal import Authenticator
from fhir_app.api.security.throttle import FailureThrottle

TOKEN = "t" * 40


def gate(limit: int = 20) -> Authenticator:
    return Authenticator([TOKEN], None, None, FailureThrottle(limit=limit, window=60))


def status_of(authenticator: Authenticator, token: str, client: str, **kw: bool) -> int:
    try:
        authenticator.authenticate(f"Bearer {token}", client, **kw)
    except ApiError as refusal:
        return refusal.status
    return 200


def test_a_valid_token_is_served_from_an_address_past_the_failure_limit() -> None:
    authenticator = gate(limit=3)
    assert [status_of(authenticator, "bad", "127.0.0.1") for _ in range(4)] == [401] * 3 + [429]
    assert status_of(authenticator, TOKEN, "127.0.0.1") == 200
    with pytest.raises(ApiError) as throttled:
        authenticator.authenticate("Bearer bad", "127.0.0.1")
    assert throttled.value.status == 429
    assert int(throttled.value.headers["Retry-After"]) > 0
    assert status_of(authenticator, "bad", "127.0.0.2") == 401  # another address: counted apart


@pytest.mark.parametrize(
    ("client", "forwarded", "status"),
    [
        ("127.0.0.1", False, 200),
        ("::1", False, 200),
        ("::ffff:127.0.0.1", False, 200),
        ("127.0.0.1", True, 401),
        ("203.0.113.5", False, 401),
        ("192.168.1.9", False, 401),
        ("unknown", False, 401),
    ],
)
def test_static_tokens_only_from_loopback_without_forwarding(
    client: str, forwarded: bool, status: int
) -> None:
    assert status_of(gate(), TOKEN, client, forwarded=forwarded) == status
