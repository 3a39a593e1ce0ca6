"""tasks.py, the newcomer's entry point: Ctrl+C stops `run` cleanly (exit 130, no traceback),
and a second `run` does not load examples/ again over what was changed through the REST API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import tasks  # noqa: E402

# A command that shuts down cleanly on SIGINT, as uvicorn does.
SERVER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_ctrl_c_stops_a_command_without_a_traceback() -> None:
    driver = f"import sys, tasks; tasks.sh(sys.executable, '-c', {SERVER!r})"
    process = subprocess.Popen(
        [sys.executable, "-c", driver],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert process.stdout is not None
    line = None
    while line != "ready\n":  # not the echoed command, which quotes it
        line = process.stdout.readline()
        assert line, "the command ended before it was ready"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl+C does: the whole group
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("new", [True, False])
def test_run_loads_the_examples_into_a_new_database_only(
    monkeypatch: pytest.MonkeyPatch, new: bool
) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(tasks, "ensure_venv", lambda: None)
    monkeypatch.setattr(tasks, "database_is_new", lambda: new)
    monkeypatch.setattr(tasks, "sh", lambda *args, **_: commands.append([str(a) for a in args]))
    tasks.run()
    verbs = [command[1] for command in commands]
    assert verbs == (["migrate", "process", "serve"] if new else ["migrate", "serve"])


def test_a_database_is_new_until_migrated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("FHIR_APP_DATABASE_URL", url)
    assert tasks.database_is_new()
    subprocess.run([str(tasks.BIN / "fhir-app"), "migrate"], check=True, capture_output=True)
    assert not tasks.database_is_new()
