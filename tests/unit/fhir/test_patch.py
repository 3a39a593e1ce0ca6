"""fhir/patch.py: JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386) on resources, the Binary
of a PATCH entry, and the laws a patch obeys."""

from __future__ import annotations

import base64
import copy
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_app.fhir.inputs import InputRejected
from fhir_app.fhir.patch import (
    apply_json_patch,
    apply_merge_patch,
    binary_json_patch,
    json_patch_operations,
)

RESOURCE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "component": [{"code": {"text": "a"}}, {"code": {"text": "b"}}],
}

# JSON values without null (a null removes a member in a merge patch).
values = st.recursive(
    st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.dictionaries(st.text("abcdef", min_size=1, max_size=4), values, max_size=4)


def resource_with(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "resourceType": "Observation", "id": "o1"}


@given(bodies, bodies)
def test_the_diff_of_two_resources_patches_one_into_the_other(a: Any, b: Any) -> None:
    before, after = resource_with(a), resource_with(b)
    operations = jsonpatch.make_patch(before, after).patch
    if operations:
        assert apply_json_patch(before, operations) == after


@given(bodies, bodies)
def test_merge_patch_is_idempotent_and_leaves_its_input(a: Any, b: Any) -> None:
    before = resource_with(a)
    kept = copy.deepcopy(before)
    once = apply_merge_patch(before, b)
    assert apply_merge_patch(once, b) == once
    assert before == kept


def test_json_patch_operations() -> None:
    operations = [{"op": "replace", "path": "/status", "value": "amended"}]
    patched = apply_json_patch(RESOURCE, operations)
    assert patched["status"] == "amended"
    assert RESOURCE["status"] == "final"
    removed = apply_json_patch(RESOURCE, [{"op": "remove", "path": "/component/0"}])
    assert removed["component"] == [{"code": {"text": "b"}}]


@pytest.mark.parametrize(
    ("operations", "code", "expression"),
    [
        ([{"op": "test", "path": "/status", "value": "x"}], "processing", ("Observation.status",)),
        ([{"op": "remove", "path": "/nothing"}], "processing", ("Observation.nothing",)),
        ([{"op": "replace", "path": "/id", "value": "o2"}], "processing", ("Observation.id",)),
        (
            [{"op": "move", "from": "/resourceType", "path": "/x"}],
            "processing",
            ("Observation.resourceType",),
        ),
        ([{"op": "add", "path": "", "value": {}}], "processing", ("Observation",)),
        ([{"op": "nope", "path": "/status"}], "invalid", ()),
    ],
)
def test_patches_that_cannot_apply(operations: Any, code: str, expression: tuple[str, ...]) -> None:
    with pytest.raises(InputRejected) as refused:
        apply_json_patch(RESOURCE, operations)
    [issue] = refused.value.issues
    assert issue.code == code
    assert issue.expression == expression


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "test", "path": "/status", "value": "amended"}],
        [{"op": "replace", "path": "/status/deeper", "value": 1}],
        [{"op": "remove", "path": "/component/0/code/text/x"}],
        [{"op": "copy", "from": "/component/7", "path": "/x"}],
    ],
)
def test_a_failed_patch_names_the_path_not_the_stored_content(operations: Any) -> None:
    """An update-only scope must not read the stored values through the error text."""
    with pytest.raises(InputRejected) as refused:
        apply_json_patch(RESOURCE, operations)
    [issue] = refused.value.issues
    assert operations[0]["path"] in issue.diagnostics
    for stored in ("final", "'a'", "<class", "{'code'"):
        assert stored not in issue.diagnostics


@pytest.mark.parametrize(
    "document", [{}, [], "x", [1], [{"op": "add"}], [{"path": "/a"}], [{"op": 1, "path": "/a"}]]
)
def test_what_is_not_a_json_patch(document: Any) -> None:
    with pytest.raises(InputRejected) as refused:
        json_patch_operations(document)
    assert refused.value.issues[0].code == "invalid"


def test_a_path_names_its_element_in_fhirpath() -> None:
    with pytest.raises(InputRejected) as refused:
        apply_json_patch(RESOURCE, [{"op": "replace", "path": "/id", "value": "x"}])
    assert refused.value.issues[0].expression == ("Observation.id",)


def test_merge_patch_removes_with_null_and_keeps_identity() -> None:
    merged = apply_merge_patch(RESOURCE, {"status": None, "note": [{"text": "n"}], "id": "o1"})
    assert "status" not in merged
    assert merged["note"] == [{"text": "n"}]
    with pytest.raises(InputRejected):
        apply_merge_patch(RESOURCE, {"id": "o2"})
    with pytest.raises(InputRejected):
        apply_merge_patch(RESOURCE, {"resourceType": "Patient"})


def binary(operations: Any, content_type: str = "application/json-patch+json") -> dict[str, Any]:
    return {
        "resourceType": "Binary",
        "contentType": content_type,
        "data": base64.b64encode(orjson.dumps(operations)).decode(),
    }


def test_the_binary_of_a_patch_entry() -> None:
    operations = [{"op": "replace", "path": "/status", "value": "amended"}]
    assert binary_json_patch(binary(operations)) == operations
    charset = binary(operations, "application/json-patch+json; charset=utf-8")
    assert binary_json_patch(charset) == operations


@pytest.mark.parametrize(
    ("resource", "code"),
    [
        (None, "not-supported"),
        ({"resourceType": "Parameters"}, "not-supported"),
        (binary([], "application/json"), "not-supported"),
        ({"resourceType": "Binary", "contentType": "application/json-patch+json"}, "required"),
        (
            {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "%"},
            "invalid",
        ),
        (binary({"op": "add"}), "invalid"),
    ],
)
def test_unusable_binaries(resource: Any, code: str) -> None:
    with pytest.raises(InputRejected) as refused:
        binary_json_patch(resource)
    assert refused.value.issues[0].code == code
