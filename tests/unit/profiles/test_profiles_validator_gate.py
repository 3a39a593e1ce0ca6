"""The gate of tests marked `node`: skip without the validator, but fail under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import validator


@pytest.fixture
def no_node_modules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A validator folder without node_modules."""
    monkeypatch.setattr(validator, "VALIDATOR_DIR", tmp_path)


@pytest.mark.usefixtures("no_node_modules")
def test_missing_node_modules_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert not validator.node_available()
    with pytest.raises(pytest.skip.Exception, match="npm ci"):
        validator.require_medplum()


@pytest.mark.usefixtures("no_node_modules")
def test_missing_node_modules_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="unavailable in CI"):
        validator.require_medplum()


def test_missing_node_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(validator.shutil, "which", lambda _name: None)
    assert validator.missing_reason() == "node is not on PATH"
    with pytest.raises(pytest.skip.Exception, match="node is not on PATH"):
        validator.require_medplum()


@pytest.mark.usefixtures("no_node_modules")
def test_validating_without_the_validator_raises() -> None:
    with pytest.raises(validator.ValidatorError):
        validator.validate_with_medplum([{"resourceType": "Patient"}])


def test_an_empty_batch_needs_no_validator() -> None:
    assert validator.validate_with_medplum([]) == []
