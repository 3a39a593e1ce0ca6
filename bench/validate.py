"""Validate-only rate of the schema gate beside fhir.resources' and orjson's, in the same run.

Inputs: every resource of examples/ (the contract's example inputs) and a generated population of
`--resources` input resources (bench/generate.py), as JSON bytes. For each set, one process,
each pass repeated for `--seconds` in all:
  (a) `orjson.loads`: parsing alone, the floor;
  (b) `orjson.loads` + `fhir_app.fhir.parse.validate_resource`: the validator of every path
      (fhir_app.fhir.validation: the tightened FHIR JSON schema compiled with jsonschema-rs);
  (c) `orjson.loads` + fhir.resources R4B `model_validate`: the validator it replaced.
The passes take turns in 5 rounds and each figure is the median of its rounds (the machine is
shared: a change of load then falls on every pass alike). It prints resources/s of each, the
validate-only rates ((b) and (c) less the parse time of (a)),
and the ratios gate / fhir.resources and gate / orjson; every input must pass both validators.
The first line gives the compile time of the input types' validator (once per process).

Run: `.venv/bin/python bench/validate.py [--resources 5000] [--seconds 3]`
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson
from generate import write_population_file
from harness import machine_line, markdown_table, rate

from fhir_app.fhir.parse import validate_resource
from fhir_app.fhir.validation import schema
from fhir_app.fhir.validation.models import SUPPORTED_INPUT_MODELS
from fhir_app.fhir.validation.resource import INPUT_TYPES

EXAMPLES: Final = Path(__file__).resolve().parents[1] / "examples"
TARGET_RATIO: Final = 10.0  # the gate's validate-only rate over fhir.resources'
ROUNDS: Final = 5


def example_inputs() -> list[bytes]:
    """Every entry resource of examples/*.json, serialised."""
    return [
        orjson.dumps(entry["resource"])
        for path in sorted(EXAMPLES.glob("*.json"))
        for entry in orjson.loads(path.read_bytes())["entry"]
    ]


def population_inputs(resources: int) -> list[bytes]:
    """A generated population's lines."""
    with tempfile.TemporaryDirectory(prefix="fhir-app-validate-") as folder:
        path = Path(folder) / "population.ndjson"
        write_population_file(path, resources=resources, seed=0)
        return [line for line in path.read_bytes().splitlines() if line.strip()]


def _models(raw: Any) -> None:
    SUPPORTED_INPUT_MODELS[raw["resourceType"]].model_validate(raw)


PASSES: Final[dict[str, Callable[[Any], None] | None]] = {
    "orjson.loads": None,
    "orjson.loads + schema gate (validate_resource)": validate_resource,
    "orjson.loads + fhir.resources model_validate": _models,
}


def measure(inputs: list[bytes], check: Callable[[Any], None] | None, seconds: float) -> float:
    """Resources/s of `orjson.loads` (+ `check`) over `inputs`, repeated for `seconds`."""
    loads = orjson.loads
    done = 0
    started = time.perf_counter()
    while True:
        if check is None:
            for data in inputs:
                loads(data)
        else:
            for data in inputs:
                check(loads(data))
        done += len(inputs)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return rate(done, elapsed)


def interleaved(inputs: list[bytes], seconds: float, rounds: int = ROUNDS) -> dict[str, float]:
    """The median rate of each pass over `rounds` rounds that take turns, so that a change of
    the machine's load (it is shared) falls on every pass alike."""
    samples: dict[str, list[float]] = {label: [] for label in PASSES}
    for _ in range(rounds):
        for label, check in PASSES.items():
            samples[label].append(measure(inputs, check, seconds / rounds))
    return {label: statistics.median(values) for label, values in samples.items()}


def compare(name: str, inputs: list[bytes], seconds: float) -> list[list[str]]:
    """One table row per pass, then the validate-only rates and ratios."""
    rates = interleaved(inputs, seconds)
    parse, gate, models = rates.values()

    def validate_only(with_parse: float) -> float:
        # Time per resource of the pass less the time of parsing it.
        per = 1 / with_parse - 1 / parse
        return 1 / per if per > 0 else float("inf")

    gate_only, models_only = validate_only(gate), validate_only(models)
    rows = [[name, label, f"{value:,.0f}", ""] for label, value in rates.items()]
    rows.append([name, "validate-only: schema gate", f"{gate_only:,.0f}", ""])
    rows.append([name, "validate-only: fhir.resources", f"{models_only:,.0f}", ""])
    ratio = gate_only / models_only
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    rows.append([name, "gate / fhir.resources (validate-only)", f"{ratio:.1f}x", verdict])
    rows.append([name, "gate / fhir.resources (with parsing)", f"{gate / models:.1f}x", ""])
    rows.append([name, "gate with parsing / orjson.loads", f"{gate / parse:.2f}", ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    print(machine_line())
    compile_seconds = schema.compile_seconds()
    print(f"compiling the validator of {', '.join(INPUT_TYPES)}: {compile_seconds:.2f} s")
    sets = {"examples/": example_inputs(), "population": population_inputs(args.resources)}
    for inputs in sets.values():
        for data in inputs:  # every input is valid for both, or the comparison means nothing
            raw = orjson.loads(data)
            validate_resource(raw)
            _models(raw)
    rows = []
    for name, inputs in sets.items():
        sizes = sorted(len(d) for d in inputs)
        label = f"{name} ({len(inputs):,} resources, median {sizes[len(sizes) // 2]:,} B)"
        rows.extend(compare(label, inputs, args.seconds))
    header = ("inputs", "pass", f"resources/s (ratio; target >= {TARGET_RATIO:.0f}x)", "target")
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
