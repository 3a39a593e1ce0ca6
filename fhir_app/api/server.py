"""The HTTP server of `fhir-app serve`: uvicorn with the limits it lacks.

uvicorn's h11 protocol has a keep-alive timeout but no deadline for the request head: a client
that sends half a request line or half its headers (or does so on a kept-alive connection, where
the first byte cancels the keep-alive timer) holds its connection for ever. `LimitedH11Protocol`
starts a timer whenever the connection waits for a request head and answers 408 when it fires.
It also caps the open connections of the process and answers the request beyond with 503 and
an OperationOutcome (uvicorn's own `limit_concurrency` answers in plain text).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, cast

import h11
import orjson
import uvicorn
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from fhir_app.config import Settings
from fhir_app.fhir.inputs import Issue
from fhir_app.fhir.outcome import operation_outcome

# Seconds a client refused for load should wait before it tries again.
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What `LimitedH11Protocol` enforces, from the settings."""

    header_read_timeout: float
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        """The limits the settings ask for."""
        return cls(settings.header_read_timeout, settings.max_connections)


def outcome_bytes(code: str, text: str) -> bytes:
    """The JSON of a one-issue OperationOutcome."""
    return orjson.dumps(operation_outcome([Issue("error", code, text)]))


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a connection limit."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._inner_app = self.app
        self.app = self._admit

    # ---- the request-head deadline -------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection waits for its first request head."""
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        """Bytes in; once a whole request head has been read the deadline is off."""
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        """A kept-alive connection waits for its next request head, with the same deadline."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: no timer may fire on it."""
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(
            self.limits.header_read_timeout, self._head_timed_out
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being produced; its completion restarts the timer
        text = (
            f"The request line and headers did not arrive within "
            f"{self.limits.header_read_timeout:g} s (setting FHIR_APP_HEADER_READ_TIMEOUT)"
        )
        body = outcome_bytes("timeout", text)
        # h11 cannot answer a request it has not seen, so the response is written as bytes.
        head = (
            "HTTP/1.1 408 Request Timeout\r\n"
            "Content-Type: application/fhir+json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        self.transport.write(head + body)
        self.transport.close()

    # ---- the connection limit ------------------------------------------------------------

    async def _admit(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Run the application, unless this process already holds too many connections or
        requests; then 503 with Retry-After, and the connection is closed to make room."""
        limit = self.limits.max_connections
        if scope["type"] == "http" and (len(self.connections) > limit or len(self.tasks) > limit):
            text = (
                f"The server holds its limit of {limit} connections (setting "
                "FHIR_APP_MAX_CONNECTIONS); try again shortly"
            )
            body = outcome_bytes("transient", text)
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/fhir+json"),
                        (b"content-length", str(len(body)).encode("ascii")),
                        (b"retry-after", str(RETRY_AFTER_SECONDS).encode("ascii")),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await self._inner_app(scope, receive, send)


def server_config(
    app: Any,
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int | None = None,
    factory: bool = False,
    log_level: str = "info",
    access_log: bool = True,
    **options: Any,
) -> uvicorn.Config:
    """The uvicorn configuration of `fhir-app serve`: the limits of `settings` applied.

    `app` is the application, or with `factory` the import string of a function that builds
    one (each of `workers` processes builds its own). `options` go to uvicorn as they are
    (TLS files, logging configuration).
    """
    protocol = functools.partial(LimitedH11Protocol, limits=ConnectionLimits.of(settings))
    # Forwarding headers are trusted only from the proxies the site names: uvicorn's default
    # trusts them from 127.0.0.1, so any local process (or a same-host proxy) could set the
    # client address the audit records, the throttle counts and static tokens are bound to.
    trusted = settings.forwarded_allow_ips.strip()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=workers,
        factory=factory,
        log_level=log_level,
        access_log=access_log,
        http=cast(type[asyncio.Protocol], protocol),
        backlog=settings.listen_backlog,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
        **options,
    )


def run_server(config: uvicorn.Config) -> None:
    """Serve until interrupted, in `config.workers` processes (as `uvicorn.run` does, which
    cannot take a ready Config)."""
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
