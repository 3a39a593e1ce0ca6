"""The official SQL-on-FHIR v2 conformance suite, run against our ViewDefinition evaluator.

The suite lives beside the repository in `../shared/sql-on-fhir-v2-tests/` (copied unchanged from
the specification's repository); its README gives the comparison rules applied here, as the
specification's reference runner applies them: row order does not matter; each row has exactly
the expected columns by name; values are equal as JSON values (numbers by value, a boolean never
a number); `expectColumns` is the column order; `expectError` passes only when the view is refused
or fails.

One test runs every case and fails listing every failure, so that the count is visible at once;
a parametrised test per case follows, so a single failing case can be rerun by its id.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_app.analytics.views import compile_view, evaluate

REPO_ROOT = Path(__file__).resolve().parents[3]
SUITE_DIR = REPO_ROOT.parent / "shared" / "sql-on-fhir-v2-tests"
TOTAL = 134


def _cases() -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    cases = []
    for path in sorted(SUITE_DIR.glob("*.json")):
        suite = orjson.loads(path.read_bytes())
        for test in suite["tests"]:
            cases.append((f"{path.stem}: {test['title']}", test, suite["resources"]))
    return cases


CASES = _cases() if SUITE_DIR.is_dir() else []
needs_suite = pytest.mark.skipif(
    not SUITE_DIR.is_dir(),
    reason=f"the SQL-on-FHIR v2 suite is not at {SUITE_DIR} (../shared/ beside the repository)",
)


def _json_value(value: Any) -> Any:
    """A value as JSON sees it: a Decimal is a number, lists and objects recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def _canonical(value: Any) -> Any:
    """A hashable form that compares as JSON values do: 1 == 1.0, True != 1."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, _canonical(v)) for k, v in value.items())))
    return ("other", repr(value))


def _row_key(row: dict[str, Any]) -> Any:
    return tuple(sorted((name, _canonical(value)) for name, value in row.items()))


def run_case(test: dict[str, Any], resources: list[dict[str, Any]]) -> str | None:
    """None when the evaluator meets the case, else why not."""
    if "expectError" in test:
        try:
            evaluate(test["view"], resources)
        except Exception:
            return None
        return "the view was accepted; the suite expects it refused"
    try:
        compiled = compile_view(test["view"])
        rows = [_json_value(row) for row in evaluate(compiled, resources)]
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {exc}"
    if "expectColumns" in test:
        if compiled.columns != test["expectColumns"]:
            return f"columns {compiled.columns} != {test['expectColumns']}"
        if any(list(row) != compiled.columns for row in rows):
            return "a row's columns are not in the view's order"
        return None
    expected = test["expect"]
    if Counter(map(_row_key, rows)) != Counter(map(_row_key, expected)):
        return f"rows {rows} != expected {expected}"
    return None


@needs_suite
def test_the_whole_suite_passes() -> None:
    """Every one of the 134 cases, with the README's comparison rules; lists every failure."""
    assert len(CASES) == TOTAL, f"the suite has {len(CASES)} cases, not {TOTAL}"
    failures = [
        f"{case_id}: {why}"
        for case_id, test, resources in CASES
        if (why := run_case(test, resources)) is not None
    ]
    assert not failures, f"{len(failures)} of {TOTAL} fail:\n" + "\n".join(failures)


@needs_suite
@pytest.mark.parametrize(
    ("test", "resources"),
    [pytest.param(test, resources, id=case_id) for case_id, test, resources in CASES],
)
def test_case(test: dict[str, Any], resources: list[dict[str, Any]]) -> None:
    """One case of the suite, to rerun by its id."""
    why = run_case(test, resources)
    assert why is None, why


def test_the_comparison_follows_the_readme() -> None:
    """The comparison itself: order-free, numbers by value, a boolean is never a number."""
    assert _row_key({"a": 1}) == _row_key({"a": 1.0})
    assert _row_key({"a": True}) != _row_key({"a": 1})
    assert _row_key({"a": None}) != _row_key({})
    assert Counter(map(_row_key, [{"a": 1}, {"a": 2}])) == Counter(
        map(_row_key, [{"a": 2}, {"a": 1}])
    )
    assert Counter(map(_row_key, [{"a": 1}, {"a": 1}])) != Counter(map(_row_key, [{"a": 1}]))
