"""`DiagnosticReport.presentedForm`: the page and the picture as FHIR Attachments (CONTRACT 4d v2).

Both are rendered once per derived report, from the outputs just emitted. They are deterministic
(the same outputs give the same bytes), and `creation` is the one part that changes with every
derivation: `outbound.comparable` leaves it out, so an unchanged derivation writes no new version.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, Final

from fhir_app.fhir.report import page, picture
from fhir_app.fhir.report.view import ReportView, build_view

JsonObject = dict[str, Any]

HTML: Final = "text/html"
PNG: Final = "image/png"


def title_of(view: ReportView) -> str:
    """The page title of one patient's report."""
    return f"Vertebral metastasis assessment: Patient/{view.patient}"


def _attachment(content_type: str, data: bytes, title: str, creation: str) -> JsonObject:
    return {
        "contentType": content_type,
        "language": page.LANGUAGE,
        "data": base64.b64encode(data).decode("ascii"),
        "title": title,
        "creation": creation,
    }


def prepare() -> None:
    """Build now what every report's page and picture reuse (the template, the picture's
    layers), so that processes forked after this call share them (fhir_app.bulk)."""
    page.prepare()
    picture.prepare()


def presented_form(
    outputs: Sequence[JsonObject], report: JsonObject, processor_version: str, creation: str
) -> list[JsonObject]:
    """The HTML page and the PNG picture of one patient's report, as two Attachments.

    `outputs` are the patient's emitted level outputs, `report` the DiagnosticReport being built
    (without its presentedForm), `creation` a FHIR dateTime.
    """
    view = build_view(outputs, report, processor_version)
    png = picture.render_png(picture.picture_of(view))
    title = title_of(view)
    html = page.render_page([page.section(view, png)], title)
    return [
        _attachment(HTML, html.encode("utf-8"), title, creation),
        _attachment(PNG, png, f"Spine picture: Patient/{view.patient}", creation),
    ]


def restated(
    outputs: Sequence[JsonObject], report: JsonObject, processor_version: str
) -> JsonObject:
    """The report with its page rendered again for the status it now has (CONTRACT 4c: a Versioner
    may set `amended` after the page was rendered, and the page states the status).

    `outputs` are the patient's current outputs (withdrawn ones and other resources are ignored).
    The picture does not depend on the status and is kept; so is each attachment's `creation`. A
    report without a presentedForm is returned as it is. `report` is not changed.
    """
    forms = report.get("presentedForm")
    png = presented(report, PNG)
    if not isinstance(forms, list) or png is None:
        return report
    view = build_view(outputs, report, processor_version)
    html = page.render_page([page.section(view, png)], title_of(view)).encode("utf-8")
    data = base64.b64encode(html).decode("ascii")
    return {
        **report,
        "presentedForm": [
            {**a, "data": data} if a.get("contentType") == HTML else a for a in forms
        ],
    }


def presented(report: JsonObject, content_type: str) -> bytes | None:
    """The decoded bytes of the report's presentedForm of one content type, None when absent."""
    for attachment in report.get("presentedForm", []):
        if attachment.get("contentType") == content_type and isinstance(
            attachment.get("data"), str
        ):
            try:
                return base64.b64decode(attachment["data"], validate=True)
            except binascii.Error:
                return None
    return None


def page_of_patients(groups: Sequence[Sequence[JsonObject]], processor_version: str) -> str:
    """One HTML page with a section per patient, each from that patient's current outputs.

    Each group holds one patient's outputs including its DiagnosticReport; a group without a
    current report (every level withdrawn) has nothing to show and is left out.
    """
    sections = []
    for outputs in groups:
        report = next(
            (
                r
                for r in outputs
                if r.get("resourceType") == "DiagnosticReport"
                and r.get("status") != "entered-in-error"
            ),
            None,
        )
        if report is None:
            continue
        view = build_view(outputs, report, processor_version)
        sections.append(page.section(view, picture.render_png(picture.picture_of(view))))
    if len(sections) == 1:
        title = title_of(sections[0].view)
    else:
        title = f"Vertebral metastasis assessment: {len(sections)} patients"
    return page.render_page(sections, title)
