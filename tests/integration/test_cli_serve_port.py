"""`fhir-app serve` on a port it cannot have: one line and the usage exit code, before the
database is touched (uvicorn's own start-up failure is exit 3, which is the database's code)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_APP_")}
    env["FHIR_APP_DATABASE_URL"] = f"sqlite:///{tmp_path / 'app.db'}"
    return subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", "serve", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(tmp_path, "--port", str(port))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"refusing to serve: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "serving" not in done.stdout
    assert not (tmp_path / "app.db").exists()  # refused before the database is touched


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path, port: str) -> None:
    done = serve(tmp_path, "--port", port)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "--port" in done.stderr
