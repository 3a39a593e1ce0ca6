"""Strict R4 validation over REST (CONTRACT 3b), on SQLite and on PostgreSQL: each bad-input kind
of issue 11 is refused with 400 (not R4 JSON) or 422 (breaks a rule) and an OperationOutcome
naming the element, and nothing is stored; a Bundle whose entries break the Bundle rules is
refused as a whole (transaction) or per entry (batch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_support import Serve, issues_text, post_json, put_json, row_counts, snapshot
from sqlalchemy import Engine

from fhir_app.fhir import samples

MIB = 1024 * 1024


def finding(obs_id: str = "f1") -> dict[str, Any]:
    return samples.observation(obs_id, "p1", "appearance", "lytic", level="L1", effective="2025")


def study(study_id: str = "s1") -> dict[str, Any]:
    raw = samples.imaging_study(study_id, "p1", "CT", started="2025-01-02", uid="1.2.3")
    raw["series"][0]["number"] = 1
    return raw


def refused(response: httpx.Response, status: int, expression: str, code: str) -> None:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert (code, [expression]) in [(i["code"], i.get("expression")) for i in outcome["issue"]]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return change


# (what, resource builder, change, status, FHIRPath, issue code)
BAD_INPUTS = [
    ("null", finding, _set("issued", None), 400, "Observation.issued", "structure"),
    ("null-in-array", finding, _set("note", [None]), 400, "Observation.note[0]", "structure"),
    ("empty-array", finding, _set("note", []), 400, "Observation.note", "structure"),
    ("empty-object", finding, _set("code", {}), 400, "Observation.code", "structure"),
    ("empty-string", finding, _set("issued", ""), 400, "Observation.issued", "structure"),
    (
        "number-for-dateTime",
        study,
        _set("started", 12345),
        400,
        "ImagingStudy.started",
        "structure",
    ),
    (
        "boolean-for-unsignedInt",
        study,
        _set("series.0.number", True),
        400,
        "ImagingStudy.series[0].number",
        "structure",
    ),
    ("unknown-element", finding, _set("colour", "x"), 400, "Observation.colour", "structure"),
    (
        "feb-30",
        finding,
        _set("effectiveDateTime", "2024-02-30"),
        422,
        "Observation.effectiveDateTime",
        "value",
    ),
    (
        "bad-id-pattern",
        study,
        _set("series.0.uid", "1 2"),
        422,
        "ImagingStudy.series[0].uid",
        "value",
    ),
    (
        "integer-range",
        study,
        _set("numberOfSeries", -1),
        422,
        "ImagingStudy.numberOfSeries",
        "value",
    ),
    ("bad-code", finding, _set("status", "done"), 422, "Observation.status", "code-invalid"),
]


@pytest.mark.parametrize(
    ("build", "change", "status", "expression", "code"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_inputs_are_refused_and_nothing_is_stored(
    fhir: httpx.Client,
    engine: Engine,
    build: Callable[[], dict[str, Any]],
    change: Callable[[dict[str, Any]], None],
    status: int,
    expression: str,
    code: str,
) -> None:
    raw = build()
    change(raw)
    rtype, rid = raw["resourceType"], raw["id"]
    before = snapshot(engine)
    refused(put_json(fhir, f"{rtype}/{rid}", raw), status, expression, code)
    created = {k: v for k, v in raw.items() if k != "id"}
    refused(post_json(fhir, rtype, created), status, expression, code)
    transaction = samples.transaction([raw])
    response = post_json(fhir, "", transaction)
    assert response.status_code == status, response.text
    assert "Bundle.entry[0]" in issues_text(response.json())
    assert snapshot(engine) == before


def test_a_string_over_one_mebibyte_is_refused(serve: Serve, engine: Engine) -> None:
    with httpx.Client(base_url=f"{serve(max_request_bytes=8 * MIB)}/", timeout=60) as client:
        raw = finding()
        raw["note"] = [{"text": "x" * (3 * MIB)}]
        counts = row_counts(engine)
        refused(put_json(client, "Observation/f1", raw), 422, "Observation.note[0].text", "value")
        outcome = put_json(client, "Observation/f1", raw).text
        assert len(outcome) < 5_000  # the value is not sent back
        assert row_counts(engine) == counts


# --------------------------------------------------------------------------- Bundle rules


def entry(resource: dict[str, Any], method: str, url: str, full_url: str) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "request": {"method": method, "url": url}}


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def duplicate_full_urls(kind: str) -> dict[str, Any]:
    return bundle(
        kind,
        entry(
            finding("a"), "PUT", "Observation/a", "urn:uuid:0c3b7f1e-1b7a-4a39-9d5c-000000000001"
        ),
        entry(
            study("s9"), "PUT", "ImagingStudy/s9", "urn:uuid:0c3b7f1e-1b7a-4a39-9d5c-000000000002"
        ),
        entry(
            finding("b"), "PUT", "Observation/b", "urn:uuid:0c3b7f1e-1b7a-4a39-9d5c-000000000001"
        ),
    )


def dangling_reference(kind: str) -> dict[str, Any]:
    referring = finding("c")
    referring["derivedFrom"] = [{"reference": "urn:uuid:7d1a1b0e-0000-4000-8000-00000000dead"}]
    return bundle(
        kind,
        entry(
            study("s9"), "PUT", "ImagingStudy/s9", "urn:uuid:7d1a1b0e-0000-4000-8000-000000000001"
        ),
        entry(referring, "PUT", "Observation/c", "urn:uuid:7d1a1b0e-0000-4000-8000-000000000002"),
    )


def put_id_mismatch(kind: str) -> dict[str, Any]:
    return bundle(
        kind,
        entry(
            study("s9"), "PUT", "ImagingStudy/s9", "urn:uuid:9e2b0c1d-0000-4000-8000-000000000001"
        ),
        entry(
            finding("other"),
            "PUT",
            "Observation/d",
            "urn:uuid:9e2b0c1d-0000-4000-8000-000000000002",
        ),
    )


# (what, Bundle builder, the expressions of the faulty entries)
BUNDLE_FAULTS = [
    (
        "duplicate-fullUrl",
        duplicate_full_urls,
        {0: "Bundle.entry[0].fullUrl", 2: "Bundle.entry[2].fullUrl"},
    ),
    (
        "dangling-urn-uuid",
        dangling_reference,
        {1: "Bundle.entry[1].resource.derivedFrom[0].reference"},
    ),
    ("put-id-mismatch", put_id_mismatch, {1: "Bundle.entry[1].resource.id"}),
]


@pytest.mark.parametrize(
    ("build", "faulty"), [case[1:] for case in BUNDLE_FAULTS], ids=[c[0] for c in BUNDLE_FAULTS]
)
def test_transaction_breaking_a_bundle_rule_is_refused_whole(
    fhir: httpx.Client,
    engine: Engine,
    build: Callable[[str], dict[str, Any]],
    faulty: dict[int, str],
) -> None:
    before = snapshot(engine)
    response = post_json(fhir, "", build("transaction"))
    assert response.status_code == 400, response.text
    outcome = response.json()
    expressions = {e for issue in outcome["issue"] for e in issue.get("expression", [])}
    assert set(faulty.values()) <= expressions
    assert {issue["code"] for issue in outcome["issue"]} == {"invalid"}
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    ("build", "faulty"), [case[1:] for case in BUNDLE_FAULTS], ids=[c[0] for c in BUNDLE_FAULTS]
)
def test_batch_breaking_a_bundle_rule_refuses_those_entries(
    fhir: httpx.Client,
    build: Callable[[str], dict[str, Any]],
    faulty: dict[int, str],
) -> None:
    document = build("batch")
    response = post_json(fhir, "", document)
    assert response.status_code == 200, response.text
    answers = response.json()["entry"]
    for index, answer in enumerate(answers):
        status = answer["response"]["status"]
        target = document["entry"][index]["request"]["url"]
        if index in faulty:
            assert status.startswith("400"), answer
            assert faulty[index] in issues_text(answer["response"]["outcome"])
            assert fhir.get(target).status_code == 404
        else:
            assert status.startswith("201"), answer
            assert fhir.get(target).status_code == 200


def test_the_put_entry_keeps_neither_id(fhir: httpx.Client) -> None:
    post_json(fhir, "", put_id_mismatch("transaction"))
    assert fhir.get("Observation/d").status_code == 404
    assert fhir.get("Observation/other").status_code == 404


def test_assess_refuses_a_bundle_breaking_a_bundle_rule(fhir: httpx.Client, engine: Engine) -> None:
    counts = row_counts(engine)
    response = post_json(fhir, "$assess", dangling_reference("transaction"))
    assert response.status_code == 400, response.text
    assert "Bundle.entry[1].resource.derivedFrom[0].reference" in issues_text(response.json())
    assert row_counts(engine) == counts


def test_urn_uuid_references_that_resolve_are_accepted(fhir: httpx.Client) -> None:
    referring = finding("e")
    referring["derivedFrom"] = [{"reference": "urn:uuid:5f0e9c2a-0000-4000-8000-000000000001"}]
    document = bundle(
        "transaction",
        entry(
            study("s5"), "PUT", "ImagingStudy/s5", "urn:uuid:5f0e9c2a-0000-4000-8000-000000000001"
        ),
        entry(referring, "PUT", "Observation/e", "urn:uuid:5f0e9c2a-0000-4000-8000-000000000002"),
    )
    response = post_json(fhir, "", document)
    assert response.status_code == 200, response.text
    stored = fhir.get("Observation/e").json()
    assert stored["derivedFrom"] == [{"reference": "ImagingStudy/s5"}]


def test_the_bundle_itself_is_held_to_r4_json(fhir: httpx.Client, engine: Engine) -> None:
    before = snapshot(engine)
    good = entry(
        finding("g"), "PUT", "Observation/g", "urn:uuid:1c0e3b2a-0000-4000-8000-000000000001"
    )
    bad = entry(
        finding("h"), "PUT", "Observation/h", "urn:uuid:1c0e3b2a-0000-4000-8000-000000000002"
    )
    bad["request"]["ifMatch"] = None
    response = post_json(fhir, "", bundle("transaction", good, bad))
    refused(response, 400, "Bundle.entry[1].request.ifMatch", "structure")
    response = post_json(fhir, "", {**bundle("transaction", good), "timestamp": None})
    refused(response, 400, "Bundle.timestamp", "structure")
    assert snapshot(engine) == before
    answers = post_json(fhir, "", bundle("batch", good, bad)).json()["entry"]
    assert [a["response"]["status"][:3] for a in answers] == ["201", "400"]
    assert "Bundle.entry[1].request.ifMatch" in issues_text(answers[1]["response"]["outcome"])
