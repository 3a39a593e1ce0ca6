"""The presentedForm and versions: a derivation that changed nothing writes no new report version.

The page and the picture are rendered on every derivation; only their `creation` changes with the
clock, and `outbound.comparable` leaves it out (the bulk path decides versions with the same
comparison).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from fhir_app.fhir import outbound
from fhir_app.service import FhirService
from fhir_app.store import UnitOfWork

REPORT = outbound.output_id("report", "p08", None)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> dict[str, Any]:
    """An example Bundle, parsed fresh."""
    bundle: dict[str, Any] = orjson.loads((EXAMPLES / name).read_bytes())
    return bundle


class Clock:
    """A clock the test moves forward."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def ignored_observation(patient: str) -> dict[str, object]:
    """An input this contract ignores: stored, it makes the patient be derived again."""
    return {
        "resourceType": "Observation",
        "id": "unrelated-weight",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 70, "unit": "kg"},
    }


def test_a_derivation_that_changed_nothing_keeps_the_report_version(
    make_uow: Callable[[], UnitOfWork],
) -> None:
    clock = Clock()
    service = FhirService(make_uow, clock=clock)
    service.transaction(example("patient-08-several-levels.json"))
    first = service.read("DiagnosticReport", REPORT)
    clock.now += timedelta(hours=5)
    service.update("Observation", "unrelated-weight", ignored_observation("p08"))
    again = service.read("DiagnosticReport", REPORT)
    assert again.version_id == first.version_id == 1
    assert again.content["presentedForm"] == first.content["presentedForm"]


def test_a_changed_derivation_writes_a_new_page(make_uow: Callable[[], UnitOfWork]) -> None:
    clock = Clock()
    service = FhirService(make_uow, clock=clock)
    bundle = example("patient-08-several-levels.json")
    service.transaction(bundle)
    first = service.read("DiagnosticReport", REPORT)
    clock.now += timedelta(hours=5)
    pain = next(e["resource"] for e in bundle["entry"] if e["resource"].get("id") == "p08-l2-pain")
    changed = orjson.loads(orjson.dumps(pain))
    changed["valueCodeableConcept"]["coding"][0]["code"] = "mechanical"
    changed["valueCodeableConcept"]["coding"][0].pop("display", None)
    service.update("Observation", "p08-l2-pain", changed)
    second = service.read("DiagnosticReport", REPORT)
    assert second.version_id == 2
    old, new = first.content["presentedForm"], second.content["presentedForm"]
    assert new[0]["data"] != old[0]["data"]
    assert new[0]["creation"] != old[0]["creation"]


def page_of(content: dict[str, Any]) -> str:
    """The stored report's HTML page."""
    html = next(a for a in content["presentedForm"] if a["contentType"] == "text/html")
    return base64.b64decode(html["data"]).decode("utf-8")


def test_an_amended_report_s_page_says_amended(make_uow: Callable[[], UnitOfWork]) -> None:
    report = outbound.output_id("report", "p03", None)
    clock = Clock()
    service = FhirService(make_uow, clock=clock)
    bundle = example("patient-03-unstable.json")
    service.transaction(bundle)
    first = service.read("DiagnosticReport", report)
    assert first.content["status"] == "final"
    assert "Status: final" in page_of(first.content)
    clock.now += timedelta(hours=5)
    pain = next(e["resource"] for e in bundle["entry"] if e["resource"].get("id") == "p03-pain")
    changed = orjson.loads(orjson.dumps(pain))
    changed["valueCodeableConcept"]["coding"][0]["code"] = "pain-free"
    changed["valueCodeableConcept"]["coding"][0].pop("display", None)
    service.update("Observation", "p03-pain", changed)
    amended = service.read("DiagnosticReport", report)
    assert amended.version_id == 2
    assert amended.content["status"] == "amended"
    page = page_of(amended.content)
    assert "Status: amended" in page
    assert "Status: final" not in page
    # The picture does not depend on the status; each attachment keeps the derivation's creation.
    assert amended.content["presentedForm"][1]["data"] != ""
    assert {a["creation"] for a in amended.content["presentedForm"]} == {amended.content["issued"]}
    # A derivation that changes nothing keeps the amended version, its page included.
    clock.now += timedelta(hours=5)
    service.update("Observation", "unrelated-weight", ignored_observation("p03"))
    again = service.read("DiagnosticReport", report)
    assert again.version_id == 2
    assert again.content == amended.content
