"""Runtime settings, read from the environment (prefix `FHIR_APP_`) once, in the entry points.

Nothing here runs at import time of other modules: `get_settings()` builds the settings on first
call and caches them, so tests and the CLI can set the environment first.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the processor; each field is `FHIR_APP_<FIELD NAME>` in the environment."""

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
        description="Resources one $assess may derive (3 per level + 2 per patient); more get "
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
    export_retention_hours: float = Field(
        default=24,
        gt=0,
        description="How long a finished $export job's files are kept (the manifest's Expires).",
    )

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
            raise ValueError("ct_lytic_max_hu must be below ct_blastic_min_hu")
        if self.bone_island_mean_hu > self.bone_island_max_hu:
            raise ValueError("bone_island_mean_hu must not exceed bone_island_max_hu")
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment on the first call only."""
    return Settings()
