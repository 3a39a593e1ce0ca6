"""Peer-client session: fhir-kit-client (node, tests/peers) against the server run by uvicorn
(SQLite and PostgreSQL).

tests/peers/session.mjs is the session: history at each level (`resourceHistory`, `typeHistory`,
`systemHistory`, `_since`), POST search, `compartmentSearch`, JSON Patch, `$validate`,
`$everything`, batch and transaction, conditional update and delete, create/read/update/delete,
the derived outputs, paging with `nextPage`. It prints a JSON report of every step (name, ok,
detail); this test runs it against a live server and asserts every step.

Skipped with the reason when node or tests/peers/node_modules is missing (`python3 tasks.py test`
installs it with `npm ci`), except under CI=true, where a missing client is a broken build.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.validator import running_in_ci

PEERS = Path(__file__).resolve().parents[2] / "peers"
SESSION = PEERS / "session.mjs"
INSTALL_COMMAND = "cd tests/peers && npm ci"
TIMEOUT_SECONDS = 240

pytestmark = pytest.mark.node


def require_fhir_kit_client() -> None:
    """Skip when node or the peers package is missing; under CI=true, fail instead."""
    reason = None
    if shutil.which("node") is None:
        reason = "node is not on PATH"
    elif not (PEERS / "node_modules" / "fhir-kit-client" / "package.json").exists():
        reason = f"tests/peers/node_modules is missing (run `{INSTALL_COMMAND}`)"
    if reason is None:
        return
    if running_in_ci():
        pytest.fail(f"fhir-kit-client unavailable in CI: {reason}")
    pytest.skip(f"fhir-kit-client unavailable: {reason}")


def run_session(base_url: str, patient_id: str) -> dict[str, Any]:
    """Run session.mjs against the server; its JSON report."""
    done = subprocess.run(
        ["node", str(SESSION), base_url, patient_id],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        cwd=PEERS,
        check=False,
    )
    # Exit 1 only says that some step failed; anything else is the session not running.
    assert done.returncode in (0, 1), f"session.mjs exit {done.returncode}: {done.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_fhir_kit_client_session(base_url: str) -> None:
    require_fhir_kit_client()
    report = run_session(base_url, "fk1")
    assert report["client"] == "fhir-kit-client"
    steps = report["steps"]
    names = [s["name"] for s in steps]
    # The session ran to its end: every interaction the issue names was tried.
    for wanted in (
        "CapabilityTool",
        "resourceHistory",
        "typeHistory",
        "systemHistory",
        "history _since",
        "POST search",
        "compartmentSearch",
        "patch: JSON Patch",
        "$validate",
        "batch",
        "transaction",
        "conditional update",
        "conditional delete",
        "create: a derived output is refused",
    ):
        assert any(name.startswith(wanted) for name in names), f"no step {wanted!r}"
    failed = [s for s in steps if not s["ok"]]
    if failed:
        lines = "\n".join(f"- {s['name']}: {s['detail'][:400]}" for s in failed)
        pytest.fail(
            f"fhir-kit-client {report['version']} session: {len(failed)} of {len(steps)} steps "
            f"failed:\n{lines}",
            pytrace=False,
        )
