"""`GET /view/Patient/{id}`: the current report as a page, behind the same tokens as reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from api_support import Serve, example, post_json
from security_support import IdentityProvider, bearer

from fhir_app.fhir import outbound
from fhir_app.fhir.report.page import PAGE_CSP
from fhir_app.fhir.report.presented import HTML, presented
from fhir_app.service import PROCESSOR_VERSION, FhirService
from fhir_app.store import UnitOfWork

DISCLAIMER = (
    f"computed decision support by fhir-app {PROCESSOR_VERSION} from the findings listed; "
    "not a radiologist&#39;s report"
)


def view_base(fhir_base: str) -> str:
    return fhir_base.removesuffix("/fhir")


def test_the_page_of_a_patient(serve: Serve) -> None:
    base = serve()
    with httpx.Client(base_url=f"{base}/", timeout=60) as fhir:
        post_json(fhir, "", example("patient-08-several-levels.json")).raise_for_status()
        stored = fhir.get(f"DiagnosticReport/{outbound.output_id('report', 'p08', None)}")
    page = httpx.get(f"{view_base(base)}/view/Patient/p08", timeout=60)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert DISCLAIMER in page.text
    # The stored report's page, as stored.
    assert page.content == presented(stored.json(), HTML)
    for level in ("T11", "L2", "T4"):
        assert f'id="level-{level}-p08"' in page.text


def test_unknown_patients_get_a_404_page(serve: Serve) -> None:
    base = view_base(serve())
    for patient in ("nobody", "bad id!", "x" * 65):
        page = httpx.get(f"{base}/view/Patient/{patient}", timeout=60)
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == PAGE_CSP
        assert "No report" in page.text


def test_tokens_guard_the_page(serve: Serve) -> None:
    base = serve(auth_tokens=["s3cret"])
    with httpx.Client(base_url=f"{base}/", timeout=60) as fhir:
        auth = {"Authorization": "Bearer s3cret"}
        post_json(fhir, "", example("patient-01-stable-blastic.json"), **auth).raise_for_status()
    url = f"{view_base(base)}/view/Patient/p01"
    missing = httpx.get(url, timeout=60)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=60).status_code == 401
    good = httpx.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=60)
    assert good.status_code == 200
    assert DISCLAIMER in good.text


def test_a_withdrawn_report_is_gone(serve: Serve) -> None:
    base = serve()
    bundle = example("patient-01-stable-blastic.json")
    with httpx.Client(base_url=f"{base}/", timeout=60) as fhir:
        post_json(fhir, "", bundle).raise_for_status()
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Observation":
                fhir.delete(f"Observation/{entry['resource']['id']}").raise_for_status()
    page = httpx.get(f"{view_base(base)}/view/Patient/p01", timeout=60)
    assert page.status_code == 410
    assert "withdrawn" in page.text


def test_a_report_stored_without_a_page_is_rendered_from_the_stored_outputs(
    serve: Serve, make_uow: object
) -> None:
    service = FhirService(make_uow)  # type: ignore[arg-type]
    service.transaction(example("patient-08-several-levels.json"))
    report_id = outbound.output_id("report", "p08", None)
    # As a report derived before reports carried a presentedForm would be stored.
    with make_uow() as uow:  # type: ignore[operator]
        assert isinstance(uow, UnitOfWork)
        current = uow.resources.current("DiagnosticReport", report_id)
        content = {k: v for k, v in current.content.items() if k != "presentedForm"}
        content.pop("meta")
        content["meta"] = {"profile": current.content["meta"]["profile"]}
        uow.resources.write(
            "DiagnosticReport",
            report_id,
            content,
            patient_id="p08",
            status=content["status"],
            is_output=True,
            now=datetime.now(UTC) + timedelta(seconds=1),
        )
        uow.commit()
    base = serve(service_override=service)
    page = httpx.get(f"{view_base(base)}/view/Patient/p08", timeout=60)
    assert page.status_code == 200
    assert DISCLAIMER in page.text
    assert 'id="level-L2-p08"' in page.text
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page.text


def test_smart_scopes_and_the_patient_context_apply_to_the_page(
    serve: Serve, service: FhirService, tmp_path: Path
) -> None:
    for name in ("patient-01-stable-blastic.json", "patient-03-unstable.json"):
        service.transaction(example(name))
    idp = IdentityProvider(tmp_path)
    base = view_base(serve(**idp.settings()))

    def page(shown: str, scope: str, **claims: Any) -> httpx.Response:
        headers = bearer(idp.token(scope, **claims))
        return httpx.get(f"{base}/view/Patient/{shown}", headers=headers, timeout=60)

    assert page("p01", "patient/*.rs", patient="p01").status_code == 200
    # Another patient's report is not known to a p01 token, as on GET DiagnosticReport.
    other = page("p03", "patient/*.rs", patient="p01")
    assert other.status_code == 404
    assert "No report" in other.text
    # A token that may not read reports gets the FHIR read's refusal.
    refused = page("p01", "patient/Observation.rs", patient="p01")
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert page("p03", "system/*.rs").status_code == 200
