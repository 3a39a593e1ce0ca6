"""Reading input files and validating input resources against FHIR R4."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_app.fhir import codes, samples
from fhir_app.fhir.inbound import map_observation
from fhir_app.fhir.inputs import InputRejected, Issue, JsonObject
from fhir_app.fhir.parse import iter_input_resources, load_json, validate_resource

RECEIVED = datetime(2025, 1, 2, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def observation(obs_id: str = "o1", **changes: Any) -> JsonObject:
    raw = samples.observation(
        obs_id, "p1", "height_loss", 20, level="L2", effective="2024-05-06T07:08:09Z"
    )
    raw.update(changes)
    return raw


def issues_of(raw: Any) -> list[Issue]:
    with pytest.raises(InputRejected) as caught:
        validate_resource(raw)
    return caught.value.issues


def only_issue(raw: Any) -> Issue:
    issues = issues_of(raw)
    assert len(issues) == 1, issues
    return issues[0]


# --- load_json ---------------------------------------------------------------------------------


def test_malformed_json() -> None:
    with pytest.raises(InputRejected) as caught:
        load_json(b'{"resourceType": "Observation", "status": }')
    [issue] = caught.value.issues
    assert issue.severity == "error"
    assert issue.code == "invalid"
    assert issue.expression == ()
    assert "Malformed JSON" in issue.diagnostics
    assert "line 1 column 43" in issue.diagnostics


@pytest.mark.parametrize("data", [b"", b"   ", "{", b"\xff\xfe"])
def test_empty_or_undecodable_documents_are_malformed(data: bytes | str) -> None:
    with pytest.raises(InputRejected) as caught:
        load_json(data)
    assert caught.value.issues[0].code == "invalid"


def test_byte_order_mark_and_str_are_read() -> None:
    assert load_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert load_json('\ufeff{"a": 1}') == {"a": 1}


# --- iter_input_resources ------------------------------------------------------------------------


def items(data: bytes, hint: str | None = None) -> list[tuple[str, JsonObject | InputRejected]]:
    return list(iter_input_resources(data, filename_hint=hint))


def resources(data: bytes) -> list[JsonObject]:
    """The resources of a document that must all be taken in."""
    got = [item for _, item in items(data)]
    assert all(isinstance(r, dict) for r in got), got
    return [r for r in got if isinstance(r, dict)]


def test_single_resource_document() -> None:
    raw = observation()
    assert items(orjson.dumps(raw)) == [("document", raw)]


def test_bundle_entries_are_labelled_by_index() -> None:
    bundle = samples.transaction([observation("a"), observation("b")])
    bundle["entry"].append({"request": {"method": "DELETE", "url": "Observation/c"}})
    bundle["entry"].append({"fullUrl": "urn:uuid:x"})
    bundle["entry"].append("nonsense")
    got = items(orjson.dumps(bundle, option=orjson.OPT_INDENT_2), "in.json")
    assert [label for label, _ in got] == [f"Bundle.entry[{i}]" for i in range(5)]
    assert [r["id"] for _, r in got[:2] if isinstance(r, dict)] == ["a", "b"]
    kinds = [
        (r.issues[0].code, r.issues[0].expression) for _, r in got[2:] if not isinstance(r, dict)
    ]
    assert kinds == [
        ("not-supported", ("Bundle.entry[2].request",)),
        ("required", ("Bundle.entry[3].resource",)),
        ("structure", ("Bundle.entry[4]",)),
    ]


def test_bundle_references_by_full_url_become_type_and_id() -> None:
    patient_url = "urn:uuid:0c3d5e2a-8f1b-4c6d-9e7f-123456789abc"
    study = samples.imaging_study("s9", "x", "CT", started="2024", uid="1.2.3")
    obs = observation("o1", subject={"reference": patient_url})
    obs["derivedFrom"] = [{"reference": "urn:uuid:study-entry"}]
    patient = samples.patient("p1", "Doe", "Jane", "1950", "female")
    del patient["id"]  # created by the Bundle: its id comes from the uuid
    study["subject"] = {"reference": patient_url}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": patient_url, "resource": patient, "request": {"method": "POST"}},
            {"fullUrl": "urn:uuid:study-entry", "resource": study},
            {"fullUrl": "urn:uuid:obs", "resource": obs},
        ],
    }
    got = resources(orjson.dumps(bundle))
    uuid = patient_url.removeprefix("urn:uuid:")
    assert got[0] == patient | {"id": uuid}
    assert got[1]["subject"] == {"reference": f"Patient/{uuid}"}
    resolved = got[2]
    assert resolved["subject"] == {"reference": f"Patient/{uuid}"}
    assert resolved["derivedFrom"] == [{"reference": "ImagingStudy/s9"}]
    validate_resource(resolved)
    mapped = map_observation(resolved, resource_id="o1", version=1, received_at=RECEIVED)
    assert (mapped.patient, mapped.study_ids) == (uuid, ("s9",))


def test_put_url_gives_the_id_of_an_entry_without_one() -> None:
    patient = samples.patient("p1", "Doe", "Jane", "1950", "female")
    del patient["id"]
    obs = observation("o1", subject={"reference": "http://ehr.example.org/Patient/abc"})
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "http://ehr.example.org/Patient/abc",
                "resource": patient,
                "request": {"method": "PUT", "url": "Patient/p7"},
            },
            {"resource": obs},
        ],
    }
    assert resources(orjson.dumps(bundle))[1]["subject"] == {"reference": "Patient/p7"}


def test_malformed_document_is_one_rejection() -> None:
    pretty = orjson.dumps(observation(), option=orjson.OPT_INDENT_2)
    [(label, rejection)] = items(pretty[:-10], "in.json")
    assert label == "document"
    assert isinstance(rejection, InputRejected)
    assert rejection.issues[0].code == "invalid"


def test_json_array_is_not_a_resource() -> None:
    [(_, rejection)] = items(b"[1, 2]")
    assert isinstance(rejection, InputRejected)
    assert rejection.issues[0].code == "structure"


def ndjson_with_one_bad_line() -> bytes:
    lines = [orjson.dumps(observation(f"o{i}")) for i in range(1, 7)]
    lines.insert(3, b'{"resourceType": "Observation", "status": ')  # line 4 is cut short
    lines.insert(5, b"")  # blank lines are passed over but counted
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("hint", ["export.ndjson", "Observation.NDJSON", "feed.jsonl", None])
def test_ndjson_with_one_bad_line(hint: str | None) -> None:
    got = items(ndjson_with_one_bad_line(), hint)
    assert [label for label, _ in got] == [f"line {n}" for n in (1, 2, 3, 4, 5, 7, 8)]
    bad = [(label, r) for label, r in got if isinstance(r, InputRejected)]
    assert [label for label, _ in bad] == ["line 4"]
    assert bad[0][1].issues[0].code == "invalid"
    good = [r["id"] for _, r in got if isinstance(r, dict)]
    assert good == ["o1", "o2", "o3", "o4", "o5", "o6"]


def test_ndjson_whose_first_line_is_bad_is_still_read_as_ndjson() -> None:
    data = b"not json\n" + orjson.dumps(observation("o1")) + b"\n"
    got = items(data)
    assert [label for label, _ in got] == ["line 1", "line 2"]
    assert isinstance(got[0][1], InputRejected)
    assert isinstance(got[1][1], dict)


def test_bundle_on_an_ndjson_line_is_expanded() -> None:
    data = (
        orjson.dumps(observation("o1"))
        + b"\n"
        + orjson.dumps(samples.transaction([observation("o2")]))
    )
    got = items(data, "x.ndjson")
    assert [label for label, _ in got] == ["line 1", "line 2 Bundle.entry[0]"]


# --- validate_resource: what FHIR R4 refuses ------------------------------------------------------


def test_valid_observation_study_and_patient() -> None:
    validate_resource(observation())
    validate_resource(samples.imaging_study("s1", "p1", "MR", started="2024", uid="1.2.3"))
    validate_resource(samples.patient("p1", "Doe", "Jane", "1950-02-03", "female"))


@pytest.mark.parametrize("resource_type", ["Encounter", "Bundle", "DiagnosticReport", "Foo"])
def test_wrong_resource_type(resource_type: str) -> None:
    issue = only_issue({"resourceType": resource_type, "id": "x"})
    assert (issue.severity, issue.code, issue.expression) == (
        "error",
        "not-supported",
        (resource_type,),
    )
    assert "Observation, Condition, ImagingStudy, Patient" in issue.diagnostics


def test_missing_resource_type() -> None:
    issue = only_issue({"id": "x", "status": "final"})
    assert (issue.code, issue.expression) == ("required", ())


def test_not_an_object() -> None:
    assert only_issue(["Observation"]).code == "structure"


def test_missing_status() -> None:
    raw = observation()
    del raw["status"]
    issue = only_issue(raw)
    assert (issue.severity, issue.code, issue.expression) == (
        "error",
        "required",
        ("Observation.status",),
    )


@pytest.mark.parametrize(
    ("resource", "element"),
    [
        (observation(status="done"), "Observation.status"),
        (
            samples.imaging_study("s1", "p1", "CT", started="2024", uid="1.2")
            | {"status": "final"},
            "ImagingStudy.status",
        ),
        (samples.patient("p1", "D", "J", "1950", "f"), "Patient.gender"),
    ],
)
def test_code_outside_a_required_value_set(resource: JsonObject, element: str) -> None:
    issue = only_issue(resource)
    assert (issue.severity, issue.code, issue.expression) == ("error", "code-invalid", (element,))


def test_malformed_decimal() -> None:
    raw = observation()
    raw["valueQuantity"]["value"] = "twenty"
    issue = only_issue(raw)
    # A string where R4 JSON has a number is the wrong JSON type: never converted (CONTRACT 3b).
    assert (issue.code, issue.expression) == ("structure", ("Observation.valueQuantity.value",))
    assert '"twenty"' in issue.diagnostics


def test_error_inside_a_component_names_its_index() -> None:
    raw = samples.lesion_panel(
        "o1", "p1", "L2", [("appearance", "lytic"), ("height_loss", 10)], effective="2024"
    )
    raw["component"][1]["valueQuantity"]["value"] = "ten"
    issue = only_issue(raw)
    assert issue.expression == ("Observation.component[1].valueQuantity.value",)


def test_impossible_date() -> None:
    issue = only_issue(observation(effectiveDateTime="2024-02-30"))
    assert (issue.code, issue.expression) == ("invalid", ("Observation.effectiveDateTime",))


def test_unknown_element() -> None:
    issue = only_issue(observation(colour="blue"))
    assert (issue.code, issue.expression) == ("structure", ("Observation.colour",))


def test_wrong_json_shape() -> None:
    raw = observation(bodySite=[{"text": "L2"}])
    issue = only_issue(raw)
    assert (issue.code, issue.expression) == ("structure", ("Observation.bodySite",))


def test_two_values() -> None:
    raw = observation(valueString="20 %")
    issue = only_issue(raw)
    assert (issue.code, issue.expression) == ("structure", ("Observation.value[x]",))


def test_two_values_in_a_component() -> None:
    raw = samples.lesion_panel("o1", "p1", "L2", [("contrast", True)], effective="2024")
    raw["component"][0]["valueString"] = "yes"
    issue = only_issue(raw)
    assert issue.expression == ("Observation.component[0].value[x]",)


def test_unknown_contained_resource_type() -> None:
    raw = observation(contained=[{"resourceType": "Spaceship", "id": "x"}])
    assert only_issue(raw).code == "structure"


def test_every_problem_is_reported_at_once() -> None:
    raw = observation(status="done", id="bad id!")
    raw["valueQuantity"]["value"] = "x"
    expressions = {i.expression[0] for i in issues_of(raw)}
    assert expressions == {
        "Observation.id",
        "Observation.valueQuantity.value",
        "Observation.status",
    }


# --- validate_resource: what real feeds send and must pass ---------------------------------------


def test_extensions_meta_text_contained_are_accepted() -> None:
    raw = observation(
        meta={"versionId": "7", "lastUpdated": "2024-05-06T09:00:00.1Z", "source": "#a"},
        text={"status": "extensions", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
        extension=[
            {"url": "http://example.org/a", "valueString": "x", "_valueString": {"id": "e"}},
            {"url": "http://example.org/b", "extension": [{"url": "c", "valueInteger": 1}]},
        ],
        _status={"extension": [{"url": "http://example.org/d", "valueBoolean": True}]},
        contained=[{"resourceType": "Device", "id": "dev1"}],
        device={"reference": "#dev1"},
        interpretation=[{"coding": [{"system": "urn:ehr:x", "code": "unmapped-code"}]}],
    )
    validate_resource(raw)


def test_fhir_r4_imaging_study_example_passes() -> None:
    # FHIR R4 imagingstudy-example.json (trimmed to the elements we take in, values as published).
    study = {
        "resourceType": "ImagingStudy",
        "id": "example",
        "identifier": [
            {
                "system": "urn:dicom:uid",
                "value": "urn:oid:2.16.124.113543.6003.1154777499.30246.19789.3503430045",
            }
        ],
        "status": "available",
        "subject": {"reference": "Patient/dicom"},
        "started": "2011-01-01T11:01:20+03:00",
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "series": [
            {
                "uid": "2.16.124.113543.6003.2588828330.45298.17418.2723805630",
                "number": 3,
                "modality": {"system": codes.DCM, "code": "CT"},
                "numberOfInstances": 1,
                "bodySite": {"system": codes.SNOMED, "code": "67734004", "display": "Upper Trunk"},
            }
        ],
    }
    validate_resource(copy.deepcopy(study))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_every_example_bundle_entry_validates(path: Path) -> None:
    got = items(path.read_bytes(), path.name)
    assert got
    for label, resource in got:
        assert isinstance(resource, dict), (label, resource)
        validate_resource(resource)
