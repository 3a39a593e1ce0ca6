"""The HTML page of the report: Jinja2 over the view model, autoescaped, self-contained.

The page loads nothing: its CSS is inline and the spine picture is the PNG as a `data:` URI, so it
can be stored in `DiagnosticReport.presentedForm`, opened from a file, and served under a
Content-Security-Policy that allows no network fetch at all (`PAGE_CSP`). The template only lays
out what the view says; it decides nothing clinical.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from jinja2 import Environment, PackageLoader, StrictUndefined

from fhir_app.fhir.report import picture
from fhir_app.fhir.report.view import ReportView

TEMPLATE: Final = "report.html.j2"
ERROR_TEMPLATE: Final = "not_found.html.j2"
LANGUAGE: Final = "en"

# What a self-contained page needs: inline styles and data: images; no script, no fetch, no frame.
PAGE_CSP: Final = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class PatientSection:
    """One patient's part of a page: the view and its picture as a data: URI."""

    view: ReportView
    picture_uri: str
    picture_width: int
    picture_height: int


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("fhir_app.fhir.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def prepare() -> None:
    """Load and compile the page template now (it is kept for the life of the process)."""
    _environment().get_template(TEMPLATE)


def section(view: ReportView, png: bytes) -> PatientSection:
    """A patient's section of the page, with its picture."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return PatientSection(view, uri, picture.WIDTH, picture.HEIGHT)


def render_page(sections: Sequence[PatientSection], title: str) -> str:
    """The whole page: one section per patient, in the order given."""
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(sections=sections, title=title, language=LANGUAGE)
    )


def render_not_found(message: str) -> str:
    """A plain page saying why there is no report to show."""
    return _environment().get_template(ERROR_TEMPLATE).render(message=message, language=LANGUAGE)
