"""Every benchmark figure of fhir-app in one command, printed as Markdown for the README.

Runs, in this order: bulk throughput of `fhir-app process` on SQLite and PostgreSQL against the
parse-only and validate-only baselines (bench/bulk.py), its peak memory at two input sizes
(bench/memory.py), and REST latency at 1, 8 and 32 clients on SQLite and PostgreSQL
(bench/rest.py). Progress goes to stderr; the Markdown goes to stdout once everything has run.

Run: `.venv/bin/python bench/run_all.py [--quick]` (`--quick`: small sizes, a few minutes at most;
without it: 20,000 resources for bulk, 20,000 and 100,000 for memory, 200 requests per REST level).
Targets are printed beside the figures, never asserted: the exit code is 1 only when a run did not
produce the outputs its input calls for.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Final

from bulk import (
    BULK_HEADER,
    TARGET_POSTGRES_RATE,
    TARGET_VALIDATE_RATIO,
    BulkResult,
    bulk_rows,
    run_bulk,
)
from harness import REPO, DatabaseUnavailable, machine_line, markdown_table, rate, verdict
from memory import MEMORY_HEADER, MemoryRun, memory_rows, run_memory
from rest import (
    ENTRIES,
    REST_HEADER,
    TARGET_P99_MS,
    RestResult,
    ServerFailed,
    rest_rows,
    run_rest,
)


@dataclass(frozen=True, slots=True)
class Plan:
    """How big each benchmark runs."""

    bulk_resources: int
    memory_sizes: tuple[int, ...]
    rest_requests: int
    rest_seconds: float


FULL: Final = Plan(20_000, (20_000, 100_000), 200, 60.0)
QUICK: Final = Plan(2_000, (2_000, 10_000), 50, 20.0)


def commit() -> str:
    """The commit measured (short hash), or `unknown` outside git."""
    try:
        answer = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return answer.stdout.strip()


def summary_rows(
    bulk: BulkResult, memory: list[MemoryRun], rests: list[RestResult]
) -> list[list[str]]:
    """The headline figures beside their targets."""
    rows = []
    for e2e in bulk.e2e:
        if e2e.run is None:
            continue
        if e2e.backend == "postgresql":
            rows.append(
                [
                    "bulk `fhir-app process`, PostgreSQL, input resources/s",
                    f"{e2e.rate:,.0f}",
                    f">= {TARGET_POSTGRES_RATE:,.0f}",
                    verdict(e2e.rate >= TARGET_POSTGRES_RATE),
                ]
            )
            ratio = bulk.ratio_to_validate(e2e)
            rows.append(
                [
                    "bulk PostgreSQL / validate-only (same run)",
                    f"{ratio:.2f}",
                    f">= {TARGET_VALIDATE_RATIO}",
                    verdict(ratio >= TARGET_VALIDATE_RATIO),
                ]
            )
        else:
            rows.append(
                [
                    f"bulk `fhir-app process`, {e2e.backend}, input resources/s",
                    f"{e2e.rate:,.0f}",
                    "",
                    "",
                ]
            )
    if len(memory) >= 2:
        small, large = memory[0], memory[-1]
        rows.append(
            [
                f"peak RSS {large.population.resources:,} / {small.population.resources:,} "
                "resources",
                f"{rate(large.run.peak_tree_rss_mb, small.run.peak_tree_rss_mb):.2f}",
                "~1 (flat)",
                "",
            ]
        )
    for rest in rests:
        for level in rest.levels:
            if level.clients == 32:
                p99 = level.percentile(99)
                rows.append(
                    [
                        f"REST p99 at 32 clients, {rest.backend}, ms",
                        f"{p99:.1f}",
                        f"< {TARGET_P99_MS:.0f}",
                        verdict(p99 < TARGET_P99_MS and level.errors == 0),
                    ]
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run everything and print the Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    machine = machine_line()
    started = time.perf_counter()
    bulk = run_bulk(plan.bulk_resources, seed=args.seed)
    memory = run_memory(plan.memory_sizes, "sqlite", args.seed)
    rests: list[RestResult] = []
    skipped: list[str] = []
    for backend in ("sqlite", "postgresql"):
        try:
            rests.append(
                run_rest(
                    backend, requests=plan.rest_requests, seconds=plan.rest_seconds, seed=args.seed
                )
            )
        except (DatabaseUnavailable, ServerFailed) as exc:
            skipped.append(f"REST on {backend} not measured: {exc}")
    minutes = (time.perf_counter() - started) / 60
    population = bulk.population
    today = dt.datetime.now(dt.UTC).date().isoformat()
    mode = " --quick" if args.quick else ""

    print(f"### Performance ({today}, commit {commit()}{', quick sizes' if args.quick else ''})")
    print()
    print(
        f"Measured by `.venv/bin/python bench/run_all.py{mode}` in {minutes:.1f} min on {machine}. "
        "Only the ratios against the baselines of the same run carry over to other machines."
    )
    print()
    print(
        markdown_table(("figure", "value", "target", "verdict"), summary_rows(bulk, memory, rests))
    )
    print()
    print(
        f"**Bulk** (`fhir-app process FILE --out DIR` as a subprocess, fresh database): "
        f"{population.resources:,} input resources, {population.patients:,} synthetic patients "
        f"({population.resources_per_patient:.1f} resources each, {population.levels:,} lesion "
        f"levels), {bulk.file_mb:.1f} MB NDJSON. Start-up is a separate 1-patient run."
    )
    print()
    print(markdown_table(BULK_HEADER, bulk_rows(bulk)))
    print()
    print("**Memory** of `fhir-app process` on SQLite, by input size:")
    print()
    print(markdown_table(MEMORY_HEADER, memory_rows(memory)))
    for rest in rests:
        print()
        print(
            f"**REST** on {rest.backend}: `POST /fhir` transaction Bundles of {ENTRIES} PUT "
            f"entries, one new patient each, up to {plan.rest_requests} per level "
            f"({plan.rest_seconds:.0f} s cap); outputs derived: "
            + ("yes" if rest.outputs_ok else "NO")
        )
        print()
        print(markdown_table(REST_HEADER, rest_rows(rest)))
    notes = [*skipped]
    notes += [f"{e.backend}: {e.note}" for e in bulk.e2e if not e.outputs_ok]
    notes += [f"{m.population.resources:,} resources: {m.run.stderr_tail(3)}" for m in memory
              if not m.outputs_ok]  # fmt: skip
    notes += [
        f"REST {r.backend}, {level.clients} clients: {level.first_error}"
        for r in rests
        for level in r.levels
        if level.first_error
    ]
    if notes:
        print()
        print("Problems seen:")
        for note in notes:
            print(f"- {note}")
    wrong = (
        any(e.run is not None and not e.outputs_ok for e in bulk.e2e)
        or any(not m.outputs_ok for m in memory)
        or any(not r.outputs_ok for r in rests)
    )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
