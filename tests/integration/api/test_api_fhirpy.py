"""Peer-client session: fhirpy 2.3.1 against the server run by uvicorn (SQLite and PostgreSQL).

What an EHR integration team does with fhirpy (issue 12, CONTRACT 5 v2): write the inputs
(Patient, ImagingStudy, Observation, Condition when the server declares it), read the derived
RiskAssessment / DiagnosticReport, and use fhirpy's search API as documented: `count()`, `sort`,
`elements`, `include` / `revinclude`, paging, `get_or_create` (conditional create), `patch`,
`is_valid` ($validate), history, delete. Each step is asserted; the test lists every failed step.

What fhirpy sends, and what FHIR R4 says the server must answer:
- `count()`: `GET [type]?...&_count=0&_totalMethod=count` and reads `Bundle.total`.
  `_totalMethod` is Aidbox's; FHIR search.html (handling errors) says a server SHOULD ignore
  unknown parameters unless the client sends `Prefer: handling=strict`, so count() must work
  without any vendor header, and `_count=0` means "the total, no entries".
- `get_or_create(resource)`: `POST [type]?identifier=...` with the resource; the query is the
  condition (fhirpy does not send If-None-Exist): 201 when none matched, 200 with the match when
  one did (FHIR http.html#ccreate), never a duplicate.
- `resource.patch(**fields)` and `client.patch(ref, **fields)`: `PATCH [type]/[id]` with a
  partial resource as `application/json` (merge semantics, what Aidbox and HAPI's merge patch
  do); the answer is the patched resource, a new version.
- `is_valid()`: `POST [type]/$validate` with the resource as the body; 200 with an
  OperationOutcome, errors as issues of severity error/fatal (FHIR's $validate answers 200
  whether or not the resource is valid).
- `elements(*names)`: `_elements=` the names plus `id,resourceType` (fhirpy adds both).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound
from support.peer_session import (
    IDENTIFIER_SYSTEM,
    SUBSETTED,
    Steps,
    declares,
    reference_id,
    seed_condition,
    seed_findings,
    seed_patient,
    seed_study,
)

PID = "fp1"
# The derived Observations of a patient with two levels: SINS and classification per level,
# and the patient's NOMS inputs.
DERIVED_OBSERVATIONS = 5


def test_fhirpy_session(base_url: str) -> None:
    steps = Steps("fhirpy")
    client = SyncFHIRClient(base_url)  # no vendor headers: what a team starts with
    state: dict[str, Any] = {}

    def risk_versions() -> dict[str, str]:
        risks = client.resources("RiskAssessment").search(patient=PID).fetch_all()
        return {r.id: r["meta"]["versionId"] for r in risks}

    with steps.step("metadata: the CapabilityStatement"):
        capability = client.execute("metadata", method="get")
        assert capability["resourceType"] == "CapabilityStatement"
        assert capability["fhirVersion"] == "4.0.1"
        state["condition"] = declares(capability, "Condition", "create")

    with steps.step("Patient: save() at the client's id (PUT), then read"):
        person = client.resource("Patient", **seed_patient(PID))
        person.save()
        assert person["meta"]["versionId"] == "1"
        read = client.reference("Patient", PID).to_resource()
        assert read["name"][0]["family"] == "Peer"

    with steps.step("ImagingStudy: save() at the client's id (PUT)"):
        study = client.resource("ImagingStudy", **seed_study(PID))
        study.save()
        assert study.id == f"{PID}-ct"
        assert study["meta"]["versionId"] == "1"

    t11_body, t4_body = seed_findings(PID)
    with steps.step("Observation: get_or_create (conditional create) creates once"):
        search = client.resources("Observation").search(identifier=f"{IDENTIFIER_SYSTEM}|{PID}-t11")
        t11, created = search.get_or_create(client.resource("Observation", **t11_body))
        assert created is True
        assert t11.id
        state["t11"] = t11
    with steps.step("Observation: get_or_create again finds it (200, no duplicate)"):
        again, created = search.get_or_create(client.resource("Observation", **t11_body))
        assert created is False
        assert again.id == state["t11"].id
        assert len(search.fetch_all()) == 1

    with steps.step("search: get() by identifier is the one finding; refresh() (304) keeps it"):
        one = client.resources("Observation").search(identifier=f"{PID}-t11").get()
        assert one.id == state["t11"].id
        one.refresh()  # If-None-Match with the current version: 304, nothing changes
        assert one["meta"]["versionId"] == "1"
        assert one["identifier"] == t11_body["identifier"]

    with steps.step("Observation: save() without id (POST), the server assigns the id"):
        t4 = client.resource("Observation", **t4_body)
        t4.save()
        assert t4.id
        assert t4["meta"]["versionId"] == "1"
        state["t4"] = t4

    if state.get("condition"):
        with steps.step("Condition: create, read, update (declared in the CapabilityStatement)"):
            condition = client.resource("Condition", **seed_condition(PID))
            condition.save()
            assert condition.id
            condition["note"] = [{"text": "confirmed by biopsy"}]
            condition.save()
            assert condition["meta"]["versionId"] == "2"
            read = client.reference("Condition", condition.id).to_resource()
            assert read["note"][0]["text"] == "confirmed by biopsy"
            state["condition_id"] = condition.id

    with steps.step("RiskAssessment: one per level, derived, readable"):
        risks = client.resources("RiskAssessment").search(patient=PID).fetch_all()
        assert len(risks) == 2
        for risk in risks:
            assert risk["subject"]["reference"] == f"Patient/{PID}"
            assert risk["basis"]
            read = client.reference("RiskAssessment", risk.id).to_resource()
            assert read.serialize() == risk.serialize()
        state["risks"] = {r.id: r["meta"]["versionId"] for r in risks}

    with steps.step("DiagnosticReport: the patient's report, its results readable"):
        reports = client.resources("DiagnosticReport").search(subject=f"Patient/{PID}").fetch_all()
        assert len(reports) == 1
        report = reports[0]
        assert len(report["result"]) == DERIVED_OBSERVATIONS
        for ref in report["result"]:
            resource_type, rid = reference_id(ref["reference"]).split("/")
            assert client.reference(resource_type, rid).to_resource()["resourceType"] == (
                "Observation"
            )
        state["report"] = report

    observations = client.resources("Observation").search(subject=f"Patient/{PID}")
    with steps.step("search: count() (_count=0&_totalMethod=count) answers Bundle.total"):
        assert observations.count() == 2 + DERIVED_OBSERVATIONS
    with steps.step("search: _count=0 alone is the total without entries"):
        bundle = observations.limit(0).fetch_raw()
        assert bundle["total"] == 2 + DERIVED_OBSERVATIONS
        assert not bundle.get("entry")
    with steps.step("search: an unknown parameter, strict is 400, lenient is left out of self"):
        strict = SyncFHIRClient(base_url, extra_headers={"Prefer": "handling=strict"})
        with pytest.raises(OperationOutcome):
            strict.resources("Observation").search(subject=f"Patient/{PID}", colour="red").fetch()
        lenient = SyncFHIRClient(base_url, extra_headers={"Prefer": "handling=lenient"})
        bundle = (
            lenient.resources("Observation").search(subject=f"Patient/{PID}", colour="red")
        ).fetch_raw()
        assert len(bundle["entry"]) == 2 + DERIVED_OBSERVATIONS
        self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
        assert "colour" not in self_link

    with steps.step("search: limit(2) pages through `next` to every match"):
        paged = observations.limit(2).fetch_all()
        assert len(paged) == 2 + DERIVED_OBSERVATIONS
        assert len({o.id for o in paged}) == len(paged)

    with steps.step("search: sort('-_lastUpdated') is newest first"):
        stamps = [
            datetime.fromisoformat(o["meta"]["lastUpdated"])
            for o in observations.sort("-_lastUpdated").fetch_all()
        ]
        assert len(stamps) == 2 + DERIVED_OBSERVATIONS
        assert stamps == sorted(stamps, reverse=True)
    with steps.step("search: sort('date') orders the findings by effective date"):
        ordered = (
            client.resources("Observation")
            .search(identifier=f"{IDENTIFIER_SYSTEM}|{PID}-t11,{IDENTIFIER_SYSTEM}|{PID}-t4")
            .sort("date")
            .fetch_all()
        )
        assert [o.id for o in ordered] == [state["t4"].id, state["t11"].id]
        descending = (
            client.resources("Observation")
            .search(identifier=f"{IDENTIFIER_SYSTEM}|{PID}-t11,{IDENTIFIER_SYSTEM}|{PID}-t4")
            .sort("-date")
            .fetch_all()
        )
        assert [o.id for o in descending] == [state["t11"].id, state["t4"].id]

    with steps.step("search: elements('status', 'code') returns those (and meta) only"):
        subset = observations.elements("status", "code").fetch_all()
        assert len(subset) == 2 + DERIVED_OBSERVATIONS
        for resource in subset:
            data = resource.serialize()
            assert set(data) <= {"resourceType", "id", "meta", "status", "code"}, set(data)
            assert "status" in data
            assert "code" in data
    with steps.step("search: elements() results are tagged SUBSETTED (search.html#elements)"):
        # Marked so that nobody PUTs the partial resource back as if it were whole.
        for resource in observations.elements("status").fetch_all():
            tags = [(t.get("system"), t.get("code")) for t in resource["meta"].get("tag", [])]
            assert SUBSETTED in tags

    with steps.step("search: include('DiagnosticReport', 'result') brings the results"):
        raw = (
            client.resources("DiagnosticReport")
            .search(subject=f"Patient/{PID}")
            .include("DiagnosticReport", "result")
            .fetch_raw()
        )
        entries = raw["entry"]
        matches = [e for e in entries if e["search"]["mode"] == "match"]
        included = [e for e in entries if e["search"]["mode"] == "include"]
        assert [e.resource["resourceType"] for e in matches] == ["DiagnosticReport"]
        wanted = {reference_id(r["reference"]) for r in matches[0].resource["result"]}
        got = {f"{e.resource['resourceType']}/{e.resource['id']}" for e in included}
        assert got == wanted
    with steps.step("search: revinclude('Provenance', 'target') brings the report's Provenance"):
        raw = (
            client.resources("DiagnosticReport")
            .search(subject=f"Patient/{PID}")
            .revinclude("Provenance", "target")
            .fetch_raw()
        )
        report_ref = f"DiagnosticReport/{state['report'].id}"
        provenances = [e.resource for e in raw["entry"] if e["search"]["mode"] == "include"]
        assert provenances
        for provenance in provenances:
            assert provenance["resourceType"] == "Provenance"
            assert report_ref in {reference_id(t["reference"]) for t in provenance["target"]}

    with steps.step("patch: resource.patch(status='amended') is a new version, re-derived"):
        t11 = state["t11"]
        t11.patch(status="amended")
        assert t11["meta"]["versionId"] == "2"
        assert t11["status"] == "amended"
        read = client.reference("Observation", t11.id).to_resource()
        assert read["status"] == "amended"
        assert read["component"] == t11_body["component"]  # untouched elements stay
        # Re-derived like any write: the T11 RiskAssessment is a new version (now amended).
        assert risk_versions() != state["risks"]
    with steps.step("patch: client.patch(reference, note=...) through the reference"):
        patched = client.reference("Observation", state["t4"].id).patch(note=[{"text": "reviewed"}])
        assert patched["note"] == [{"text": "reviewed"}]
        assert patched["meta"]["versionId"] == "2"

    with steps.step("is_valid: a valid Observation is valid ($validate), nothing stored"):
        before = len(observations.fetch_all())
        candidate = client.resource("Observation", **copy.deepcopy(t4_body))
        candidate["identifier"] = [{"system": IDENTIFIER_SYSTEM, "value": f"{PID}-candidate"}]
        assert candidate.is_valid() is True
        assert len(observations.fetch_all()) == before
    with steps.step("is_valid: an invalid Observation is not valid (200 with error issues)"):
        broken = client.resource("Observation", **copy.deepcopy(t4_body))
        broken["status"] = "not-a-status"
        assert broken.is_valid() is False
        with pytest.raises(OperationOutcome):
            broken.is_valid(raise_exception=True)

    with steps.step("update: save() of a changed finding is a new version, re-derived"):
        before = risk_versions()
        t4 = client.reference("Observation", state["t4"].id).to_resource()
        version = int(t4["meta"]["versionId"])
        t4["component"][0]["valueCodeableConcept"]["coding"][0]["code"] = "lytic"
        t4.save()
        assert t4["meta"]["versionId"] == str(version + 1)
        assert risk_versions() != before, "no RiskAssessment was derived again"

    with steps.step("history: every version of the finding, newest first"):
        history = client.execute(f"Observation/{state['t4'].id}/_history", method="get")
        assert history["type"] == "history"
        versions = [int(e["resource"]["meta"]["versionId"]) for e in history["entry"]]
        assert versions == list(range(version + 1, 0, -1))

    with steps.step("conditional update: search(identifier=...).update(resource), PUT ?query"):
        body = copy.deepcopy(t11_body)
        body["status"] = "corrected"
        search = client.resources("Observation").search(identifier=f"{IDENTIFIER_SYSTEM}|{PID}-t11")
        updated, created = search.update(client.resource("Observation", **body))
        assert created is False
        assert updated.id == state["t11"].id
        assert updated["status"] == "corrected"
    with steps.step("conditional update: no match creates (201)"):
        body = copy.deepcopy(t11_body)
        body["identifier"] = [{"system": IDENTIFIER_SYSTEM, "value": f"{PID}-t11-second"}]
        search = client.resources("Observation").search(
            identifier=f"{IDENTIFIER_SYSTEM}|{PID}-t11-second"
        )
        second, created = search.update(client.resource("Observation", **body))
        assert created is True
        assert second.id
    with steps.step("conditional delete: search(identifier=...).delete() (DELETE ?identifier)"):
        search = client.resources("Observation").search(
            identifier=f"{IDENTIFIER_SYSTEM}|{PID}-t11-second"
        )
        _, status = search.delete()
        assert status in (200, 204)
        assert search.fetch_all() == []

    with steps.step("ImagingStudy: update, then read the new version"):
        study = client.reference("ImagingStudy", f"{PID}-ct").to_resource()
        study["description"] = "CT thoracolumbar spine"
        study.save()
        assert study["meta"]["versionId"] == "2"
        assert client.reference("ImagingStudy", f"{PID}-ct").to_resource()["description"] == (
            "CT thoracolumbar spine"
        )

    with (
        steps.step("derived outputs are read-only: saving a RiskAssessment is refused"),
        pytest.raises(OperationOutcome),
    ):
        client.resource("RiskAssessment", id="nope", status="final").save()

    with steps.step("delete: the T4 finding is gone, its level's outputs withdrawn"):
        state["t4"].delete()
        with pytest.raises(ResourceNotFound):
            client.reference("Observation", state["t4"].id).to_resource()
        risks = client.resources("RiskAssessment").search(patient=PID).fetch_all()
        # CONTRACT 4: every finding of T4 withdrawn -> its outputs are entered-in-error.
        statuses = sorted(r["status"] for r in risks)
        assert len(statuses) == 2
        assert statuses.count("entered-in-error") == 1, statuses

    if state.get("condition_id"):
        with steps.step("Condition: delete"):
            client.reference("Condition", state["condition_id"]).delete()
            with pytest.raises(ResourceNotFound):
                client.reference("Condition", state["condition_id"]).to_resource()

    with steps.step("delete: the ImagingStudy, then the Patient"):
        client.reference("ImagingStudy", f"{PID}-ct").delete()
        with pytest.raises(ResourceNotFound):
            client.reference("ImagingStudy", f"{PID}-ct").to_resource()
        client.reference("Patient", PID).delete()
        with pytest.raises(ResourceNotFound):
            client.reference("Patient", PID).to_resource()

    steps.assert_all()
