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
    # CONTRACT 3b: a primitive outside its R4 regex or range is a fault of the JSON format (400).
    (
        "feb-30",
        finding,
        _set("effectiveDateTime", "2024-02-30"),
        400,
        "Observation.effectiveDateTime",
        "invalid",
    ),
    (
        "month-13",
        finding,
        _set("effectiveDateTime", "2025-13-01"),
        400,
        "Observation.effectiveDateTime",
        "invalid",
    ),
    (
        "date-for-instant",
        finding,
        _set("issued", "2025-05-02"),
        400,
        "Observation.issued",
        "invalid",
    ),
    (
        "bad-uri",
        finding,
        _set("code.coding.0.system", "http://a b"),
        400,
        "Observation.code.coding[0].system",
        "invalid",
    ),
    (
        "bad-code-pattern",
        finding,
        _set("code.coding.0.code", " x"),
        400,
        "Observation.code.coding[0].code",
        "invalid",
    ),
    (
        "bad-id-pattern",
        study,
        _set("series.0.uid", "1 2"),
        400,
        "ImagingStudy.series[0].uid",
        "invalid",
    ),
    (
        "integer-range",
        study,
        _set("numberOfSeries", -1),
        400,
        "ImagingStudy.numberOfSeries",
        "invalid",
    ),
    (
        "integer-over-32-bits",
        study,
        _set("numberOfSeries", 2**31),
        400,
        "ImagingStudy.numberOfSeries",
        "invalid",
    ),
    ("boolean-for-code", finding, _set("status", True), 400, "Observation.status", "structure"),
    # R4 invariants of the format: ext-1, the narrative's XHTML (txt-1/2), a contained id.
    (
        "extension-without-value",
        finding,
        _set("extension", [{"url": "http://example.org/x"}]),
        400,
        "Observation.extension[0]",
        "invalid",
    ),
    (
        "narrative-not-xhtml",
        finding,
        _set("text", {"status": "generated", "div": "plain"}),
        400,
        "Observation.text.div",
        "invalid",
    ),
    (
        "contained-without-id",
        finding,
        _set("contained", [{"resourceType": "Patient"}]),
        400,
        "Observation.contained[0].id",
        "invalid",
    ),
    # Valid R4 that breaks a rule: a required binding, a cardinality (422, as before).
    ("bad-code", finding, _set("status", "done"), 422, "Observation.status", "code-invalid"),
    (
        "narrative-bad-status",
        finding,
        _set(
            "text", {"status": "bogus", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}
        ),
        422,
        "Observation.text.status",
        "code-invalid",
    ),
    (
        "extension-without-url",
        finding,
        _set("extension", [{"valueBoolean": True}]),
        422,
        "Observation.extension[0].url",
        "required",
    ),
    # FHIR R4: a modifier extension fhir-app does not understand is never ignored (422).
    (
        "modifier-extension",
        finding,
        _set("modifierExtension", [{"url": "http://example.org/negated", "valueBoolean": True}]),
        422,
        "Observation.modifierExtension[0]",
        "not-supported",
    ),
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
        refused(put_json(client, "Observation/f1", raw), 400, "Observation.note[0].text", "invalid")
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


# --------------------------------------------------------------------------- audit of inputs


def expressions_of(outcome: dict[str, Any]) -> list[str]:
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def panel_with_negated_component() -> dict[str, Any]:
    raw = samples.observation("pm", "p1", "appearance", "lytic", level="L1", effective="2025")
    component = {
        "modifierExtension": [{"url": "http://example.org/negated", "valueBoolean": True}],
        "code": raw["code"],
        "valueCodeableConcept": raw.pop("valueCodeableConcept"),
    }
    raw["code"] = {
        "coding": [
            {
                "system": "https://fhir-app.org/fhir/CodeSystem/spine-finding",
                "code": "vertebral-lesion",
            }
        ]
    }
    raw["component"] = [component]
    return raw


def test_an_unknown_modifier_extension_is_never_ignored(fhir: httpx.Client, engine: Engine) -> None:
    """FHIR R4: a modifier extension SHALL NOT be ignored; fhir-app understands none."""
    before = snapshot(engine)
    negated = [{"url": "http://example.org/negated", "valueBoolean": True}]
    cases = [
        ({**finding("m1"), "modifierExtension": negated}, "Observation.modifierExtension[0]"),
        (panel_with_negated_component(), "Observation.component[0].modifierExtension[0]"),
    ]
    series = study("sm")
    series["series"][0]["modifierExtension"] = negated
    cases.append((series, "ImagingStudy.series[0].modifierExtension[0]"))
    cases.append(
        (
            {
                **samples.patient("p1", "Doe", "Jane", "1960-01-01", "female"),
                "modifierExtension": negated,
            },
            "Patient.modifierExtension[0]",
        )
    )
    for raw, expression in cases:
        refused(
            put_json(fhir, f"{raw['resourceType']}/{raw['id']}", raw),
            422,
            expression,
            "not-supported",
        )
    assert snapshot(engine) == before
    # An Observation outside the contract is stored and ignored, as before.
    other = {
        "resourceType": "Observation",
        "id": "o9",
        "status": "final",
        "code": {"text": "pulse"},
        "modifierExtension": negated,
    }
    assert put_json(fhir, "Observation/o9", other).status_code == 201


def test_a_study_of_another_modality_is_stored_and_gives_no_context(fhir: httpx.Client) -> None:
    """CONTRACT 1/3: valid R4 from a radiology feed is accepted; an ultrasound is stored, and a
    finding that references it is read as if it referenced no study."""
    us = study("us1")
    us["series"][0]["modality"]["code"] = "US"
    assert put_json(fhir, "ImagingStudy/us1", us).status_code == 201, us
    read = {**finding("f1"), "derivedFrom": [{"reference": "ImagingStudy/us1"}]}
    assert put_json(fhir, "Observation/f1", read).status_code == 201
    reports = fhir.get("DiagnosticReport", params={"patient": "p1"}).json()["entry"]
    assert [e["resource"].get("imagingStudy") for e in reports] == [None]


def test_a_leap_second_is_accepted(fhir: httpx.Client) -> None:
    leap = {**finding("f1"), "effectiveDateTime": "2016-12-31T23:59:60Z"}
    assert put_json(fhir, "Observation/f1", leap).status_code == 201
    later = {**finding("f2"), "effectiveDateTime": "2017-01-01T00:00:00Z"}
    later["valueCodeableConcept"]["coding"][0]["code"] = "blastic"
    assert put_json(fhir, "Observation/f2", later).status_code == 201
    found = fhir.get("Observation", params={"date": "2016-12-31", "code": "lesion-appearance"})
    assert [e["resource"]["id"] for e in found.json().get("entry", [])] == ["f1"]
    risk = fhir.get("RiskAssessment", params={"patient": "p1"}).json()["entry"][0]["resource"]
    assert "blastic" in str(risk["prediction"]), "the later finding wins"


def twice(*requests: tuple[str, str, dict[str, Any] | None]) -> dict[str, Any]:
    entries = []
    for number, (method, url, resource) in enumerate(requests):
        entry: dict[str, Any] = {
            "fullUrl": f"urn:uuid:5b0e7c1a-0000-4000-8000-00000000020{number}",
            "request": {"method": method, "url": url},
        }
        if resource is not None:
            entry["resource"] = resource
        entries.append(entry)
    return bundle("transaction", *entries)


def test_a_transaction_writing_one_resource_twice_fails(fhir: httpx.Client, engine: Engine) -> None:
    """R4 http.html#trules: overlapping identities SHALL fail the transaction; a batch may."""
    blastic = finding("dd")
    blastic["valueCodeableConcept"]["coding"][0]["code"] = "blastic"
    identified = {**finding("dd"), "identifier": [{"system": "http://h.example/obs", "value": "7"}]}
    assert put_json(fhir, "Observation/dd", identified).status_code == 201
    before = snapshot(engine)
    for document in (
        twice(("PUT", "Observation/dd", finding("dd")), ("PUT", "Observation/dd", blastic)),
        twice(("PUT", "Observation/dd", finding("dd")), ("DELETE", "Observation/dd", None)),
        twice(
            ("PUT", "Observation?identifier=http://h.example/obs|7", identified),
            ("DELETE", "Observation/dd", None),
        ),
        twice(
            ("PUT", "Observation/dd", blastic),
            ("DELETE", "Observation?identifier=http://h.example/obs|7", None),
        ),
    ):
        response = post_json(fhir, "", document)
        assert response.status_code == 400, response.text
        assert expressions_of(response.json()) == [
            "Bundle.entry[0].request",
            "Bundle.entry[1].request",
        ]
    assert snapshot(engine) == before
    response = post_json(
        fhir,
        "",
        {
            **twice(("PUT", "Observation/dd", finding("dd")), ("PUT", "Observation/dd", blastic)),
            "type": "batch",
        },
    )
    assert [e["response"]["status"][:3] for e in response.json()["entry"]] == ["200", "200"]


def test_transaction_outcomes_locate_the_entry_by_fhirpath(fhir: httpx.Client) -> None:
    bad = finding("x2")
    bad["valueCodeableConcept"]["coding"][0]["code"] = "nope"
    document = bundle(
        "transaction",
        entry(
            finding("x1"), "PUT", "Observation/x1", "urn:uuid:6b0e7c1a-0000-4000-8000-000000000001"
        ),
        entry(bad, "PUT", "Observation/x2", "urn:uuid:6b0e7c1a-0000-4000-8000-000000000002"),
    )
    response = post_json(fhir, "", document)
    assert response.status_code == 422
    assert expressions_of(response.json()) == ["Bundle.entry[1].resource.valueCodeableConcept"]
    assessed = post_json(fhir, "$assess", document)
    assert assessed.status_code == 422
    assert "Bundle.entry[1].resource.valueCodeableConcept" in expressions_of(assessed.json())
    no_request = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": finding("x3")}],
    }
    response = post_json(fhir, "", no_request)
    assert response.status_code == 400
    assert expressions_of(response.json()) == ["Bundle.entry[0].request"]


def test_assess_names_each_duplicate_full_url_once(fhir: httpx.Client) -> None:
    response = post_json(fhir, "$assess", duplicate_full_urls("transaction"))
    assert response.status_code == 400, response.text
    faults = [i for i in response.json()["issue"] if i["code"] == "invalid"]
    assert [i["expression"] for i in faults] == [
        ["Bundle.entry[0].fullUrl"],
        ["Bundle.entry[2].fullUrl"],
    ]
