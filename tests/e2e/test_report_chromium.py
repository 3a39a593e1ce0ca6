"""The report page in headless Chromium: no console errors, every level in its colour at its place.

The page is served the way `GET /view/Patient/{id}` serves it (the same security headers), so a
resource the Content-Security-Policy blocks would show up as a console error. The pixels are read
from a `chromium --headless --screenshot` image at the positions `picture.level_box` defines,
offset by where the browser put the picture.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.chromium import open_page, require_chromium, screenshot

from fhir_app.api.view import PAGE_HEADERS
from fhir_app.domain.levels import VertebralLevel
from fhir_app.fhir.parse import iter_input_resources
from fhir_app.fhir.report import picture
from fhir_app.fhir.report.presented import HTML, presented
from fhir_app.fhir.report.view import build_view
from fhir_app.service import PROCESSOR_VERSION, assess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEVERAL = "patient-08-several-levels.json"


@contextmanager
def serving(pages: dict[str, bytes]) -> Iterator[str]:
    """Serve `pages` by path on loopback with the page's security headers; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            for name, value in PAGE_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body or b"not found")

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def outputs(name: str) -> list[dict[str, object]]:
    path = EXAMPLES / name
    return assess(iter_input_resources(path.read_bytes(), filename_hint=path.name)).outputs


def page_of(name: str) -> bytes:
    report = next(r for r in outputs(name) if r["resourceType"] == "DiagnosticReport")
    page = presented(report, HTML)
    assert page is not None
    return page


def rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


def share(image: np.ndarray, box: picture.Box, left: int, top: int, colour: str) -> float:
    """The share of a level box's inner pixels (3 px inset) within 2 of `colour`."""
    region = image[
        top + box.top + 3 : top + box.bottom - 3, left + box.left + 3 : left + box.right - 3
    ]
    return float((np.abs(region.astype(int) - rgb(colour)).max(axis=2) <= 2).mean())


@pytest.fixture(scope="module")
def chromium() -> None:
    require_chromium()


@pytest.mark.usefixtures("chromium")
def test_the_report_page_renders_without_console_errors() -> None:
    with serving({"/report": page_of(SEVERAL)}) as base:
        loaded = open_page(f"{base}/report", "figure.spine img")
    assert loaded.errors == []
    assert len(loaded.boxes) == 1
    (image,) = loaded.boxes
    assert image["complete"]
    assert image["natural"] == picture.WIDTH
    assert (image["width"], image["height"]) == (picture.WIDTH, picture.HEIGHT)


@pytest.mark.usefixtures("chromium")
def test_a_page_that_breaks_its_policy_is_caught() -> None:
    """The harness sees what it must: an image from the network is refused and reported."""
    broken = page_of(SEVERAL).replace(
        b"</figure>", b'<img src="http://127.0.0.1:9/outside.png" alt=""></figure>', 1
    )
    with serving({"/report": broken}) as base:
        loaded = open_page(f"{base}/report", "figure.spine img")
    assert any("Content Security Policy" in e for e in loaded.errors), loaded.errors


@pytest.mark.usefixtures("chromium")
def test_a_screenshot_shows_each_level_in_its_colour_at_its_place(tmp_path: Path) -> None:
    results = outputs(SEVERAL)
    report = next(r for r in results if r["resourceType"] == "DiagnosticReport")
    view = build_view(results, report, PROCESSOR_VERSION)
    with serving({"/report": page_of(SEVERAL)}) as base:
        (box,) = open_page(f"{base}/report", "figure.spine img").boxes
        shot = tmp_path / "report.png"
        screenshot(f"{base}/report", shot)
    image = np.asarray(Image.open(shot).convert("RGB"))
    left, top = round(box["left"]), round(box["top"])
    assert image.shape[0] >= top + picture.HEIGHT
    reported = {level.level: level for level in view.levels}
    assert set(reported) == {VertebralLevel.T11, VertebralLevel.L2, VertebralLevel.T4}
    for level in VertebralLevel:
        seen = reported.get(level)
        if seen is None:
            assert (
                share(image, picture.level_box(level), left, top, picture.NOT_REPORTED_COLOUR)
                > 0.99
            )
        elif seen.category is not None:
            colour = picture.CATEGORY_COLOUR[seen.category]
            assert share(image, picture.level_box(level), left, top, colour) > 0.99, level
        else:
            bands = picture.band_boxes(level, len(seen.candidates))
            for band, category in zip(bands, seen.candidates, strict=True):
                covered = share(image, band, left, top, picture.CATEGORY_COLOUR[category])
                assert 0.4 < covered < 0.95, (level, category, covered)
    # The picture in the page is the PNG of the presentedForm, pixel for pixel.
    png = presented(report, "image/png")
    assert png is not None
    drawn = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    shown = image[top : top + picture.HEIGHT, left : left + picture.WIDTH]
    assert np.abs(shown.astype(int) - drawn.astype(int)).max() <= 2
