"""Streaming input files: the same resources and labels as parse.py, in bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.population import write_population_file

from fhir_app.fhir import samples
from fhir_app.fhir.inputs import InputRejected, JsonObject
from fhir_app.fhir.parse import iter_input_resources
from fhir_app.fhir.stream import (
    InputFormat,
    Record,
    detect_format,
    iter_records,
    record_resources,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
Item = tuple[str, JsonObject | InputRejected]


def observation(obs_id: str, **changes: Any) -> JsonObject:
    raw = samples.observation(
        obs_id, "p1", "height_loss", 20, level="L2", effective="2024-05-06T07:08:09Z"
    )
    raw.update(changes)
    return raw


def streamed(path: Path, start: int = 0) -> list[Item]:
    """Every resource of a file as the bulk path reads it (records, then their resources)."""
    return [
        item
        for record in iter_records(path, start=start)
        for item in record_resources(record.kind, record.label, record.data)
    ]


def in_memory(path: Path) -> list[Item]:
    return list(iter_input_resources(path.read_bytes(), filename_hint=path.name))


def comparable(items: list[Item]) -> list[tuple[str, Any]]:
    """Labels with the resource, or the issues of a rejection."""
    return [
        (label, item.issues if isinstance(item, InputRejected) else item) for label, item in items
    ]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- the same as parse.py ------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_example_bundles_read_as_parse_reads_them(example: Path) -> None:
    assert comparable(streamed(example)) == comparable(in_memory(example))


@pytest.mark.parametrize("name", ["feed.ndjson", "feed.jsonl", "feed.txt"])
def test_ndjson_with_bad_lines_blank_lines_and_a_bundle_line(tmp_path: Path, name: str) -> None:
    lines = [orjson.dumps(observation(f"o{i}")) for i in range(1, 6)]
    lines.insert(2, b'{"resourceType": "Observation", "status": ')  # line 3 is cut short
    lines.insert(4, b"")  # blank lines are counted, never yielded
    lines.insert(5, b"[1, 2]")  # JSON, but no resource
    lines.append(orjson.dumps(samples.transaction([observation("o8"), observation("o9")])))
    path = write(tmp_path, name, b"\n".join(lines) + b"\n")
    got = streamed(path)
    assert comparable(got) == comparable(in_memory(path))
    assert [label for label, _ in got] == [
        "line 1",
        "line 2",
        "line 3",
        "line 4",
        "line 6",
        "line 7",
        "line 8",
        "line 9 Bundle.entry[0]",
        "line 9 Bundle.entry[1]",
    ]


def test_malformed_document_is_one_rejection_and_nothing_else(tmp_path: Path) -> None:
    bundle = samples.transaction([observation("a"), observation("b")])
    data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2)
    path = write(tmp_path, "cut.json", data[:-40])
    [(label, rejection)] = streamed(path)
    assert label == "document"
    assert isinstance(rejection, InputRejected)
    assert rejection.issues[0].code == "invalid"


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**30])
def test_an_integer_beyond_64_bits_is_one_rejection(tmp_path: Path, number: int) -> None:
    # ijson's reading of the entries fails on it; the first pass refuses it instead.
    resource = observation("a")
    text = orjson.dumps(samples.transaction([resource])).replace(b'"a"', str(number).encode(), 1)
    [(label, rejection)] = streamed(write(tmp_path, "big.json", text))
    assert label == "document"
    assert isinstance(rejection, InputRejected)
    assert "64-bit" in rejection.issues[0].diagnostics


@pytest.mark.parametrize(
    ("document", "code"),
    [
        (b"[1, 2]", "structure"),
        (b'"text"', "structure"),
        (b'{"resourceType": "Bundle", "entry": {"resource": {}}}', "structure"),
    ],
)
def test_documents_that_are_no_resource_or_bundle(
    tmp_path: Path, document: bytes, code: str
) -> None:
    path = write(tmp_path, "doc.json", document)
    [(label, rejection)] = streamed(path)
    assert label == "document"
    assert isinstance(rejection, InputRejected)
    assert rejection.issues[0].code == code
    assert comparable(streamed(path)) == comparable(in_memory(path))


def test_entries_without_resource_or_not_objects(tmp_path: Path) -> None:
    bundle = samples.transaction([observation("a")])
    bundle["entry"] += [
        {"request": {"method": "DELETE", "url": "Observation/c"}},
        {"fullUrl": "urn:uuid:x"},
        "nonsense",
        [1],
        {"resource": "text"},
    ]
    path = write(tmp_path, "b.json", orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    got = streamed(path)
    assert comparable(got) == comparable(in_memory(path))
    assert [label for label, _ in got] == [f"Bundle.entry[{i}]" for i in range(6)]


def test_single_resource_document_and_byte_order_mark(tmp_path: Path) -> None:
    raw = observation("o1")
    path = write(
        tmp_path, "o.json", b"\xef\xbb\xbf" + orjson.dumps(raw, option=orjson.OPT_INDENT_2)
    )
    assert streamed(path) == [("document", raw)]
    bom_ndjson = b"\xef\xbb\xbf" + orjson.dumps(raw) + b"\n" + orjson.dumps(raw) + b"\n"
    assert [label for label, _ in streamed(write(tmp_path, "o.ndjson", bom_ndjson))] == [
        "line 1",
        "line 2",
    ]


# --- references, ids and formats -----------------------------------------------------------------


def test_references_to_full_urls_are_resolved_in_either_order(tmp_path: Path) -> None:
    patient_url = "urn:uuid:0c3d5e2a-8f1b-4c6d-9e7f-123456789abc"
    study = samples.imaging_study("s9", "x", "CT", started="2024", uid="1.2.3")
    study["subject"] = {"reference": patient_url}
    obs = observation("o1", subject={"reference": patient_url})
    obs["derivedFrom"] = [{"reference": "urn:uuid:study-entry"}]
    patient = samples.patient("p1", "Doe", "Jane", "1950", "female")
    del patient["id"]  # created by the Bundle: its id comes from the uuid
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        # The observation refers to entries that come after it: a first pass must index them.
        "entry": [
            {"fullUrl": "urn:uuid:obs", "resource": obs},
            {"fullUrl": "urn:uuid:study-entry", "resource": study},
            {"fullUrl": patient_url, "resource": patient, "request": {"method": "POST"}},
        ],
    }
    path = write(tmp_path, "refs.json", orjson.dumps(bundle))
    got = [item for _, item in streamed(path)]
    assert comparable(streamed(path)) == comparable(in_memory(path))
    uuid = patient_url.removeprefix("urn:uuid:")
    assert isinstance(got[0], dict)
    assert got[0]["subject"] == {"reference": f"Patient/{uuid}"}
    assert got[0]["derivedFrom"] == [{"reference": "ImagingStudy/s9"}]
    assert got[2] == patient | {"id": uuid}


def test_a_put_url_gives_its_id_to_the_resource_and_its_references(tmp_path: Path) -> None:
    patient = samples.patient("p1", "Doe", "Jane", "1950", "female")
    del patient["id"]
    obs = observation("o1", subject={"reference": "http://ehr.example.org/Patient/abc"})
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": obs},
            {
                "fullUrl": "http://ehr.example.org/Patient/abc",
                "resource": patient,
                "request": {"method": "PUT", "url": "Patient/p7"},
            },
        ],
    }
    got = [item for _, item in streamed(write(tmp_path, "put.json", orjson.dumps(bundle)))]
    assert isinstance(got[0], dict)
    assert isinstance(got[1], dict)
    assert got[0]["subject"] == {"reference": "Patient/p7"}
    assert got[1]["id"] == "p7"


def test_format_detection(tmp_path: Path) -> None:
    one = orjson.dumps(observation("o1"))
    assert detect_format(write(tmp_path, "a.ndjson", one)) is InputFormat.NDJSON
    assert detect_format(write(tmp_path, "b.json", one + b"\n")) is InputFormat.DOCUMENT
    assert detect_format(write(tmp_path, "c.json", one + b"\n" + one)) is InputFormat.NDJSON
    pretty = orjson.dumps(samples.transaction([observation("o1")]), option=orjson.OPT_INDENT_2)
    assert detect_format(write(tmp_path, "d.json", pretty)) is InputFormat.DOCUMENT


def test_resuming_at_a_record_skips_the_records_before(tmp_path: Path) -> None:
    lines = [orjson.dumps(observation(f"o{i}")) for i in range(10)]
    ndjson = write(tmp_path, "f.ndjson", b"\n".join(lines) + b"\n")
    # A collection: streamed entry by entry (a transaction is one record, read whole).
    collection = {**samples.transaction([orjson.loads(x) for x in lines]), "type": "collection"}
    bundle = write(tmp_path, "f.json", orjson.dumps(collection))
    for path, label in ((ndjson, "line 8"), (bundle, "Bundle.entry[7]")):
        records: list[Record] = list(iter_records(path, start=7))
        assert [r.index for r in records] == [7, 8, 9]
        assert records[0].label == label
        assert streamed(path, start=7) == streamed(path)[7:]
        assert records[-1].offset <= path.stat().st_size


# --- bounded memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "bundle"])
def test_reading_a_large_file_does_not_hold_it(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"population.{'ndjson' if fmt == 'ndjson' else 'json'}"
    write_population_file(path, resources=10_000, fmt=fmt)
    if fmt == "bundle":
        # A collection is streamed entry by entry; a transaction is all or nothing, one record.
        data = path.read_bytes()
        path.write_bytes(data.replace(b'"type":"transaction"', b'"type":"collection"', 1))
        del data
    size = path.stat().st_size
    assert size > 6_500_000
    tracemalloc.start()
    try:
        count = 0
        for record in iter_records(path):
            count += len(record_resources(record.kind, record.label, record.data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count >= 10_000
    # The file is never held: the peak is a fraction of it (file buffers, one record, the
    # buffered rows of the fullUrl index), and the same for a file ten times as large.
    assert peak < size / 2.5, (peak, size)
