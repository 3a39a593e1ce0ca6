"""Shared parts of the peer-client sessions (fhirpy, fhirclient, fhir-kit-client): the steps
recorder and the data each session seeds through its own client.

A session is what an EHR integration team does with a client it already uses; it is a sequence
of steps that build on each other. `Steps` runs each step, records whether it held and why not,
and fails the test at the end listing every failed step, so one run shows the whole picture
instead of the first broken interaction only.

    steps = Steps("fhirpy")
    with steps.step("search: count()"):
        assert search.count() == 7
    steps.assert_all()
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from fhir_app.fhir import codes
from fhir_app.fhir.samples import imaging_study, lesion_panel, patient

# The business identifiers the sessions give their inputs (conditional create/update/delete).
IDENTIFIER_SYSTEM = "urn:fhir-app:peer-session"
MCODE_PRIMARY = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"
DIAGNOSTICS = re.compile(r'"diagnostics": ?"((?:[^"\\\\]|\\\\.)*)"')
SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")


@dataclass
class StepResult:
    """One step of a session: its name, whether it held, and what went wrong."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Steps:
    """Runs the steps of one client's session and reports them all at the end."""

    client: str
    results: list[StepResult] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run the block as one step; an exception or failed assert marks it failed."""
        try:
            yield
        except (Exception, pytest.fail.Exception) as error:  # every failure is a finding
            frames = traceback.extract_tb(error.__traceback__)
            # The session's line, not the client library's where it raised.
            where = next((f for f in reversed(frames) if "/tests/" in f.filename), frames[-1])
            text = " ".join(str(error).split())  # one line: OperationOutcomes come indented
            response = getattr(error, "response", None)  # requests' HTTPError: what it said
            if response is not None and hasattr(response, "text"):
                text = f"{text} {' '.join(response.text.split())}"
            diagnostics = DIAGNOSTICS.findall(text)
            if diagnostics:  # an OperationOutcome: its diagnostics say it, not its narrative
                text = " | ".join(diagnostics)
            self.results.append(
                StepResult(name, False, f"{type(error).__name__}: {text} (line {where.lineno})")
            )
        else:
            self.results.append(StepResult(name, True))

    def failed(self) -> list[StepResult]:
        """The steps that did not hold."""
        return [result for result in self.results if not result.ok]

    def assert_all(self) -> None:
        """Fail with every failed step (name and detail) when any step failed."""
        failed = self.failed()
        if failed:
            lines = [f"- {r.name}: {r.detail[:400]}" for r in failed]
            passed = len(self.results) - len(failed)
            pytest.fail(
                f"{self.client} session: {len(failed)} of {len(self.results)} steps failed "
                f"({passed} held):\n" + "\n".join(lines),
                pytrace=False,
            )


def identifier(value: str) -> dict[str, str]:
    """A business identifier of a seeded input."""
    return {"system": IDENTIFIER_SYSTEM, "value": value}


def seed_patient(pid: str) -> dict[str, Any]:
    """The session's Patient, with a business identifier."""
    body = patient(pid, "Peer", "Session", "1961-11-23", "female")
    body["identifier"] = [identifier(pid)]
    return body


def seed_study(pid: str) -> dict[str, Any]:
    """The session's CT ImagingStudy, `{pid}-ct`."""
    return imaging_study(f"{pid}-ct", pid, "CT", started="2025-09-14T07:00:00Z", uid="1.2.826.9.1")


def seed_findings(pid: str) -> list[dict[str, Any]]:
    """Findings at two levels: an unstable lytic T11 and a blastic T4, each a lesion panel with
    an identifier `{pid}-t11` / `{pid}-t4`, on different dates (so `_sort=date` has an order).

    Without ids: the sessions create them (POST) and learn the server's ids.
    """
    t11 = lesion_panel(
        "x",
        pid,
        "T11",
        [
            ("appearance", "lytic"),
            ("alignment", "de-novo-deformity"),
            ("height_loss", 55),
            ("posterior", "both"),
            ("pain", "mechanical"),
        ],
        effective="2025-09-14T07:30:00Z",
        study=f"{pid}-ct",
    )
    t4 = lesion_panel(
        "x",
        pid,
        "T4",
        [("appearance", "blastic"), ("alignment", "normal-alignment"), ("height_loss", 0)],
        effective="2025-09-10T07:30:00Z",
        study=f"{pid}-ct",
    )
    out = []
    for level, body in (("t11", t11), ("t4", t4)):
        del body["id"]
        body["identifier"] = [identifier(f"{pid}-{level}")]
        out.append(body)
    return out


def seed_condition(pid: str) -> dict[str, Any]:
    """An mCODE primary cancer condition (breast), CONTRACT 3 (v2), without an id."""
    return {
        "resourceType": "Condition",
        "meta": {"profile": [MCODE_PRIMARY]},
        "identifier": [identifier(f"{pid}-primary")],
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": codes.SNOMED,
                    "code": "254837009",
                    "display": "Malignant neoplasm of breast",
                }
            ]
        },
        "subject": {"reference": f"Patient/{pid}"},
    }


def declares(capability: dict[str, Any], rtype: str, interaction: str | None = None) -> bool:
    """Whether the CapabilityStatement lists the type (and the interaction, when given)."""
    for rest in capability.get("rest", []):
        for resource in rest.get("resource", []):
            if resource.get("type") != rtype:
                continue
            if interaction is None:
                return True
            return any(i.get("code") == interaction for i in resource.get("interaction", []))
    return False


def reference_id(reference: str) -> str:
    """`Observation/x/_history/2` or `Observation/x` -> `Observation/x`."""
    parts = reference.split("/")
    return "/".join(parts[:2])
