"""Search over HTTP: GET and POST `_search` through one function, strict and lenient handling,
and the CapabilityStatement declaring exactly the table (on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from api_support import FHIR_JSON, Serve, example, put_json
from fhirpy import SyncFHIRClient
from security_support import IdentityProvider, bearer

from fhir_app.fhir.samples import observation
from fhir_app.fhir.search import PARAMETERS, includes_of, revincludes_of
from fhir_app.service import FhirService

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CODE = observation("x", "p", "appearance", "lytic", level="L1", effective="2025")["code"]
APPEARANCE = CODE["coding"][0]["code"]


def findings(fhir: httpx.Client) -> None:
    for obs_id, patient, level in (("f1", "p1", "L1"), ("f2", "p1", "L2"), ("g1", "p2", "L1")):
        body = observation(obs_id, patient, "appearance", "lytic", level=level, effective="2025")
        put_json(fhir, f"Observation/{obs_id}", body).raise_for_status()


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_post_search_is_the_same_search(fhir: httpx.Client) -> None:
    findings(fhir)
    got = fhir.get("Observation", params=[("patient", "p1"), ("code", f"{APPEARANCE},x")])
    posted = fhir.post(
        "Observation/_search?patient=p1", content=f"code={APPEARANCE}%2Cx", headers=FORM
    )
    assert got.status_code == posted.status_code == 200
    assert ids(got.json()) == ids(posted.json()) == ["f1", "f2"]
    self_link = posted.json()["link"][0]["url"]
    assert "patient=p1" in self_link
    assert f"code={APPEARANCE},x" in self_link
    # Parameters from the body and the query are joined: a repeated one is AND.
    both = fhir.post("Observation/_search?patient=p1", content="patient=p2", headers=FORM)
    assert both.json()["total"] == 0


def test_post_search_takes_a_form_only(fhir: httpx.Client) -> None:
    wrong = fhir.post("Observation/_search", content=b"{}", headers=FHIR_JSON)
    assert wrong.status_code == 415
    assert wrong.json()["resourceType"] == "OperationOutcome"
    empty = fhir.post("Observation/_search")
    assert empty.status_code == 200
    assert fhir.post("Medication/_search", headers=FORM).status_code == 404


def test_strict_and_lenient_handling(fhir: httpx.Client) -> None:
    findings(fhir)
    strict = fhir.get("Observation", params={"colour": "blue", "patient": "p2"})
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["code"] == "not-supported"
    assert strict.json()["issue"][0]["expression"] == ["colour"]
    lenient = fhir.get(
        "Observation",
        params={"colour": "blue", "patient": "p2"},
        headers={"Prefer": "handling=lenient"},
    )
    assert lenient.status_code == 200
    assert "g1" in ids(lenient.json())
    assert "f1" not in ids(lenient.json())
    self_link = lenient.json()["link"][0]["url"]
    assert "colour" not in self_link
    assert "patient=p2" in self_link
    # A declared parameter with a bad value is refused even when lenient.
    bad = fhir.get(
        "Observation", params={"date": "yesterday"}, headers={"Prefer": "handling=lenient"}
    )
    assert bad.status_code == 400


def test_the_capability_statement_declares_the_table(fhir: httpx.Client) -> None:
    statement = fhir.get("metadata").json()
    served = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for rtype, parameters in PARAMETERS.items():
        if rtype not in served:
            continue  # a type this server does not hold yet
        resource = served[rtype]
        names = [p["name"] for p in resource["searchParam"]]
        assert names[: len(parameters)] == [p.name for p in parameters]
        assert resource.get("searchInclude", []) == includes_of(rtype)
        assert resource.get("searchRevInclude", []) == revincludes_of(rtype)
    assert "identifier" not in [p["name"] for p in served["RiskAssessment"]["searchParam"]]


def test_a_patient_context_token_gets_no_other_patients_provenance(
    serve: Serve, service: FhirService, tmp_path: Path
) -> None:
    service.transaction(example("patient-01-stable-blastic.json"))
    service.transaction(example("patient-02-potentially-unstable.json"))
    idp = IdentityProvider(tmp_path)
    base = serve(**idp.settings())
    token = idp.token("patient/*.rs", patient="p01", client_id="app", sub="app")
    auditor = idp.token("system/AuditEvent.rs", client_id="auditor", sub="auditor")
    with httpx.Client(base_url=f"{base}/", headers=bearer(token)) as client:
        params = {"_revinclude": "Provenance:target", "_include": "DiagnosticReport:result"}
        mine = client.get("DiagnosticReport", params=params).json()
        entries = mine["entry"]
        assert {
            e["resource"]["subject"]["reference"] for e in entries if "subject" in e["resource"]
        } == {"Patient/p01"}
        provenance = [e for e in entries if e["resource"]["resourceType"] == "Provenance"]
        assert len(provenance) == 1
        assert provenance[0]["search"]["mode"] == "include"
        # Provenance of every report, p02's included, asked for directly: p01's only.
        everyone = client.get("Provenance", params={"_revinclude": "Provenance:target"}).json()
        assert everyone["total"] == 1
        other = client.post(
            "DiagnosticReport/_search",
            content="patient=p02&_revinclude=Provenance:target",
            headers=FORM,
        ).json()
        assert other["total"] == 0
        assert "entry" not in other
    with httpx.Client(base_url=f"{base}/", headers=bearer(auditor)) as client:
        events = client.get("AuditEvent", params={"agent": "app", "_count": "50"}).json()["entry"]
    kinds = [e["resource"]["subtype"][0]["code"] for e in events]
    assert kinds == ["search-type", "search-type", "search-type"]


def test_fhirpy_count_sort_elements_include(base_url: str, fhir: httpx.Client) -> None:
    findings(fhir)
    client = SyncFHIRClient(base_url)  # strict handling: nothing fhirpy sends is unknown
    observations = client.resources("Observation")
    every = fhir.get("Observation", params={"patient": "p1"}).json()
    assert observations.search(patient="p1").count() == every["total"]
    assert observations.search(patient="p2", code=APPEARANCE).count() == 1
    ordered = observations.search(code=APPEARANCE).sort("-_lastUpdated").fetch()
    assert [o.id for o in ordered] == ["g1", "f2", "f1"]
    (subset,) = observations.search(_id="f1").elements("status").fetch()
    assert subset["status"] == "final"
    assert "bodySite" not in subset
    reports = (
        client.resources("DiagnosticReport")
        .search(patient="p1")
        .include("DiagnosticReport", "result")
    )
    found = reports.fetch_raw()
    modes = {e["search"]["mode"] for e in found["entry"]}
    assert modes == {"match", "include"}
