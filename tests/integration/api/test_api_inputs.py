"""Inputs of every shape get a clear 4xx OperationOutcome, on SQLite and on PostgreSQL: control
characters in strings (FHIR R4 forbids every one below U+0020 but tab, CR and LF), conditional
update urls in transactions and batches (FHIR R4 http.html#cond-update), malformed entry urls."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_support import issues_text, post_json, put_json, row_counts, snapshot
from sqlalchemy import Engine

from fhir_app.fhir.samples import observation

OBS_SYSTEM = "http://hospital.example/obs"
CONDITIONAL_URL = f"Observation?identifier={OBS_SYSTEM}|42"


def finding(obs_id: str = "f1", patient: str = "p1", value: str = "lytic") -> dict[str, Any]:
    """A lesion-appearance finding at L1."""
    return observation(obs_id, patient, "appearance", value, level="L1", effective="2025-01-01")


def identified(obs_id: str | None, value: str = "lytic", number: str = "42") -> dict[str, Any]:
    """A finding with the hospital's identifier `number`; without an id when `obs_id` is None."""
    body = {**finding(obs_id or "x", value=value)}
    body["identifier"] = [{"system": OBS_SYSTEM, "value": number}]
    if obs_id is None:
        del body["id"]
    return body


def entry(resource: dict[str, Any] | None, method: str, url: str, **extra: Any) -> dict[str, Any]:
    """A transaction or batch entry."""
    out: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        out["resource"] = resource
    out.update(extra)
    return out


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    """A transaction or batch Bundle."""
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def outcome_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The OperationOutcome of a refused request with this status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


def batch_outcome(response: httpx.Response, index: int, status: int) -> dict[str, Any]:
    """The OperationOutcome of one refused batch entry."""
    assert response.status_code == 200, response.text
    answer = response.json()["entry"][index]["response"]
    assert answer["status"].startswith(str(status)), answer
    outcome: dict[str, Any] = answer["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


# --------------------------------------------------------------------------- control characters

# Every control character FHIR forbids, at the ends of the range and around tab/LF/CR.
FORBIDDEN = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x0e", "\x1b", "\x1f"]


def with_control(character: str) -> dict[str, Any]:
    """A finding whose note text holds `character`."""
    return {**finding(), "note": [{"text": f"seen{character}twice"}]}


def assert_control_refused(outcome: dict[str, Any], expression: str) -> None:
    issue = outcome["issue"][0]
    assert issue["code"] == "invalid", outcome
    assert issue["expression"] == [expression], outcome
    assert "control character" in issue["diagnostics"]


@pytest.mark.parametrize("character", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_control_character_in_update_is_400(
    fhir: httpx.Client, engine: Engine, character: str
) -> None:
    before = row_counts(engine)
    response = put_json(fhir, "Observation/f1", with_control(character))
    assert_control_refused(outcome_of(response, 400), "Observation.note[0].text")
    assert row_counts(engine) == before


def test_control_character_in_create_and_in_a_key_is_400(
    fhir: httpx.Client, engine: Engine
) -> None:
    before = snapshot(engine)
    created = post_json(fhir, "Observation", with_control("\x00"))
    assert_control_refused(outcome_of(created, 400), "Observation.note[0].text")
    keyed = {**finding(), "note": [{"te\x00xt": "seen"}]}
    refused = put_json(fhir, "Observation/f1", keyed)
    outcome = outcome_of(refused, 400)
    assert outcome["issue"][0]["expression"] == ["Observation.note[0]"]
    assert "te\\u0000xt" in outcome["issue"][0]["diagnostics"]
    assert snapshot(engine) == before


def test_tab_cr_and_lf_are_accepted(fhir: httpx.Client) -> None:
    response = put_json(fhir, "Observation/f1", with_control("\t\r\n"))
    assert response.status_code == 201, response.text
    assert fhir.get("Observation/f1").json()["note"][0]["text"] == "seen\t\r\ntwice"


def test_control_character_in_a_transaction_is_400_and_stores_nothing(
    fhir: httpx.Client, engine: Engine
) -> None:
    before = snapshot(engine)
    good = entry(finding("f2"), "PUT", "Observation/f2")
    bad = entry(with_control("\x00"), "PUT", "Observation/f1")
    response = post_json(fhir, "", bundle("transaction", good, bad))
    assert_control_refused(outcome_of(response, 400), "Bundle.entry[1].resource.note[0].text")
    assert snapshot(engine) == before


def test_control_character_in_an_entry_url_is_400(fhir: httpx.Client, engine: Engine) -> None:
    before = snapshot(engine)
    bad = entry(finding(), "PUT", "Observation/f\x001")
    response = post_json(fhir, "", bundle("transaction", bad))
    assert_control_refused(outcome_of(response, 400), "Bundle.entry[0].request.url")
    assert snapshot(engine) == before


def test_control_character_in_a_batch_refuses_that_entry_only(fhir: httpx.Client) -> None:
    good = entry(finding("f2"), "PUT", "Observation/f2")
    bad = entry(with_control("\x1f"), "PUT", "Observation/f1")
    response = post_json(fhir, "", bundle("batch", bad, good))
    assert_control_refused(batch_outcome(response, 0, 400), "Bundle.entry[0].resource.note[0].text")
    assert response.json()["entry"][1]["response"]["status"] == "201 Created"
    assert fhir.get("Observation/f1").status_code == 404
    assert fhir.get("Observation/f2").status_code == 200


def test_control_character_in_assess_is_400(fhir: httpx.Client) -> None:
    response = post_json(fhir, "$assess", bundle("collection", {"resource": with_control("\x00")}))
    outcome = outcome_of(response, 400)
    assert outcome["issue"][0]["code"] == "invalid"
    assert "Bundle.entry[0]" in issues_text(outcome)
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].resource.note[0].text"]


@pytest.mark.parametrize(
    "query",
    [
        {"identifier": "sys|4\x002"},
        {"code": "\x00"},
        {"_lastUpdated": "ge2025\x00"},
    ],
)
def test_control_character_in_search_is_400(fhir: httpx.Client, query: dict[str, str]) -> None:
    outcome = outcome_of(fhir.get("Observation", params=query), 400)
    assert outcome["issue"][0]["code"] == "invalid"


def test_control_character_in_if_none_exist_is_400(fhir: httpx.Client, engine: Engine) -> None:
    before = row_counts(engine)
    response = post_json(
        fhir, "Observation", finding(), **{"If-None-Exist": "identifier=sys|4%002"}
    )
    assert outcome_of(response, 400)["issue"][0]["code"] == "invalid"
    assert row_counts(engine) == before


# --------------------------------------------------------------------------- conditional update


def test_conditional_update_without_a_match_creates_at_the_resource_id(
    fhir: httpx.Client,
) -> None:
    response = post_json(
        fhir, "", bundle("transaction", entry(identified("c1"), "PUT", CONDITIONAL_URL))
    )
    assert response.status_code == 200, response.text
    answer = response.json()["entry"][0]
    assert answer["response"]["status"] == "201 Created"
    assert answer["response"]["location"] == "Observation/c1/_history/1"


def test_conditional_update_without_a_match_or_id_creates_a_new_id(fhir: httpx.Client) -> None:
    response = post_json(
        fhir, "", bundle("transaction", entry(identified(None), "PUT", CONDITIONAL_URL))
    )
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"]
    assert location.startswith("Observation/")
    assert location.endswith("/_history/1")
    rid = location.split("/")[1]
    assert fhir.get(f"Observation/{rid}").json()["identifier"][0]["value"] == "42"


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_conditional_update_with_one_match_updates_it(fhir: httpx.Client, kind: str) -> None:
    put_json(fhir, "Observation/c1", identified("c1")).raise_for_status()
    # Without an id in the body, and with a reference to the entry by fullUrl.
    update = entry(
        identified(None, value="blastic"),
        "PUT",
        CONDITIONAL_URL,
        fullUrl="urn:uuid:6c6bd9b8-58ef-4f16-bd84-7a7d4b6b1f11",
    )
    response = post_json(fhir, "", bundle(kind, update))
    assert response.status_code == 200, response.text
    answer = response.json()["entry"][0]["response"]
    assert answer["status"] == "200 OK", answer
    assert answer["location"] == "Observation/c1/_history/2"
    stored = fhir.get("Observation/c1").json()
    assert stored["meta"]["versionId"] == "2"
    assert stored["valueCodeableConcept"] != identified("c1")["valueCodeableConcept"]


def test_references_to_a_conditional_update_point_at_the_match(fhir: httpx.Client) -> None:
    put_json(fhir, "Observation/c1", identified("c1")).raise_for_status()
    urn = "urn:uuid:0d3f1f52-1c62-4a8e-9b0a-93f5e6ed2a10"
    update = entry(identified(None, value="blastic"), "PUT", CONDITIONAL_URL, fullUrl=urn)
    citing = finding("f9")
    citing["derivedFrom"] = [{"reference": urn}]
    response = post_json(
        fhir, "", bundle("transaction", update, entry(citing, "PUT", "Observation/f9"))
    )
    assert response.status_code == 200, response.text
    stored = fhir.get("Observation/f9").json()
    assert stored["derivedFrom"] == [{"reference": "Observation/c1"}]


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_conditional_update_with_several_matches_is_412(
    fhir: httpx.Client, engine: Engine, kind: str
) -> None:
    put_json(fhir, "Observation/c1", identified("c1")).raise_for_status()
    put_json(fhir, "Observation/c2", identified("c2")).raise_for_status()
    before = snapshot(engine)
    response = post_json(fhir, "", bundle(kind, entry(identified(None), "PUT", CONDITIONAL_URL)))
    if kind == "transaction":
        outcome = outcome_of(response, 412)
    else:
        outcome = batch_outcome(response, 0, 412)
    assert outcome["issue"][0]["code"] == "multiple-matches"
    if kind == "transaction":
        assert "Bundle.entry[0]" in issues_text(outcome)
    assert snapshot(engine) == before


def test_conditional_update_with_another_id_than_the_match_is_400(
    fhir: httpx.Client, engine: Engine
) -> None:
    put_json(fhir, "Observation/c1", identified("c1")).raise_for_status()
    before = snapshot(engine)
    response = post_json(
        fhir, "", bundle("transaction", entry(identified("other"), "PUT", CONDITIONAL_URL))
    )
    assert "c1" in issues_text(outcome_of(response, 400))
    assert snapshot(engine) == before


def test_conditional_update_with_an_unknown_parameter_is_400(fhir: httpx.Client) -> None:
    response = post_json(
        fhir, "", bundle("transaction", entry(identified(None), "PUT", "Observation?colour=red"))
    )
    assert "colour" in issues_text(outcome_of(response, 400))


# --------------------------------------------------------------------------- malformed entry urls

MALFORMED = [
    ("PUT", "Observation/"),
    ("PUT", "/"),
    ("PUT", "?"),
    ("PUT", "Observation?"),
    ("PUT", "Observation/a/b/c"),
    ("PUT", "Observation/a%20b"),
    ("PUT", "Observation/%2e%2e"),
    ("PUT", "Observation/" + "a" * 65),
    ("PUT", "observation/f1"),
    ("PUT", "http://elsewhere.example/fhir/Observation/f1"),
    ("PUT", "/Observation/f1"),
    ("PUT", "Unknown/f1"),
    ("PUT", "Unknown?identifier=a|b"),
    ("PUT", ""),
    ("POST", "Observation/f1"),
    ("POST", "Observation?identifier=a|b"),
    ("POST", "Unknown"),
    ("DELETE", "Observation"),
    ("PATCH", "Observation"),
    ("PATCH", "Observation?identifier=a|b"),
]


@pytest.mark.parametrize(("method", "url"), MALFORMED, ids=lambda v: v or "empty")
def test_malformed_entry_urls_are_400(
    fhir: httpx.Client, engine: Engine, method: str, url: str
) -> None:
    before = snapshot(engine)
    bad = entry(None if method == "DELETE" else finding(), method, url)
    transaction = post_json(fhir, "", bundle("transaction", bad))
    assert "Bundle.entry[0]" in issues_text(outcome_of(transaction, 400))
    batch = post_json(fhir, "", bundle("batch", bad))
    batch_outcome(batch, 0, 400)
    assert snapshot(engine) == before
