"""Peak memory of `fhir-app process` at two input sizes: does it stay flat as the input grows?

For each size a population is generated (NDJSON) and `fhir-app process FILE --out DIR` runs as a
subprocess on a fresh database. Two figures per run: the peak resident set of the largest single
process (`wait4` rusage, exact) and the peak of the whole process tree (sampled every 50 ms from
/proc, so worker processes count too). The ratio largest size / smallest size is ~1 when memory is
flat in the input, and approaches the size ratio when the input is held in memory.

Run: `.venv/bin/python bench/memory.py [--sizes 20000,100000] [--backend sqlite]`
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from generate import PopulationSummary, write_population_file
from harness import (
    BACKENDS,
    ProcessRun,
    count_lines,
    fresh_database,
    machine_line,
    markdown_table,
    rate,
    run_process,
)

DEFAULT_SIZES: Final = (20_000, 100_000)


@dataclass(frozen=True, slots=True)
class MemoryRun:
    """One size: the population, its file and the measured run."""

    population: PopulationSummary
    file_mb: float
    run: ProcessRun
    outputs_ok: bool


def measure_size(resources: int, backend: str, seed: int, work: Path) -> MemoryRun:
    """Generate `resources` inputs and run `fhir-app process` on them, measured."""
    input_file = work / f"population-{resources}.ndjson"
    population = write_population_file(input_file, resources=resources, seed=seed)
    out = work / f"out-{resources}"
    with fresh_database(backend) as url:
        run = run_process(input_file, out, url)
    outputs_ok = (
        run.exit_code == 0
        and count_lines(out / "DiagnosticReport.ndjson") == population.patients
        and count_lines(out / "RiskAssessment.ndjson") == population.levels
    )
    file_mb = input_file.stat().st_size / 1e6
    input_file.unlink()  # the next, larger file needs the room more than this one
    return MemoryRun(population, file_mb, run, outputs_ok)


def run_memory(
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    backend: str = "sqlite",
    seed: int = 0,
    *,
    progress: bool = True,
) -> list[MemoryRun]:
    """One measured run per size, smallest first."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="fhir-app-memory-") as folder:
        for resources in sorted(sizes):
            if progress:
                print(f"  memory: {resources:,} resources on {backend} ...", file=sys.stderr)
            run = measure_size(resources, backend, seed, Path(folder))
            if progress:
                print(
                    f"  memory: peak {run.run.peak_rss_mb:.0f} MB "
                    f"(tree {run.run.peak_tree_rss_mb:.0f} MB) in {run.run.seconds:.1f} s",
                    file=sys.stderr,
                )
            runs.append(run)
    return runs


MEMORY_HEADER: Final = (
    "input resources",
    "NDJSON MB",
    "wall s",
    "peak RSS MB (largest process)",
    "peak RSS MB (process tree)",
    "outputs",
)


def memory_rows(runs: list[MemoryRun]) -> list[list[str]]:
    """One row per size, then the ratio largest / smallest."""
    rows = [
        [
            f"{r.population.resources:,}",
            f"{r.file_mb:.1f}",
            f"{r.run.seconds:.1f}",
            f"{r.run.peak_rss_mb:.0f}",
            f"{r.run.peak_tree_rss_mb:.0f}",
            "ok" if r.outputs_ok else f"WRONG (exit {r.run.exit_code})",
        ]
        for r in runs
    ]
    if len(runs) >= 2:
        small, large = runs[0], runs[-1]
        size_ratio = rate(large.population.resources, small.population.resources)
        rows.append(
            [
                f"ratio (input x{size_ratio:.1f})",
                "",
                "",
                f"{rate(large.run.peak_rss_mb, small.run.peak_rss_mb):.2f}",
                f"{rate(large.run.peak_tree_rss_mb, small.run.peak_tree_rss_mb):.2f}",
                "flat is ~1",
            ]
        )
    return rows


def print_memory(runs: list[MemoryRun], backend: str) -> None:
    """The figures as a Markdown table."""
    print(f"Memory of fhir-app process on {backend}:")
    print(markdown_table(MEMORY_HEADER, memory_rows(runs)))
    for r in runs:
        if not r.outputs_ok:
            print(f"\n{r.population.resources:,} resources: {r.run.stderr_tail(3)}")


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        default=DEFAULT_SIZES,
        help="comma-separated input sizes in resources (default 20000,100000)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(machine_line())
    runs = run_memory(args.sizes, args.backend, args.seed)
    print_memory(runs, args.backend)
    return 0 if all(r.outputs_ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
