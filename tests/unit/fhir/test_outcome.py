"""OperationOutcome and the HTTP status table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from fhir_app.fhir import samples
from fhir_app.fhir.inbound import map_observation
from fhir_app.fhir.inputs import InputRejected, Issue
from fhir_app.fhir.outcome import HTTP_STATUS_BY_ISSUE_CODE, http_status_for, operation_outcome
from fhir_app.fhir.parse import load_json, validate_resource

# Every issue-type code of FHIR R4 (http://hl7.org/fhir/R4/valueset-issue-type.html).
R4_ISSUE_TYPES = {
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
    "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
    "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
    "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store", "exception",
    "timeout", "incomplete", "throttled", "informational",
}  # fmt: skip


def error(code: str, *expression: str) -> Issue:
    return Issue("error", code, f"{code} problem", expression)


def test_operation_outcome_is_valid_r4() -> None:
    issues = [
        error("required", "Observation.subject"),
        Issue("warning", "informational", "note <b>&</b>"),
    ]
    outcome = operation_outcome(issues)
    OperationOutcome.model_validate(outcome)
    assert outcome["issue"] == [
        {
            "severity": "error",
            "code": "required",
            "diagnostics": "required problem",
            "expression": ["Observation.subject"],
        },
        {"severity": "warning", "code": "informational", "diagnostics": "note <b>&</b>"},
    ]
    div = outcome["text"]["div"]
    assert div.startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert "Observation.subject" in div
    assert "note &lt;b&gt;&amp;&lt;/b&gt;" in div
    assert outcome["text"]["status"] == "generated"


def test_empty_outcome_still_has_an_issue() -> None:
    outcome = operation_outcome([])
    OperationOutcome.model_validate(outcome)
    assert outcome["issue"][0]["severity"] == "information"


def test_the_table_covers_every_r4_issue_type() -> None:
    assert set(HTTP_STATUS_BY_ISSUE_CODE) == R4_ISSUE_TYPES


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("invalid", 400),
        ("structure", 400),
        ("required", 422),
        ("value", 422),
        ("code-invalid", 422),
        ("business-rule", 422),
        ("not-supported", 422),
        ("not-found", 404),
        ("deleted", 410),
        ("conflict", 409),
        ("multiple-matches", 412),
        ("too-costly", 413),
        ("throttled", 429),
        ("exception", 500),
        ("timeout", 504),
    ],
)
def test_status_per_issue_code(code: str, status: int) -> None:
    assert http_status_for([error(code)]) == status
    assert http_status_for([Issue("fatal", code, "x")]) == status


def test_warnings_alone_are_success() -> None:
    assert http_status_for([Issue("warning", "business-rule", "x")]) == 200
    assert http_status_for([]) == 200


def test_mixed_statuses() -> None:
    assert http_status_for([error("required"), error("value")]) == 422
    assert http_status_for([error("structure"), error("value")]) == 400
    assert http_status_for([error("not-found"), error("exception")]) == 500
    assert http_status_for([error("value"), Issue("warning", "exception", "x")]) == 422


def test_unknown_issue_code_is_a_server_fault() -> None:
    assert http_status_for([error("made-up")]) == 500


def test_statuses_of_real_rejections() -> None:
    with pytest.raises(InputRejected) as malformed:
        load_json(b"{")
    assert http_status_for(malformed.value.issues) == 400
    raw = samples.observation("o1", "p1", "appearance", "lytic", level="T1", effective="2024")
    raw["bodySite"]["coding"][0]["code"] = "64688005"
    validate_resource(raw)
    with pytest.raises(InputRejected) as coccyx:
        map_observation(
            raw, resource_id="o1", version=1, received_at=datetime(2024, 1, 1, tzinfo=UTC)
        )
    assert http_status_for(coccyx.value.issues) == 422
    OperationOutcome.model_validate(operation_outcome(coccyx.value.issues))
