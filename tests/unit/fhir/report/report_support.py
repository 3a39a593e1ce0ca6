"""Outputs of the examples, derived in memory, for the report tests."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fhir_app.fhir.parse import iter_input_resources
from fhir_app.service import assess

Json = dict[str, Any]
EXAMPLES = Path(__file__).resolve().parents[4] / "examples"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@cache
def _outputs(name: str) -> tuple[Json, ...]:
    path = EXAMPLES / name
    result = assess(iter_input_resources(path.read_bytes(), filename_hint=path.name), now=NOW)
    assert not result.rejections
    return tuple(result.outputs)


def outputs_of(name: str) -> list[Json]:
    """Every output of one example (a fresh copy to change at will)."""
    return copy.deepcopy(list(_outputs(name)))


def report_of(outputs: list[Json]) -> Json:
    """The DiagnosticReport among the outputs."""
    return next(r for r in outputs if r["resourceType"] == "DiagnosticReport")


def output(outputs: list[Json], prefix: str) -> Json:
    """The output whose id starts with `prefix`, e.g. `risk-l2-`."""
    return next(r for r in outputs if r["id"].startswith(prefix))
