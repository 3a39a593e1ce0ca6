"""Security headers on every response, and an access log line without patient data.

Headers (OWASP Secure Headers): `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
`Referrer-Policy: no-referrer` everywhere; `Cache-Control: no-store` unless the route set its own
caching (FHIR data must not stay in shared caches); `Content-Security-Policy: default-src 'none';
frame-ancestors 'none'` on JSON (a page of another kind sets its own policy, or gets this one's
frame-ancestors part only).

The access log (logger `fhir_app.access`, INFO) names the route template, not the path:
`GET /fhir/{resource_type}/{resource_id} 200 3.1ms`: no ids, no query string, no patient data.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("fhir_app.access")

ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
OTHER_CSP = "frame-ancestors 'none'"


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response and logs it without patient data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through, adding headers at the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        started_response = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                if "content-security-policy" not in headers:
                    json = "json" in headers.get("content-type", "json")
                    headers["Content-Security-Policy"] = JSON_CSP if json else OTHER_CSP
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette re-raises after its 500 answer so that the server logs it; uvicorn would
            # log the full message (patient data from a database error). The error handler has
            # logged it already, redacted: only an error before any answer goes further.
            if status == 500 and started_response:
                return
            raise
        finally:
            route = getattr(scope.get("route"), "path", None) or "(no route)"
            access_log.info(
                "%s %s %d %.1fms",
                scope.get("method", ""),
                route,
                status,
                (time.perf_counter() - started) * 1000,
            )
