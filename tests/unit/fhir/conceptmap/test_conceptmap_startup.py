"""A broken ConceptMap stops every entry point at start-up: one line naming the file and element,
exit code 4, nothing read or stored (the style of the database check, exit code 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from conceptmap_support import LOCAL, SINS, concept_map, write_map

from fhir_app.api import create_app
from fhir_app.cli import EXIT_CONCEPT_MAP
from fhir_app.config import Settings
from fhir_app.fhir.conceptmap import ConceptMapError
from fhir_app.service import FhirService

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "patient-01-stable-blastic.json"
BROKEN_TARGET = {
    "source": LOCAL,
    "target": SINS,
    "element": [{"code": "X", "target": [{"code": "osteolytic", "equivalence": "equal"}]}],
}


@pytest.fixture
def broken_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "site-maps"
    write_map(folder, "local.json", concept_map("local", [BROKEN_TARGET]))
    return folder


@pytest.mark.parametrize(
    "arguments",
    [
        ["assess", str(EXAMPLE)],
        ["process", str(EXAMPLE), "--out", "{tmp}/out"],
        ["process", str(EXAMPLE), "--out", "{tmp}/out", "--engine", "spark"],
        ["serve", "--port", "1"],
    ],
    ids=["assess", "process", "process-spark", "serve"],
)
def test_a_broken_site_map_is_one_line_and_exit_code_4(
    arguments: list[str], broken_folder: Path, tmp_path: Path
) -> None:
    database = tmp_path / "never.db"
    env = {
        **os.environ,
        "FHIR_APP_CONCEPT_MAP_DIR": str(broken_folder),
        "FHIR_APP_DATABASE_URL": f"sqlite:///{database}",
    }
    args = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    done = subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_CONCEPT_MAP == 4, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "a ConceptMap cannot be used" in lines[0]
    assert str(broken_folder / "local.json") in lines[0]
    assert "ConceptMap.group[0].element[0].target[0].code" in lines[0]
    assert done.stdout == ""
    assert not database.exists()  # checked before the database is opened
    assert not (tmp_path / "out").exists()


def test_a_missing_site_folder_stops_the_start(tmp_path: Path) -> None:
    env = {**os.environ, "FHIR_APP_CONCEPT_MAP_DIR": str(tmp_path / "nowhere")}
    done = subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", "assess", str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 4, done.stderr
    assert "is not a folder of ConceptMap JSON files" in done.stderr


def test_assess_applies_a_good_site_map(tmp_path: Path) -> None:
    good = {
        "source": LOCAL,
        "target": SINS,
        "element": [{"code": "X", "target": [{"code": "lytic", "equivalence": "equal"}]}],
    }
    write_map(tmp_path / "maps", "local.json", concept_map("local", [good]))
    env = {**os.environ, "FHIR_APP_CONCEPT_MAP_DIR": str(tmp_path / "maps")}
    done = subprocess.run(
        [sys.executable, "-m", "fhir_app.cli", "assess", str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"resourceType":"Bundle"' in done.stdout


def test_the_app_factory_refuses_a_broken_map(broken_folder: Path, fresh_translator: None) -> None:
    settings = Settings(database_url="sqlite://", concept_map_dir=broken_folder)
    with pytest.raises(ConceptMapError) as caught:
        create_app(settings, cast(FhirService, object()))
    assert caught.value.path == broken_folder / "local.json"
    assert caught.value.element == "ConceptMap.group[0].element[0].target[0].code"


def test_the_setting_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_APP_CONCEPT_MAP_DIR", str(tmp_path))
    assert Settings().concept_map_dir == tmp_path
    monkeypatch.delenv("FHIR_APP_CONCEPT_MAP_DIR")
    assert Settings().concept_map_dir is None
