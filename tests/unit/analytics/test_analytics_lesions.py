"""The lesion table: values for the examples, current versions, withdrawals, CSV and Parquet."""

from __future__ import annotations

import copy
import csv
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fhir_app.analytics.lesions import (
    COLUMN_NAMES,
    LESION_COLUMNS,
    LesionRow,
    arrow_schema,
    current_versions,
    fhir_moment,
    lesion_rows,
    output_kind,
    write_csv,
    write_parquet,
)
from fhir_app.domain.sins_answers import SinsComponent
from fhir_app.fhir import codes

Resources = list[dict[str, Any]]


def _by_key(rows: list[LesionRow]) -> dict[tuple[str, str], LesionRow]:
    return {(row.patient, row.level): row for row in rows}


def _find(resources: Resources, prefix: str, patient: str) -> dict[str, Any]:
    (found,) = [
        r
        for r in resources
        if r["id"].startswith(prefix) and r.get("subject", {}).get("reference") == patient
    ]
    return found


# --- schema --------------------------------------------------------------------------------


def test_the_row_has_exactly_the_documented_columns_in_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(LesionRow)) == COLUMN_NAMES
    assert len(set(COLUMN_NAMES)) == len(COLUMN_NAMES)
    assert arrow_schema().names == list(COLUMN_NAMES)
    assert all(column.description for column in LESION_COLUMNS)


def test_every_sins_component_has_an_answer_and_a_points_column() -> None:
    for component in SinsComponent:
        prefix = component.value.replace("-", "_")
        assert prefix in COLUMN_NAMES
        assert f"{prefix}_points" in COLUMN_NAMES


# --- values of the examples ----------------------------------------------------------------


def test_one_row_per_patient_and_level_of_the_examples(outputs: Resources) -> None:
    rows = lesion_rows(outputs)
    assert len(rows) == 21
    assert len(_by_key(rows)) == 21
    assert sorted({row.patient for row in rows}) == [f"p{n:02d}" for n in range(1, 18)]


# The sex of each example patient (examples/build_examples.py).
WOMEN = {"p02", "p05", "p06", "p07", "p08", "p11", "p13", "p14"}


def test_likely_primaries_stay_in_the_patients_context(
    outputs: Resources, example_inputs: Resources
) -> None:
    """DOMAIN.md 4a: a woman never gets prostate first; the known primary has its column."""
    women = {r["id"] for r in example_inputs if r.get("gender") == "female"}
    assert women == WOMEN
    rows = lesion_rows(outputs)
    for row in rows:
        if row.patient in women:
            assert row.likely_primary_1 not in ("prostate", "testis-seminoma"), row
    known = {(row.patient, row.level): row.known_primary for row in rows if row.known_primary}
    assert known == {
        ("p01", "L3"): "prostate",
        ("p02", "T7"): "breast",
        ("p03", "L1"): "renal-cell",
        ("p04", "T5"): "lung-non-small-cell",
        ("p07", "L4"): "thyroid",
        ("p08", "T4"): "breast",
        ("p08", "T11"): "breast",
        ("p08", "L2"): "breast",
        ("p10", "T10"): "prostate",
        ("p14", "L2"): "breast",
        ("p16", "T9"): "renal-cell",
        ("p16", "L2"): "renal-cell",
        ("p17", "T6"): "testis-seminoma",
    }
    # A known primary in the appearance's row leads it; thyroid with a blastic lesion does not.
    by_key = _by_key(rows)
    assert by_key["p14", "L2"].likely_primary_1 == "breast"
    assert by_key["p07", "L4"].likely_primary_1 == "breast"


def test_patient_03_l1_is_unstable_lytic_with_total_18(outputs: Resources) -> None:
    row = _by_key(lesion_rows(outputs))["p03", "L1"]
    assert row.region == "lumbar"
    assert row.appearance == "lytic"
    assert (row.sins_total, row.sins_low, row.sins_high) == (18, 18, 18)
    assert row.category == "unstable"
    assert row.surgical_consultation is True
    assert (row.location, row.location_points) == ("junctional", 3)
    assert (row.pain, row.pain_points) == ("mechanical", 3)
    assert (row.bone_lesion, row.bone_lesion_points) == ("lytic", 2)
    assert (row.alignment, row.alignment_points) == ("subluxation-translation", 4)
    assert (row.collapse, row.collapse_points) == ("collapse-gt-50", 3)
    assert (row.posterolateral, row.posterolateral_points) == ("bilateral", 3)
    assert row.likely_primary_1 == "renal-cell"
    assert row.status == "final"
    assert row.effective == datetime(2025, 4, 22, 8, 45, tzinfo=UTC)


def test_patient_04_t5_is_a_range_3_to_13_with_the_category_open(outputs: Resources) -> None:
    row = _by_key(lesion_rows(outputs))["p04", "T5"]
    assert row.sins_total is None
    assert (row.sins_low, row.sins_high) == (3, 13)
    assert row.category is None
    assert row.surgical_consultation is False
    assert row.status == "preliminary"
    # Missing findings leave their components empty, never 0.
    for name in ("pain", "alignment", "posterolateral"):
        assert getattr(row, name) is None
        assert getattr(row, f"{name}_points") is None
    assert (row.location, row.location_points) == ("semi-rigid", 1)
    assert (row.collapse, row.collapse_points) == ("no-collapse", 0)
    assert row.appearance == "lytic"


def test_patient_08_has_three_levels_in_cranio_caudal_order(outputs: Resources) -> None:
    rows = [row for row in lesion_rows(outputs) if row.patient == "p08"]
    assert [row.level for row in rows] == ["T4", "T11", "L2"]
    t4, t11, l2 = rows
    # DOMAIN.md 2 (v2): the patient's "mechanical" leaves the pain of T11 and T4 open (0-3).
    assert (t11.sins_low, t11.sins_high, t11.category, t11.appearance) == (
        13,
        16,
        "unstable",
        "lytic",
    )
    assert t11.surgical_consultation is True
    assert (t4.sins_total, t4.sins_low, t4.sins_high, t4.category) == (None, 1, 8, None)
    # DOMAIN.md 4a (v2): the known breast primary leads; a woman never gets prostate.
    assert (t4.appearance, t4.known_primary, t4.likely_primary_1) == ("blastic", "breast", "breast")
    assert (l2.sins_total, l2.sins_low, l2.sins_high, l2.category) == (None, 4, 14, None)
    assert [row.status for row in rows] == ["preliminary", "final", "preliminary"]
    # The patient-wide pain finding no longer decides a level of a several-level patient.
    assert (t11.pain, t11.pain_points) == (None, None)
    assert l2.pain == "pain-free"


def test_an_open_appearance_leaves_appearance_bone_lesion_and_primary_empty(
    outputs: Resources,
) -> None:
    row = _by_key(lesion_rows(outputs))["p10", "T10"]
    assert (row.appearance, row.bone_lesion, row.bone_lesion_points) == (None, None, None)
    assert row.likely_primary_1 is None
    # A range inside one category still has that category.
    assert (row.sins_total, row.sins_low, row.sins_high, row.category) == (None, 3, 4, "stable")


def test_determined_points_add_up_to_the_total(outputs: Resources) -> None:
    for row in lesion_rows(outputs):
        points = [getattr(row, f"{c.value.replace('-', '_')}_points") for c in SinsComponent]
        if row.sins_total is not None:
            assert sum(points) == row.sins_total
        else:
            assert None in points or row.sins_low < row.sins_high
        assert row.sins_low <= row.sins_high


def test_times_are_aware_and_last_updated_is_the_derivation(outputs: Resources) -> None:
    for row in lesion_rows(outputs):
        assert row.effective is not None
        assert row.effective.tzinfo is not None
        assert row.last_updated == datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


def test_inputs_reports_and_provenance_are_ignored(
    outputs: Resources, example_inputs: Resources
) -> None:
    assert lesion_rows([*example_inputs, *outputs]) == lesion_rows(outputs)
    assert lesion_rows(example_inputs) == []
    kinds = {output_kind(r) for r in outputs}
    assert kinds == {"sins", "classification", "risk", None}


# --- versions and withdrawals --------------------------------------------------------------


def _version(resource: dict[str, Any], version: int, **changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(resource)
    result["meta"]["versionId"] = str(version)
    result["meta"]["lastUpdated"] = f"2026-02-0{version}T00:00:00.000Z"
    result.update(changes)
    return result


def test_the_highest_version_counts_whatever_the_order(outputs: Resources) -> None:
    sins = _find(outputs, "sins-l1", "Patient/p03")
    second = _version(sins, 2, valueInteger=17)
    for resources in ([*outputs, second], [second, *outputs]):
        row = _by_key(lesion_rows(resources))["p03", "L1"]
        assert row.sins_total == 17
        assert row.last_updated == datetime(2026, 2, 2, tzinfo=UTC)
    assert second in current_versions([second, sins])
    assert sins not in current_versions([second, sins])


def test_the_escc_grade_of_each_level_and_unknown_where_no_finding_states_it(
    outputs: Resources,
) -> None:
    grades = {key: row.escc_grade for key, row in _by_key(lesion_rows(outputs)).items()}
    assert {key: grade for key, grade in grades.items() if grade is not None} == {
        ("p16", "T9"): "3",
        ("p16", "L2"): "1a",
        ("p17", "T6"): "1b",
    }


def test_a_withdrawn_current_version_removes_the_row(outputs: Resources) -> None:
    withdrawn = [
        _version(_find(outputs, prefix, "Patient/p03"), 2, status="entered-in-error")
        for prefix in ("sins-l1", "cls-l1", "risk-l1")
    ]
    rows = _by_key(lesion_rows([*outputs, *withdrawn]))
    assert ("p03", "L1") not in rows
    assert len(rows) == 20


def test_a_level_derived_again_after_a_withdrawal_comes_back(outputs: Resources) -> None:
    sins = _find(outputs, "sins-l1", "Patient/p03")
    history = [_version(sins, 2, status="entered-in-error"), _version(sins, 3)]
    assert _by_key(lesion_rows([*outputs, *history]))["p03", "L1"].sins_total == 18


def test_without_classification_and_risk_the_row_keeps_the_score(outputs: Resources) -> None:
    sins = _find(outputs, "sins-l1", "Patient/p03")
    (row,) = lesion_rows([sins])
    assert (row.sins_total, row.category) == (18, "unstable")
    assert (row.appearance, row.likely_primary_1) == (None, None)
    assert row.status == "final"


def test_without_the_score_there_is_no_row(outputs: Resources) -> None:
    others = [
        _find(outputs, "cls-l1", "Patient/p03"),
        _find(outputs, "risk-l1", "Patient/p03"),
    ]
    assert lesion_rows(others) == []


def test_points_come_from_the_sins_table_without_the_ordinal_extension(
    outputs: Resources,
) -> None:
    sins = copy.deepcopy(_find(outputs, "sins-l1", "Patient/p03"))
    for component in sins["component"]:
        for coding in component.get("valueCodeableConcept", {}).get("coding", []):
            coding.pop("extension", None)
    (row,) = lesion_rows([sins])
    assert (row.alignment_points, row.posterolateral_points) == (4, 3)


def test_a_score_without_a_vertebral_level_is_refused(outputs: Resources) -> None:
    sins = copy.deepcopy(_find(outputs, "sins-l1", "Patient/p03"))
    sins["bodySite"] = {"coding": [{"system": codes.SNOMED, "code": "64688005"}]}  # coccyx
    with pytest.raises(ValueError, match="vertebral level"):
        lesion_rows([sins])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-09-14T07:30:00Z", datetime(2025, 9, 14, 7, 30, tzinfo=UTC)),
        ("2026-11-25T19:11:58.896Z", datetime(2026, 11, 25, 19, 11, 58, 896000, tzinfo=UTC)),
        (
            "2025-09-14T09:30:00+02:00",
            datetime(2025, 9, 14, 9, 30, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2025-09-14", datetime(2025, 9, 14, tzinfo=UTC)),
        ("2025-09", datetime(2025, 9, 1, tzinfo=UTC)),
        ("2025", datetime(2025, 1, 1, tzinfo=UTC)),
    ],
)
def test_fhir_times_read_as_aware_moments(text: str, expected: datetime) -> None:
    moment = fhir_moment(text)
    assert moment == expected
    assert moment.utcoffset() == expected.utcoffset()


# --- CSV and Parquet -----------------------------------------------------------------------


def _with_offset(rows: list[LesionRow]) -> list[LesionRow]:
    # One effective time with a non-UTC offset, so the writers are seen to keep the instant.
    first = dataclasses.replace(
        rows[0], effective=datetime(2025, 2, 3, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    )
    return [first, *rows[1:]]


def _from_csv(record: dict[str, str]) -> LesionRow:
    kinds = {column.name: column.kind for column in LESION_COLUMNS}
    values: dict[str, Any] = {}
    for name, text in record.items():
        kind = kinds[name]
        if text == "":
            values[name] = None
        elif kind == "int":
            values[name] = int(text)
        elif kind == "bool":
            assert text in ("true", "false")
            values[name] = text == "true"
        elif kind == "timestamp":
            values[name] = datetime.fromisoformat(text)
        else:
            values[name] = text
    return LesionRow(**values)


def test_csv_round_trip(outputs: Resources, tmp_path: Path) -> None:
    rows = _with_offset(lesion_rows(outputs))
    path = tmp_path / "lesions.csv"
    write_csv(rows, path)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMN_NAMES
        back = [_from_csv(record) for record in reader]
    assert back == rows
    text = path.read_text(encoding="utf-8")
    assert "p04,T5,thoracic,lytic,semi-rigid,1,,,lytic,2,,,no-collapse,0,,,,3,13,,false" in text


def test_parquet_round_trip_with_types(outputs: Resources, tmp_path: Path) -> None:
    rows = _with_offset(lesion_rows(outputs))
    path = tmp_path / "lesions.parquet"
    write_parquet(rows, path)
    table = pq.read_table(path)
    assert table.schema.equals(arrow_schema())
    assert table.schema.field("sins_total").type == pa.int16()
    assert table.schema.field("sins_total").nullable
    assert table.schema.field("surgical_consultation").type == pa.bool_()
    assert table.schema.field("effective").type == pa.timestamp("us", tz="UTC")
    assert table.num_rows == 21
    assert table.schema.field("escc_grade").type == pa.string()
    assert table.schema.field("escc_grade").nullable
    assert table.column("sins_total").null_count == 8
    back = table.to_pylist()
    assert back == [row.as_dict() for row in rows]
    # The +02:00 effective time comes back as the same instant, in UTC.
    assert back[0]["effective"] == datetime(2025, 2, 3, 10, 0, tzinfo=UTC)


def test_writers_accept_an_empty_table(tmp_path: Path) -> None:
    write_csv([], tmp_path / "empty.csv")
    write_parquet([], tmp_path / "empty.parquet")
    assert (tmp_path / "empty.csv").read_text(encoding="utf-8").strip() == ",".join(COLUMN_NAMES)
    table = pq.read_table(tmp_path / "empty.parquet")
    assert table.num_rows == 0
    assert table.schema.equals(arrow_schema())
