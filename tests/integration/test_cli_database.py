"""The command line when the database cannot be used: a clear message and exit code 3, never a
traceback (issue 8), for every command that opens the database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Port 1 on loopback: nothing listens, the connection is refused at once.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/fhirapp"


@pytest.mark.parametrize(
    "arguments",
    [
        ["migrate"],
        ["process", str(EXAMPLES / "patient-01-stable-blastic.json"), "--out", "{out}"],
        ["export", "--out", "{out}"],
        ["report", "--out", "{out}"],
    ],
    ids=["migrate", "process", "export", "report"],
)
def test_an_unreachable_database_is_a_message_and_exit_code_3(
    arguments: list[str], tmp_path: Path
) -> None:
    env = {**os.environ, "FHIR_APP_DATABASE_URL": UNREACHABLE}
    args = [a.replace("{out}", str(tmp_path / "out")) for a in arguments]
    done = subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "could not be used" in done.stderr
    assert "127.0.0.1:1/fhirapp" in done.stderr


@pytest.mark.parametrize("command", ["export", "report"])
@pytest.mark.parametrize("state", ["missing", "empty-file"])
def test_reading_a_database_that_holds_nothing_is_exit_code_3(
    command: str, state: str, tmp_path: Path
) -> None:
    """A mistyped SQLite path (or a database nothing was stored in) is not exported as empty with
    exit code 0, and no database is created on the way."""
    database = tmp_path / "mistyped.db"
    if state == "empty-file":
        database.touch()
    env = {**os.environ, "FHIR_APP_DATABASE_URL": f"sqlite:///{database}"}
    done = subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", command, "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "nothing to read" in done.stderr
    assert str(database) in done.stderr
    assert database.exists() == (state == "empty-file")
