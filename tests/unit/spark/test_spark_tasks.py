"""The Spark path's executor work (fhir_app.spark.tasks) against the single-machine path's own
functions: same records from any cut of a file, same ids, same versions. No Spark needed."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_app.bulk import check_chunk, content_id
from fhir_app.fhir import samples
from fhir_app.fhir.stream import RecordKind, iter_records
from fhir_app.spark.tasks import (
    Accepted,
    Refused,
    Split,
    check_records,
    check_split,
    content_digest,
    count_newlines,
    current_input,
    ndjson_splits,
    split_records,
)
from fhir_app.spark.tasks import content_id as spark_content_id
from fhir_app.store import content_hash

NOW = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


def _splits(path: Path, split_bytes: int) -> list[Split]:
    """The splits of one NDJSON file with their newline counts, as the driver makes them."""
    splits, before = [], 0
    for start, end in ndjson_splits(path, split_bytes):
        splits.append(Split(0, str(path), path.name, start, end, before))
        before += count_newlines(str(path), start, end)
    return splits


def _records(path: Path, split_bytes: int) -> list[tuple[int, str, RecordKind, Any]]:
    return [record for split in _splits(path, split_bytes) for record in split_records(split)]


def _stream_records(path: Path) -> list[tuple[int, str, RecordKind, Any]]:
    return [(r.index, r.label, r.kind, r.data) for r in iter_records(path)]


LINE = st.one_of(
    st.just(b""),
    st.just(b"   "),
    st.just(b'{"resourceType":"Patient","id":"p"}'),
    st.just(b'{"resourceType":"Observation"}\r'),
    st.just(b"not json"),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(LINE, min_size=2, max_size=25),
    bom=st.booleans(),
    final_newline=st.booleans(),
    split_bytes=st.integers(min_value=1, max_value=120),
)
def test_any_cut_of_a_file_gives_the_records_of_the_stream_reader(
    lines: list[bytes], bom: bool, final_newline: bool, split_bytes: int
) -> None:
    """Byte ranges of any size, wherever they fall (inside a line, on a newline, on a CR),
    give the records, line numbers and labels of fhir.stream, each once."""
    # A resource on the first line: the stream reader takes the file for NDJSON by its content.
    data = b"\n".join([b'{"resourceType":"Patient","id":"first"}', *lines])
    data = (b"\xef\xbb\xbf" if bom else b"") + data + (b"\n" if final_newline else b"")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.ndjson"
        path.write_bytes(data)
        assert _records(path, split_bytes) == _stream_records(path)


def test_an_empty_file_has_no_splits(tmp_path: Path) -> None:
    path = tmp_path / "empty.ndjson"
    path.write_bytes(b"")
    assert ndjson_splits(path, 10) == []


def test_a_document_is_one_split_read_by_the_stream_reader() -> None:
    bundle = Path(__file__).resolve().parents[3] / "examples" / "patient-01-stable-blastic.json"
    split = Split(0, str(bundle), bundle.name, 0, bundle.stat().st_size, -1)
    assert list(split_records(split)) == _stream_records(bundle)


def test_checking_equals_the_single_paths_check_chunk(tmp_path: Path) -> None:
    """Accepted and refused alike, with the same labels and OperationOutcomes."""
    good = samples.observation(
        "o1", "p1", "height_loss", 20, level="T7", effective="2025-03-01T10:00:00Z"
    )
    nameless = {k: v for k, v in good.items() if k != "id"}
    lines = [
        orjson.dumps(good),
        b"{broken",
        orjson.dumps({"resourceType": "Observation", "status": "bogus"}),
        orjson.dumps(nameless),
        orjson.dumps(
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": good}]}
        ),
        # A transaction is all or nothing on both paths: its good entry is refused with the bad.
        orjson.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"resource": good, "request": {"method": "PUT", "url": "Observation/o1"}},
                    {
                        "resource": {"resourceType": "Observation", "status": "bogus"},
                        "request": {"method": "POST", "url": "Observation"},
                    },
                ],
            }
        ),
    ]
    path = tmp_path / "in.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    from fhir_app.bulk import _IngestTask

    records = _stream_records(path)
    single = check_chunk(_IngestTask(0, path.name, records, 0, 0)).items
    spark = list(check_split(_splits(path, 1 << 20)[0], NOW))
    assert [type(item) for item in spark] == [
        *(Accepted, Refused, Refused, Accepted, Accepted),
        *(Refused, Refused),
    ]
    along = spark[-2]
    assert isinstance(along, Refused)
    assert "refused because of" in orjson.dumps(along.outcome).decode()
    assert len(single) == len(spark)
    for one, other in zip(single, spark, strict=True):
        assert (one.record_index, one.item_index) == other.order[1:]
        if isinstance(other, Refused):
            assert one.outcome == other.outcome
        else:
            assert isinstance(other, Accepted)
            assert (one.resource_type, one.resource_id) == (
                other.resource_type,
                other.resource_id,
            )
            assert one.patient_id == other.patient
            assert one.content_hash == other.digest
            assert orjson.loads(one.text) == orjson.loads(other.text)


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "id": "p", "gender": "female"},
        {"resourceType": "Patient", "gender": "female", "meta": {"versionId": "3"}},
        {"resourceType": "Patient", "meta": {"profile": ["x"], "lastUpdated": "2020"}},
        {"resourceType": "Observation", "status": "final", "valueInteger": 5},
    ],
)
def test_ids_and_digests_are_the_single_paths(resource: dict[str, Any]) -> None:
    assert spark_content_id(resource) == content_id(resource)
    assert content_digest(resource) == content_hash(resource)


def _sent(order: int, text: str, patient: str = "p") -> Accepted:
    return Accepted((0, order, 0), "Observation", "o", patient, text, text)


@pytest.mark.parametrize(
    ("contents", "version"),
    [
        (["a"], 1),
        (["a", "a"], 1),  # the same again: no new version
        (["a", "b"], 2),
        (["a", "b", "a"], 3),  # back to the first content is still a change
        (["a", "a", "b", "b"], 2),
    ],
)
def test_the_current_input_is_the_last_at_the_stores_version(
    contents: list[str], version: int
) -> None:
    occurrences = [_sent(i, text) for i, text in enumerate(contents)]
    current, found = current_input(reversed(occurrences))  # order is the inputs', not the list's
    assert current is occurrences[-1]
    assert found == version


def test_check_records_labels_with_the_file_name() -> None:
    records = [(4, "line 5", RecordKind.LINE, b"{")]
    (refused,) = check_records(2, "feed.ndjson", records, NOW)
    assert isinstance(refused, Refused)
    assert refused.order == (2, 4, 0)
    assert refused.outcome["issue"][0]["diagnostics"].startswith("feed.ndjson: line 5: ")
