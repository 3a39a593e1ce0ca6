"""The limits of one request and of the server, each a setting with a clear OperationOutcome:
entries per Bundle, resources one $assess derives, a deadline for the request head and for each
piece of the body (slow clients), open connections, and the listen backlog.

The server tests run `fhir-app serve`'s own uvicorn configuration (`server_config`) on
127.0.0.1, and talk to it over raw sockets where a well-behaved client would not do.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from api_support import close_audit_writer, example, post_json, row_counts
from sqlalchemy import Engine

from fhir_app.api import create_app
from fhir_app.api.server import server_config
from fhir_app.config import Settings
from fhir_app.fhir.samples import observation
from fhir_app.service import FhirService

# The deadlines of these tests; a refusal must come within this plus the margin.
SHORT = 0.5
MARGIN = 3.0


@contextmanager
def running(config: uvicorn.Config) -> Iterator[tuple[str, int]]:
    """Serve `config` on a free 127.0.0.1 port in a thread; yields (host, port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


Start = Callable[..., tuple[str, int]]


@pytest.fixture
def start(settings: Settings, service: FhirService) -> Iterator[Start]:
    """`start(**setting_overrides)` serves the app as `fhir-app serve` does; (host, port)."""
    with ExitStack() as stack:

        def serve(**overrides: Any) -> tuple[str, int]:
            configured = settings.model_copy(update=overrides)
            app = create_app(configured, service)
            stack.callback(close_audit_writer, app)  # once the server (entered next) stopped
            config = server_config(
                app, configured, host="127.0.0.1", port=0, log_level="warning", access_log=False
            )
            return stack.enter_context(running(config))

        yield serve


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    began = time.monotonic()
    sock.settimeout(limit)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the server held the connection for more than {limit} s")
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - began


def response_parts(data: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and the JSON body of one raw HTTP response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    return status, headers, orjson.loads(body[:length])


def assert_timeout_outcome(data: bytes) -> dict[str, Any]:
    status, headers, outcome = response_parts(data)
    assert status == 408
    assert headers["content-type"] == "application/fhir+json"
    assert headers["connection"] == "close"
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "timeout"
    return outcome


# --------------------------------------------------------------------------- slow clients

HALF_HEADERS = {
    "nothing": b"",
    "half a request line": b"GET /fhir/meta",
    "half the headers": b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nAcc",
}


@pytest.mark.parametrize("sent", HALF_HEADERS.values(), ids=HALF_HEADERS.keys())
def test_half_a_request_head_is_answered_408_and_closed(start: Start, sent: bytes) -> None:
    host, port = start(header_read_timeout=SHORT, body_read_timeout=60)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(sent)
        data, waited = read_until_closed(sock, SHORT + MARGIN)
    outcome = assert_timeout_outcome(data)
    assert "FHIR_APP_HEADER_READ_TIMEOUT" in outcome["issue"][0]["diagnostics"]
    assert waited >= SHORT * 0.8


def test_half_a_head_on_a_kept_alive_connection_is_408(start: Start) -> None:
    host, port = start(header_read_timeout=SHORT, body_read_timeout=60)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(10)
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        head, _, body = first.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        while len(body) < length:
            body += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        # The first byte of the next request cancels uvicorn's keep-alive timer.
        sock.sendall(b"GET /fhir/meta")
        data, _ = read_until_closed(sock, SHORT + MARGIN)
    assert_timeout_outcome(data)


def test_a_timely_head_is_served(start: Start) -> None:
    host, port = start(header_read_timeout=SHORT)
    with socket.create_connection((host, port)) as sock:
        for piece in (b"GET /fhir/metadata HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(SHORT / 4)
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def post_head(length: int) -> bytes:
    return (
        "POST /fhir/Observation HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/fhir+json\r\nContent-Length: {length}\r\n\r\n"
    ).encode("ascii")


def test_half_a_body_is_answered_408_and_closed(start: Start, engine: Engine) -> None:
    before = row_counts(engine)
    host, port = start(header_read_timeout=60, body_read_timeout=SHORT)
    body = orjson.dumps(
        observation("f1", "p1", "appearance", "lytic", level="L1", effective="2025-01-01")
    )
    with socket.create_connection((host, port)) as sock:
        sock.sendall(post_head(len(body)) + body[: len(body) // 2])
        data, waited = read_until_closed(sock, SHORT + MARGIN)
    outcome = assert_timeout_outcome(data)
    assert "FHIR_APP_BODY_READ_TIMEOUT" in outcome["issue"][0]["diagnostics"]
    assert waited >= SHORT * 0.8
    assert row_counts(engine) == before


def test_a_slow_but_steady_body_is_taken(start: Start) -> None:
    host, port = start(body_read_timeout=SHORT)
    body = orjson.dumps(
        observation("f1", "p1", "appearance", "lytic", level="L1", effective="2025-01-01")
    )
    with socket.create_connection((host, port)) as sock:
        sock.sendall(post_head(len(body)))
        pieces = [body[i : i + len(body) // 4 + 1] for i in range(0, len(body), len(body) // 4 + 1)]
        for piece in pieces:
            time.sleep(SHORT / 3)
            sock.sendall(piece)
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 201")


# --------------------------------------------------------------------------- connections


def test_connections_beyond_the_limit_get_503_with_retry_after(start: Start) -> None:
    host, port = start(max_connections=2, header_read_timeout=60)
    url = f"http://{host}:{port}/fhir/metadata"
    held = [socket.create_connection((host, port)) for _ in range(2)]
    try:
        time.sleep(0.2)  # the server has accepted both
        refused = httpx.get(url, timeout=10)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/fhir+json"
        assert refused.json()["issue"][0]["code"] == "transient"
        assert "FHIR_APP_MAX_CONNECTIONS" in refused.json()["issue"][0]["diagnostics"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while httpx.get(url, timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the server did not take connections again"
        time.sleep(0.05)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_listen_backlog_is_the_setting(start: Start) -> None:
    _, port = start(listen_backlog=37)
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # ss shows a listening socket's backlog in the Send-Q column.
    assert listing[2] == "37", listing


# --------------------------------------------------------------------------- request size


def entries_bundle(kind: str, count: int) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [{}] * count}


@pytest.mark.parametrize(
    ("path", "kind"), [("", "transaction"), ("", "batch"), ("$assess", "collection")]
)
def test_bundles_beyond_the_entry_limit_are_413(
    serve: Callable[..., str], engine: Engine, path: str, kind: str
) -> None:
    before = row_counts(engine)
    base = serve(max_bundle_entries=5)
    with httpx.Client(base_url=f"{base}/", timeout=60) as fhir:
        response = post_json(fhir, path, entries_bundle(kind, 6))
        assert response.status_code == 413, response.text
        issue = response.json()["issue"][0]
        assert issue["code"] == "too-costly"
        assert "FHIR_APP_MAX_BUNDLE_ENTRIES" in issue["diagnostics"]
        # At the limit the Bundle is read (and its empty entries refused one by one).
        at_limit = post_json(fhir, path, entries_bundle(kind, 5))
        assert at_limit.status_code in (200, 400, 422), at_limit.text
    assert row_counts(engine) == before


def test_a_flood_of_empty_entries_gets_a_small_413(fhir: httpx.Client) -> None:
    # The report's 3 MB of 1,000,000 empty entries, scaled to the test server's 1 MiB body limit.
    response = post_json(fhir, "$assess", entries_bundle("collection", 300_000))
    assert response.status_code == 413, response.text[:500]
    assert response.json()["issue"][0]["code"] == "too-costly"
    assert len(response.content) < 2_000


def test_assess_beyond_the_output_limit_is_413_before_deriving(serve: Callable[..., str]) -> None:
    # 3 levels: 3 * 3 + NOMS inputs, report and Provenance = 12 outputs
    bundle = example("patient-08-several-levels.json")
    with httpx.Client(base_url=f"{serve(max_assess_outputs=11)}/", timeout=60) as fhir:
        refused = post_json(fhir, "$assess", bundle)
    assert refused.status_code == 413, refused.text
    issue = refused.json()["issue"][0]
    assert issue["code"] == "too-costly"
    assert "12" in issue["diagnostics"]
    with httpx.Client(base_url=f"{serve(max_assess_outputs=12)}/", timeout=60) as fhir:
        taken = post_json(fhir, "$assess", bundle)
    assert taken.status_code == 200, taken.text
    assert len(taken.json()["entry"]) == 12
