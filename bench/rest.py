"""Latency and throughput of the REST API under concurrent transaction Bundles.

Starts the real `fhir-app serve` as a subprocess on a free port of 127.0.0.1 (never beyond
loopback) with a fresh database (SQLite, or PostgreSQL with `--postgres`), then POSTs transaction
Bundles of 20 PUT entries, each a whole patient's inputs (a distinct patient per request, so no two
requests contend for one patient's rows), at 1, 8 and 32 concurrent clients. Every level is bounded
in requests and in time. Prints p50/p95/p99 latency and throughput per level, and stops the server.

The clients run on asyncio in this process (request bodies serialised in advance), on the same
cores as the server: on a 2-core machine they take CPU from it, so the figures are conservative.

Run: `.venv/bin/python bench/rest.py [--postgres] [--requests 200] [--seconds 60]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Final

import httpx
import orjson
from generate import patient_id_of, patient_inputs
from harness import (
    child_environment,
    fhir_app_command,
    free_loopback_port,
    fresh_database,
    machine_line,
    markdown_table,
    rate,
    verdict,
)

from fhir_app.fhir.samples import transaction

HOST: Final = "127.0.0.1"  # loopback only: the bench server has no bearer tokens
ENTRIES: Final = 20
DEFAULT_CONCURRENCY: Final = (1, 8, 32)
DEFAULT_REQUESTS: Final = 200
DEFAULT_SECONDS: Final = 60.0
WARM_UP: Final = 5
TARGET_P99_MS: Final = 50.0  # at 32 clients
FHIR_JSON: Final = "application/fhir+json"
PREFIX: Final = "rest"


class ServerFailed(Exception):
    """The server did not come up, or stopped."""


@contextlib.contextmanager
def running_server(database_url: str, log: IO[bytes]) -> Iterator[str]:
    """`fhir-app serve` on a free loopback port; yields its FHIR base URL, stops it after."""
    port = free_loopback_port()
    args = [*fhir_app_command(), "serve", "--host", HOST, "--port", str(port)]
    workers = os.environ.get("FHIR_APP_BENCH_WORKERS")
    if workers:  # `serve --workers N`: one app per process, both cores for Python
        args += ["--workers", workers]
    server = subprocess.Popen(
        args, env=child_environment(database_url), stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://{HOST}:{port}/fhir"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise ServerFailed(f"fhir-app serve exited with {server.returncode}")
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServerFailed("fhir-app serve did not answer /fhir/metadata within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@dataclass(frozen=True, slots=True)
class LevelResult:
    """The figures of one concurrency level."""

    clients: int
    latencies_ms: list[float]  # of successful requests
    errors: int
    seconds: float
    first_error: str

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the latencies (ms)."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    @property
    def transactions_per_second(self) -> float:
        """Successful transactions per second of wall clock."""
        return rate(len(self.latencies_ms), self.seconds)


def bodies(first: int, count: int, seed: int) -> list[tuple[str, bytes]]:
    """(patient id, serialised transaction Bundle) for patients first .. first+count-1."""
    return [
        (
            patient_id_of(index, seed, PREFIX),
            orjson.dumps(
                transaction(patient_inputs(index, seed, size=ENTRIES, prefix=PREFIX).resources)
            ),
        )
        for index in range(first, first + count)
    ]


async def _run_level(
    base: str, clients: int, work: list[tuple[str, bytes]], seconds: float
) -> LevelResult:
    queue = iter(work)
    latencies: list[float] = []
    errors: list[str] = []
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    started = time.perf_counter()
    deadline = started + seconds

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for _, body in queue:
                if time.perf_counter() > deadline:
                    return
                sent = time.perf_counter()
                try:
                    response = await client.post("", content=body, headers=headers)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - sent) * 1000
                if response.status_code == 200:
                    latencies.append(elapsed)
                else:
                    errors.append(f"HTTP {response.status_code}: {response.text[:300]}")

        await asyncio.gather(*(worker() for _ in range(clients)))
    return LevelResult(
        clients, latencies, len(errors), time.perf_counter() - started, errors[0] if errors else ""
    )


def check_outputs(base: str, patient_id: str) -> bool:
    """The server derived outputs for a patient it was sent (the work was really done)."""
    response = httpx.get(
        f"{base}/RiskAssessment",
        params={"subject": f"Patient/{patient_id}"},
        headers={"Accept": FHIR_JSON},
        timeout=30,
    )
    return response.status_code == 200 and bool(response.json().get("entry"))


@dataclass(frozen=True, slots=True)
class RestResult:
    """Every level of one REST benchmark run."""

    backend: str
    levels: list[LevelResult]
    outputs_ok: bool


def run_rest(
    backend: str = "sqlite",
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY,
    requests: int = DEFAULT_REQUESTS,
    seconds: float = DEFAULT_SECONDS,
    seed: int = 0,
    *,
    progress: bool = True,
) -> RestResult:
    """Serve on a fresh database and load it level by level."""
    plan = []
    first = 0
    warm = bodies(first, WARM_UP, seed)
    first += WARM_UP
    for clients in concurrency:
        plan.append((clients, bodies(first, requests, seed)))
        first += requests
    levels = []
    with (
        fresh_database(backend) as url,
        tempfile.TemporaryFile() as log,
        running_server(url, log) as base,
    ):
        with httpx.Client(base_url=base, timeout=60) as client:
            for _, body in warm:  # imports, caches and connection pools warm up here
                answer = client.post("", content=body, headers={"Content-Type": FHIR_JSON})
                if answer.status_code != 200:
                    raise ServerFailed(f"warm-up HTTP {answer.status_code}: {answer.text[:300]}")
        for clients, work in plan:
            if progress:
                print(f"  rest: {clients} clients on {backend} ...", file=sys.stderr)
            level = asyncio.run(_run_level(base, clients, work, seconds))
            if progress:
                print(
                    f"  rest: {len(level.latencies_ms)} ok, {level.errors} errors, "
                    f"p99 {level.percentile(99):.1f} ms",
                    file=sys.stderr,
                )
            levels.append(level)
        outputs_ok = check_outputs(base, plan[-1][1][0][0])
    return RestResult(backend, levels, outputs_ok)


REST_HEADER: Final = (
    "clients",
    "requests ok",
    "errors",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "transactions/s",
    "resources/s",
    "target",
)


def rest_rows(result: RestResult) -> list[list[str]]:
    """One row per concurrency level."""
    rows = []
    for level in result.levels:
        target = ""
        if level.clients == 32:
            met = level.percentile(99) < TARGET_P99_MS and level.errors == 0
            target = f"p99 < {TARGET_P99_MS:.0f} ms: {verdict(met)}"
        rows.append(
            [
                str(level.clients),
                str(len(level.latencies_ms)),
                str(level.errors),
                f"{level.percentile(50):.1f}",
                f"{level.percentile(95):.1f}",
                f"{level.percentile(99):.1f}",
                f"{level.transactions_per_second:,.1f}",
                f"{level.transactions_per_second * ENTRIES:,.0f}",
                target,
            ]
        )
    return rows


def print_rest(result: RestResult) -> None:
    """The figures as a Markdown table."""
    print(
        f"REST on {result.backend}: POST /fhir transaction Bundles of {ENTRIES} PUT entries "
        "(one new patient each); outputs derived: "
        + ("yes" if result.outputs_ok else "NO (RiskAssessment search found nothing)")
    )
    print(markdown_table(REST_HEADER, rest_rows(result)))
    for level in result.levels:
        if level.first_error:
            print(f"\n{level.clients} clients, first error: {level.first_error}")


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="per level")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="cap per level")
    parser.add_argument(
        "--clients",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        default=DEFAULT_CONCURRENCY,
        help="comma-separated concurrency levels (default 1,8,32)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(machine_line())
    backend = "postgresql" if args.postgres else "sqlite"
    result = run_rest(backend, args.clients, args.requests, args.seconds, args.seed)
    print_rest(result)
    failed = not result.outputs_ok or any(level.errors for level in result.levels)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
