"""A real FHIR client library, fhirpy, against the server run by uvicorn: create, update,
search, read, history, delete."""

from __future__ import annotations

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from fhir_app.fhir.samples import imaging_study, observation, patient


def test_fhirpy_create_search_read_history(base_url: str) -> None:
    # fhirpy's count() adds Aidbox's `_totalMethod`; lenient handling has it ignored.
    client = SyncFHIRClient(base_url, extra_headers={"Prefer": "handling=lenient"})

    person = client.resource("Patient", **patient("fp1", "Berg", "Anna", "1960-05-01", "female"))
    person.save()  # PUT at the client's id
    study = imaging_study("fp1-ct", "fp1", "CT", started="2025-02-01T10:00:00Z", uid="1.2.3.4")
    client.resource("ImagingStudy", **study).save()

    body = observation(
        "unused", "fp1", "appearance", "lytic", level="T12", effective="2025-02-01", study="fp1-ct"
    )
    del body["id"]
    finding = client.resource("Observation", **body)
    finding.save()  # POST: the server assigns the id
    assert finding.id
    assert finding["meta"]["versionId"] == "1"

    risks = client.resources("RiskAssessment").search(patient="fp1").fetch_all()
    assert len(risks) == 1
    risk = risks[0]
    assert risk["subject"]["reference"] == "Patient/fp1"
    assert risk["basis"]

    read = client.reference("RiskAssessment", risk.id).to_resource()
    assert read.serialize() == risk.serialize()
    # The finding, its SINS and classification Observations, and the NOMS inputs.
    assert client.resources("Observation").search(subject="Patient/fp1").count() == 4

    finding["valueCodeableConcept"]["coding"][0]["code"] = "blastic"
    finding.save()  # PUT: a new version
    assert finding["meta"]["versionId"] == "2"
    refreshed = client.reference("RiskAssessment", risk.id).to_resource()
    assert refreshed["meta"]["versionId"] == "2"

    history = client.execute(f"Observation/{finding.id}/_history", method="get")
    assert history["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]

    everything = client.resources("Observation").search(subject="Patient/fp1").limit(1)
    assert len(everything.fetch_all()) == 4  # follows `next` links page by page

    finding.delete()
    with pytest.raises(ResourceNotFound):
        client.reference("Observation", finding.id).to_resource()
    with pytest.raises(OperationOutcome):
        client.resource("RiskAssessment", id="nope", status="final").save()
