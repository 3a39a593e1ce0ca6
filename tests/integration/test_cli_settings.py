"""A setting the command line cannot use is one line on stderr, never a traceback: exit 2 for
an invalid value (the operator's configuration, a usage error), 3 for a database URL that cannot
be parsed or whose driver is missing, or a database whose schema revision this code does not know.
No message quotes a setting's value (tokens and passwords end up in container logs)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "patient-01-stable-blastic.json")
SECRET = "TOPSECRETTOKEN0123456789abcdefghijkl"

COMMANDS = {
    "migrate": ["migrate"],
    "serve": ["serve", "--port", "1"],
    "assess": ["assess", EXAMPLE],
    "process": ["process", EXAMPLE, "--out", "{out}"],
    "export": ["export", "--out", "{out}"],
    "report": ["report", "--out", "{out}"],
}


def run_cli(command: str, tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_APP_")}
    env.setdefault("FHIR_APP_DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    env.update(environment)
    args = [a.replace("{out}", str(tmp_path / "out")) for a in COMMANDS[command]]
    return subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, *names: str) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for name in names:
        assert name in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        ("FHIR_APP_MAX_REQUEST_BYTES", "abc", "serve"),
        ("FHIR_APP_AUDIT_EVENTS", "maybe", "migrate"),
        ("FHIR_APP_CT_LYTIC_MAX_HU", "x", "assess"),
        ("FHIR_APP_MAX_CONNECTIONS", "0", "serve"),
        ("FHIR_APP_SMART_JWKS", "/x.json", "serve"),
        ("FHIR_APP_PUBLIC_BASE_URL", "fhir.example.org", "export"),
        ("FHIR_APP_DEFAULT_PAGE_SIZE", "5000", "process"),
        ("FHIR_APP_AUTH_TOKENS", f'["{SECRET}", ', "serve"),
        ("FHIR_APP_AUTH_TOKENS", f'["{SECRET}", ', "report"),
    ],
)
def test_an_invalid_setting_is_one_line_and_exit_code_2(
    variable: str, value: str, command: str, tmp_path: Path
) -> None:
    done = run_cli(command, tmp_path, **{variable: value})
    assert_one_line(done, 2, variable)
    assert SECRET not in done.stderr
    if len(value) >= 4:
        assert value not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["migrate", "serve", "process", "export", "report"])
@pytest.mark.parametrize(
    "url", ["nonsense", "", "mysql://u:hunter2secret@localhost/db", "nodialect://u@h/db"]
)
def test_an_unusable_database_url_is_one_line_and_exit_code_3(
    url: str, command: str, tmp_path: Path
) -> None:
    done = run_cli(command, tmp_path, FHIR_APP_DATABASE_URL=url)
    assert_one_line(done, 3, "FHIR_APP_DATABASE_URL")
    assert "hunter2secret" not in done.stderr


@pytest.mark.parametrize("command", ["migrate", "serve", "export"])
def test_a_schema_revision_this_code_does_not_know_is_exit_code_3(
    command: str, tmp_path: Path
) -> None:
    """After rolling the code back without downgrading the schema first."""
    assert run_cli("migrate", tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "app.db") as connection:
        connection.execute("update alembic_version set version_num = 'ffff00001111'")
    done = run_cli(command, tmp_path)
    assert_one_line(done, 3, "'ffff00001111' is unknown to this version of fhir-app")


def test_process_help_names_the_spark_extra() -> None:
    """Rich markup would swallow an unescaped `[spark]`."""
    done = subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", "process", "--help"],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "fhir-app[spark]" in done.stdout
