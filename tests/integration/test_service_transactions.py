"""Transactions as a FHIR server processes them: POST entries referenced by their fullUrl."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_app.fhir import samples
from fhir_app.service import FhirService
from fhir_app.store import UnitOfWork


def test_post_entries_keep_the_ids_their_references_were_rewritten_to(
    make_uow: Callable[[], UnitOfWork],
) -> None:
    service = FhirService(make_uow)
    study = samples.imaging_study("x", "p1", "CT", started="2025-01-01", uid="1.2.3")
    finding = samples.observation("y", "p1", "ct", 40, level="T12", effective="2025-01-01")
    del study["id"], finding["id"]
    finding["derivedFrom"] = [{"reference": "urn:uuid:6f1c1f0e-0000-4000-8000-000000000001"}]
    bundle: dict[str, Any] = {
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
    response = service.transaction(bundle)
    study_location, finding_location = (e["response"]["location"] for e in response["entry"])
    study_id = study_location.split("/")[1]
    stored = service.read("Observation", finding_location.split("/")[1]).content
    assert stored["derivedFrom"] == [{"reference": f"ImagingStudy/{study_id}"}]
    assert service.read("ImagingStudy", study_id).content["resourceType"] == "ImagingStudy"
    # The SINS output of T12 is derived from the finding and references the study it was read from.
    risks, _ = service.matches("RiskAssessment", [("patient", "p1")], count=10)
    basis = " ".join(b["reference"] for b in risks[0].content["basis"])
    assert f"ImagingStudy/{study_id}/_history/1" in basis


def test_references_to_a_matched_conditional_create_point_at_the_existing_resource(
    make_uow: Callable[[], UnitOfWork],
) -> None:
    service = FhirService(make_uow)
    study = samples.imaging_study("x", "p1", "CT", started="2025-01-01", uid="1.2.3")
    del study["id"]
    existing = service.create("ImagingStudy", dict(study))
    assert existing.status == 201
    finding = samples.observation("y", "p1", "ct", 40, level="T12", effective="2025-01-01")
    del finding["id"]
    finding["derivedFrom"] = [{"reference": "urn:uuid:6f1c1f0e-0000-4000-8000-00000000000a"}]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f1c1f0e-0000-4000-8000-00000000000a",
                "resource": study,
                "request": {
                    "method": "POST",
                    "url": "ImagingStudy",
                    "ifNoneExist": "identifier=urn:dicom:uid|urn:oid:1.2.3",
                },
            },
            {
                "fullUrl": "urn:uuid:6f1c1f0e-0000-4000-8000-00000000000b",
                "resource": finding,
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = service.transaction(bundle)
    study_entry, finding_entry = response["entry"]
    assert study_entry["response"]["status"] == "200 OK"
    assert study_entry["response"]["location"] == existing.location
    stored = service.read("Observation", finding_entry["response"]["location"].split("/")[1])
    assert stored.content["derivedFrom"] == [{"reference": f"ImagingStudy/{existing.resource_id}"}]
    _, total = service.matches("ImagingStudy", [("patient", "p1")], count=10)
    assert total == 1
