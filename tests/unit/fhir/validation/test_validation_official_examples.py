"""The official FHIR R4 examples (npm hl7.fhir.r4.examples 4.0.1, in tests/validator/node_modules
when the test set-up installed it): every Observation, ImagingStudy, Patient and Condition is
valid for the gate, and the differential holds on their mutations too (a deterministic quarter of
them, about 8,000). Skipped when the package is absent (FHIR_APP_R4_EXAMPLES may name an
extracted copy)."""

from __future__ import annotations

import collections
import os
from functools import cache
from pathlib import Path
from typing import Final

import orjson
import pytest
import validation_corpus
from test_validation_differential import new_refuses, old_refuses

from fhir_app.fhir.inputs import InputRejected, JsonObject
from fhir_app.fhir.validation.resource import INPUT_TYPES, validate_resource

# As npm installs it for the node validator (tests/validator), or an extracted
# `npm pack hl7.fhir.r4.examples@4.0.1` (its `package` folder) named by FHIR_APP_R4_EXAMPLES.
PACKAGE: Final = Path(
    os.environ.get("FHIR_APP_R4_EXAMPLES")
    or Path(__file__).resolve().parents[4]
    / "tests"
    / "validator"
    / "node_modules"
    / "hl7.fhir.r4.examples"
)
pytestmark = pytest.mark.skipif(
    not any(PACKAGE.glob("Observation-*.json")),
    reason=f"the official R4 examples are not installed ({PACKAGE})",
)


@cache
def examples() -> dict[str, JsonObject]:
    found: dict[str, JsonObject] = {}
    for path in sorted(PACKAGE.glob("*.json")):
        document = orjson.loads(path.read_bytes())
        if not isinstance(document, dict):
            continue
        if document.get("resourceType") in INPUT_TYPES:
            found[path.name] = document
        elif document.get("resourceType") == "Bundle":
            for index, entry in enumerate(document.get("entry") or []):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and resource.get("resourceType") in INPUT_TYPES:
                    found[f"{path.name} entry[{index}]"] = resource
    return found


def test_every_official_example_of_the_input_types_is_valid() -> None:
    refused = {}
    for name, resource in examples().items():
        try:
            validate_resource(resource)
        except InputRejected as exc:
            refused[name] = [i.diagnostics for i in exc.issues]
    assert len(examples()) > 250
    assert not refused, refused


def test_differential_on_the_official_examples(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    standalone = {n: r for n, r in examples().items() if " entry[" not in n}
    monkeypatch.setattr(validation_corpus, "seeds", lambda: standalone)
    counts: collections.Counter[tuple[str, bool, bool]] = collections.Counter()
    missed, accepted = [], []
    for number, mutation in enumerate(validation_corpus.mutations()):
        if number % 4 or mutation.kind == "long-string":
            continue
        old, new = old_refuses(mutation.resource), new_refuses(mutation.resource)
        counts[(mutation.kind, old, new)] += 1
        if old and not new:
            missed.append(f"{mutation.seed} {mutation.where}")
        if mutation.kind in validation_corpus.ALWAYS_INVALID and not new:
            accepted.append(f"{mutation.kind} {mutation.seed} {mutation.where}")
    with capsys.disabled():
        print(f"\nofficial examples: {len(standalone)} seeds, {sum(counts.values())} mutations")
        for (kind, old, new), count in sorted(counts.items()):
            print(f"  {kind:<20} fhir.resources refuses={old!s:<5} gate refuses={new!s:<5} {count}")
    assert sum(counts.values()) > 5_000
    assert not missed, missed[:20]
    assert not accepted, accepted[:20]
