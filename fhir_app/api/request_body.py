"""Reading a FHIR JSON request body: media type, size limit, then orjson.

The size limit (`settings.max_request_bytes`) is checked twice: against Content-Length before a
byte is read, and against the bytes actually received, because a chunked upload declares no
length and a client may declare less than it sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from fhir_app.api.errors import ApiError
from fhir_app.fhir.inputs import InputRejected, JsonObject
from fhir_app.fhir.parse import load_json

# Request media types read as FHIR JSON; `application/json+fhir` is the DSTU2 name.
ACCEPTED_MEDIA_TYPES = frozenset(
    {"application/fhir+json", "application/json", "application/json+fhir"}
)


@dataclass(frozen=True, slots=True)
class ReceivedJson:
    """A request body as received and as parsed (a JSON object with a resourceType)."""

    data: bytes
    document: JsonObject

    @property
    def resource_type(self) -> str:
        """The `resourceType` of the document."""
        value = self.document["resourceType"]
        assert isinstance(value, str)
        return value


def check_media_type(content_type: str | None) -> None:
    """415 unless the body is declared as FHIR JSON (in UTF-8, the only encoding of JSON)."""
    if not content_type:
        raise ApiError.plain(
            415, "Content-Type is missing; send application/fhir+json or application/json"
        )
    media, *params = (part.strip() for part in content_type.split(";"))
    if media.lower() not in ACCEPTED_MEDIA_TYPES:
        raise ApiError.plain(
            415,
            f"Content-Type {media} is not supported; send application/fhir+json or "
            "application/json",
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise ApiError.plain(415, f"charset {value.strip()} is not supported; JSON is UTF-8")


def too_large(limit: int) -> ApiError:
    """413 naming the limit."""
    return ApiError.plain(413, f"The request body exceeds the limit of {limit} bytes")


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, refusing with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError.plain(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_document(data: bytes) -> JsonObject:
    """The body as a JSON object carrying a resourceType; 400 otherwise."""
    if not data.strip():
        raise ApiError.plain(400, "The request has no body; a FHIR resource was expected")
    try:
        document = load_json(data)
    except InputRejected as exc:
        raise ApiError(400, exc.issues) from exc
    if not isinstance(document, dict):
        raise ApiError.plain(400, "The body must be a JSON object (a FHIR resource)")
    if not isinstance(document.get("resourceType"), str) or not document["resourceType"]:
        raise ApiError.plain(400, "The body has no resourceType: it is not a FHIR resource")
    return document


async def received_json(request: Request, limit: int) -> ReceivedJson:
    """Media type, size and JSON checks of a request body, in that order."""
    check_media_type(request.headers.get("content-type"))
    data = await read_limited(request, limit)
    return ReceivedJson(data, parse_document(data))
