"""What every benchmark script shares: fresh databases, running the real `fhir-app` as a subprocess
with its wall clock and peak memory, and printing figures.

Benchmarks here print numbers; they never assert on time. Only ratios against baselines measured in
the same run are comparable between machines (PERFORMANCE.md).
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
# The admin URL of the PostgreSQL server, the same variable the test suite reads.
POSTGRES_ADMIN_URL: Final = os.environ.get(
    "FHIR_APP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS: Final = ("sqlite", "postgresql")


def fhir_app_command() -> list[str]:
    """The installed `fhir-app` console script beside this interpreter (the real thing)."""
    script = Path(sys.executable).with_name("fhir-app")
    if script.exists():
        return [str(script)]
    found = shutil.which("fhir-app")
    if found:
        return [found]
    return [sys.executable, "-m", "fhir_app.cli"]


def machine_line() -> str:
    """Where the figures were measured; the load average says how shared the cores were."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load} at start"
    )


@contextlib.contextmanager
def fresh_sqlite() -> Iterator[str]:
    """The URL of a new, empty SQLite database file, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="fhir-app-bench-") as folder:
        yield f"sqlite:///{folder}/bench.db"


class DatabaseUnavailable(Exception):
    """The PostgreSQL server could not be reached."""


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """The URL of a new PostgreSQL database on the local server, dropped afterwards."""
    import psycopg

    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"fhirapp_bench_{secrets.token_hex(6)}"
    try:
        connection = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc).strip().splitlines()[0]) from exc
    with connection:
        connection.execute(f'CREATE DATABASE "{name}"')
        try:
            base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
            yield f"{base}/{name}"
        finally:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """A fresh database of `backend` ("sqlite" or "postgresql")."""
    manager = fresh_sqlite() if backend == "sqlite" else fresh_postgres()
    with manager as url:
        yield url


def child_environment(database_url: str) -> dict[str, str]:
    """The environment of a `fhir-app` child: this one, a given database, no bearer tokens."""
    env = dict(os.environ)
    env["FHIR_APP_DATABASE_URL"] = database_url
    env.pop("FHIR_APP_AUTH_TOKENS", None)
    return env


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of a process and all its descendants now (Linux /proc)."""
    total, pending, seen = 0, [root], set()
    page = os.sysconf("SC_PAGE_SIZE")
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * page
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", "rb") as children:
                    pending.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


@dataclass(frozen=True, slots=True)
class ProcessRun:
    """One run of a `fhir-app` subprocess."""

    command: tuple[str, ...]
    seconds: float
    exit_code: int
    stderr: str
    peak_rss_mb: float  # the largest single process of the tree (wait4 ru_maxrss)
    peak_tree_rss_mb: float  # the whole process tree, sampled every 50 ms from /proc
    # CPU (user + system) of the process and the children it waited for (its workers), and of
    # the local PostgreSQL server's processes meanwhile (sampled from /proc; 0 without one).
    cpu_seconds: float = 0.0
    database_cpu_seconds: float = 0.0

    def stderr_tail(self, lines: int = 5) -> str:
        """The last lines the process wrote to stderr."""
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


def run_measured(
    args: Sequence[str], env: dict[str, str], *, cwd: Path | None = None, sample_every: float = 0.05
) -> ProcessRun:
    """Run a command to its end; wall clock, exit code, stderr and peak memory."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(args), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err
        )
        peak_tree = 0
        done = threading.Event()
        database_start = _postgres_cpu_ticks()
        database_seen = dict(database_start)

        def sample() -> None:
            nonlocal peak_tree
            while not done.is_set():
                peak_tree = max(peak_tree, _tree_rss_bytes(process.pid))
                for pid, ticks in _postgres_cpu_ticks().items():
                    database_seen[pid] = max(database_seen.get(pid, 0), ticks)
                done.wait(sample_every)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux), unlike
        # getrusage(RUSAGE_CHILDREN), which keeps the maximum over every child ever waited for.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return ProcessRun(
        tuple(args),
        seconds,
        process.returncode,
        stderr,
        usage.ru_maxrss / 1024,
        peak_tree / (1024 * 1024),
        usage.ru_utime + usage.ru_stime,
        (sum(database_seen.values()) - sum(database_start.values())) / _TICKS_PER_SECOND,
    )


_TICKS_PER_SECOND: Final = os.sysconf("SC_CLK_TCK")


def _postgres_cpu_ticks() -> dict[int, int]:
    """utime + stime (clock ticks) of every process named `postgres` (the server and its
    backends) now, by pid; a backend that ends between two samples loses its last ~50 ms."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as comm:
                if comm.read().strip() != b"postgres":
                    continue
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        found[int(entry)] = int(fields[11]) + int(fields[12])
    return found


def run_process(input_file: Path, out_dir: Path, database_url: str) -> ProcessRun:
    """`fhir-app process INPUT --out DIR` on a database, measured."""
    args = [*fhir_app_command(), "process", str(input_file), "--out", str(out_dir)]
    return run_measured(args, child_environment(database_url))


def count_lines(path: Path) -> int:
    """Non-blank lines of an NDJSON file (0 when it does not exist)."""
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rate(count: float, seconds: float) -> float:
    """Items per second (0 when nothing was timed)."""
    return count / seconds if seconds > 0 else 0.0


def verdict(met: bool) -> str:
    """How a target reads in a table."""
    return "met" if met else "MISSED"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table, numbers right-aligned."""

    def numeric(cell: str) -> bool:
        try:
            float(cell.replace(",", ""))
        except ValueError:
            return False
        return True

    def right_aligned(column: int) -> bool:
        cells = [row[column] for row in rows if row[column]]
        return bool(cells) and all(numeric(cell) for cell in cells)

    aligns = ["---:" if right_aligned(i) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
