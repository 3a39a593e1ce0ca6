"""The Spark path's throughput beside the single-machine path, on the same input in the same run.

Generates a population of about `--resources` input resources (NDJSON), then measures:
  (a) `fhir-app process FILE --out DIR` on a fresh SQLite file (the single-machine path; with
      `--backend postgresql` also on a fresh PostgreSQL database), after a 1-patient run that
      shows its fixed start-up cost;
  (b) `fhir-app process FILE --out DIR --engine spark --master local[2]`, the same way: the real
      command line in a subprocess, JVM start and all, after a 1-patient run;
  (c) inside this process: Spark's start-up alone (SparkSession on local[2]), then the job alone
      on the started session, twice (the first job also starts the Python workers and imports
      fhir_app in them; the second shows the steady state).
Every Spark run's outputs are checked against the single-machine run's: the same files, the same
resources apart from their timestamps. Input resources/s is the population over the wall clock;
"excl. start-up" subtracts the 1-patient run's wall clock (the fixed cost of a run).

Run: `.venv/bin/python bench/spark.py [--resources 20000] [--backend sqlite --backend postgresql]`
(needs the `spark` extra and Java 17; nothing here asserts on time).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from generate import PopulationSummary, write_population_file
from harness import (
    BACKENDS,
    DatabaseUnavailable,
    ProcessRun,
    fhir_app_command,
    fresh_database,
    machine_line,
    markdown_table,
    rate,
    run_measured,
    run_process,
)

DEFAULT_RESOURCES: Final = 20_000
MASTER: Final = "local[2]"
TIMESTAMPS: Final = frozenset({"lastUpdated", "issued", "recorded"})


@dataclass(frozen=True, slots=True)
class Measured:
    """One measurement: wall clock, its fixed part, and whether the outputs were right."""

    name: str
    seconds: float
    startup: float | None
    resources: int
    note: str

    @property
    def rate(self) -> float:
        """Input resources per second of wall clock."""
        return rate(self.resources, self.seconds)

    @property
    def rate_after_startup(self) -> float | None:
        """Input resources per second once the fixed start-up cost is paid."""
        if self.startup is None or self.seconds <= self.startup:
            return None
        return rate(self.resources, self.seconds - self.startup)


def _without_timestamps(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_timestamps(v) for k, v in node.items() if k not in TIMESTAMPS}
    if isinstance(node, list):
        return [_without_timestamps(v) for v in node]
    return node


def _outputs(folder: Path) -> dict[str, list[Any]]:
    return {
        path.name: [
            _without_timestamps(orjson.loads(line)) for line in path.read_bytes().splitlines()
        ]
        for path in sorted(folder.glob("*.ndjson"))
    }


def compare(reference: Path, candidate: Path, population: PopulationSummary) -> str:
    """How the candidate's outputs compare with the reference's (the single-machine run's)."""
    expected, found = _outputs(reference), _outputs(candidate)
    reports = len(found.get("DiagnosticReport.ndjson", []))
    if reports != population.patients:
        return f"OUTPUTS WRONG: {reports}/{population.patients} DiagnosticReport"
    if expected != found:
        differing = sorted(
            k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)
        )
        return f"OUTPUTS DIFFER from the single-machine run: {', '.join(differing)}"
    lines = sum(len(v) for v in found.values())
    return f"same {lines:,} outputs as the single-machine run (timestamps aside)"


def spark_command(input_file: Path, out: Path) -> list[str]:
    """`fhir-app process --engine spark --master local[2]`."""
    return [
        *fhir_app_command(),
        "process",
        str(input_file),
        "--out",
        str(out),
        "--engine",
        "spark",
        "--master",
        MASTER,
    ]


def spark_environment() -> dict[str, str]:
    """This environment with Spark bound to the loopback interface."""
    env = dict(os.environ)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env


def single_runs(
    backends: tuple[str, ...],
    input_file: Path,
    tiny: Path,
    population: PopulationSummary,
    work: Path,
) -> list[tuple[Measured, Path | None]]:
    """(a): the single-machine path on each backend."""
    found: list[tuple[Measured, Path | None]] = []
    for backend in backends:
        name = f"single machine, `fhir-app process` on {backend}"
        out = work / f"single-{backend}"
        try:
            with fresh_database(backend) as url:
                startup = run_process(tiny, work / f"tiny-{backend}", url)
            with fresh_database(backend) as url:
                run = run_process(input_file, out, url)
        except DatabaseUnavailable as exc:
            found.append((Measured(name, 0.0, None, 0, f"skipped: {exc}"), None))
            continue
        note = "reference" if run.exit_code == 0 else f"exit {run.exit_code}: {run.stderr_tail()}"
        found.append(
            (Measured(name, run.seconds, startup.seconds, population.resources, note), out)
        )
    return found


def spark_cli(input_file: Path, tiny: Path, work: Path) -> tuple[ProcessRun, ProcessRun]:
    """(b): the Spark path as a command, on the 1-patient file and on the population."""
    env = spark_environment()
    startup = run_measured(spark_command(tiny, work / "spark-tiny"), env)
    run = run_measured(spark_command(input_file, work / "spark-cli"), env)
    return startup, run


def spark_in_process(input_file: Path, work: Path) -> tuple[float, list[float]]:
    """(c): Spark's start-up, then the job twice on the started session (seconds)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from fhir_app.spark.job import process, spark_session

    started = time.perf_counter()
    with spark_session(MASTER) as spark:
        startup = time.perf_counter() - started
        jobs = []
        for attempt in (1, 2):
            began = time.perf_counter()
            process(spark, [input_file], work / f"spark-job-{attempt}")
            jobs.append(time.perf_counter() - began)
    return startup, jobs


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=DEFAULT_RESOURCES)
    parser.add_argument("--backend", action="append", choices=BACKENDS, dest="backends")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    backends = tuple(args.backends or ("sqlite",))
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="fhir-app-spark-bench-") as folder:
        work = Path(folder)
        input_file = work / "population.ndjson"
        tiny = work / "one-patient.ndjson"
        population = write_population_file(input_file, resources=args.resources, seed=args.seed)
        write_population_file(tiny, 1, seed=args.seed + 1)
        megabytes = input_file.stat().st_size / 1e6
        print(f"  spark bench: {population.describe()}", file=sys.stderr, flush=True)
        rows: list[Measured] = []
        singles = single_runs(backends, input_file, tiny, population, work)
        rows.extend(measured for measured, _ in singles)
        reference = next((out for _, out in singles if out is not None), None)
        print("  spark bench: the Spark command ...", file=sys.stderr, flush=True)
        startup, run = spark_cli(input_file, tiny, work)
        note = (
            compare(reference, work / "spark-cli", population)
            if reference is not None and run.exit_code == 0
            else f"exit {run.exit_code}: {run.stderr_tail()}"
        )
        rows.append(
            Measured(
                f"Spark {MASTER}, `fhir-app process --engine spark`",
                run.seconds,
                startup.seconds,
                population.resources,
                note,
            )
        )
        print("  spark bench: Spark in this process ...", file=sys.stderr, flush=True)
        session, jobs = spark_in_process(input_file, work)
        rows.append(Measured("Spark start-up alone (SparkSession)", session, None, 0, ""))
        for attempt, seconds in enumerate(jobs, start=1):
            checked = work / f"spark-job-{attempt}"
            rows.append(
                Measured(
                    f"Spark {MASTER}, the job alone, run {attempt} on a started session",
                    seconds,
                    None,
                    population.resources,
                    compare(reference, checked, population) if reference else "",
                )
            )
    p = population
    print(
        f"\nSpark vs single machine: {p.resources:,} input resources ({p.patients:,} patients, "
        f"{p.levels:,} lesion levels, {p.resources_per_patient:.1f} resources per patient, "
        f"{megabytes:.1f} MB NDJSON)"
    )
    table = [
        [
            m.name,
            f"{m.seconds:.2f}",
            "" if m.startup is None else f"{m.startup:.2f}",
            f"{m.rate:,.0f}" if m.resources else "",
            "" if m.rate_after_startup is None else f"{m.rate_after_startup:,.0f}",
            m.note,
        ]
        for m in rows
    ]
    header = (
        "measurement",
        "wall s",
        "1-patient run s",
        "input resources/s",
        "excl. start-up",
        "outputs",
    )
    print(markdown_table(header, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
