"""Bulk throughput of `fhir-app process`, against baselines measured in the same run.

Generates a population of about `--resources` input resources (NDJSON), then measures:
  (a) parse-only: orjson over every line of the file, one process;
  (b) validate-only: orjson + `fhir_app.fhir.parse.validate_resource` over every resource, one
      process (the floor the processor's validation stands on);
  (c) end-to-end `fhir-app process FILE --out DIR` on a fresh SQLite file, and
  (d) the same on a fresh PostgreSQL database (created on the local server, dropped after),
as input resources/s and wall clock, with the ratios e2e/validate-only and e2e/parse-only. The
end-to-end runs are the real command line in a subprocess: interpreter start, migration, reading,
storing, deriving and writing the outputs are all inside the wall clock, and a separate 1-patient
run shows how much of it is fixed start-up cost. The outputs are counted against the population
(one DiagnosticReport per patient, one RiskAssessment per lesion level) so that a fast run that did
not do the work cannot pass for a result.

Run: `.venv/bin/python bench/bulk.py [--resources 20000] [--backend sqlite --backend postgresql]`
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson
from generate import PopulationSummary, write_population_file
from harness import (
    BACKENDS,
    DatabaseUnavailable,
    ProcessRun,
    count_lines,
    fresh_database,
    machine_line,
    markdown_table,
    rate,
    run_process,
    verdict,
)

from fhir_app.fhir.inputs import InputRejected
from fhir_app.fhir.parse import validate_resource

DEFAULT_RESOURCES: Final = 20_000
TARGET_POSTGRES_RATE: Final = 3_000.0  # input resources/s
TARGET_VALIDATE_RATIO: Final = 0.75  # of validate-only


@dataclass(frozen=True, slots=True)
class Baseline:
    """An in-process pass over the file."""

    resources: int
    seconds: float

    @property
    def rate(self) -> float:
        """Resources per second."""
        return rate(self.resources, self.seconds)


@dataclass(frozen=True, slots=True)
class EndToEnd:
    """One `fhir-app process` run on one backend, and whether its outputs add up."""

    backend: str
    run: ProcessRun | None
    startup: ProcessRun | None
    resources: int
    outputs_ok: bool
    note: str

    @property
    def rate(self) -> float:
        """Input resources per second over the whole wall clock."""
        return rate(self.resources, self.run.seconds) if self.run else 0.0


@dataclass(slots=True)
class BulkResult:
    """Every figure of one bulk benchmark run."""

    population: PopulationSummary
    file_mb: float
    parse: Baseline
    validate: Baseline
    e2e: list[EndToEnd] = field(default_factory=list)

    def ratio_to_validate(self, run: EndToEnd) -> float:
        """End-to-end rate as a share of the validate-only rate."""
        return rate(run.rate, self.validate.rate)

    def ratio_to_parse(self, run: EndToEnd) -> float:
        """End-to-end rate as a share of the parse-only rate."""
        return rate(run.rate, self.parse.rate)


def parse_only(path: Path) -> Baseline:
    """orjson over every line of an NDJSON file."""
    count = 0
    started = time.perf_counter()
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                orjson.loads(line)
                count += 1
    return Baseline(count, time.perf_counter() - started)


def validate_only(path: Path) -> Baseline:
    """orjson and the FHIR validation of the processor over every line; all must pass."""
    count = rejected = 0
    started = time.perf_counter()
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                try:
                    validate_resource(orjson.loads(line))
                except InputRejected:
                    rejected += 1
                count += 1
    seconds = time.perf_counter() - started
    if rejected:
        raise RuntimeError(f"{rejected} generated resources failed validation: generator bug")
    return Baseline(count, seconds)


def end_to_end(
    backend: str, input_file: Path, tiny_file: Path, population: PopulationSummary, work: Path
) -> EndToEnd:
    """`fhir-app process` on a fresh database of `backend`, after a 1-patient start-up run."""
    try:
        with fresh_database(backend) as url:
            startup = run_process(tiny_file, work / f"startup-{backend}", url)
        with fresh_database(backend) as url:
            out = work / f"out-{backend}"
            run = run_process(input_file, out, url)
    except DatabaseUnavailable as exc:
        return EndToEnd(backend, None, None, population.resources, False, f"skipped: {exc}")
    reports = count_lines(out / "DiagnosticReport.ndjson")
    risks = count_lines(out / "RiskAssessment.ndjson")
    outputs_ok = (
        run.exit_code == 0 and reports == population.patients and risks == population.levels
    )
    note = (
        "outputs match the population"
        if outputs_ok
        else f"exit {run.exit_code}; {reports}/{population.patients} DiagnosticReport, "
        f"{risks}/{population.levels} RiskAssessment; stderr: {run.stderr_tail(3)}"
    )
    return EndToEnd(backend, run, startup, population.resources, outputs_ok, note)


def run_bulk(
    resources: int = DEFAULT_RESOURCES,
    backends: tuple[str, ...] = BACKENDS,
    seed: int = 0,
    *,
    progress: bool = True,
) -> BulkResult:
    """Generate the input, measure the baselines and every end-to-end run."""

    def say(text: str) -> None:
        if progress:
            print(f"  bulk: {text}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="fhir-app-bulk-") as folder:
        work = Path(folder)
        input_file = work / "population.ndjson"
        tiny_file = work / "one-patient.ndjson"
        population = write_population_file(input_file, resources=resources, seed=seed)
        write_population_file(tiny_file, 1, seed=seed + 1)
        say(population.describe())
        parse = parse_only(input_file)
        say(f"parse-only {parse.rate:,.0f} resources/s")
        validate = validate_only(input_file)
        say(f"validate-only {validate.rate:,.0f} resources/s")
        result = BulkResult(population, input_file.stat().st_size / 1e6, parse, validate)
        for backend in backends:
            say(f"fhir-app process on {backend} ...")
            run = end_to_end(backend, input_file, tiny_file, population, work)
            say(f"{backend}: {run.rate:,.0f} resources/s; {run.note}")
            result.e2e.append(run)
    return result


def bulk_rows(result: BulkResult) -> list[list[str]]:
    """Table rows: one per measurement."""
    baselines = [
        ("parse-only (orjson, 1 process)", result.parse),
        ("validate-only (fhir.resources, 1 process)", result.validate),
    ]
    rows = [[name, f"{b.seconds:.2f}", "", f"{b.rate:,.0f}", "", "", ""] for name, b in baselines]
    for e2e in result.e2e:
        name = f"fhir-app process, {e2e.backend}"
        if e2e.run is None:
            rows.append([name, e2e.note, "", "", "", "", ""])
            continue
        target = ""
        if e2e.backend == "postgresql":
            met = (
                e2e.rate >= TARGET_POSTGRES_RATE
                and result.ratio_to_validate(e2e) >= TARGET_VALIDATE_RATIO
            )
            target = (
                f">= {TARGET_POSTGRES_RATE:,.0f}/s and >= {TARGET_VALIDATE_RATIO} x validate: "
                f"{verdict(met)}"
            )
        checked = "" if e2e.outputs_ok else " (OUTPUTS WRONG)"
        startup = f"{e2e.startup.seconds:.2f}" if e2e.startup else ""
        rows.append(
            [
                f"{name}{checked}",
                f"{e2e.run.seconds:.2f}",
                startup,
                f"{e2e.rate:,.0f}",
                f"{result.ratio_to_validate(e2e):.2f}",
                f"{result.ratio_to_parse(e2e):.3f}",
                target,
            ]
        )
    return rows


BULK_HEADER: Final = (
    "measurement",
    "wall s",
    "of it start-up s",
    "input resources/s",
    "e2e / validate-only",
    "e2e / parse-only",
    "target",
)


def print_bulk(result: BulkResult) -> None:
    """The figures as a Markdown table with the population described above it."""
    p = result.population
    print(
        f"Bulk: {p.resources:,} input resources ({p.patients:,} patients, "
        f"{p.resources_per_patient:.1f} resources per patient, {p.levels:,} lesion levels, "
        f"{result.file_mb:.1f} MB NDJSON)"
    )
    print(markdown_table(BULK_HEADER, bulk_rows(result)))
    for e2e in result.e2e:
        if e2e.run is not None and not e2e.outputs_ok:
            print(f"\n{e2e.backend}: {e2e.note}")


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=DEFAULT_RESOURCES)
    parser.add_argument("--backend", action="append", choices=BACKENDS, dest="backends")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(machine_line())
    result = run_bulk(args.resources, tuple(args.backends or BACKENDS), args.seed)
    print_bulk(result)
    return 0 if all(e.outputs_ok or e.run is None for e in result.e2e) else 1


if __name__ == "__main__":
    sys.exit(main())
