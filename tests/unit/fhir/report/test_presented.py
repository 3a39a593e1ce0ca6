"""DiagnosticReport.presentedForm: the HTML page and the PNG, self-contained and deterministic."""

from __future__ import annotations

import base64
import io
import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from markupsafe import escape
from PIL import Image
from report_support import EXAMPLES, NOW, Json, output, outputs_of, report_of

from fhir_app.fhir import outbound
from fhir_app.fhir.parse import iter_input_resources
from fhir_app.fhir.report import picture
from fhir_app.fhir.report.presented import HTML, PNG, page_of_patients, presented, presented_form
from fhir_app.service import PROCESSOR_VERSION, assess

SEVERAL_LEVELS = "patient-08-several-levels.json"
NAMES = sorted(p.name for p in EXAMPLES.glob("*.json"))
DISCLAIMER = (
    f"computed decision support by fhir-app {PROCESSOR_VERSION} from the findings listed; "
    "not a radiologist&#39;s report"
)


class Fetches(HTMLParser):
    """Every element and attribute of a page that could make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data") and value:
                self.urls.append(value)


@pytest.mark.parametrize("name", NAMES)
def test_every_report_presents_a_page_and_a_picture(name: str) -> None:
    report = report_of(outputs_of(name))
    forms = report["presentedForm"]
    assert [a["contentType"] for a in forms] == [HTML, PNG]
    for attachment in forms:
        assert set(attachment) == {"contentType", "language", "data", "title", "creation"}
        assert attachment["language"] == "en"
        assert attachment["creation"] == report["issued"]
        assert base64.b64encode(base64.b64decode(attachment["data"])).decode() == attachment["data"]
    image = Image.open(io.BytesIO(presented(report, PNG) or b""))
    assert image.format == "PNG"
    assert image.size == (picture.WIDTH, picture.HEIGHT)
    page = (presented(report, HTML) or b"").decode("utf-8")
    assert DISCLAIMER in page
    DiagnosticReport.model_validate(report)


@pytest.mark.parametrize("name", NAMES)
def test_the_page_is_self_contained(name: str) -> None:
    page = (presented(report_of(outputs_of(name)), HTML) or b"").decode("utf-8")
    parser = Fetches()
    parser.feed(page)
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(parser.tags)
    assert parser.urls
    assert all(url.startswith("data:image/png;base64,") for url in parser.urls)
    assert "url(" not in page
    assert "@import" not in page


def test_the_page_embeds_the_same_picture_as_the_png_attachment() -> None:
    report = report_of(outputs_of("patient-08-several-levels.json"))
    page = (presented(report, HTML) or b"").decode("utf-8")
    png = base64.b64encode(presented(report, PNG) or b"").decode("ascii")
    assert f'src="data:image/png;base64,{png}"' in page


def test_every_level_and_its_caveats_are_in_the_table() -> None:
    outputs = outputs_of("patient-06-bone-island.json")
    page = (presented(report_of(outputs), HTML) or b"").decode("utf-8")
    cls = next(r for r in outputs if r["id"].startswith("cls-"))
    for note in cls["note"]:
        assert str(escape(note["text"])) in page
    assert "not reported" in page  # ESCC and NOMS, absent from the outputs so far


def test_text_from_the_outputs_is_escaped() -> None:
    outputs = outputs_of("patient-08-several-levels.json")
    output(outputs, "risk-t11-")["note"] = [{"text": "<script>alert(1)</script>"}]
    report = report_of(outputs)
    forms = presented_form(outputs, report, "0", "2026-01-01")
    page = base64.b64decode(forms[0]["data"]).decode("utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def derive(name: str, shift: timedelta) -> list[Json]:
    path = EXAMPLES / name
    items = iter_input_resources(path.read_bytes(), filename_hint=path.name)
    return assess(items, now=NOW + shift).outputs


def test_a_derivation_of_the_same_inputs_compares_equal() -> None:
    name = "patient-08-several-levels.json"
    first, later = report_of(derive(name, timedelta(0))), report_of(derive(name, timedelta(days=3)))
    assert first["presentedForm"][0]["creation"] != later["presentedForm"][0]["creation"]
    assert [a["data"] for a in first["presentedForm"]] == [
        a["data"] for a in later["presentedForm"]
    ]
    assert outbound.comparable(first) == outbound.comparable(later)


def test_a_changed_page_does_not_compare_equal() -> None:
    report = report_of(derive("patient-08-several-levels.json", timedelta(0)))
    changed = {**report, "presentedForm": [{**report["presentedForm"][0], "data": "AAAA"}]}
    assert outbound.comparable(report) != outbound.comparable(changed)


def test_a_withdrawn_report_presents_nothing() -> None:
    report = report_of(outputs_of("patient-08-several-levels.json"))
    assert "presentedForm" not in outbound.withdrawn(report)


def test_one_page_for_several_patients_has_a_section_each() -> None:
    groups = [
        outputs_of(n) for n in ("patient-01-stable-blastic.json", "patient-08-several-levels.json")
    ]
    page = page_of_patients(groups, "0")
    assert page.count('<section class="patient"') == 2
    assert 'id="patient-p01"' in page
    assert 'id="patient-p08"' in page
    assert "2 patients" in page


def test_a_patient_without_a_current_report_is_left_out() -> None:
    outputs = outputs_of("patient-01-stable-blastic.json")
    report_of(outputs)["status"] = "entered-in-error"
    assert '<section class="patient"' not in page_of_patients([outputs], "0")


def test_the_templates_are_package_data() -> None:
    pyproject = (Path(__file__).resolve().parents[4] / "pyproject.toml").read_text()
    assert '"fhir/report/templates/*.j2"' in pyproject
    templates = Path(picture.__file__).parent / "templates"
    assert {p.name for p in templates.glob("*.j2")} == {"report.html.j2", "not_found.html.j2"}


def page_of(outputs: list[Json]) -> str:
    """The page of one patient's outputs, rendered from them now."""
    forms = presented_form(outputs, report_of(outputs), "0", "2026-01-01")
    return base64.b64decode(forms[0]["data"]).decode("utf-8")


def test_high_grade_cord_compression_has_a_banner_at_the_top() -> None:
    page = page_of(outputs_of("patient-16-high-grade-escc.json"))
    banner = (
        '<p class="cord-compression">High-grade epidural spinal cord compression: ESCC 3 at T9; '
        "myelopathy reported</p>"
    )
    assert banner in page
    assert page.index(banner) < page.index('<p class="conclusion">')
    assert "<td>ESCC 3 (high grade)</td>" in page
    assert "<td>ESCC 1a (low grade)</td>" in page
    low = page_of(outputs_of("patient-17-low-grade-escc.json"))
    assert 'class="cord-compression"' not in low


def test_a_preliminary_level_says_so_in_the_table() -> None:
    outputs = outputs_of("patient-08-several-levels.json")
    page = page_of(outputs)
    rows = {row.split('"', 1)[0]: row for row in page.split('<tr id="level-')[1:]}
    preliminary = '<small class="preliminary">preliminary</small>'
    for level in ("T11", "L2", "T4"):
        risk = output(outputs, f"risk-{level.lower()}-")
        assert (preliminary in rows[f"{level}-p08"]) == (risk["status"] == "preliminary"), level
    assert preliminary in rows["L2-p08"]
    assert preliminary not in page_of(outputs_of("patient-03-unstable.json"))


def test_condition_inputs_are_listed_on_the_page() -> None:
    outputs = outputs_of("patient-08-several-levels.json")
    output(outputs, "risk-t4-")["basis"].append({"reference": "Condition/p08-sec/_history/1"})
    assert "<li><code>Condition/p08-sec/_history/1</code></li>" in page_of(outputs)


def test_element_ids_are_unique_on_a_page_of_several_patients() -> None:
    names = ("patient-03-unstable.json", "patient-11-discordant-collapse.json", SEVERAL_LEVELS)
    page = page_of_patients([outputs_of(n) for n in names], "0")
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert 'id="level-L1-p03"' in page
    assert 'id="level-L1-p11"' in page
    assert len([i for i in ids if i.startswith("level-")]) == 5
