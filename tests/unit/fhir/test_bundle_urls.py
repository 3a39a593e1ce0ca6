"""Reading Bundle entries: request urls (FHIR R4 http.html#transaction) and control characters
(FHIR R4 datatypes.html#string), each problem named at its FHIRPath."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_app.fhir.bundle import BundleEntry, EntryTarget, bundle_entries, entry_target
from fhir_app.fhir.inputs import InputRejected
from fhir_app.fhir.parse import CONTROL_CHARACTER, control_character_issues, iter_input_resources
from fhir_app.service import ServiceError, assess

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def entry(method: str | None, url: str | None, resource: Any = None) -> BundleEntry:
    return BundleEntry(0, None, resource, method, url, None, None)


@pytest.mark.parametrize(
    ("method", "url", "target"),
    [
        ("POST", "Observation", EntryTarget("Observation")),
        ("PUT", "Observation/f1", EntryTarget("Observation", "f1")),
        ("DELETE", "Patient/a.b-C", EntryTarget("Patient", "a.b-C")),
        (
            "PUT",
            "Observation?identifier=http://hospital.example/obs|42",
            EntryTarget("Observation", None, "identifier=http://hospital.example/obs|42"),
        ),
        ("PUT", "Unknown/f1", EntryTarget("Unknown", "f1")),  # the service refuses the type
        ("PATCH", "Observation/f1", EntryTarget("Observation", "f1")),
        (
            "DELETE",
            "Observation?identifier=a|b",
            EntryTarget("Observation", None, "identifier=a|b"),
        ),
    ],
)
def test_entry_urls(method: str, url: str, target: EntryTarget) -> None:
    assert entry_target(entry(method, url)) == target


@pytest.mark.parametrize("url", ["Observation/f1", "/Patient/example", "Observation?code=x", None])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_read_entries_have_no_write_target(method: str, url: str | None) -> None:
    # The API layer reads their url: any read url of the REST interface.
    read = entry(method, url)
    assert entry_target(read) is None
    assert read.reads


def test_a_post_without_url_creates_its_resource_type() -> None:
    assert entry_target(entry("POST", None, {"resourceType": "Patient"})) == EntryTarget("Patient")


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("PUT", "Observation/"),
        ("PUT", "/"),
        ("PUT", "?"),
        ("PUT", "Observation?"),
        ("PUT", "Observation/a/b/c"),
        ("PUT", "Observation/a%20b"),
        ("PUT", "Observation/f1?x=1"),
        ("PUT", "/Observation/f1"),
        ("PUT", "https://elsewhere.example/fhir/Observation/f1"),
        ("PUT", "observation/f1"),
        ("PUT", None),
        ("PUT", "Observation"),
        ("POST", "Observation/f1"),
        ("PATCH", "Observation"),
        ("PATCH", "Observation?identifier=a|b"),
        ("TRACE", "Observation/f1"),
    ],
)
def test_malformed_entry_urls_are_refused_at_the_url(method: str, url: str | None) -> None:
    with pytest.raises(InputRejected) as refused:
        entry_target(entry(method, url))
    [issue] = refused.value.issues
    assert issue.expression == ("Bundle.entry[0].request.url",)


def test_entry_problems_stay_with_their_entry() -> None:
    entries = bundle_entries(
        {
            "resourceType": "Bundle",
            "entry": [
                {"request": {"method": "PUT", "url": "Observation/"}},
                {"fullUrl": "urn:uuid:a\x00", "request": {"method": "DELETE", "url": "Patient/p"}},
                {"request": {"method": "DELETE", "url": "Patient/p"}},
            ],
        }
    )
    assert [e.problems[0].expression for e in entries[:2]] == [
        ("Bundle.entry[0].request.url",),
        ("Bundle.entry[1].fullUrl",),
    ]
    assert entries[2].problems == []
    assert entries[2].target == EntryTarget("Patient", "p")


def test_a_control_character_outside_the_entries_refuses_the_bundle() -> None:
    with pytest.raises(InputRejected) as refused:
        bundle_entries({"resourceType": "Bundle", "id": "b\x01", "entry": []})
    assert refused.value.issues[0].expression == ("Bundle.id",)


# --------------------------------------------------------------------------- control characters

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def strings_of(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [*node.keys(), *(s for v in node.values() for s in strings_of(v))]
    if isinstance(node, list):
        return [s for v in node for s in strings_of(v)]
    return []


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_control_characters_are_found_exactly_when_present(value: Any) -> None:
    """The fast gate (orjson + regex) never lets a control character through, and the walk
    reports only real ones: issues exist exactly when some string or key holds one."""
    present = any(CONTROL_CHARACTER.search(s) for s in strings_of(value))
    issues = control_character_issues(value, "X")
    assert bool(issues) == present
    assert all(i.code == "invalid" and i.expression for i in issues)


@pytest.mark.parametrize("text", ["\\b", "\\\\u0000", "\\f", "tab\tcr\rlf\n", "\x7f", "é\u2028"])
def test_look_alikes_and_allowed_whitespace_pass(text: str) -> None:
    assert control_character_issues({"a": [text]}, "X") == []


def test_the_location_is_the_fhirpath() -> None:
    [issue] = control_character_issues({"code": {"coding": [{}, {"display": "a\x1fb"}]}}, "Obs")
    assert issue.expression == ("Obs.code.coding[1].display",)
    assert "U+001F" in issue.diagnostics


# --------------------------------------------------------------------------- $assess outputs


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_the_output_estimate_is_what_assess_derives(path: Path) -> None:
    """outputs_of, which $assess checks against its limit before deriving, counts exactly."""
    data = path.read_bytes()
    result = assess(iter_input_resources(data))
    assert not result.rejections
    assert len(result.outputs) > 0
    at_limit = assess(iter_input_resources(data), max_outputs=len(result.outputs))
    assert len(at_limit.outputs) == len(result.outputs)
    with pytest.raises(ServiceError) as refused:
        assess(iter_input_resources(data), max_outputs=len(result.outputs) - 1)
    assert refused.value.status == 413
    assert refused.value.issues[0].code == "too-costly"
