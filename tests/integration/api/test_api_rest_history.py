"""Type- and system-level `_history` with `_since` and `_count` paging, and instance history
paging (issue 12, FHIR R4 http.html#history), on SQLite and on PostgreSQL. Pages are newest
first and keyset-paged: versions written while a client pages neither repeat nor vanish."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from api_support import put_json

from fhir_app.fhir.samples import observation


def finding(rid: str, patient: str = "p1", value: str = "lytic") -> dict[str, Any]:
    return observation(rid, patient, "appearance", value, level="L1", effective="2025-01-01")


def link(bundle: dict[str, Any], relation: str) -> str | None:
    for item in bundle.get("link", []):
        if item["relation"] == relation:
            url: str = item["url"]
            return url
    return None


def relative(url: str) -> str:
    """A link of the server, relative to the client's /fhir/ base."""
    return url.split("/fhir/", 1)[1]


def all_pages(fhir: httpx.Client, first: str) -> list[list[dict[str, Any]]]:
    """Every page from `first` on, following `next`."""
    pages: list[list[dict[str, Any]]] = []
    url: str | None = first
    while url is not None:
        response = fhir.get(url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "history"
        pages.append(bundle["entry"])
        following = link(bundle, "next")
        url = relative(following) if following else None
        assert len(pages) < 100
    return pages


def key(entry: dict[str, Any]) -> tuple[str, str]:
    """(resource, version) of a history entry."""
    return entry["fullUrl"].split("/fhir/", 1)[1], entry["response"]["etag"]


def test_type_history_is_newest_first_with_deletions(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/h1", finding("h1")).raise_for_status()
    put_json(fhir, "Observation/h1", finding("h1", value="blastic")).raise_for_status()
    put_json(fhir, "Observation/h2", finding("h2")).raise_for_status()
    assert fhir.delete("Observation/h2").status_code == 204
    put_json(
        fhir,
        "ImagingStudy/s1",
        {
            "resourceType": "ImagingStudy",
            "id": "s1",
            "status": "available",
            "subject": {"reference": "Patient/p1"},
        },
    ).raise_for_status()

    bundle = fhir.get("Observation/_history").json()
    assert bundle["type"] == "history"
    inputs = [e for e in bundle["entry"] if e["fullUrl"].endswith(("/h1", "/h2"))]
    methods = [(e["request"]["method"], e["request"]["url"]) for e in inputs]
    assert methods == [
        ("DELETE", "Observation/h2"),
        ("POST", "Observation"),
        ("PUT", "Observation/h1"),
        ("POST", "Observation"),
    ]
    deleted = inputs[0]
    assert "resource" not in deleted
    assert deleted["response"]["status"] == "410 Gone"
    moments = [e["response"]["lastModified"] for e in bundle["entry"]]
    assert moments == sorted(moments, reverse=True)
    assert all(
        e["fullUrl"].split("/fhir/", 1)[1].startswith("Observation/") for e in bundle["entry"]
    )


def test_system_history_holds_every_type(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/h1", finding("h1")).raise_for_status()
    types = {key(e)[0].split("/")[0] for e in fhir.get("_history").json()["entry"]}
    # The input and what was derived from it.
    assert {"Observation", "RiskAssessment", "DiagnosticReport", "Provenance"} <= types


def test_since_selects_versions_stored_at_or_after_it(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/old", finding("old", patient="p9")).raise_for_status()
    time.sleep(0.05)
    since = datetime.now(UTC)
    time.sleep(0.05)
    put_json(fhir, "Observation/new", finding("new", patient="p8")).raise_for_status()
    for path in ("_history", "Observation/_history"):
        bundle = fhir.get(path, params={"_since": since.isoformat()}).json()
        urls = {key(e)[0] for e in bundle["entry"]}
        assert "Observation/new" in urls
        assert "Observation/old" not in urls
        for entry in bundle["entry"]:
            assert datetime.fromisoformat(entry["response"]["lastModified"]) >= since
        assert parse_qs(urlsplit(link(bundle, "self") or "").query)["_since"] == [since.isoformat()]
    zulu = since.isoformat().replace("+00:00", "Z")
    assert fhir.get("_history", params={"_since": zulu}).status_code == 200


def test_paging_is_stable_under_concurrent_writes(fhir: httpx.Client) -> None:
    for n in range(7):
        put_json(
            fhir, f"Patient/q{n}", {"resourceType": "Patient", "id": f"q{n}"}
        ).raise_for_status()
    expected = [key(e) for e in fhir.get("Patient/_history", params={"_count": 50}).json()["entry"]]
    assert len(expected) == 7

    first = fhir.get("Patient/_history", params={"_count": 3}).json()
    seen = [key(e) for e in first["entry"]]
    # Writes between the pages: new versions are newer than every page already read.
    put_json(
        fhir, "Patient/q0", {"resourceType": "Patient", "id": "q0", "gender": "male"}
    ).raise_for_status()
    put_json(fhir, "Patient/q9", {"resourceType": "Patient", "id": "q9"}).raise_for_status()
    next_url = link(first, "next")
    assert next_url is not None
    for page in all_pages(fhir, relative(next_url)):
        assert len(page) <= 3
        seen.extend(key(e) for e in page)
    assert seen == expected  # nothing repeated, nothing skipped, same order


def test_instance_history_pages(fhir: httpx.Client) -> None:
    for value in ("lytic", "blastic", "mixed", "lytic"):
        put_json(fhir, "Observation/h5", finding("h5", value=value)).raise_for_status()
    pages = all_pages(fhir, "Observation/h5/_history?_count=3")
    assert [len(page) for page in pages] == [3, 1]
    versions = [e["response"]["etag"] for page in pages for e in page]
    assert versions == ['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']
    whole = fhir.get("Observation/h5/_history").json()
    assert whole["total"] == 4  # without paging parameters: the whole history at once
    assert fhir.get("Observation/none/_history", params={"_count": 2}).status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        {"_since": "yesterday"},
        {"_count": "-1"},
        {"_count": "many"},
        {"_page": "not-a-page"},
        {"_at": "2025-01-01"},
        {"patient": "p1"},
    ],
)
def test_bad_history_parameters_are_400(fhir: httpx.Client, query: dict[str, str]) -> None:
    for path in ("_history", "Observation/_history"):
        answer = fhir.get(path, params=query)
        assert answer.status_code == 400, answer.text
        assert answer.json()["resourceType"] == "OperationOutcome"


def test_lenient_history_ignores_unknown_parameters_but_not_at(fhir: httpx.Client) -> None:
    lenient = {"Prefer": "handling=lenient"}
    assert fhir.get("_history", params={"patient": "p1"}, headers=lenient).status_code == 200
    assert fhir.get("_history", params={"_at": "2025"}, headers=lenient).status_code == 400


def test_history_of_an_unknown_type_is_404(fhir: httpx.Client) -> None:
    assert fhir.get("Encounter/_history").status_code == 404


def test_count_zero_is_the_total_only(fhir: httpx.Client) -> None:
    """`_count=0` as in a search (search.html#count): the total, no entries, no `next`."""
    for value in ("lytic", "blastic", "mixed"):
        put_json(fhir, "Observation/h0", finding("h0", value=value)).raise_for_status()
    put_json(fhir, "Observation/h1", finding("h1")).raise_for_status()
    for path in ("_history", "Observation/_history", "Observation/h0/_history"):
        whole = [e for page in all_pages(fhir, f"{path}?_count=50") for e in page]
        response = fhir.get(path, params={"_count": "0"})
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "history"
        assert bundle["total"] == len(whole), path
        assert "entry" not in bundle
        assert [item["relation"] for item in bundle["link"]] == ["self"]
        assert bundle["link"][0]["url"].endswith(f"{path}?_count=0")
    since = {"_count": "0", "_since": "2999-01-01T00:00:00Z"}
    assert fhir.get("Observation/_history", params=since).json()["total"] == 0
    assert fhir.get("Observation/never/_history", params={"_count": "0"}).status_code == 404
