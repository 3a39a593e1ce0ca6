"""The Bundle rules (CONTRACT 3b): duplicate fullUrls, dangling urn:uuid references, a PUT naming
another id; the same refusals whether a Bundle comes over REST (bundle.bundle_entries), in memory
(parse.iter_input_resources: `$assess`, the CLI) or streamed from a bulk file (stream)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_app.fhir import samples
from fhir_app.fhir.bundle import assign_ids, bundle_entries
from fhir_app.fhir.inputs import InputRejected, JsonObject
from fhir_app.fhir.parse import iter_input_resources
from fhir_app.fhir.stream import iter_records, record_resources
from fhir_app.fhir.validation.bundle_rules import entry_issues, entry_shell_issues, shell_issues

U1, U2, U3 = (f"urn:uuid:3f2c9a4e-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))


def finding(obs_id: str | None = "o1", study: str | None = None) -> JsonObject:
    raw = samples.observation(obs_id or "x", "p1", "height_loss", 20, level="L2", effective="2024")
    if obs_id is None:
        del raw["id"]
    if study is not None:
        raw["derivedFrom"] = [{"reference": study}]
    return raw


def entry(resource: JsonObject, full_url: str | None, method: str = "POST", url: str = "") -> Any:
    out: dict[str, Any] = {"resource": resource}
    if full_url is not None:
        out["fullUrl"] = full_url
    if method:
        out["request"] = {"method": method, "url": url or resource["resourceType"]}
    return out


def bundle(kind: str, *entries: Any) -> JsonObject:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def faults(document: JsonObject) -> dict[int, list[tuple[str, tuple[str, ...]]]]:
    found = entry_issues(document["entry"], document["type"])
    return {i: [(issue.code, issue.expression) for issue in issues] for i, issues in found.items()}


def test_a_valid_transaction_has_no_faults() -> None:
    study = samples.imaging_study("s1", "p1", "CT", started="2024", uid="1.2")
    document = bundle(
        "transaction",
        entry(study, U1, "PUT", "ImagingStudy/s1"),
        entry(finding(None, U1), U2),
        entry(finding("o3"), None, "PUT", "Observation?identifier=x|1"),  # conditional: no id
    )
    assert faults(document) == {}


def test_duplicate_full_urls_name_every_entry_sharing_it() -> None:
    document = bundle(
        "transaction", entry(finding(), U1), entry(finding(), U2), entry(finding(), U1)
    )
    assert faults(document) == {
        0: [("invalid", ("Bundle.entry[0].fullUrl",))],
        2: [("invalid", ("Bundle.entry[2].fullUrl",))],
    }


def versioned(version: str) -> JsonObject:
    return {**finding(), "meta": {"versionId": version}}


@pytest.mark.parametrize(
    ("kind", "versions", "refused"),
    [
        ("collection", ("1", "2"), False),  # bdl-7: versions of one resource
        ("collection", ("1", "1"), True),
        ("searchset", ("1", None), True),
        ("transaction", ("1", "2"), True),  # two writes to one fullUrl
        ("batch", ("1", "2"), True),
    ],
)
def test_versions_may_share_a_full_url_outside_writes(
    kind: str, versions: tuple[str | None, ...], refused: bool
) -> None:
    resources = [versioned(v) if v else finding() for v in versions]
    document = bundle(kind, *(entry(r, U1, "") for r in resources))
    assert bool(faults(document)) is refused


def test_a_dangling_urn_uuid_reference() -> None:
    referring = finding("o2", U3)
    referring["extension"] = [{"url": "http://x.org/e", "valueReference": {"reference": U3}}]
    document = bundle("transaction", entry(finding(), U1), entry(referring, U2))
    assert faults(document) == {
        1: [
            ("invalid", ("Bundle.entry[1].resource.derivedFrom[0].reference",)),
            ("invalid", ("Bundle.entry[1].resource.extension[0].valueReference.reference",)),
        ]
    }


def test_other_references_are_not_judged() -> None:
    document = bundle(
        "transaction",
        entry(finding("o1", "ImagingStudy/elsewhere"), U1),
        entry(finding("o2", "http://other.example/fhir/ImagingStudy/1"), U2),
        entry(finding("o3", "urn:oid:1.2.3"), U3),
    )
    assert faults(document) == {}


def test_a_put_whose_url_names_another_id() -> None:
    document = bundle("batch", entry(finding("o1"), U1, "PUT", "Observation/o2"))
    [(code, expression)] = faults(document)[0]
    assert (code, expression) == ("invalid", ("Bundle.entry[0].resource.id",))


def test_a_put_without_id_or_with_the_same_id() -> None:
    document = bundle(
        "batch",
        entry(finding(None), U1, "PUT", "Observation/o1"),
        entry(finding("o2"), U2, "PUT", "Observation/o2"),
        entry(finding("o3"), U3, "POST", "Observation"),  # a create gets a new id anyway
    )
    assert faults(document) == {}


# --- REST: entry problems, and assign_ids renames nothing ----------------------------------------


def test_rest_entries_carry_the_faults_as_problems() -> None:
    document = bundle(
        "batch",
        entry(finding("o1"), U1, "PUT", "Observation/other"),
        entry(finding("o2"), U2, "PUT", "Observation/o2"),
    )
    entries = bundle_entries(document)
    assert [len(e.problems) for e in entries] == [1, 0]
    assign_ids(entries, lambda: "new")
    assert entries[0].resource is not None
    assert entries[0].resource["id"] == "o1"  # refused, not renamed to `other`


# --- files: in memory and streamed, the same refusals -------------------------------------------


def dangling(kind: str) -> JsonObject:
    return bundle(kind, entry(finding("o1"), U1), entry(finding("o2", U3), U2))


def labelled(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [
        (label, "rejected" if isinstance(item, InputRejected) else item["id"])
        for label, item in items
    ]


def streamed(path: Path) -> list[tuple[str, Any]]:
    return [
        item
        for record in iter_records(path)
        for item in record_resources(record.kind, record.label, record.data)
    ]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("transaction", [("Bundle.entry[0]", "rejected"), ("Bundle.entry[1]", "rejected")]),
        ("collection", [("Bundle.entry[0]", "rejected"), ("Bundle.entry[1]", "rejected")]),
        ("batch", [("Bundle.entry[0]", "o1"), ("Bundle.entry[1]", "rejected")]),
    ],
)
def test_a_file_bundle_with_a_fault(tmp_path: Path, kind: str, expected: list[Any]) -> None:
    data = orjson.dumps(dangling(kind))
    in_memory = list(iter_input_resources(data, filename_hint="b.json"))
    assert labelled(in_memory) == expected
    path = tmp_path / "b.json"
    path.write_bytes(data)
    assert labelled(streamed(path)) == expected
    rejection = in_memory[1][1]
    assert isinstance(rejection, InputRejected)
    assert rejection.issues[0].expression == ("Bundle.entry[1].resource.derivedFrom[0].reference",)
    if kind != "batch":
        # The entry that breaks nothing is refused with the Bundle, naming the faulty entry.
        along = in_memory[0][1]
        assert isinstance(along, InputRejected)
        assert along.issues[0].expression == ("Bundle.entry[0]",)
        assert "because of Bundle.entry[1]" in along.issues[0].diagnostics
    streamed_rejection = streamed(path)[1][1]
    assert isinstance(streamed_rejection, InputRejected)
    # ijson's paths carry no array index: the FHIRPath then names every item (a transaction is
    # read whole, as in memory).
    assert streamed_rejection.issues[0].expression == (
        "Bundle.entry[1].resource.derivedFrom[0].reference"
        if kind == "transaction"
        else "Bundle.entry[1].resource.derivedFrom.reference",
    )


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_file_bundle_with_duplicates_and_a_put_mismatch(tmp_path: Path, kind: str) -> None:
    document = bundle(
        kind,
        entry(finding("o1"), U1),
        entry(finding("o2"), U1),
        entry(finding("o3"), U2, "PUT", "Observation/o4"),
        entry(finding("o5"), U3),
    )
    data = orjson.dumps(document)
    path = tmp_path / "b.json"
    path.write_bytes(data)
    in_memory = list(iter_input_resources(data, filename_hint="b.json"))
    assert labelled(in_memory) == labelled(streamed(path))
    rejected_entries = [label for label, item in labelled(in_memory) if item == "rejected"]
    if kind == "batch":
        assert rejected_entries == ["Bundle.entry[0]", "Bundle.entry[1]", "Bundle.entry[2]"]
    else:
        assert len(rejected_entries) == 4

    def issues(items: list[tuple[str, Any]]) -> set[Any]:
        return {
            (i.code, i.expression)
            for _, item in items
            if isinstance(item, InputRejected)
            for i in item.issues
        }

    assert issues(in_memory) == issues(streamed(path))


@pytest.mark.parametrize("kind", [None, 7, ["transaction"], {"a": 1}])
def test_a_bundle_type_of_any_shape_is_no_crash(kind: Any) -> None:
    document = {"resourceType": "Bundle", "type": kind, "entry": [entry(finding(), U1)] * 2}
    assert set(entry_issues(document["entry"], kind)) == {0, 1}


# --- the Bundle itself: R4 JSON outside the entries' resources -----------------------------------


def test_shell_issues_of_the_bundle_and_of_each_entry() -> None:
    document = bundle(
        "transaction",
        {**entry(finding("o1"), U1), "fullUrl": 7},
        entry(finding("o2"), U2, "POST", "Observation") | {"search": {}},
        {"request": {"method": "DELETE", "url": "Observation/x", "ifMatch": None}},
        {"resource": None},
    )
    document["timestamp"] = None
    whole, by_entry = shell_issues(document)
    assert [(i.code, i.expression) for i in whole] == [("structure", ("Bundle.timestamp",))]
    assert {i: [x.expression for x in issues] for i, issues in by_entry.items()} == {
        0: [("Bundle.entry[0].fullUrl",)],
        1: [("Bundle.entry[1].search",)],
        2: [("Bundle.entry[2].request.ifMatch",)],
        3: [("Bundle.entry[3].resource",)],
    }
    assert [i.expression for i in entry_shell_issues(document["entry"][2], 9)] == [
        ("Bundle.entry[9].request.ifMatch",)
    ]


def test_shell_leaves_missing_elements_and_resources_to_others() -> None:
    document = {"resourceType": "Bundle", "entry": [{"resource": {**finding(), "issued": None}}]}
    document["entry"].append({"request": {"method": "POST"}})  # no url: creates the type
    assert shell_issues(document) == ([], {})


def test_rest_entries_carry_shell_problems_and_the_bundle_is_refused() -> None:
    document = bundle("batch", entry(finding("o1"), U1), {**entry(finding("o2"), U2), "fullUrl": 7})
    assert [len(e.problems) for e in bundle_entries(document)] == [0, 1]
    with pytest.raises(InputRejected) as caught:
        bundle_entries({**document, "meta": {}})
    assert caught.value.issues[0].expression == ("Bundle.meta",)


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_file_bundle_shell_faults(tmp_path: Path, kind: str) -> None:
    document = bundle(kind, entry(finding("o1"), U1), {**entry(finding("o2"), U2), "fullUrl": 7})
    data = orjson.dumps(document)
    path = tmp_path / "b.json"
    path.write_bytes(data)
    expected = [("Bundle.entry[0]", "o1"), ("Bundle.entry[1]", "rejected")]
    assert labelled(list(iter_input_resources(data, filename_hint="b.json"))) == expected
    assert labelled(streamed(path)) == expected
    whole = orjson.dumps({**document, "timestamp": None})
    assert {item for _, item in labelled(list(iter_input_resources(whole)))} == {"rejected"}
