"""Bulk throughput of `fhir-app process`, against baselines measured in the same run.

Generates a population of about `--resources` input resources (NDJSON), then measures:
  (a) parse-only: orjson over every line of the file, one process;
  (b) validate-only: orjson + `fhir_app.fhir.parse.validate_resource` over every resource, one
      process (the schema gate of fhir_app.fhir.validation; bench/validate.py compares it with
      fhir.resources);
  (c) end-to-end `fhir-app process FILE --out DIR` on a fresh SQLite file, and
  (d) the same on a fresh PostgreSQL database (created on the local server, dropped after),
as input resources/s and wall clock, with the ratios e2e/validate-only and e2e/parse-only. The
end-to-end runs are the real command line in a subprocess: interpreter start, migration, reading,
storing, deriving and writing the outputs are all inside the wall clock, and a separate 1-patient
run shows how much of it is fixed start-up cost. The outputs are counted against the population
(one DiagnosticReport per patient, one RiskAssessment per lesion level) so that a fast run that did
not do the work cannot pass for a result.

With `--before REV`, the same end-to-end runs of an earlier commit (checked out into a temporary
git worktree, its own code on PYTHONPATH, the virtualenv shared) on the same input file, each
backend's before and after runs back to back, and the ratios now / before. Target: PostgreSQL at
least 2x the commit before strict validation (307bf9a). `--repeat N` makes each end-to-end run N
times (the two trees taking turns) and keeps the median: the machine may be shared. Beside each
rate, the CPU seconds of that run: fhir-app's processes (itself and its workers) and the local
PostgreSQL server's processes, which on 2 cores bound the rate more steadily than the wall clock of
a shared machine does.

Run: `.venv/bin/python bench/bulk.py [--resources 20000] [--backend sqlite --backend postgresql]
[--before 307bf9a [--repeat 3]]`
"""

from __future__ import annotations

import argparse
import os
import subprocess
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
    child_environment,
    count_lines,
    fresh_database,
    machine_line,
    markdown_table,
    rate,
    run_measured,
    run_process,
    verdict,
)

from fhir_app.fhir.inputs import InputRejected
from fhir_app.fhir.parse import validate_resource

DEFAULT_RESOURCES: Final = 20_000
TARGET_POSTGRES_RATE: Final = 3_000.0  # input resources/s
TARGET_VALIDATE_RATIO: Final = 0.75  # of validate-only
TARGET_BEFORE_RATIO: Final = 2.0  # PostgreSQL, of the `--before` commit (issue 11)
ROOT: Final = Path(__file__).resolve().parents[1]


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
    tree: str = "this tree"

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
    before: list[EndToEnd] = field(default_factory=list)  # `--before REV`, same backends

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


def process_in(tree: Path | None, input_file: Path, out_dir: Path, database_url: str) -> ProcessRun:
    """`fhir-app process` of this tree, or of another checkout `tree` (its code first on
    PYTHONPATH; `python -m fhir_app.cli`, since the console script belongs to this tree)."""
    if tree is None:
        return run_process(input_file, out_dir, database_url)
    env = child_environment(database_url)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    args = [sys.executable, "-m", "fhir_app.cli", "process", str(input_file), "--out", str(out_dir)]
    return run_measured(args, env, cwd=tree)


def end_to_end(
    backend: str,
    input_file: Path,
    tiny_file: Path,
    population: PopulationSummary,
    work: Path,
    tree: Path | None = None,
    tree_name: str = "this tree",
) -> EndToEnd:
    """`fhir-app process` on a fresh database of `backend`, after a 1-patient start-up run."""
    label = f"{backend}-{tree_name.replace(' ', '-')}"
    try:
        with fresh_database(backend) as url:
            startup = process_in(tree, tiny_file, work / f"startup-{label}", url)
        with fresh_database(backend) as url:
            out = work / f"out-{label}"
            run = process_in(tree, input_file, out, url)
    except DatabaseUnavailable as exc:
        return EndToEnd(
            backend, None, None, population.resources, False, f"skipped: {exc}", tree_name
        )
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
    return EndToEnd(backend, run, startup, population.resources, outputs_ok, note, tree_name)


def run_bulk(
    resources: int = DEFAULT_RESOURCES,
    backends: tuple[str, ...] = BACKENDS,
    seed: int = 0,
    *,
    progress: bool = True,
    before: str | None = None,
    repeat: int = 1,
) -> BulkResult:
    """Generate the input, measure the baselines and every end-to-end run (and, with `before`,
    the earlier commit's run before each of this tree's). With `repeat`, each end-to-end run is
    made that many times (taking turns with the earlier commit's) and the median one kept."""

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
        earlier = _worktree(before, work) if before else None
        try:
            for backend in backends:
                olds: list[EndToEnd] = []
                news: list[EndToEnd] = []
                for _ in range(max(1, repeat)):
                    if earlier is not None:
                        say(f"fhir-app process on {backend}, {before} ...")
                        old = end_to_end(
                            backend, input_file, tiny_file, population, work, earlier, str(before)
                        )
                        say(f"{backend}, {before}: {old.rate:,.0f} resources/s; {old.note}")
                        olds.append(old)
                    say(f"fhir-app process on {backend} ...")
                    run = end_to_end(backend, input_file, tiny_file, population, work)
                    say(f"{backend}: {run.rate:,.0f} resources/s; {run.note}")
                    news.append(run)
                if olds:
                    result.before.append(_median(olds))
                result.e2e.append(_median(news))
        finally:
            if earlier is not None:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(earlier)], cwd=ROOT, check=False
                )
    return result


def _median(runs: list[EndToEnd]) -> EndToEnd:
    """The run of median rate (an odd count gives a run actually made)."""
    return sorted(runs, key=lambda run: run.rate)[len(runs) // 2]


def _worktree(rev: str, work: Path) -> Path:
    """`rev` checked out (detached) into a temporary git worktree under `work`."""
    tree = work / "before-tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), rev],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return tree


def before_rows(result: BulkResult) -> list[list[str]]:
    """Now / before, per backend (`--before`)."""
    rows = []
    for old, new in zip(result.before, result.e2e, strict=True):
        if old.run is None or new.run is None:
            continue
        ratio = rate(new.rate, old.rate)
        target = ""
        if new.backend == "postgresql":
            target = f">= {TARGET_BEFORE_RATIO:.0f}x: {verdict(ratio >= TARGET_BEFORE_RATIO)}"
        checked = "" if old.outputs_ok and new.outputs_ok else " (OUTPUTS WRONG)"
        rows.append(
            [
                f"{new.backend}{checked}",
                f"{old.rate:,.0f}",
                f"{new.rate:,.0f}",
                f"{ratio:.2f}",
                _cpu(old.run),
                _cpu(new.run),
                target,
            ]
        )
    return rows


def _cpu(run: ProcessRun) -> str:
    """CPU seconds of a run: fhir-app's processes + the database server's."""
    own, database = run.cpu_seconds, run.database_cpu_seconds
    return f"{own + database:.1f} ({own:.1f} + {database:.1f})"


def bulk_rows(result: BulkResult) -> list[list[str]]:
    """Table rows: one per measurement."""
    baselines = [
        ("parse-only (orjson, 1 process)", result.parse),
        ("validate-only (schema gate, 1 process)", result.validate),
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
    if result.before:
        before = result.before[0].tree
        header = (
            "backend",
            f"before ({before}) resources/s",
            "now resources/s",
            "now / before",
            "before CPU s (fhir-app + database)",
            "now CPU s (fhir-app + database)",
        )
        print("\n" + markdown_table((*header, "target"), before_rows(result)))
    for e2e in [*result.before, *result.e2e]:
        if e2e.run is not None and not e2e.outputs_ok:
            print(f"\n{e2e.backend} ({e2e.tree}): {e2e.note}")


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=DEFAULT_RESOURCES)
    parser.add_argument("--backend", action="append", choices=BACKENDS, dest="backends")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before", help="an earlier commit to run on the same input (git rev)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="end-to-end runs per tree and backend (median kept)"
    )
    args = parser.parse_args(argv)
    print(machine_line())
    backends = tuple(args.backends or BACKENDS)
    result = run_bulk(args.resources, backends, args.seed, before=args.before, repeat=args.repeat)
    print_bulk(result)
    runs = [*result.before, *result.e2e]
    return 0 if all(e.outputs_ok or e.run is None for e in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
