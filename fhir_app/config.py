"""Runtime settings, read from the environment (prefix `FHIR_APP_`) once, in the entry points.

Nothing here runs at import time of other modules: `get_settings()` builds the settings on first
call and caches them, so tests and the CLI can set the environment first.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the processor; each field is `FHIR_APP_<FIELD NAME>` in the environment.

    `concept_map_dir` (`FHIR_APP_CONCEPT_MAP_DIR`) names the site's own ConceptMaps (CONTRACT.md
    3a), checked at start-up beside the shipped ones in profiles/conceptmaps/.
    """

    model_config = SettingsConfigDict(env_prefix="FHIR_APP_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="sqlite:///./fhir-app.db",
        description="SQLAlchemy URL; PostgreSQL as postgresql+psycopg://user@host/db.",
    )
    # NoDecode: the environment may give `tok1,tok2` as well as a JSON list; repr=False keeps the
    # secrets out of logs and tracebacks.
    auth_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="Accepted bearer tokens; empty means no authentication.",
    )
    allow_unauthenticated_remote: bool = Field(
        default=False,
        description="Serve without tokens on a non-loopback address (off: refuse to start).",
    )
    max_request_bytes: int = Field(default=10 * MIB, gt=0)
    max_bundle_entries: int = Field(
        default=10_000,
        gt=0,
        description="Entries of a transaction, batch or $assess Bundle; more get 413.",
    )
    max_assess_outputs: int = Field(
        default=5_000,
        gt=0,
        description="Resources one $assess may derive (3 per level + 3 per patient); more get "
        "413 before any is built.",
    )
    header_read_timeout: float = Field(
        default=10,
        gt=0,
        description="Seconds a client may take to send a request's head (line and headers); "
        "then 408 and the connection is closed.",
    )
    body_read_timeout: float = Field(
        default=30,
        gt=0,
        description="Seconds a client may pause while sending a request body; then 408.",
    )
    max_connections: int = Field(
        default=1000,
        gt=0,
        description="Open connections (or requests in progress) per server process; a request "
        "beyond gets 503 with Retry-After.",
    )
    listen_backlog: int = Field(
        default=2048,
        gt=0,
        description="Connections the operating system queues before the server accepts them.",
    )
    ct_lytic_max_hu: float = Field(default=100, description="CT mean at or below: lytic.")
    ct_blastic_min_hu: float = Field(default=300, description="CT mean at or above: blastic.")
    bone_island_mean_hu: float = Field(
        default=885,
        description="Mean attenuation above which a sclerotic lesion favours a bone island.",
    )
    bone_island_max_hu: float = Field(
        default=1060, description="Maximum attenuation above which a bone island is favoured."
    )
    default_page_size: int = Field(default=50, gt=0)
    max_page_size: int = Field(default=1000, gt=0)
    export_dir: Path = Field(
        default=Path("./fhir-app-exports"),
        description="Folder of the bulk $export jobs: one folder per job, NDJSON and state.",
    )
    concept_map_dir: Path | None = Field(
        default=None,
        description="A folder of the site's own FHIR R4 ConceptMap JSON files "
        "(FHIR_APP_CONCEPT_MAP_DIR), read with the shipped maps in profiles/conceptmaps/ at "
        "start-up: a site's row for a source code replaces the shipped one; a broken map stops "
        "the start with the file and element named (CONTRACT.md 3a).",
    )
    export_retention_hours: float = Field(
        default=24,
        gt=0,
        description="How long a finished $export job's files are kept (the manifest's Expires).",
    )

    # ---- security (issue 13): SMART on FHIR tokens, public URL, throttling, audit ----------
    public_base_url: str | None = Field(
        default=None,
        description="The server's public URL (e.g. https://fhir.example.org); every absolute URL "
        "the server writes starts with it. Unset: the address the server listens on, never Host.",
    )
    smart_jwks: str | None = Field(
        default=None,
        description="The identity provider's JWKS: a file path or an https URL. Set: bearer JWTs "
        "signed by these keys are accepted (SMART on FHIR v2 scopes).",
    )
    smart_issuer: str | None = Field(default=None, description="Required `iss` of accepted JWTs.")
    smart_audience: str | None = Field(
        default=None,
        description="Required `aud` of accepted JWTs; unset: the public FHIR base URL.",
    )
    smart_authorize_url: str | None = Field(
        default=None, description="OAuth2 authorization endpoint, published for clients."
    )
    smart_token_url: str | None = Field(
        default=None, description="OAuth2 token endpoint, published for clients."
    )
    smart_jwks_cache_seconds: float = Field(
        default=300, gt=0, description="How long a fetched JWKS is used before it is read again."
    )
    smart_clock_skew_seconds: int = Field(
        default=30, ge=0, description="Leeway on `exp` and `nbf` for clocks that differ a little."
    )
    auth_failure_limit: int = Field(
        default=20, gt=0, description="Failed authentications from one client IP before 429."
    )
    auth_failure_window_seconds: float = Field(
        default=60, gt=0, description="The sliding window of auth_failure_limit."
    )
    audit_events: bool = Field(
        default=True, description="Record an AuditEvent for every REST interaction."
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Reverse proxies trusted for X-Forwarded-For / X-Forwarded-Proto (uvicorn's "
        "forwarded_allow_ips: comma-separated addresses or networks, `*` for any). Empty (the "
        "default): no proxy is trusted, the client address is the TCP peer's.",
    )

    @model_validator(mode="after")
    def _smart_complete(self) -> Settings:
        """Tokens from the site's provider are checked for issuer and audience: both needed."""
        if self.smart_jwks and not self.smart_issuer:
            raise ValueError(
                "FHIR_APP_SMART_JWKS needs FHIR_APP_SMART_ISSUER (the iss of the provider's tokens)"
            )
        if self.smart_jwks and not (self.smart_audience or self.public_base_url):
            raise ValueError(
                "FHIR_APP_SMART_JWKS needs FHIR_APP_SMART_AUDIENCE or FHIR_APP_PUBLIC_BASE_URL "
                "(the aud of the provider's tokens)"
            )
        return self

    @field_validator(
        "smart_jwks",
        "smart_issuer",
        "smart_audience",
        "smart_authorize_url",
        "smart_token_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """An empty variable (docker-compose's `${VAR:-}`) means unset, not an empty URL."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("public_base_url")
    @classmethod
    def _absolute_base(cls, value: str | None) -> str | None:
        """An absolute http(s) URL without a trailing slash."""
        if value is None or not value.strip():
            return None
        text = value.strip().rstrip("/")
        if not text.startswith(("http://", "https://")) or "?" in text or "#" in text:
            raise ValueError("must be an absolute http(s) URL without query, e.g. https://host")
        return text

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        """Accept a JSON list or a comma-separated string; blanks are dropped."""
        if isinstance(value, str):
            text = value.strip()
            value = orjson.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list | tuple):
            return [str(token).strip() for token in value if str(token).strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Thresholds and page sizes must be ordered, or every derivation would be wrong."""
        if self.ct_lytic_max_hu >= self.ct_blastic_min_hu:
            raise ValueError("FHIR_APP_CT_LYTIC_MAX_HU must be below FHIR_APP_CT_BLASTIC_MIN_HU")
        if self.bone_island_mean_hu > self.bone_island_max_hu:
            raise ValueError(
                "FHIR_APP_BONE_ISLAND_MEAN_HU must not exceed FHIR_APP_BONE_ISLAND_MAX_HU"
            )
        if self.default_page_size > self.max_page_size:
            raise ValueError("FHIR_APP_DEFAULT_PAGE_SIZE must not exceed FHIR_APP_MAX_PAGE_SIZE")
        return self


class InvalidSettings(ValueError):
    """The environment holds settings that cannot be used; the message names each variable and
    what is wrong, and never its value (tokens and passwords end up in logs otherwise)."""


def _variable(location: tuple[int | str, ...]) -> str:
    """`FHIR_APP_<FIELD>` of an error's location (a model-wide check names its own)."""
    return f"FHIR_APP_{str(location[0]).upper()}" if location else ""


def describe_invalid(error: ValidationError) -> str:
    """One line naming every invalid variable and what is wrong with it, without the values.

    pydantic's own text quotes the input (`input_value=...`): it is built here from each
    error's location and message only, and a message that happens to contain the input is
    replaced by a generic one.
    """
    problems = []
    for detail in error.errors(include_url=False, include_context=False):
        message = str(detail.get("msg", "invalid value")).removeprefix("Value error, ")
        given = detail.get("input")
        # A bound ("greater than 0") may equal a short input; a secret is never that short.
        if isinstance(given, str) and len(given.strip()) >= 4 and given.strip() in message:
            message = "invalid value"
        variable = _variable(tuple(detail.get("loc", ())))
        problems.append(f"{variable}: {message}" if variable else message)
    return "; ".join(problems) or "invalid settings"


def load_settings() -> Settings:
    """The settings from the environment; InvalidSettings (one line, no values) when invalid."""
    try:
        return Settings()
    except ValidationError as error:
        raise InvalidSettings(describe_invalid(error)) from None
    except _SourceError as error:
        # pydantic-settings could not decode a variable (a JSON list, say): its message names
        # the variable; the cause, which may quote the value, is dropped.
        raise InvalidSettings(str(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment on the first call only.

    Raises InvalidSettings (one line naming the variables, never their values) when the
    environment holds settings that cannot be used.
    """
    return load_settings()
