"""The official FHIR R4 examples (npm `hl7.fhir.r4.examples` 4.0.1) through the REST API.

CONTRACT 1 and 3 (v2): "R4 resources from real EHRs must be accepted as they are". Every
Observation, Condition, ImagingStudy and Patient example, standalone and inside the example
Bundles (nested Bundles included), is written one by one (PUT at its id, POST when it has none) to
the API on SQLite and on PostgreSQL. Each must be stored (2xx, and read back unchanged apart from
`meta.versionId` / `meta.lastUpdated`) or refused with a 4xx whose OperationOutcome names the R4
violation listed in EXPECTED_REFUSALS; none may give a 5xx. A refusal that is not in the table
fails the test, and so does a listed example that is stored: when the validator changes, updating
that one table is the whole change.

The package is installed with the independent validator (`cd tests/validator && npm ci`); without
it the test is skipped (under CI=true it fails, as the validator tests do).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from support.validator import errors, require_medplum, validate_with_medplum

from fhir_app.api import create_app
from fhir_app.config import Settings
from fhir_app.service import FhirService
from fhir_app.store import UnitOfWork

pytestmark = pytest.mark.node

PACKAGE = "hl7.fhir.r4.examples"
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "validator" / "node_modules" / PACKAGE
INPUT_TYPES = ("Observation", "Condition", "ImagingStudy", "Patient")
FHIR_JSON = {"Content-Type": "application/fhir+json"}
SERVER_META = ("versionId", "lastUpdated")


@dataclass(frozen=True, slots=True)
class Refusal:
    """An expected refusal: the HTTP status, a FHIRPath the outcome names, and the R4 rule."""

    status: int
    expression: str
    violation: str


# Example (file, and `entry[i]` inside a Bundle) -> why FHIR R4 refuses it. Empty: with CONTRACT 3
# (v2) every one of these examples is valid R4 that the server stores, and the independent
# validator (@medplum/core 4.5.2) finds all 642 valid too. The stricter validator of CONTRACT 3b
# may refuse some: list each here with the element and the rule of R4 it breaks.
EXPECTED_REFUSALS: dict[str, Refusal] = {}


@dataclass(frozen=True, slots=True)
class Example:
    """One input resource of the package and where it was found."""

    label: str
    resource: dict[str, Any]


def _entries(bundle: dict[str, Any], label: str) -> Iterator[Example]:
    for index, entry in enumerate(bundle.get("entry") or ()):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        where = f"{label} entry[{index}]"
        if resource.get("resourceType") in INPUT_TYPES:
            yield Example(where, resource)
        elif resource.get("resourceType") == "Bundle":
            yield from _entries(resource, where)


def official_examples() -> list[Example]:
    """Every input-type example of the package: standalone files, then Bundle entries."""
    found: list[Example] = []
    for path in sorted(EXAMPLES_DIR.glob("*.json")):
        if path.name == "package.json" or path.name.startswith("."):
            continue
        resource = orjson.loads(path.read_bytes())
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") in INPUT_TYPES:
            found.append(Example(path.name, resource))
        elif resource.get("resourceType") == "Bundle":
            found.extend(_entries(resource, path.name))
    return found


def require_examples() -> None:
    """Skip when the npm package is not installed; under CI=true, fail instead."""
    if (EXAMPLES_DIR / "package.json").exists() or any(EXAMPLES_DIR.glob("Observation-*.json")):
        return
    reason = f"{PACKAGE} is not installed (run `cd tests/validator && npm ci`)"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(slots=True)
class Outcome:
    """What the server answered for one example."""

    label: str
    status: int
    expressions: tuple[str, ...] = ()
    diagnostics: str = ""
    changed: str | None = None  # what differs when read back, for a stored example


def _without_server_meta(resource: dict[str, Any], *, drop_id: bool) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if not (drop_id and k == "id")}
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in SERVER_META}
    out.pop("meta", None)
    if meta:
        out["meta"] = meta
    return out


def write_example(client: TestClient, example: Example) -> Outcome:
    """Write one example (PUT at its id, else POST) and read a stored one back."""
    resource = example.resource
    rtype, rid = resource["resourceType"], resource.get("id")
    body = orjson.dumps(resource)
    if isinstance(rid, str):
        response = client.put(f"/fhir/{rtype}/{rid}", content=body, headers=FHIR_JSON)
    else:
        response = client.post(f"/fhir/{rtype}", content=body, headers=FHIR_JSON)
    outcome = Outcome(example.label, response.status_code)
    if response.status_code >= 400:
        answer = response.json()
        issues = answer.get("issue", []) if isinstance(answer, dict) else []
        outcome.expressions = tuple(e for i in issues for e in i.get("expression", []))
        outcome.diagnostics = " | ".join(i.get("diagnostics", "") for i in issues)
        return outcome
    location = response.headers.get("Location", "")
    path = location[location.index(f"{rtype}/") :] if f"{rtype}/" in location else f"{rtype}/{rid}"
    current = "/".join(path.split("/")[:2])
    read = client.get(f"/fhir/{current}")
    if read.status_code != 200:
        outcome.changed = f"read back {current}: {read.status_code}"
        return outcome
    sent = _without_server_meta(resource, drop_id=not isinstance(rid, str))
    served = _without_server_meta(read.json(), drop_id=not isinstance(rid, str))
    if served != sent:
        keys = sorted(k for k in set(sent) | set(served) if sent.get(k) != served.get(k))
        outcome.changed = f"read back differs in {', '.join(keys)}"
    return outcome


@pytest.fixture
def client(database_url: str, make_uow: Callable[[], UnitOfWork]) -> Iterator[TestClient]:
    """The API in process over the test database (SQLite and PostgreSQL)."""
    settings = Settings(database_url=database_url, auth_tokens=[])
    app = create_app(settings, FhirService(make_uow))
    with TestClient(app) as test_client:
        yield test_client
    # Its AuditEvents stored before the database is dropped, and the writer thread stopped.
    app.state.audit_writer.close()


def test_the_package_holds_the_examples_we_count_on() -> None:
    require_examples()
    examples = official_examples()
    standalone = [e for e in examples if "entry[" not in e.label]
    in_bundles = [e for e in examples if "entry[" in e.label]
    observations = [e for e in standalone if e.resource["resourceType"] == "Observation"]
    # The counts of the issue: 64 standalone Observation examples; the Bundles hold more.
    assert len(observations) == 64
    assert {e.resource["resourceType"] for e in standalone} == set(INPUT_TYPES)
    assert len(in_bundles) > 100
    assert set(EXPECTED_REFUSALS) <= {e.label for e in examples}, "a stale EXPECTED_REFUSALS row"


def test_every_official_example_is_stored_or_refused_for_a_real_r4_violation(
    client: TestClient,
) -> None:
    require_examples()
    outcomes = [write_example(client, example) for example in official_examples()]
    server_errors = [o for o in outcomes if o.status >= 500]
    assert not server_errors, [(o.label, o.status, o.diagnostics) for o in server_errors]
    changed = [(o.label, o.changed) for o in outcomes if o.status < 400 and o.changed]
    assert not changed, changed
    refused = {o.label: o for o in outcomes if o.status >= 400}
    unexpected = {
        label: (o.status, o.expressions, o.diagnostics)
        for label, o in refused.items()
        if label not in EXPECTED_REFUSALS
    }
    assert not unexpected, f"refused, not in EXPECTED_REFUSALS: {unexpected}"
    stored_but_listed = sorted(set(EXPECTED_REFUSALS) - set(refused))
    assert not stored_but_listed, f"listed in EXPECTED_REFUSALS but stored: {stored_but_listed}"
    for label, expected in EXPECTED_REFUSALS.items():
        got = refused[label]
        assert got.status == expected.status, (label, got.status, got.diagnostics)
        assert any(expected.expression in e for e in got.expressions), (
            label,
            expected,
            got.expressions,
            got.diagnostics,
        )


def test_every_example_the_independent_validator_refuses_is_an_expected_refusal() -> None:
    """CONTRACT 3b: validation at least as strict as an independent R4 validator (@medplum/core)
    on these examples: what it finds invalid must be in EXPECTED_REFUSALS (so refused)."""
    require_examples()
    require_medplum()
    examples = official_examples()
    results = validate_with_medplum([e.resource for e in examples])
    invalid = {e.label: errors(r) for e, r in zip(examples, results, strict=True) if errors(r)}
    missed = {label: issues for label, issues in invalid.items() if label not in EXPECTED_REFUSALS}
    assert not missed, f"invalid for @medplum/core, not in EXPECTED_REFUSALS: {missed}"
