"""`fhir-app assess --html FILE`: the report page of the inputs, without a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from fhir_app.service import PROCESSOR_VERSION

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DISCLAIMER = (
    f"computed decision support by fhir-app {PROCESSOR_VERSION} from the findings listed; "
    "not a radiologist&#39;s report"
)


def run_assess(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", "assess", *args], capture_output=True, check=False
    )


def test_one_patient_gets_its_page(tmp_path: Path) -> None:
    page = tmp_path / "p08.html"
    done = run_assess("--html", str(page), str(EXAMPLES / "patient-08-several-levels.json"))
    assert done.returncode == 0, done.stderr
    # The output Bundle still goes to stdout, and its report carries the same page.
    bundle = orjson.loads(done.stdout)
    assert bundle["resourceType"] == "Bundle"
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert DISCLAIMER in text
    assert text.count('<section class="patient"') == 1
    assert "<title>Vertebral metastasis assessment: Patient/p08</title>" in text
    assert all(f'id="level-{level}-p08"' in text for level in ("T11", "L2", "T4"))


def test_several_patients_share_one_page_a_section_each(tmp_path: Path) -> None:
    page = tmp_path / "all.html"
    files = sorted(str(p) for p in EXAMPLES.glob("patient-*.json"))
    done = run_assess("--html", str(page), *files)
    assert done.returncode == 0, done.stderr
    text = page.read_text(encoding="utf-8")
    sections = text.count('<section class="patient"')
    assert sections == len(files)
    positions = [text.index(f'id="patient-p{n:02d}"') for n in range(1, len(files) + 1)]
    assert positions == sorted(positions)


def test_without_the_option_no_page_is_written(tmp_path: Path) -> None:
    done = run_assess(str(EXAMPLES / "patient-01-stable-blastic.json"))
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_page_into_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "page.html"
    done = run_assess("--html", str(target), str(EXAMPLES / "patient-01-stable-blastic.json"))
    assert done.returncode == 2, done.stderr
    assert b"page.html" in done.stderr
