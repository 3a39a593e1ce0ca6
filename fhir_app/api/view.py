"""`GET /view/Patient/{id}`: the current report of a patient as the page a person reads.

Read-only and behind the same authentication as the FHIR reads: the report is read through the
caller's guarded service, so its scopes and patient context apply as to `GET DiagnosticReport`.
The page is the stored current DiagnosticReport's `presentedForm` (CONTRACT 4d v2); a report
stored before reports carried one is rendered from the patient's stored current outputs instead.
The page is self-contained, so its Content-Security-Policy forbids every fetch, script and frame.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import HTMLResponse

from fhir_app.api.dependencies import ServiceDep, authenticated
from fhir_app.api.routes import FHIR_ID
from fhir_app.fhir import outbound
from fhir_app.fhir.report import page
from fhir_app.fhir.report.presented import HTML, page_of_patients, presented
from fhir_app.service import PROCESSOR_VERSION, FhirService, ServiceError, current_outputs

viewer = APIRouter(prefix="/view", dependencies=[Depends(authenticated)])

PAGE_HEADERS = {
    "Content-Security-Policy": page.PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Patient data: neither shared caches nor the browser keep a copy.
    "Cache-Control": "no-store",
}


def html_page(body: str, status: int = 200) -> HTMLResponse:
    """An HTML answer with the security headers of a self-contained page."""
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def report_page(service: FhirService, patient: str) -> tuple[int, str]:
    """The status and HTML of a patient's current report page."""
    unknown = f"No report is known for Patient/{patient}."
    if not FHIR_ID.fullmatch(patient):
        return 404, page.render_not_found(unknown)
    report_id = outbound.output_id(outbound.REPORT_KIND, patient, None)
    try:
        row = service.read("DiagnosticReport", report_id)
    except ServiceError as exc:
        # Unknown (or outside the caller's patient context): the page says so. Anything else,
        # such as a scope that does not allow reading reports, is the FHIR read's own answer.
        if exc.status not in (404, 410):
            raise
        return 404, page.render_not_found(unknown)
    report = dict(row.content)
    if report.get("status") == outbound.ENTERED_IN_ERROR:
        return 410, page.render_not_found(
            f"The report of Patient/{patient} was withdrawn: every finding it rested on was "
            "entered in error or deleted."
        )
    stored = presented(report, HTML)
    if stored is not None:
        return 200, stored.decode("utf-8")
    return 200, page_of_patients([current_outputs(service, [patient])], PROCESSOR_VERSION)


@viewer.get("/Patient/{patient_id}", response_class=HTMLResponse)
def patient_report(patient_id: str, service: ServiceDep) -> HTMLResponse:
    """The current report of one patient (404 page when there is none)."""
    status, body = report_page(service, patient_id)
    return html_page(body, status)
