"""Fixtures of the analytics tests: the outputs of every example, and the ViewDefinitions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_app.analytics.views import load_views
from fhir_app.fhir.parse import iter_input_resources
from fhir_app.service import assess

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("patient-*.json"))
VIEWS_DIR = REPO_ROOT / "profiles" / "views"
DERIVED_AT = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


def example_outputs(path: Path) -> list[dict[str, Any]]:
    """The outputs `fhir-app assess` derives from one example Bundle, at DERIVED_AT."""
    result = assess(
        iter_input_resources(path.read_bytes(), filename_hint=path.name), now=DERIVED_AT
    )
    assert not result.rejections, result.rejections
    return result.outputs


@pytest.fixture(scope="session")
def outputs() -> list[dict[str, Any]]:
    """Every output of every example, in example order."""
    assert len(EXAMPLES) == 17
    return [resource for path in EXAMPLES for resource in example_outputs(path)]


@pytest.fixture(scope="session")
def example_inputs() -> list[dict[str, Any]]:
    """Every input resource of every example, as the Bundles carry them."""
    inputs: list[dict[str, Any]] = []
    for path in EXAMPLES:
        for _, item in iter_input_resources(path.read_bytes(), filename_hint=path.name):
            assert isinstance(item, dict)
            inputs.append(item)
    return inputs


@pytest.fixture(scope="session")
def views() -> dict[str, dict[str, Any]]:
    """The ViewDefinitions in profiles/views by name."""
    return load_views(VIEWS_DIR)
