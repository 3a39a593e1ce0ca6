#!/usr/bin/env python3
"""The project's two entry points for a newcomer, needing nothing but Python 3.11+.

    python3 tasks.py run    # set up .venv, migrate the SQLite default, load examples/ (first
                            # run only), serve until Ctrl+C
    python3 tasks.py test   # set up .venv, run every check CI runs

Each creates `.venv` on first use and reinstalls only when pyproject.toml changed.

`test` runs pytest in parallel workers (pytest-xdist): two per CPU (at most 8), since a test spends
much of its time waiting on PostgreSQL, a subprocess or a server; FHIR_APP_TEST_WORKERS sets the
number. Arguments after `test` go to pytest: `python3 tasks.py test -n 0` runs the suite in one
process, `python3 tasks.py test -k audit` a part of it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
VALIDATOR = ROOT / "tests" / "validator"
# The node peer client (fhir-kit-client) of the REST session tests.
PEERS = ROOT / "tests" / "peers"
# The exit code of a command stopped by Ctrl+C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def sh(*args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
    """Run a command, echoing it; stop with its exit code when it fails."""
    print("+", " ".join(str(a) for a in args), flush=True)
    child = subprocess.Popen([str(a) for a in args], cwd=cwd, env=env)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        # Ctrl+C reached the whole foreground process group: let the command finish its own
        # shutdown (a second Ctrl+C kills it), then stop as a shell does, without a traceback.
        try:
            child.wait()
        except KeyboardInterrupt:
            child.kill()
            child.wait()
        sys.exit(INTERRUPTED)
    if code != 0:
        sys.exit(code if code > 0 else 128 - code)


def database_is_new() -> bool:
    """True when the configured database holds no fhir-app schema yet (first run), so that a
    later `run` does not load examples/ again over what was changed through the REST API.
    Any other answer (an unreachable database, say) is left to `fhir-app migrate` to report."""
    probe = (
        "import sys\n"
        "from fhir_app.config import get_settings\n"
        "from fhir_app.store import missing_database\n"
        "sys.exit(10 if missing_database(get_settings().database_url) else 0)\n"
    )
    done = subprocess.run(
        [str(BIN / "python"), "-c", probe], cwd=ROOT, capture_output=True, check=False
    )
    return done.returncode == 10


def ensure_venv() -> None:
    """Create .venv and install the project with its dev and spark extras (pyproject changed)."""
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py runs on whatever python3 is
        sys.exit("fhir-app needs Python 3.11 or newer")
    if not (BIN / "python").exists():
        sh(sys.executable, "-m", "venv", VENV)
    stamp = VENV / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        print("installing fhir-app and its tools into .venv (first time: minutes)", flush=True)
        sh(BIN / "python", "-m", "pip", "install", "-q", "--upgrade", "pip")
        # Not quiet: pip shows each package and a progress bar while the large ones download.
        sh(BIN / "python", "-m", "pip", "install", "--progress-bar", "on", "-e", ".[dev,spark]")
        stamp.write_text(digest)


def ensure_node_package(folder: Path) -> None:
    """`npm ci` a node package of the tests when its lock changed (stamp: the lock's sha256)."""
    npm = shutil.which("npm")
    if npm is None or not (folder / "package-lock.json").exists():
        print("node/npm not found: tests marked 'node' will be skipped", flush=True)
        return
    lock = folder / "package-lock.json"
    stamp = folder / "node_modules" / ".installed"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        sh(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", cwd=folder)
        stamp.write_text(digest)


def ensure_validator() -> None:
    """Install the independent FHIR validator (node) when node and npm are there."""
    ensure_node_package(VALIDATOR)


def ensure_peers() -> None:
    """Install the node peer client of the REST sessions (fhir-kit-client) when npm is there."""
    ensure_node_package(PEERS)


CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> None:
    """In CI, install Debian's headless-capable `chromium` for the report page tests.

    Only under CI=true: on a laptop the browser tests skip with a reason instead of changing the
    system. apt-get needs root (or sudo without a password, as CI runners have).
    """
    if os.environ.get("CI", "").lower() != "true" or CHROMIUM.exists():
        return
    apt = shutil.which("apt-get")
    if apt is None:
        print("apt-get not found: chromium cannot be installed; its tests fail", flush=True)
        return
    root = not hasattr(os, "geteuid") or os.geteuid() == 0
    sudo = [] if root else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sh(*sudo, apt, "update", "-qq", env=env)
    sh(*sudo, apt, "install", "-y", "-qq", "chromium", env=env)


def run() -> None:
    """Migrate the SQLite default, load the examples into a new database, and serve the FHIR
    API on loopback until Ctrl+C."""
    ensure_venv()
    new = database_is_new()
    sh(BIN / "fhir-app", "migrate")
    if new:
        examples = sorted(str(p) for p in (ROOT / "examples").glob("*.json"))
        sh(BIN / "fhir-app", "process", *examples, "--out", "out")
    else:
        print("the database exists: examples/ not loaded again (a new database loads them)")
    sh(BIN / "fhir-app", "serve")


def test_workers() -> int:
    """How many pytest-xdist workers: FHIR_APP_TEST_WORKERS, else two per CPU of this process.

    Two per CPU because a test often waits (on PostgreSQL, a subprocess, a server, a deadline);
    at most 8, each holding its own PostgreSQL connections, templates and ~0.5 GB of memory.
    """
    configured = os.environ.get("FHIR_APP_TEST_WORKERS", "").strip()
    if configured:
        if not configured.isdigit():
            sys.exit(
                "FHIR_APP_TEST_WORKERS must be a number of workers (0: one process), "
                f"not {configured!r}"
            )
        return int(configured)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(2 * (cpus or 1), 8)


def test() -> None:
    """Every check CI runs: lint, format, types, import layers, the test suite with coverage."""
    ensure_venv()
    ensure_validator()
    ensure_peers()
    ensure_chromium()
    sh(BIN / "ruff", "check", ".")
    sh(BIN / "ruff", "format", "--check", ".")
    sh(BIN / "mypy", "fhir_app")
    sh(BIN / "lint-imports")
    sh(
        BIN / "pytest",
        "-q",
        # Workers; tests of one xdist_group (the Spark session's) share one of them.
        f"--numprocesses={test_workers()}",
        "--dist=loadgroup",
        "--cov=fhir_app",
        "--cov-branch",
        "--cov-report=term",
        *sys.argv[2:],
    )
    # The domain is the clinical heart: every branch of it must be exercised. (pytest-cov has
    # combined the workers' data into .coverage.)
    sh(BIN / "coverage", "report", "--include=fhir_app/domain/*", "--fail-under=100")


if __name__ == "__main__":
    commands = {"run": run, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python3 {Path(__file__).name} run|test")
    try:
        commands[sys.argv[1]]()
    except KeyboardInterrupt:  # Ctrl+C between commands (sh() handles it during one)
        sys.exit(INTERRUPTED)
