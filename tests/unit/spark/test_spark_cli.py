"""`fhir-app process --engine/--master`: the usage errors, which need no Spark."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fhir_app.cli import app

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "patient-01-stable-blastic.json"


def test_master_without_the_spark_engine_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["process", str(EXAMPLE), "--out", str(tmp_path / "out"), "--master", "local[2]"]
    )
    assert result.exit_code == 2
    assert "--master needs --engine spark" in result.output
    assert not (tmp_path / "out").exists()


def test_an_unknown_engine_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["process", str(EXAMPLE), "--out", str(tmp_path), "--engine", "dask"]
    )
    assert result.exit_code == 2


def test_the_spark_engine_without_pyspark_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import` raise ImportError, as when the extra is not installed.
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "fhir_app.spark.job", None)
    result = CliRunner().invoke(
        app, ["process", str(EXAMPLE), "--out", str(tmp_path / "out"), "--engine", "spark"]
    )
    assert result.exit_code == 2
    assert "install fhir-app[spark]" in result.output
