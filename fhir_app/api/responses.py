"""Responses as FHIR clients expect them: `application/fhir+json` serialised by orjson.

Resources are plain dicts all the way out; nothing is serialised through pydantic models (they
rewrite decimals and timestamps, and are the slowest step of all, PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

FHIR_JSON = "application/fhir+json"


class FhirJsonResponse(Response):
    """A FHIR JSON body rendered with orjson; `pretty` indents it (`_pretty=true`)."""

    media_type = FHIR_JSON

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
        *,
        pretty: bool = False,
    ) -> None:
        self.pretty = pretty
        super().__init__(content, status_code, headers, media_type, background)

    def render(self, content: Any) -> bytes:
        """orjson bytes; None (204, return=minimal) is an empty body."""
        if content is None:
            return b""
        option = orjson.OPT_INDENT_2 if self.pretty else 0
        return orjson.dumps(content, option=option)


def etag(version_id: int) -> str:
    """The weak ETag of a version, `W/"3"` (FHIR R4 http.html#versioning)."""
    return f'W/"{version_id}"'


def http_date(when: datetime) -> str:
    """An HTTP-date (RFC 9110) for Last-Modified, always in GMT."""
    return format_datetime(when.astimezone(UTC), usegmt=True)
