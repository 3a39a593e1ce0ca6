"""Properties over generated inputs (hypothesis): no Bundle, entry url, fullUrl, reference,
conditional header or request url, however malformed, makes the REST interface answer 5xx, and
every 4xx is an OperationOutcome; the CLI (`assess`, `process`) never ends in a traceback.

The app runs in process (Starlette's TestClient: the real ASGI stack, no socket) on one SQLite
database per module, so the examples also meet the state that earlier ones left behind.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fhir_app.api import create_app
from fhir_app.cli import app as cli_app
from fhir_app.config import Settings, get_settings
from fhir_app.fhir.samples import observation, patient
from fhir_app.service import FhirService
from fhir_app.store import make_engine, uow_factory

FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --------------------------------------------------------------------------- strategies

URNS = [f"urn:uuid:{uuid.UUID(int=n)}" for n in range(1, 5)]
TYPES = ["Observation", "Patient", "ImagingStudy", "RiskAssessment", "Unknown", "observation", ""]
IDS = ["f1", "f2", "p1", "a.b-c", "a/b", "a b", "%2e", "é", "a" * 65, "", "\x00"]
SYSTEMS = ["http://hospital.example/obs", "urn:feed", "", "a|b"]
CONTROL = st.sampled_from(["\x00", "\x01", "\x0b", "\x1f", "\t", "\n"])

text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(IDS + TYPES + URNS + SYSTEMS),
    st.builds(lambda a, c, b: a + c + b, st.text(max_size=4), CONTROL, st.text(max_size=4)),
)
junk: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def identifier_query(draw: st.DrawFn) -> str:
    """Conditional criteria: mostly by identifier with a URL system (the usual case), sometimes
    without a system, percent-encoded, or nonsense."""
    kind = draw(
        st.sampled_from(["identifier", "identifier", "identifier", "plain", "encoded", "junk"])
    )
    system = draw(
        st.sampled_from([SYSTEMS[0]]) if draw(st.booleans()) else st.sampled_from(SYSTEMS)
    )
    value = draw(st.sampled_from(["42", "43", "", "\x00"]))
    if kind == "identifier":
        return f"identifier={system}|{value}"
    if kind == "plain":
        return f"identifier={value}"
    if kind == "encoded":
        return "identifier=" + quote(f"{system}|{value}", safe="")
    return draw(st.text(max_size=15))


@st.composite
def entry_url(draw: st.DrawFn, method: Any, resource: Any = None) -> Any:
    """Mostly the url the method needs (for the entry's own resource), sometimes any other."""
    own = resource.get("resourceType") if isinstance(resource, dict) else None
    rtype = (
        own if isinstance(own, str) and draw(st.integers(0, 4)) else draw(st.sampled_from(TYPES))
    )
    rid = draw(st.sampled_from(IDS[:4]) if draw(st.integers(0, 3)) else st.sampled_from(IDS))
    fitting = {"POST": ["type"], "PUT": ["type/id", "conditional"], "DELETE": ["type/id"]}
    if draw(st.integers(0, 4)) and isinstance(method, str) and method in fitting:
        kind = draw(st.sampled_from(fitting[method]))
    else:
        kind = draw(st.sampled_from(["type", "type/id", "conditional", "text", "junk", "absent"]))
    if kind == "type":
        return rtype
    if kind == "type/id":
        odd = st.sampled_from(["/", "/x/y", "?a=b"])
        return f"{rtype}/{rid}" + ("" if draw(st.integers(0, 4)) else draw(odd))
    if kind == "conditional":
        return f"{rtype}?{draw(identifier_query())}"
    if kind == "text":
        return draw(st.sampled_from(["/", "?", "Observation/", "http://x/Observation/f1"]))
    if kind == "junk":
        return draw(junk)
    return None


@st.composite
def input_resource(draw: st.DrawFn) -> Any:
    """A contract finding or a Patient (with generated ids, references, identifiers), or junk."""
    kind = draw(st.sampled_from(["finding", "finding", "finding", "patient", "junk"]))
    if kind == "junk":
        return draw(st.dictionaries(text, junk, max_size=4) | junk)
    usual = st.sampled_from(["Patient/p1", "Patient/p2", *URNS])
    reference = draw(usual if draw(st.integers(0, 5)) else st.sampled_from(["Patient/", ""]))
    if kind == "patient":
        resource = patient(draw(st.sampled_from(["p1", "p2"])), "Doe", "Jo", "1960-01-01", "male")
    else:
        value = draw(st.sampled_from(["lytic", "blastic", "mixed"]))
        level = draw(st.sampled_from(["L1", "T5", None]))
        resource = observation("f1", "p1", "appearance", value, level=level, effective="2025-01-01")
        resource["subject"] = {"reference": reference}
        if draw(st.booleans()):
            system, number = draw(st.sampled_from(SYSTEMS)), draw(st.sampled_from(["42", "43"]))
            resource["identifier"] = [{"system": system, "value": number}]
    if draw(st.booleans()):
        resource["id"] = draw(st.sampled_from(IDS[:4]) if draw(st.integers(0, 3)) else junk)
    else:
        resource.pop("id", None)
    if draw(st.integers(0, 4)) == 0:
        resource[draw(text)] = draw(junk)
    return resource


@st.composite
def bundle_entry(draw: st.DrawFn) -> Any:
    """Mostly an entry a client could mean; sometimes any JSON at all in any part of it."""
    if draw(st.integers(0, 15)) == 0:
        return draw(junk)
    entry: dict[str, Any] = {}
    if draw(st.integers(0, 3)):
        entry["fullUrl"] = draw(st.sampled_from(URNS) if draw(st.integers(0, 4)) else text | junk)
    if draw(st.integers(0, 7)):
        entry["resource"] = draw(input_resource())
    if draw(st.integers(0, 11)):
        methods = st.sampled_from(["POST", "PUT", "PUT", "DELETE"])
        odd = st.sampled_from(["GET", "PATCH", "put"]) | junk
        request: dict[str, Any] = {"method": draw(methods if draw(st.integers(0, 6)) else odd)}
        url = draw(entry_url(request["method"], entry.get("resource")))
        if url is not None:
            request["url"] = url
        if draw(st.integers(0, 3)) == 0:
            request["ifNoneExist"] = draw(identifier_query() | junk)
        if draw(st.integers(0, 5)) == 0:
            request["ifMatch"] = draw(st.sampled_from(['W/"1"', '"2"', "*", "x"]) | junk)
        entry["request"] = request
    return entry


@st.composite
def bundle(draw: st.DrawFn, kinds: list[str]) -> Any:
    document: dict[str, Any] = {"resourceType": "Bundle"}
    document["type"] = draw(st.sampled_from(kinds) if draw(st.integers(0, 9)) else junk)
    if draw(st.integers(0, 10)):
        document["entry"] = draw(st.lists(bundle_entry(), max_size=8))
    else:
        document["entry"] = draw(junk)
    return document


# The report's input: a conditional update by an identifier with a URL system, its entry
# referenced by fullUrl. Always tried first, besides the generated Bundles.
REPORTED = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "fullUrl": URNS[0],
            "resource": {
                **observation(
                    "f1", "p1", "appearance", "lytic", level="L1", effective="2025-01-01"
                ),
                "id": None,
                "identifier": [{"system": SYSTEMS[0], "value": "42"}],
            },
            "request": {"method": "PUT", "url": f"Observation?identifier={SYSTEMS[0]}|42"},
        }
    ],
}
del REPORTED["entry"][0]["resource"]["id"]


# --------------------------------------------------------------------------- the app


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> str:
    path = tmp_path_factory.mktemp("properties") / "fhir-app.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def client(database: str) -> Iterator[TestClient]:
    engine = make_engine(database)
    configured = Settings(database_url=database, auth_tokens=[], max_bundle_entries=50)
    app = create_app(configured, FhirService(uow_factory(engine)))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    app.state.audit_writer.close()
    engine.dispose()


def assert_answered(response: Any) -> None:
    """Not a server error; a client error is an OperationOutcome; so is every refused entry."""
    event(f"status {response.status_code}")  # --hypothesis-show-statistics shows the spread
    assert response.status_code < 500, response.text[:2000]
    if response.request.method == "HEAD":
        return  # no body to judge
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/fhir+json"
        assert response.json()["resourceType"] == "OperationOutcome"
        return
    if response.headers.get("content-type") == "application/fhir+json" and response.content:
        answer = response.json()
        for entry in answer.get("entry", []) if answer.get("resourceType") == "Bundle" else []:
            status = entry.get("response", {}).get("status", "200")
            event(f"entry {status[:3]}")
            assert not status.startswith("5"), entry
            if status.startswith("4"):
                assert entry["response"]["outcome"]["resourceType"] == "OperationOutcome"


def encoded(document: Any) -> bytes:
    """JSON as a client might send it: the standard library writes integers beyond 64 bits and
    NaN, which orjson (and the server) refuse."""
    return json.dumps(document).encode()


def post(client: TestClient, path: str, document: Any, **headers: str) -> Any:
    return client.post(
        path,
        content=encoded(document),
        headers={"Content-Type": "application/fhir+json", **headers},
    )


@FAST
@given(document=bundle(["transaction", "batch"]))
@example(document=REPORTED)
@example(document={**REPORTED, "type": "batch"})
def test_transactions_and_batches_never_fail_the_server(client: TestClient, document: Any) -> None:
    assert_answered(post(client, "/fhir", document))


@FAST
@given(document=bundle(["collection", "transaction", "batch", "searchset"]))
@example(document=REPORTED)
def test_assess_never_fails_the_server(client: TestClient, document: Any) -> None:
    assert_answered(post(client, "/fhir/$assess", document))


@FAST
@given(
    resource=input_resource(),
    method=st.sampled_from(["POST", "PUT"]),
    rtype=st.sampled_from(TYPES),
    rid=st.sampled_from(IDS),
    if_none_exist=st.none() | identifier_query(),
    if_match=st.none() | st.sampled_from(['W/"1"', "x", "W/"]),
)
def test_creates_and_updates_never_fail_the_server(
    client: TestClient,
    resource: Any,
    method: str,
    rtype: str,
    rid: str,
    if_none_exist: str | None,
    if_match: str | None,
) -> None:
    headers = {}
    if if_none_exist is not None:
        headers["If-None-Exist"] = quote(if_none_exist, safe="=|:/&")
    if if_match is not None:
        headers["If-Match"] = if_match
    path = f"/fhir/{quote(rtype)}" + ("" if method == "POST" else f"/{quote(rid, safe='')}")
    response = client.request(
        method,
        path,
        content=encoded(resource),
        headers={"Content-Type": "application/fhir+json", **headers},
    )
    assert_answered(response)


query_name = st.sampled_from(
    [
        "subject",
        "patient",
        "code",
        "identifier",
        "_id",
        "_lastUpdated",
        "_count",
        "_offset",
        "_total",
        "_summary",
        "_format",
        "_pretty",
        "colour",
        "_type",
        "_since",
    ]
) | st.text(max_size=6)
query_value = st.sampled_from(
    ["Patient/p1", "p1", "sys|42", "ge2025-01-01", "lt2025", "10", "-1", "x", ""]
) | st.text(max_size=10)


@st.composite
def request_path(draw: st.DrawFn) -> list[str]:
    """Path segments under /fhir: mostly the shapes of the interactions, sometimes anything."""
    if draw(st.integers(0, 5)) == 0:
        return draw(
            st.lists(st.sampled_from([*TYPES, *IDS, "_history", "$export"]) | text, max_size=5)
        )
    rtype = draw(
        st.sampled_from(["Observation", "RiskAssessment", "Patient", "Provenance"])
        | st.sampled_from(TYPES)
    )
    rid = draw(st.sampled_from(["f1", "p1", "c1"]) | st.sampled_from(IDS))
    shapes = [
        [rtype],
        [rtype, rid],
        [rtype, rid, "_history"],
        [rtype, rid, "_history", draw(st.sampled_from(["1", "2", "0", "x", "-1"]))],
        ["metadata"],
        ["$export"],
    ]
    return draw(st.sampled_from(shapes))


@FAST
@given(
    method=st.sampled_from(["GET", "GET", "GET", "DELETE", "HEAD", "PATCH"]),
    segments=request_path(),
    query=st.lists(st.tuples(query_name, query_value), max_size=4),
)
def test_request_urls_never_fail_the_server(
    client: TestClient, method: str, segments: list[str], query: list[tuple[str, str]]
) -> None:
    path = "/fhir/" + "/".join(quote(s, safe="$") for s in segments)
    query_string = "&".join(f"{quote(k, safe='')}={quote(v, safe='|/:,')}" for k, v in query)
    response = client.request(method, f"{path}?{query_string}" if query_string else path)
    assert_answered(response)


# --------------------------------------------------------------------------- the CLI

runner = CliRunner()


def run_cli(args: list[str], database: str) -> Any:
    get_settings.cache_clear()  # the CLI reads the settings once per process
    try:
        return runner.invoke(cli_app, args, env={"FHIR_APP_DATABASE_URL": database})
    finally:
        get_settings.cache_clear()


def assert_no_traceback(result: Any) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception,
        result.output,
    )
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output


@settings(FAST, max_examples=25)
@given(document=bundle(["transaction", "batch", "collection"]))
@example(document=REPORTED)
def test_cli_assess_never_ends_in_a_traceback(tmp_path: Path, database: str, document: Any) -> None:
    path = tmp_path / "input.json"
    path.write_bytes(encoded(document))
    assert_no_traceback(run_cli(["assess", str(path)], database))


@settings(FAST, max_examples=8)
@given(document=bundle(["transaction", "batch", "collection"]))
@example(document=REPORTED)
def test_cli_process_never_ends_in_a_traceback(
    tmp_path: Path, database: str, document: Any
) -> None:
    path = tmp_path / f"input-{uuid.uuid4().hex}.json"
    path.write_bytes(encoded(document))
    out = tmp_path / "out"
    assert_no_traceback(
        run_cli(["process", str(path), "--out", str(out), "--workers", "0"], database)
    )
