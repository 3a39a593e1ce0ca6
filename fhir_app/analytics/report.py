"""Population summaries over the lesion table: counts as data, a rich rendering and a chart.

Every count is of lesions (one per patient and level) unless it says patients. A lesion whose
findings leave the category, the appearance or the likely primary open is counted under `open`,
never under a guessed value: an open category means the SINS range spans two categories.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rich.console import Group
from rich.table import Table

from fhir_app.analytics.lesions import JsonObject, LesionRow, lesion_rows
from fhir_app.domain.escc import EsccGrade
from fhir_app.domain.levels import SpinalRegion, VertebralLevel
from fhir_app.domain.sins_answers import (
    SURGICAL_CONSULTATION_MIN_TOTAL,
    LesionAnswer,
    SinsCategory,
)

OPEN: Final = "open"
# A level without an escc-grade finding: its grade is unknown, never counted under a grade.
UNKNOWN: Final = "unknown"

# Category keys in the order of instability, then open; labels and colours for reader and chart.
CATEGORY_KEYS: Final[tuple[str, ...]] = (*(c.value for c in SinsCategory), OPEN)
CATEGORY_LABELS: Final[Mapping[str, str]] = {
    SinsCategory.STABLE.value: "Stable (0-6)",
    SinsCategory.POTENTIALLY_UNSTABLE.value: "Potentially unstable (7-12)",
    SinsCategory.UNSTABLE.value: "Unstable (13-18)",
    OPEN: "Open (range spans categories)",
}
# Okabe-Ito colours, told apart with the common colour-vision deficiencies; open is neutral grey.
CATEGORY_COLOURS: Final[Mapping[str, str]] = {
    SinsCategory.STABLE.value: "#009E73",
    SinsCategory.POTENTIALLY_UNSTABLE.value: "#E69F00",
    SinsCategory.UNSTABLE.value: "#D55E00",
    OPEN: "#B0B0B0",
}
APPEARANCE_KEYS: Final[tuple[str, ...]] = (*(a.value for a in LesionAnswer), OPEN)
ESCC_KEYS: Final[tuple[str, ...]] = (*(g.value for g in EsccGrade), UNKNOWN)
ESCC_LABELS: Final[Mapping[str, str]] = {
    **{g.value: f"Grade {g.value}" for g in EsccGrade},
    UNKNOWN: "Unknown (no ESCC finding)",
}
REGION_KEYS: Final[tuple[str, ...]] = tuple(r.value for r in SpinalRegion)
LEVEL_LABELS: Final[tuple[str, ...]] = tuple(level.label for level in VertebralLevel)


@dataclass(frozen=True, slots=True)
class PopulationReport:
    """Registry counts over the current outputs of every patient.

    `by_category`, `by_appearance` and `by_region` list every key, zeros kept, in a fixed order;
    `by_level` holds the levels with lesions, C1..S5, each with every category key;
    `by_likely_primary` is most frequent first (ties alphabetical), `open` last;
    `by_escc_grade` every ESCC grade in the scale's order, then `unknown`, zeros kept.
    `total_ranges` counts lesions whose total is a range, `consultation_undecided` those whose
    range spans 6/7, so that findings still decide on a surgical consultation.
    """

    patients: int
    lesions: int
    by_category: Mapping[str, int]
    by_level: Mapping[str, Mapping[str, int]]
    by_region: Mapping[str, int]
    by_appearance: Mapping[str, int]
    by_likely_primary: Mapping[str, int]
    by_escc_grade: Mapping[str, int]
    surgical_consultation_lesions: int
    surgical_consultation_patients: int
    determined_totals: int
    total_ranges: int
    consultation_undecided: int
    preliminary: int

    def level_totals(self) -> dict[str, int]:
        """Lesions per level, C1..S5, levels with lesions only."""
        return {level: sum(counts.values()) for level, counts in self.by_level.items()}


def _category(row: LesionRow) -> str:
    return row.category or OPEN


def _keyed(counter: Counter[str], keys: Sequence[str]) -> dict[str, int]:
    return {key: counter[key] for key in keys}


def _by_level(rows: Sequence[LesionRow]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        counts.setdefault(row.level, Counter())[_category(row)] += 1
    return {
        level: _keyed(counts[level], CATEGORY_KEYS) for level in LEVEL_LABELS if level in counts
    }


def _by_primary(rows: Sequence[LesionRow]) -> dict[str, int]:
    counter = Counter(row.likely_primary_1 or OPEN for row in rows)
    named = sorted((k for k in counter if k != OPEN), key=lambda k: (-counter[k], k))
    return {key: counter[key] for key in [*named, *([OPEN] if OPEN in counter else [])]}


def population_report(rows: Iterable[LesionRow]) -> PopulationReport:
    """The population counts of a lesion table."""
    table = list(rows)
    consulted = [row for row in table if row.surgical_consultation]
    ranges = [row for row in table if row.sins_total is None]
    return PopulationReport(
        patients=len({row.patient for row in table}),
        lesions=len(table),
        by_category=_keyed(Counter(_category(row) for row in table), CATEGORY_KEYS),
        by_level=_by_level(table),
        by_region=_keyed(Counter(row.region for row in table), REGION_KEYS),
        by_appearance=_keyed(Counter(row.appearance or OPEN for row in table), APPEARANCE_KEYS),
        by_likely_primary=_by_primary(table),
        by_escc_grade=_keyed(Counter(row.escc_grade or UNKNOWN for row in table), ESCC_KEYS),
        surgical_consultation_lesions=len(consulted),
        surgical_consultation_patients=len({row.patient for row in consulted}),
        determined_totals=len(table) - len(ranges),
        total_ranges=len(ranges),
        consultation_undecided=sum(
            row.sins_low < SURGICAL_CONSULTATION_MIN_TOTAL <= row.sins_high for row in ranges
        ),
        preliminary=sum(row.status == "preliminary" for row in table),
    )


def build_report(resources: Iterable[JsonObject]) -> PopulationReport:
    """The population counts of the current per-level outputs among `resources`."""
    return population_report(lesion_rows(resources))


# --- rendering -----------------------------------------------------------------------------


def _share(count: int, whole: int) -> str:
    return f"{100 * count / whole:.0f}%" if whole else "-"


def _distribution(
    title: str, heading: str, counts: Mapping[str, int], whole: int, labels: Mapping[str, str]
) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(heading)
    table.add_column("Lesions", justify="right")
    table.add_column("Share", justify="right")
    for key, count in counts.items():
        table.add_row(labels.get(key, key), str(count), _share(count, whole))
    return table


def render_report(report: PopulationReport) -> Group:
    """The report as rich tables: overview, category, level by category, appearance, primary."""
    overview = Table(title="Vertebral metastasis registry", title_justify="left", show_header=False)
    overview.add_column("What")
    overview.add_column("Count", justify="right")
    consultation = (
        f"{report.surgical_consultation_lesions} lesions, "
        f"{report.surgical_consultation_patients} patients"
    )
    overview_rows: list[tuple[str, str]] = [
        ("Patients", str(report.patients)),
        ("Lesions (patient and level)", str(report.lesions)),
        (
            f"Surgical consultation recommended (SINS {SURGICAL_CONSULTATION_MIN_TOTAL} or more)",
            consultation,
        ),
        ("SINS total determined", str(report.determined_totals)),
        ("SINS total a range (findings missing)", str(report.total_ranges)),
        ("  of which consultation undecided (spans 6/7)", str(report.consultation_undecided)),
        ("Preliminary", str(report.preliminary)),
    ]
    for what, count in overview_rows:
        overview.add_row(what, count)

    levels = Table(title="Lesions per level by SINS category", title_justify="left")
    levels.add_column("Level")
    for key in CATEGORY_KEYS:
        levels.add_column(CATEGORY_LABELS[key].split(" (")[0], justify="right")
    levels.add_column("All", justify="right")
    for level, counts in report.by_level.items():
        levels.add_row(level, *(str(counts[k]) for k in CATEGORY_KEYS), str(sum(counts.values())))

    open_label = {OPEN: "Open"}
    parts: list[Any] = [
        overview,
        _distribution(
            "SINS category", "Category", report.by_category, report.lesions, CATEGORY_LABELS
        ),
        levels,
        _distribution("Region", "Region", report.by_region, report.lesions, {}),
        _distribution("Appearance", "Appearance", report.by_appearance, report.lesions, open_label),
        _distribution(
            "Most typical likely primary",
            "Primary",
            report.by_likely_primary,
            report.lesions,
            {OPEN: "Open (appearance open)"},
        ),
        _distribution(
            "ESCC grade (Bilsky)", "Grade", report.by_escc_grade, report.lesions, ESCC_LABELS
        ),
    ]
    return Group(*parts)


# --- chart ---------------------------------------------------------------------------------

# Where the regions meet on the C1..S5 axis: before T1, L1 and S1.
_REGION_STARTS: Final = tuple(
    index
    for index, level in enumerate(VertebralLevel)
    if index and level.region is not list(VertebralLevel)[index - 1].region
)


def lesions_per_level_chart(rows: Iterable[LesionRow], path: Path | str) -> Path:
    """Write a PNG of lesions per level C1..S5, stacked by SINS category; returns the path.

    Drawn on a bare Agg canvas: no display, no pyplot state, safe in servers and tests.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    table = list(rows)
    report = population_report(table)
    counts = {key: [0] * len(LEVEL_LABELS) for key in CATEGORY_KEYS}
    for index, level in enumerate(LEVEL_LABELS):
        for key, count in report.by_level.get(level, {}).items():
            counts[key][index] = count

    figure = Figure(figsize=(11, 4.8), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(LEVEL_LABELS)))
    bottom = [0] * len(LEVEL_LABELS)
    for key in CATEGORY_KEYS:
        axes.bar(
            positions,
            counts[key],
            bottom=bottom,
            width=0.75,
            color=CATEGORY_COLOURS[key],
            edgecolor="white",
            linewidth=0.6,
        )
        bottom = [b + c for b, c in zip(bottom, counts[key], strict=True)]

    highest = max(bottom, default=0)
    axes.set_xticks(positions, LEVEL_LABELS, fontsize=8)
    axes.set_xlim(-0.6, len(LEVEL_LABELS) - 0.4)
    axes.set_ylim(0, max(highest, 1) * 1.15)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("Vertebral level")
    axes.set_ylabel("Lesions")
    axes.grid(axis="y", color="#DDDDDD", linewidth=0.6)
    axes.set_axisbelow(True)
    axes.spines[["top", "right"]].set_visible(False)
    for start in _REGION_STARTS:
        axes.axvline(start - 0.5, color="#888888", linestyle=":", linewidth=0.8)
    for region in SpinalRegion:
        indices = [i for i, level in enumerate(VertebralLevel) if level.region is region]
        axes.text(
            (indices[0] + indices[-1]) / 2,
            1.0,
            region.value.capitalize(),
            transform=axes.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=9,
            color="#555555",
        )
    axes.set_title(
        f"Lesions per vertebral level by SINS category "
        f"({report.lesions} lesions, {report.patients} patients)",
        loc="left",
        pad=18,
    )
    # Legend entries top to bottom in the order the segments stack, open on top.
    axes.legend(
        handles=[
            Patch(facecolor=CATEGORY_COLOURS[key], label=CATEGORY_LABELS[key])
            for key in reversed(CATEGORY_KEYS)
        ],
        title="SINS category",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    target = Path(path)
    figure.savefig(target, format="png")
    return target
