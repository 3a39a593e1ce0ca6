"""The bench population generator (bench/generate.py, a script folder, not a package) for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"
_NAME = "bench_generate"


def generator() -> ModuleType:
    """bench/generate.py as a module (loaded once per session)."""
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, BENCH / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


def write_population_file(path: Path, **options: object) -> object:
    """`bench.generate.write_population_file`: a population as NDJSON or a transaction Bundle;
    returns its PopulationSummary (patients, levels, resources)."""
    return generator().write_population_file(path, **options)
