"""An --out folder that cannot be created or written is refused before any work: one line and
exit code 2 (as `assess --html` does), not a traceback after everything was stored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "patient-01-stable-blastic.json")
COMMANDS = {
    "process": ["process", EXAMPLE, "--out", "{out}"],
    "export": ["export", "--out", "{out}"],
    "report": ["report", "--out", "{out}"],
}


def run_cli(args: list[str], database: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_APP_")}
    env["FHIR_APP_DATABASE_URL"] = f"sqlite:///{database}"
    return subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding one patient, so export and report would have work to do."""
    folder = tmp_path_factory.mktemp("db")
    done = run_cli(["process", EXAMPLE, "--out", str(folder / "out")], folder / "app.db", folder)
    assert done.returncode == 0, done.stderr
    return folder / "app.db"


def assert_refused(done: subprocess.CompletedProcess[str], out: Path) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: --out {out} ")
    assert not out.exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_out_folder_under_a_file_is_refused_first(
    command: str, database: Path, tmp_path: Path
) -> None:
    """Fails for root too: nothing can be created under a regular file."""
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "new"
    before = database.stat().st_mtime_ns
    done = run_cli([a.replace("{out}", str(out)) for a in COMMANDS[command]], database, tmp_path)
    assert_refused(done, out)
    assert "is not a folder" in done.stderr
    assert database.stat().st_mtime_ns == before  # nothing stored, nothing migrated
