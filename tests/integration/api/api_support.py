"""Helpers of the REST interface tests: a live uvicorn server, requests, database snapshots."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from sqlalchemy import Engine, func, select

from fhir_app.store import metadata

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
# `serve(**setting_overrides, service_override=None)` -> the /fhir base of a new server.
Serve = Callable[..., str]


@contextmanager
def live_server(app: Any, audit_timeout: float = 10.0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 at a free port until the block ends; yields the /fhir base.

    At the end the app's AuditEvent writer stores what is queued (waiting at most
    `audit_timeout`) and stops: after the test its database is dropped, and a writer left
    running would retry against it for the rest of the session.
    """
    # proto=IPPROTO_TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP,
    # and with Nagle on every small response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
        close_audit_writer(app, audit_timeout)


def close_audit_writer(app: Any, timeout: float = 10.0) -> None:
    """Store the AuditEvents `app` still holds (waiting at most `timeout`), stop its writer."""
    writer = getattr(app.state, "audit_writer", None)
    if writer is not None:
        writer.close(timeout)


def example(name: str) -> dict[str, Any]:
    """An example Bundle from examples/ (parsed fresh on each call)."""
    document: dict[str, Any] = orjson.loads((EXAMPLES / name).read_bytes())
    return document


def post_json(client: httpx.Client, url: str, body: Any, **headers: str) -> httpx.Response:
    """POST a JSON body as application/fhir+json."""
    return client.post(url, content=orjson.dumps(body), headers={**FHIR_JSON, **headers})


def put_json(client: httpx.Client, url: str, body: Any, **headers: str) -> httpx.Response:
    """PUT a JSON body as application/fhir+json."""
    return client.put(url, content=orjson.dumps(body), headers={**FHIR_JSON, **headers})


def snapshot(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table (as sorted text), to compare before and after a request."""
    out: dict[str, list[str]] = {}
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            if table.name == "audit_event":
                continue  # every request, a refused one too, is audited
            rows = connection.execute(select(table)).all()
            out[table.name] = sorted(repr(tuple(row)) for row in rows)
    return out


def row_counts(engine: Engine) -> dict[str, int]:
    """The number of rows of every table."""
    with engine.connect() as connection:
        return {
            table.name: int(
                connection.execute(select(func.count()).select_from(table)).scalar_one()
            )
            for table in metadata.sorted_tables
            if table.name != "audit_event"
        }


def issues_text(outcome: dict[str, Any]) -> str:
    """All diagnostics and expressions of an OperationOutcome, for assertions."""
    assert outcome["resourceType"] == "OperationOutcome"
    parts = []
    for issue in outcome["issue"]:
        parts.append(issue.get("diagnostics", ""))
        parts.extend(issue.get("expression", []))
    return " | ".join(parts)
