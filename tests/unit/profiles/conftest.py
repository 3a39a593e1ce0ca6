"""Fixtures of the profiles/ tests: the generator module, the artefacts, the validator gate."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parents[2]
REPO_ROOT = TESTS_DIR.parent
PROFILES_DIR = REPO_ROOT / "profiles"

# tests/support holds helpers shared by every test folder; make `support` importable from here.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from support.validator import require_medplum  # noqa: E402


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `node` need the npm validator: skip without it (fail under CI=true)."""
    if item.get_closest_marker("node") is not None:
        require_medplum()


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_profiles", PROFILES_DIR / "build_profiles.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve annotations through sys.modules while the module executes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def generator() -> ModuleType:
    """profiles/build_profiles.py as a module."""
    return _load_generator()


@pytest.fixture(scope="session")
def artefacts() -> dict[str, dict[str, Any]]:
    """Every committed artefact in profiles/, by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(PROFILES_DIR.glob("*-*.json"))
    }


@pytest.fixture(scope="session")
def by_url(artefacts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every committed artefact by canonical URL."""
    return {a["url"]: a for a in artefacts.values()}
