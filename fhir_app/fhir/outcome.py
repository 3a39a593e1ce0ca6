"""OperationOutcome: every error leaves as one, with its HTTP status from one table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Final

from fhir_app.fhir.inputs import Issue, JsonObject

XHTML: Final = "http://www.w3.org/1999/xhtml"

# HTTP status per issue type (http://hl7.org/fhir/R4/valueset-issue-type.html). The split follows
# FHIR R4 http.html and what servers such as HAPI do: 400 when the request cannot be read as FHIR
# (malformed JSON, wrong JSON shape, unknown elements); 422 when it was read but is refused by a
# rule: a missing or malformed element, a code outside its value set, a contract rule (a vertebral
# level, a unit), or a resource type this processor does not take in.
HTTP_STATUS_BY_ISSUE_CODE: Final[Mapping[str, int]] = {
    "invalid": 400,
    "structure": 400,
    "required": 422,
    "value": 422,
    "invariant": 422,
    "code-invalid": 422,
    "extension": 422,
    "business-rule": 422,
    "not-supported": 422,
    "incomplete": 422,
    "processing": 422,
    "login": 401,
    "unknown": 401,
    "expired": 401,
    "security": 403,
    "forbidden": 403,
    "suppressed": 403,
    "not-found": 404,
    "deleted": 410,
    "duplicate": 409,
    "conflict": 409,
    "lock-error": 409,
    "multiple-matches": 412,
    "too-long": 413,
    "too-costly": 413,
    "throttled": 429,
    "exception": 500,
    "transient": 503,
    "no-store": 503,
    "timeout": 504,
    "informational": 200,
}
FAILING_SEVERITIES: Final = frozenset({"fatal", "error"})


def http_status_for(issues: Sequence[Issue]) -> int:
    """The HTTP status of a response carrying these issues, from `HTTP_STATUS_BY_ISSUE_CODE`.

    Only `fatal` and `error` issues decide; without any the status is 200. When every deciding
    issue maps to one status, that status; when they differ, 500 if any is a server error, else
    the generic 400 Bad Request. An issue code missing from the table is a server fault: 500.
    """
    statuses = {
        HTTP_STATUS_BY_ISSUE_CODE.get(issue.code, 500)
        for issue in issues
        if issue.severity in FAILING_SEVERITIES
    }
    if not statuses:
        return 200
    if len(statuses) == 1:
        return statuses.pop()
    return 500 if max(statuses) >= 500 else 400


def operation_outcome(issues: Sequence[Issue]) -> JsonObject:
    """An R4 OperationOutcome as plain JSON, with a generated narrative listing the issues.

    OperationOutcome needs at least one issue, so an empty sequence gives an informational
    "no issues" one.
    """
    shown = list(issues) or [Issue("information", "informational", "No issues.")]
    entries = []
    for issue in shown:
        entry: JsonObject = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            entry["expression"] = list(issue.expression)
        entries.append(entry)
    return {
        "resourceType": "OperationOutcome",
        "text": {"status": "generated", "div": _narrative(shown)},
        "issue": entries,
    }


def _narrative(issues: Sequence[Issue]) -> str:
    items = "".join(
        f"<li><b>{escape(i.severity)}</b> ({escape(i.code)})"
        + (f" at <code>{escape(', '.join(i.expression))}</code>" if i.expression else "")
        + f": {escape(i.diagnostics)}</li>"
        for i in issues
    )
    return f'<div xmlns="{XHTML}"><ul>{items}</ul></div>'
