"""The bulk run's worker processes end with the main process, however it ends: they store
derivations on their own connections, and an orphan would go on storing the batches queued to it
beside the run that resumes the killed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's (prctl)"
)

SCRIPT = """
import sys, time
from fhir_app.bulk import _Workers
workers = _Workers(2)
busy = [workers._pool.apply_async(time.sleep, (60,)) for _ in range(2)]  # mid-task when killed
print(*[process.pid for process in workers._pool._pool], flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped yet is dead)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state and "dead" not in state


def test_workers_die_when_the_main_process_is_killed() -> None:
    main = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert main.stdout is not None
        workers = [int(pid) for pid in main.stdout.readline().split()]
        assert len(workers) == 2
        assert all(_alive(pid) for pid in workers)
    finally:
        main.send_signal(signal.SIGKILL)
        main.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)
