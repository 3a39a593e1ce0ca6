"""Peer-client session: fhirclient 4.4.0 (SMART on FHIR's Python client) against the server run
by uvicorn (SQLite and PostgreSQL).

"Its whole session" is what fhirclient's API offers against a FHIR server: `FHIRClient.prepare()`
(reads and parses the CapabilityStatement), `client.patient` (the launch patient), the R4 models'
`read` / `read_from`, `create` (POST), `update` (PUT), `delete`, and `where(...)` searches with
`perform` / `perform_iter` (paging through `next`) / `perform_resources`, `$or` / `$and`
(comma / repeated parameter), `include` and reverse includes, and a transaction Bundle posted
through the Bundle model. fhirclient's models are R4 (4.0.1) and strict: every resource the server
sends - inputs echoed back and the derived RiskAssessment, DiagnosticReport, Observation and
Provenance - must parse, or the step fails with the model's complaint.

fhirclient's comparison operators (`$gt` -> `date=>2025`) are DSTU1 syntax that no R4 server reads,
so the session does not use them; R4 prefixes (`ge2025`) go as plain values.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import requests
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.condition import Condition
from fhirclient.models.diagnosticreport import DiagnosticReport
from fhirclient.models.imagingstudy import ImagingStudy
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.models.provenance import Provenance
from fhirclient.models.riskassessment import RiskAssessment
from fhirclient.server import FHIRNotFoundException
from support.peer_session import (
    IDENTIFIER_SYSTEM,
    Steps,
    declares,
    reference_id,
    seed_condition,
    seed_findings,
    seed_patient,
    seed_study,
)

PID = "fc1"


def next_page(bundle: Bundle, server: Any) -> Bundle | None:
    """The page after `bundle` (its `next` link), read as a Bundle model, or None."""
    for link in bundle.link or []:
        if link.relation == "next":
            return Bundle.read_from(link.url, server)
    return None


DERIVED_OBSERVATIONS = 5  # SINS and classification per level (2), the patient's NOMS inputs
GONE = (FHIRNotFoundException, requests.HTTPError)  # 404, or 410 for a deleted resource


def test_fhirclient_session(base_url: str) -> None:
    # perform() and perform_resources() are deprecated in 4.x for the *_iter forms; both are
    # still its documented API, and the session uses both.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="fhirclient")
    steps = Steps("fhirclient")
    smart = smart_client.FHIRClient(
        settings={"app_id": "fhir-app-peer-session", "api_base": base_url, "patient_id": PID}
    )
    server = smart.server
    state: dict[str, Any] = {}

    with steps.step("prepare(): reads and parses the CapabilityStatement"):
        assert smart.prepare() is True  # no OAuth endpoints declared: ready without a token
        capability = server.capabilityStatement
        assert isinstance(capability, CapabilityStatement)
        assert capability.fhirVersion == "4.0.1"
        types = {r.type for r in capability.rest[0].resource}
        assert {"Observation", "ImagingStudy", "Patient", "RiskAssessment"} <= types
        state["condition"] = declares(capability.as_json(), "Condition", "create")

    with steps.step("Patient model: update() at the client's id (PUT), client.patient reads it"):
        Patient(seed_patient(PID)).update(server)
        person = smart.patient
        assert isinstance(person, Patient)
        assert person.id == PID
        assert smart.human_name(person.name[0]) == "Session Peer"

    with steps.step("ImagingStudy model: update() at the client's id, read() back"):
        ImagingStudy(seed_study(PID)).update(server)
        study = ImagingStudy.read(f"{PID}-ct", server)
        assert study.series[0].modality.code == "CT"
        assert study.meta.versionId == "1"

    t11_body, t4_body = seed_findings(PID)
    with steps.step("Observation model: create() (POST) twice, the server assigns ids"):
        ids = []
        for body in (t11_body, t4_body):
            created = Observation(copy.deepcopy(body)).create(server)
            assert created is not None, "create() answered without a body"
            assert created["resourceType"] == "Observation"
            ids.append(created["id"])
        state["t11"], state["t4"] = ids

    if state.get("condition"):
        with steps.step("Condition model: create(), read() (declared in the metadata)"):
            created = Condition(seed_condition(PID)).create(server)
            assert created is not None
            condition = Condition.read(created["id"], server)
            assert condition.code.coding[0].code == "254837009"
            state["condition_id"] = condition.id

    with steps.step("Observation.read(): the finding as a strict R4 model"):
        finding = Observation.read(state["t11"], server)
        assert finding.status == "final"
        assert finding.identifier[0].value == f"{PID}-t11"
        assert len(finding.component) == len(t11_body["component"])
        state["finding"] = finding

    with steps.step("where(subject).perform(): a searchset Bundle with the total"):
        bundle = Observation.where(struct={"subject": f"Patient/{PID}"}).perform(server)
        assert isinstance(bundle, Bundle)
        assert bundle.type == "searchset"
        assert bundle.total == 2 + DERIVED_OBSERVATIONS

    with steps.step("where().perform_resources(): every Observation parses (derived too)"):
        resources = Observation.where(struct={"subject": f"Patient/{PID}"}).perform_resources(
            server
        )
        assert len(resources) == 2 + DERIVED_OBSERVATIONS
        assert all(isinstance(r, Observation) for r in resources)
        codes = {r.code.coding[0].code for r in resources}
        assert {"sins-total", "lesion-classification", "noms-inputs"} <= codes

    with steps.step("where(_count=2).perform_iter(): pages through `next`"):
        pages = list(
            Observation.where(struct={"subject": f"Patient/{PID}", "_count": "2"}).perform_iter(
                server
            )
        )
        assert len(pages) == 4
        ids = [e.resource.id for page in pages for e in page.entry or []]
        assert len(ids) == len(set(ids)) == 2 + DERIVED_OBSERVATIONS

    with steps.step("where($or): patient=a,b is either patient"):
        either = Observation.where(struct={"patient": {"$or": [PID, "nobody"]}}).perform(server)
        assert either.total == 2 + DERIVED_OBSERVATIONS
    with steps.step("where($and): patient=a&patient=b is both (none)"):
        for values in ([PID, "nobody"], ["nobody", PID]):  # neither the first nor the last
            both = Observation.where(struct={"patient": {"$and": values}}).perform(server)
            assert both.total == 0, values
    with steps.step("where(identifier) with system|value finds the one finding"):
        found = Observation.where(
            struct={"identifier": f"{IDENTIFIER_SYSTEM}|{PID}-t4"}
        ).perform_resources(server)
        assert [r.id for r in found] == [state["t4"]]

    with steps.step("RiskAssessment: search and read, strict R4 models"):
        risks = RiskAssessment.where(struct={"patient": PID}).perform_resources(server)
        assert len(risks) == 2
        for risk in risks:
            assert isinstance(risk, RiskAssessment)
            assert risk.subject.reference == f"Patient/{PID}"
            assert risk.basis
            assert RiskAssessment.read(risk.id, server).as_json() == risk.as_json()

    with steps.step("DiagnosticReport and Provenance: search and read, strict R4 models"):
        reports = DiagnosticReport.where(struct={"subject": f"Patient/{PID}"}).perform_resources(
            server
        )
        assert len(reports) == 1
        report = DiagnosticReport.read(reports[0].id, server)
        assert len(report.result) == DERIVED_OBSERVATIONS
        assert report.presentedForm
        state["report"] = report
        provenances = Provenance.where(struct={"patient": PID}).perform_resources(server)
        assert provenances
        assert all(isinstance(p, Provenance) and p.target for p in provenances)

    with steps.step("include('result'): the report with its results in one request"):
        search = DiagnosticReport.where(struct={"subject": f"Patient/{PID}"}).include("result")
        assert "_include=DiagnosticReport:result" in search.construct()
        found = search.perform_resources(server)
        reports = [r for r in found if isinstance(r, DiagnosticReport)]
        results = {f"Observation/{r.id}" for r in found if isinstance(r, Observation)}
        assert len(reports) == 1
        assert results == {reference_id(r.reference) for r in reports[0].result}

    with steps.step("include('target', Provenance, reverse=True): the report's Provenance"):
        search = DiagnosticReport.where(struct={"subject": f"Patient/{PID}"}).include(
            "target", Provenance, reverse=True
        )
        assert "_revinclude=Provenance:target" in search.construct()
        found = search.perform_resources(server)
        provenances = [r for r in found if isinstance(r, Provenance)]
        assert provenances
        report_ref = f"DiagnosticReport/{state['report'].id}"
        for provenance in provenances:
            assert report_ref in {reference_id(t.reference) for t in provenance.target}

    with steps.step("read_from(Patient/{id}/$everything): every page, every resource parses"):
        # The broadest strictness check: inputs and every kind of derived output, as R4 models.
        page: Bundle | None = Bundle.read_from(f"Patient/{PID}/$everything", server)
        kinds: dict[str, int] = {}
        pages = 0
        while page is not None:
            pages += 1
            assert pages < 50
            for entry in page.entry or []:
                name = type(entry.resource).__name__
                kinds[name] = kinds.get(name, 0) + 1
            page = next_page(page, server)
        assert kinds.get("Patient") == 1
        assert kinds.get("ImagingStudy") == 1
        assert kinds.get("RiskAssessment") == 2
        assert kinds.get("DiagnosticReport") == 1
        assert kinds.get("Observation") == 2 + DERIVED_OBSERVATIONS
        assert kinds.get("Provenance", 0) >= 1

    with steps.step("Observation model: update() (PUT) is a new version, outputs re-derived"):
        finding = Observation.read(state["t11"], server)
        finding.status = "amended"
        answer = finding.update()  # the instance remembers the server it was read from
        assert answer is not None
        assert answer["meta"]["versionId"] == "2"
        assert Observation.read(state["t11"], server).status == "amended"
        report = DiagnosticReport.read(state["report"].id, server)
        assert int(report.meta.versionId) > int(state["report"].meta.versionId)

    with steps.step("vread and _history through the models"):
        first = Observation.read_from(f"Observation/{state['t11']}/_history/1", server)
        assert first.status == "final"
        history = Bundle.read_from(f"Observation/{state['t11']}/_history", server)
        assert history.type == "history"
        assert [e.resource.meta.versionId for e in history.entry] == ["2", "1"]

    with steps.step("Bundle model: a transaction create()s at the base"):
        extra = copy.deepcopy(t4_body)
        extra["identifier"][0]["value"] = f"{PID}-t4-again"
        transaction = Bundle(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "fullUrl": "urn:uuid:6f0c3c1e-7d4e-4f0e-9a51-2f9b3f4e1a01",
                        "resource": extra,
                        "request": {"method": "POST", "url": "Observation"},
                    },
                    {
                        "request": {"method": "DELETE", "url": f"Observation/{state['t4']}"},
                    },
                ],
            }
        )
        answer = transaction.create(server)
        assert answer is not None
        response = Bundle(answer)
        assert response.type == "transaction-response"
        assert [e.response.status.split()[0] for e in response.entry] == ["201", "204"]
        state["t4-again"] = response.entry[0].response.location.split("/")[1]

    with steps.step("Observation model: delete(), then read() is gone"):
        finding = Observation.read(state["t4-again"], server)
        finding.delete()
        with pytest.raises(GONE):
            Observation.read(state["t4-again"], server)

    if state.get("condition_id"):
        with steps.step("Condition model: delete()"):
            Condition.read(state["condition_id"], server).delete()
            with pytest.raises(GONE):
                Condition.read(state["condition_id"], server)

    with steps.step("derived outputs after the deletes still parse as strict R4 models"):
        risks = RiskAssessment.where(struct={"patient": PID}).perform_resources(server)
        assert [r.status for r in risks].count("entered-in-error") == 1
        DiagnosticReport.where(struct={"subject": f"Patient/{PID}"}).perform_resources(server)

    with steps.step("derived outputs are read-only: update() of a RiskAssessment is refused"):
        risk = RiskAssessment.where(struct={"patient": PID}).perform_resources(server)[0]
        with pytest.raises(requests.HTTPError) as refused:
            risk.update()
        assert refused.value.response.status_code == 405

    with steps.step("ImagingStudy and Patient models: delete()"):
        ImagingStudy.read(f"{PID}-ct", server).delete()
        with pytest.raises(GONE):
            ImagingStudy.read(f"{PID}-ct", server)
        Patient.read(PID, server).delete()
        with pytest.raises(GONE):
            Patient.read(PID, server)

    steps.assert_all()
