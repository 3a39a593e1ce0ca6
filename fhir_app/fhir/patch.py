"""Applying a patch to a stored resource (FHIR R4 http.html#patch).

Two forms are read:
- JSON Patch (RFC 6902, `application/json-patch+json`): an array of operations, the form FHIR R4
  servers are asked to support;
- JSON Merge Patch (RFC 7386, `application/merge-patch+json`, or a JSON object sent as
  `application/json`): what fhirpy's `patch()` sends (a partial resource), so that client works.

The patched resource is returned as a new dict; the stored one is never changed. A patch that
cannot be applied (a bad operation, a failed `test`, a path that does not exist) is 422 as FHIR
R4 says for a patch that fails; one that is not a patch at all (not an array of operations) is
400; one that changes `resourceType` or `id` is 422, because a patch updates the resource it is
sent to.
"""

from __future__ import annotations

import base64
import binascii
import copy
from dataclasses import dataclass
from typing import Any, Final

import jsonpatch
import jsonpointer

from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.parse import load_json

JSON_PATCH: Final = "application/json-patch+json"
MERGE_PATCH: Final = "application/merge-patch+json"
# The elements a patch may not touch: they say which resource this is.
_IDENTITY: Final = ("resourceType", "id")


def _refused(code: str, text: str, expression: str = "") -> InputRejected:
    return InputRejected([Issue("error", code, text, (expression,) if expression else ())])


def _fhirpath(rtype: str, pointer: str) -> str:
    """`/component/0/code` -> `Observation.component[0].code`: where an issue is, in FHIRPath."""
    path = rtype
    for part in pointer.split("/")[1:]:
        token = part.replace("~1", "/").replace("~0", "~")
        path = f"{path}[{token}]" if token.isdigit() else f"{path}.{token}"
    return path


def json_patch_operations(document: Any) -> list[JsonObject]:
    """The operations of a JSON Patch document; InputRejected (`invalid`, 400) when it is not an
    array of objects each with an `op` and a `path` string."""
    if not isinstance(document, list) or not document:
        raise _refused("invalid", "a JSON Patch is a non-empty array of operations (RFC 6902)")
    for index, operation in enumerate(document):
        if (
            not isinstance(operation, dict)
            or not isinstance(operation.get("op"), str)
            or not isinstance(operation.get("path"), str)
        ):
            raise _refused(
                "invalid",
                f"JSON Patch operation {index} needs an `op` and a `path` (RFC 6902 section 4)",
            )
    return list(document)


def tests_stored(operations: list[JsonObject]) -> bool:
    """Whether a JSON Patch compares the stored resource with values the caller gives (`test`):
    its answer (applied, or 422) tells the caller what is stored, so it is a read."""
    return any(operation.get("op") == "test" for operation in operations)


@dataclass(frozen=True, slots=True)
class JsonPatch:
    """A JSON Patch as the change a PATCH makes to the current resource (callable)."""

    operations: list[JsonObject]

    def __call__(self, current: JsonObject) -> JsonObject:
        return apply_json_patch(current, self.operations)

    @property
    def reads(self) -> bool:
        """Whether applying it tells the caller something of the stored resource."""
        return tests_stored(self.operations)


def apply_json_patch(resource: JsonObject, operations: list[JsonObject]) -> JsonObject:
    """`resource` with the JSON Patch `operations` applied (a new dict).

    InputRejected: `invalid` (400) for an operation RFC 6902 does not define; `processing` (422)
    for one that cannot be applied here, and for a change of `resourceType` or `id`.
    """
    rtype = str(resource.get("resourceType", "Resource"))
    for operation in operations:
        touched = [operation["path"]]
        if isinstance(operation.get("from"), str) and operation["op"] == "move":
            touched.append(operation["from"])
        for pointer in touched:
            if pointer in ("", "/") or pointer.split("/")[1] in _IDENTITY:
                raise _refused(
                    "processing",
                    f"a patch may not change {pointer or 'the whole resource'}: it names the "
                    "resource the patch is sent to",
                    _fhirpath(rtype, pointer),
                )
    # One operation at a time, to name the one that fails. The messages of jsonpatch and
    # jsonpointer quote the stored values (and their Python types): the caller may have no
    # right to read them (an update-only scope), so they name the operation and path only.
    patched: Any = copy.deepcopy(resource)
    for index, operation in enumerate(operations):
        where = f"JSON Patch operation {index} ({operation['op']} {operation['path']})"
        try:
            patched = jsonpatch.JsonPatch([operation]).apply(patched, in_place=True)
        except jsonpatch.InvalidJsonPatch as exc:
            raise _refused("invalid", f"{where} is not a JSON Patch operation") from exc
        except jsonpatch.JsonPatchTestFailed as exc:
            raise _refused(
                "processing", f"{where}: the test failed", _fhirpath(rtype, operation["path"])
            ) from exc
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
            raise _refused(
                "processing",
                f"{where} cannot be applied: the path does not exist or does not fit",
                _fhirpath(rtype, operation["path"]),
            ) from exc
    if not isinstance(patched, dict):  # pragma: no cover - paths at the root are refused above
        raise _refused("processing", "the patched document is not a resource")
    return patched


def apply_merge_patch(resource: JsonObject, patch: JsonObject) -> JsonObject:
    """`resource` with the JSON Merge Patch `patch` applied (RFC 7386 section 2; a new dict).

    A `null` member removes the element. `resourceType` and `id` may be repeated unchanged (fhirpy
    sends them) but not changed (InputRejected, `processing`).
    """
    for key in _IDENTITY:
        if key in patch and patch[key] != resource.get(key):
            raise _refused(
                "processing",
                f"a patch may not change {key}: it names the resource the patch is sent to",
                f"{resource.get('resourceType', 'Resource')}.{key}",
            )
    merged = _merge(copy.deepcopy(resource), patch)
    assert isinstance(merged, dict)
    return merged


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def binary_json_patch(resource: JsonObject | None) -> list[JsonObject]:
    """The JSON Patch a PATCH entry of a transaction or batch carries: a Binary resource with
    `contentType` application/json-patch+json and the patch in `data` (base64), as FHIR R4
    http.html#patch describes for Bundles. InputRejected (`not-supported`, 400) for any other
    resource: a FHIRPath Patch (a Parameters resource) is not supported here."""
    if resource is None or resource.get("resourceType") != "Binary":
        kind = resource.get("resourceType") if resource is not None else "no resource"
        raise _refused(
            "not-supported",
            f"a PATCH entry carries its JSON Patch as a Binary ({JSON_PATCH}), not {kind}; "
            "FHIRPath Patch (Parameters) is not supported",
        )
    media = str(resource.get("contentType", "")).split(";")[0].strip().lower()
    if media != JSON_PATCH:
        raise _refused(
            "not-supported",
            f"the Binary of a PATCH entry must have contentType {JSON_PATCH}, not {media!r}",
            "Binary.contentType",
        )
    data = resource.get("data")
    if not isinstance(data, str):
        raise _refused("required", "the Binary of a PATCH entry needs data", "Binary.data")
    try:
        document = load_json(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, InputRejected) as exc:
        raise _refused(
            "invalid", "the Binary data is not a base64 JSON document", "Binary.data"
        ) from exc
    return json_patch_operations(document)
