"""Population summaries of the examples, their rendering, and the lesions-per-level chart."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Any

from rich.console import Console

from fhir_app.analytics.lesions import LesionRow, lesion_rows
from fhir_app.analytics.report import (
    CATEGORY_KEYS,
    OPEN,
    PopulationReport,
    build_report,
    lesions_per_level_chart,
    population_report,
    render_report,
)

Resources = list[dict[str, Any]]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _text(report: PopulationReport) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(render_report(report))
    return console.export_text()


def test_counts_of_the_examples(outputs: Resources) -> None:
    report = build_report(outputs)
    assert (report.patients, report.lesions) == (17, 21)
    assert dict(report.by_category) == {
        # p01 L3, p06 T9, p07 L4, p10 T10 (3-4), p12 L3 (4-5), p13 T8, p14 L2, p16 L2, p17 T6
        "stable": 9,
        "potentially-unstable": 3,  # p02 T7, p09 S1, p15 T12
        "unstable": 4,  # p03 L1, p05 C5, p08 T11 (13-16), p16 T9
        "open": 5,  # p04 T5, p08 T4, p08 L2, p11 L1, p12 T5
    }
    assert dict(report.by_appearance) == {"lytic": 10, "mixed": 4, "blastic": 6, "open": 1}
    # DOMAIN.md 4a (v2): known primaries lead and women get no prostate, so breast leads.
    assert list(report.by_likely_primary.items()) == [
        ("breast", 11),
        ("renal-cell", 6),
        ("lung-non-small-cell", 1),
        ("prostate", 1),
        ("testis-seminoma", 1),
        ("open", 1),
    ]
    # DOMAIN.md 6 (v2): p16 T9 grade 3, p16 L2 1a, p17 T6 1b; no other level has a grade.
    assert dict(report.by_escc_grade) == {
        "0": 0,
        "1a": 1,
        "1b": 1,
        "1c": 0,
        "2": 0,
        "3": 1,
        "unknown": 18,
    }
    assert dict(report.by_region) == {"cervical": 1, "thoracic": 11, "lumbar": 8, "sacral": 1}
    assert (report.surgical_consultation_lesions, report.surgical_consultation_patients) == (7, 7)
    assert (report.determined_totals, report.total_ranges) == (13, 8)
    # p04 T5 3-13, p08 T4 1-8, p08 L2 4-14, p11 L1 4-8 and p12 T5 6-7 span 6/7; p10 T10 3-4
    # and p12 L3 4-5 do not.
    assert report.consultation_undecided == 5
    assert report.preliminary == 6


def test_levels_are_listed_c1_to_s5_with_every_category(outputs: Resources) -> None:
    report = build_report(outputs)
    assert list(report.by_level) == [
        "C5", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "S1",
    ]  # fmt: skip
    assert all(tuple(counts) == CATEGORY_KEYS for counts in report.by_level.values())
    assert report.by_level["T11"]["unstable"] == 1
    assert report.by_level["T4"][OPEN] == 1
    assert sum(report.level_totals().values()) == report.lesions


def test_counts_follow_the_rows(outputs: Resources) -> None:
    rows = lesion_rows(outputs)
    t11 = next(row for row in rows if (row.patient, row.level) == ("p08", "T11"))
    more = [*rows, dataclasses.replace(t11, patient="p98"), dataclasses.replace(t11, patient="p99")]
    report = population_report(more)
    assert report.patients == 19
    assert report.by_level["T11"]["unstable"] == 3
    assert report.by_category["unstable"] == 6
    assert report.surgical_consultation_patients == 9
    assert report.by_likely_primary["breast"] == 13


def test_a_shared_patient_counts_once(outputs: Resources) -> None:
    report = population_report(row for row in lesion_rows(outputs) if row.patient == "p08")
    assert (report.patients, report.lesions) == (1, 3)
    assert report.surgical_consultation_patients == 1


def test_the_rendering_names_every_count(outputs: Resources) -> None:
    text = _text(build_report(outputs))
    for expected in (
        "Vertebral metastasis registry",
        "Patients",
        "Surgical consultation recommended (SINS 7 or more)",
        "7 lesions, 7 patients",
        "of which consultation undecided (spans 6/7)",
        "Potentially unstable (7-12)",
        "Open (range spans categories)",
        "renal-cell",
        "Open (appearance open)",
    ):
        assert expected in text
    cells = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    ]
    # Level, stable, potentially unstable, unstable, open, all.
    assert ["T11", "0", "0", "1", "0", "1"] in cells
    assert ["T4", "0", "0", "0", "1", "1"] in cells
    # ESCC grade, lesions, share (DOMAIN.md 6): the unknown grades are said to be unknown.
    assert ["ESCC grade (Bilsky)"] not in cells
    assert ["Grade 3", "1", "5%"] in cells
    assert ["Unknown (no ESCC finding)", "18", "86%"] in cells


def test_an_empty_population(tmp_path: Path) -> None:
    report = population_report([])
    assert (report.patients, report.lesions) == (0, 0)
    assert set(report.by_category.values()) == {0}
    assert report.by_level == {}
    assert report.by_likely_primary == {}
    assert set(report.by_escc_grade.values()) == {0}
    assert "Patients" in _text(report)
    assert lesions_per_level_chart([], tmp_path / "empty.png").read_bytes()[:8] == PNG_SIGNATURE


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_chart_is_a_png_of_sensible_size(outputs: Resources, tmp_path: Path) -> None:
    path = lesions_per_level_chart(lesion_rows(outputs), tmp_path / "levels.png")
    data = path.read_bytes()
    assert _png_size(data) == (1650, 720)
    assert 20_000 < len(data) < 1_000_000


def test_the_chart_shows_the_population(outputs: Resources, tmp_path: Path) -> None:
    rows: list[LesionRow] = lesion_rows(outputs)
    whole = lesions_per_level_chart(rows, tmp_path / "all.png").read_bytes()
    part = lesions_per_level_chart(rows[:3], tmp_path / "part.png").read_bytes()
    again = lesions_per_level_chart(rows, tmp_path / "again.png").read_bytes()
    assert whole != part
    assert whole == again
