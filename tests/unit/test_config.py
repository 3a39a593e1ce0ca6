"""Settings from the environment (prefix FHIR_APP_)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fhir_app.config import InvalidSettings, Settings, get_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FHIR_APP_ variable of the machine leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("FHIR_APP_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite:///./fhir-app.db"
    assert settings.auth_tokens == []
    assert settings.allow_unauthenticated_remote is False
    assert settings.max_request_bytes == 10 * 1024 * 1024
    assert (settings.ct_lytic_max_hu, settings.ct_blastic_min_hu) == (100, 300)
    assert (settings.bone_island_mean_hu, settings.bone_island_max_hu) == (885, 1060)
    assert (settings.default_page_size, settings.max_page_size) == (50, 1000)
    assert (settings.max_bundle_entries, settings.max_assess_outputs) == (10_000, 5_000)
    assert (settings.header_read_timeout, settings.body_read_timeout) == (10, 30)
    assert (settings.max_connections, settings.listen_backlog) == (1000, 2048)


@pytest.mark.parametrize(
    "name",
    [
        "FHIR_APP_MAX_BUNDLE_ENTRIES",
        "FHIR_APP_MAX_ASSESS_OUTPUTS",
        "FHIR_APP_HEADER_READ_TIMEOUT",
        "FHIR_APP_BODY_READ_TIMEOUT",
        "FHIR_APP_MAX_CONNECTIONS",
        "FHIR_APP_LISTEN_BACKLOG",
    ],
)
def test_limits_must_be_positive(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "0")
    with pytest.raises(ValidationError):
        Settings()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_APP_DATABASE_URL", "postgresql+psycopg://app@db/fhirapp")
    monkeypatch.setenv("FHIR_APP_ALLOW_UNAUTHENTICATED_REMOTE", "true")
    monkeypatch.setenv("FHIR_APP_MAX_PAGE_SIZE", "200")
    monkeypatch.setenv("FHIR_APP_CT_LYTIC_MAX_HU", "120")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://app@db/fhirapp"
    assert settings.allow_unauthenticated_remote is True
    assert settings.max_page_size == 200
    assert settings.ct_lytic_max_hu == 120


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("s3cret", ["s3cret"]),
        ("one, two ,,three", ["one", "two", "three"]),
        ('["one", "two"]', ["one", "two"]),
        ("", []),
        ("  ", []),
    ],
)
def test_auth_tokens_from_a_list_or_commas(
    monkeypatch: pytest.MonkeyPatch, value: str, tokens: list[str]
) -> None:
    monkeypatch.setenv("FHIR_APP_AUTH_TOKENS", value)
    assert Settings().auth_tokens == tokens


def test_tokens_stay_out_of_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_APP_AUTH_TOKENS", "very-secret-token")
    assert "very-secret-token" not in repr(Settings())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FHIR_APP_CT_LYTIC_MAX_HU", "400"),  # above the blastic threshold
        ("FHIR_APP_BONE_ISLAND_MEAN_HU", "2000"),  # above the maximum threshold
        ("FHIR_APP_DEFAULT_PAGE_SIZE", "5000"),  # above the maximum page
        ("FHIR_APP_MAX_REQUEST_BYTES", "0"),
    ],
)
def test_inconsistent_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_get_settings_reads_once(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("FHIR_APP_DEFAULT_PAGE_SIZE", "20")
        first = get_settings()
        monkeypatch.setenv("FHIR_APP_DEFAULT_PAGE_SIZE", "30")
        assert get_settings() is first
        assert first.default_page_size == 20
    finally:
        get_settings.cache_clear()


def test_smart_settings_must_name_issuer_and_audience() -> None:
    with pytest.raises(ValueError, match="FHIR_APP_SMART_ISSUER"):
        Settings(smart_jwks="/etc/jwks.json", smart_audience="https://x/fhir")
    with pytest.raises(ValueError, match="FHIR_APP_SMART_AUDIENCE or FHIR_APP_PUBLIC_BASE_URL"):
        Settings(smart_jwks="/etc/jwks.json", smart_issuer="https://idp")
    settings = Settings(
        smart_jwks="/etc/jwks.json", smart_issuer="https://idp", public_base_url="https://f.org/"
    )
    assert settings.public_base_url == "https://f.org"
    with pytest.raises(ValueError, match="absolute http"):
        Settings(public_base_url="fhir.example.org")


SECRET = "TOPSECRETTOKEN0123456789abcdefghijkl"


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("FHIR_APP_AUTH_TOKENS", f'["{SECRET}", ', "FHIR_APP_AUTH_TOKENS"),
        ("FHIR_APP_MAX_REQUEST_BYTES", "abc", "FHIR_APP_MAX_REQUEST_BYTES: Input should be"),
        ("FHIR_APP_MAX_CONNECTIONS", "0", "FHIR_APP_MAX_CONNECTIONS: Input should be greater"),
        ("FHIR_APP_SMART_JWKS", "/x.json", "FHIR_APP_SMART_JWKS needs FHIR_APP_SMART_ISSUER"),
        ("FHIR_APP_PUBLIC_BASE_URL", "fhir.example.org", "FHIR_APP_PUBLIC_BASE_URL: must be"),
    ],
)
def test_invalid_settings_name_the_variable_never_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(InvalidSettings) as raised:
            get_settings()
    finally:
        get_settings.cache_clear()
    message = str(raised.value)
    assert said in message
    assert "\n" not in message
    assert value not in message or len(value) < 4
    assert SECRET not in message
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


@pytest.mark.parametrize(
    "name",
    [
        "FHIR_APP_SMART_JWKS",
        "FHIR_APP_SMART_ISSUER",
        "FHIR_APP_SMART_AUDIENCE",
        "FHIR_APP_SMART_AUTHORIZE_URL",
        "FHIR_APP_SMART_TOKEN_URL",
        "FHIR_APP_FORWARDED_ALLOW_IPS",
        "FHIR_APP_PUBLIC_BASE_URL",
    ],
)
def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """docker-compose passes `${VAR:-}` through as an empty string: the same as unset."""
    monkeypatch.setenv(name, "")
    field = name.removeprefix("FHIR_APP_").lower()
    assert getattr(Settings(), field) == Settings.model_fields[field].default
