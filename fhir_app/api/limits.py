"""Limits on what one request may cost: entries per Bundle, and how long a client may pause
while sending its body. Each is a setting (fhir_app.config) and each refusal an OperationOutcome.

The limits on connections and on the request head live in the HTTP server itself
(`fhir_app.api.server`), because they apply before there is a request to answer.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_app.api.errors import ApiError
from fhir_app.fhir.inputs import Issue, JsonObject


def check_bundle_entries(document: JsonObject, limit: int) -> None:
    """413 `too-costly` when a Bundle has more than `limit` entries (before any is read)."""
    entries = document.get("entry")
    if isinstance(entries, list) and len(entries) > limit:
        raise ApiError(
            413,
            [
                Issue(
                    "error",
                    "too-costly",
                    f"The Bundle has {len(entries)} entries; this server takes at most {limit} "
                    "per request (setting FHIR_APP_MAX_BUNDLE_ENTRIES); split it",
                    ("Bundle.entry",),
                )
            ],
        )


class BodyReadTimeout:
    """ASGI middleware: 408 when the client sends no part of its request body for `seconds`.

    Without it a client that declares a body and stops half-way holds its connection and a
    worker thread for ever. The wait is per piece of the body, so a slow but steady upload
    goes through. Once the body is complete, `receive` is passed through untouched (it then
    only reports a disconnect). The answer closes the connection: the rest of the body may
    still come, and it must not be read as the next request.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                raise self.timed_out() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)

    def timed_out(self) -> ApiError:
        """The 408 this middleware answers with."""
        text = (
            f"No part of the request body arrived within {self.seconds:g} s (setting "
            "FHIR_APP_BODY_READ_TIMEOUT); send the whole body without pausing"
        )
        return ApiError(408, [Issue("error", "timeout", text)], {"Connection": "close"})
