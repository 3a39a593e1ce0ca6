"""The service and database faults: a unit of work that loses a race before its commit (a
deadlock, a lost connection) is run again and stores everything once; a fault at the commit is
left to the client (its outcome is unknown), and a batch answers it in the entry it hit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fhir_app.fhir import samples
from fhir_app.service import RACE_ATTEMPTS, FhirService
from fhir_app.store import (
    CommitOutcomeUnknown,
    ConflictRolledBack,
    StoreError,
    TransientStoreError,
    UnitOfWork,
)


class Faults:
    """Units of work that fail with the next planned fault, either before the commit (when the
    patients' derivations are locked, the way a deadlock or a lost connection shows up) or at
    the COMMIT (after rolling back, as the database would have). `None` in a plan, or an
    exhausted plan, works normally."""

    def __init__(
        self,
        make_uow: Callable[[], UnitOfWork],
        *,
        before_commit: list[StoreError | None] | None = None,
        at_commit: list[StoreError | None] | None = None,
    ) -> None:
        self._make_uow = make_uow
        self.before_commit = before_commit or []
        self.at_commit = at_commit or []
        self.opened = 0

    def __call__(self) -> UnitOfWork:
        self.opened += 1
        uow = self._make_uow()
        early = self.before_commit.pop(0) if self.before_commit else None
        late = self.at_commit.pop(0) if self.at_commit else None
        if early is not None:

            def failing_lock(patient_ids: object) -> None:
                raise early

            uow.lock_patient_derivations = failing_lock  # type: ignore[method-assign]
        if late is not None:

            def failing_commit() -> None:
                uow.rollback()
                raise late

            uow.commit = failing_commit  # type: ignore[method-assign]
        return uow


def deadlock() -> ConflictRolledBack:
    return ConflictRolledBack("deadlock detected")


def study_and_finding_bundle() -> dict[str, Any]:
    """A transaction of two POSTs (server-assigned ids), the finding referencing the study."""
    study = samples.imaging_study("x", "p1", "CT", started="2025-01-01", uid="1.2.3")
    finding = samples.observation("y", "p1", "ct", 40, level="T12", effective="2025-01-01")
    del study["id"], finding["id"]
    finding["derivedFrom"] = [{"reference": "urn:uuid:6f1c1f0e-0000-4000-8000-000000000001"}]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f1c1f0e-0000-4000-8000-000000000001",
                "resource": study,
                "request": {"method": "POST", "url": "ImagingStudy"},
            },
            {
                "fullUrl": "urn:uuid:6f1c1f0e-0000-4000-8000-000000000002",
                "resource": finding,
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


def test_a_transaction_that_loses_a_race_runs_again_and_stores_once(
    make_uow: Callable[[], UnitOfWork],
) -> None:
    faults = Faults(make_uow, before_commit=[deadlock(), TransientStoreError("connection lost")])
    service = FhirService(faults)
    response = service.transaction(study_and_finding_bundle())

    assert faults.opened == 3
    assert [e["response"]["status"] for e in response["entry"]] == ["201 Created"] * 2
    study_id, finding_id = (e["response"]["location"].split("/")[1] for e in response["entry"])
    # The last attempt's ids, with the references rewritten to them (not to an earlier try's).
    stored = service.read("Observation", finding_id).content
    assert stored["derivedFrom"] == [{"reference": f"ImagingStudy/{study_id}"}]
    studies, total = service.matches("ImagingStudy", [], count=10)
    assert total == 1
    assert studies[0].resource_id == study_id
    findings, total = service.matches("Observation", [("patient", "p1")], count=50)
    assert [r.resource_id for r in findings if not r.is_output] == [finding_id]


def test_a_create_that_loses_a_race_runs_again(make_uow: Callable[[], UnitOfWork]) -> None:
    faults = Faults(make_uow, before_commit=[deadlock()])
    service = FhirService(faults)
    finding = samples.observation("y", "p1", "ct", 40, level="T12", effective="2025-01-01")
    result = service.create("Observation", finding)
    assert result.status == 201
    assert faults.opened == 2
    _, total = service.matches("Observation", [("_id", result.resource_id)], count=10)
    assert total == 1


def test_lost_races_are_run_again_a_bounded_number_of_times(
    make_uow: Callable[[], UnitOfWork],
) -> None:
    faults = Faults(make_uow, before_commit=[deadlock() for _ in range(10)])
    service = FhirService(faults)
    with pytest.raises(ConflictRolledBack):
        service.transaction(study_and_finding_bundle())
    assert faults.opened == RACE_ATTEMPTS
    _, total = service.matches("ImagingStudy", [], count=10)
    assert total == 0


@pytest.mark.parametrize(
    "fault",
    [
        TransientStoreError("connection refused"),
        CommitOutcomeUnknown("server closed the connection during COMMIT"),
    ],
)
def test_a_fault_at_commit_is_not_run_again(
    make_uow: Callable[[], UnitOfWork], fault: StoreError
) -> None:
    faults = Faults(make_uow, at_commit=[fault])
    service = FhirService(faults)
    with pytest.raises(type(fault)):
        service.transaction(study_and_finding_bundle())
    assert faults.opened == 1


def test_a_batch_answers_a_fault_in_its_entry_and_goes_on(
    make_uow: Callable[[], UnitOfWork],
) -> None:
    faults = Faults(make_uow, at_commit=[None, TransientStoreError("connection refused"), None])
    service = FhirService(faults)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": samples.observation(
                    f"b{n}", "p1", "ct", 40 + n, level="T12", effective="2025-01-01"
                ),
                "request": {"method": "PUT", "url": f"Observation/b{n}"},
            }
            for n in range(3)
        ],
    }
    response = service.batch(bundle)

    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created", "503", "201 Created"]
    outcome = response["entry"][1]["response"]["outcome"]
    assert outcome["issue"][0]["code"] == "transient"
    assert service.read("Observation", "b0").version_id == 1
    assert service.read("Observation", "b2").version_id == 1
    _, total = service.matches("Observation", [("_id", "b1")], count=10)
    assert total == 0
