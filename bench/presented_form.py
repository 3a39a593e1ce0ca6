"""What the report a person reads costs: bytes per DiagnosticReport and milliseconds to render.

For every example: the DiagnosticReport's JSON size with and without its presentedForm, the HTML
page and the PNG in bytes, and the time of `presented_form` cold (no cached picture layers: the
first patient a process derives) and warm (the picture's layers drawn before; the usual case in a
long run, since the layers are per level and category, not per patient).

Run: `.venv/bin/python bench/presented_form.py`
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import orjson

from fhir_app.fhir.parse import iter_input_resources
from fhir_app.fhir.report import picture
from fhir_app.fhir.report.presented import HTML, PNG, presented, presented_form
from fhir_app.service import PROCESSOR_VERSION, assess

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
REPEATS = 30


def _clear_picture_caches() -> None:
    for cache in (picture._render, picture._bodies, picture._caption, picture._background):
        cache.cache_clear()


def main() -> None:
    """Print one row per example and the medians."""
    print(
        "| example | report JSON | without presentedForm | HTML | PNG | cold ms | warm ms | "
        "picture cached ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    totals: dict[str, list[float]] = {k: [] for k in ("with", "without", "cold", "warm", "hit")}
    for path in sorted(EXAMPLES.glob("*.json")):
        outputs = assess(iter_input_resources(path.read_bytes(), filename_hint=path.name)).outputs
        report = next(r for r in outputs if r["resourceType"] == "DiagnosticReport")
        bare = {k: v for k, v in report.items() if k != "presentedForm"}
        level_outputs = [r for r in outputs if r["resourceType"] != "DiagnosticReport"]
        with_form, without = len(orjson.dumps(report)), len(orjson.dumps(bare))
        html, png = presented(report, HTML) or b"", presented(report, PNG) or b""
        _clear_picture_caches()
        start = time.perf_counter()
        presented_form(level_outputs, bare, PROCESSOR_VERSION, "2026-01-01")
        cold = (time.perf_counter() - start) * 1000
        warm_times, hit_times = [], []
        for _ in range(REPEATS):
            picture._render.cache_clear()  # layers stay, the composed picture does not
            start = time.perf_counter()
            presented_form(level_outputs, bare, PROCESSOR_VERSION, "2026-01-01")
            warm_times.append((time.perf_counter() - start) * 1000)
        for _ in range(REPEATS):
            start = time.perf_counter()
            presented_form(level_outputs, bare, PROCESSOR_VERSION, "2026-01-01")
            hit_times.append((time.perf_counter() - start) * 1000)
        warm, hit = statistics.median(warm_times), statistics.median(hit_times)
        for key, value in (
            ("with", with_form),
            ("without", without),
            ("cold", cold),
            ("warm", warm),
            ("hit", hit),
        ):
            totals[key].append(value)
        print(
            f"| {path.stem} | {with_form:,} | {without:,} | {len(html):,} | {len(png):,} | "
            f"{cold:.1f} | {warm:.2f} | {hit:.2f} |"
        )
    median = {k: statistics.median(v) for k, v in totals.items()}
    print(
        f"| median | {median['with']:,.0f} | {median['without']:,.0f} | | | "
        f"{median['cold']:.1f} | {median['warm']:.2f} | {median['hit']:.2f} |"
    )


if __name__ == "__main__":
    main()
