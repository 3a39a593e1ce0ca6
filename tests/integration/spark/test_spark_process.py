"""`fhir-app process --engine spark`: the single-machine path's outputs, on Spark local[2].

The inputs: a generated population (bench/generate.py), cut into many 64 KB splits so that
records straddle split boundaries; a hand-made NDJSON file with what a registry's feed carries
besides (malformed JSON, an invalid resource, a blank line, a CRLF line, an input without id, one
resource sent three times with a change in between, one that moves to another patient, a Bundle
on a line); and an example transaction Bundle as a JSON document.

Spark: one session (local[2], loopback) for the module. The tests are marked `spark` and are
skipped only when pyspark or Java is missing; under CI (CI=true) with pyspark installed, a missing
Java fails them instead, so that CI cannot pass without having run them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from support.conditions import primary_condition, secondary_condition
from support.population import write_population_file

from fhir_app.analytics.lesions import lesion_rows
from fhir_app.analytics.views import column_names, evaluate, load_views
from fhir_app.bulk import BulkOptions, BulkProcessor, BulkResult
from fhir_app.fhir import samples
from fhir_app.store import bulk_uow_factory, make_engine

# One Spark session (a JVM) is started per process running these tests: under pytest-xdist
# (--dist loadgroup) they all go to one worker.
pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "patient-01-stable-blastic.json"
VIEWS = REPO / "profiles" / "views"
# Written by the store or the derivation clock when a version is made: they differ between any
# two runs, of one path or of two (CONTRACT: `meta.lastUpdated`, `issued`, `Provenance.recorded`,
# and the `creation` of the report's presentedForm).
TIMESTAMPS = frozenset({"lastUpdated", "issued", "recorded", "creation"})
SPLIT_BYTES = 64 * 1024
MASTER = "local[2]"


def spark_missing() -> str | None:
    """Why Spark cannot run here, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'fhir-app[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and (Path(java_home) / "bin/java").exists()):
        return "no Java runtime (pyspark needs Java 17: java on PATH or JAVA_HOME)"
    return None


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """A SparkSession on local[2] bound to the loopback interface."""
    reason = spark_missing()
    if reason is not None:
        if os.environ.get("CI") == "true" and importlib.util.find_spec("pyspark") is not None:
            pytest.fail(f"CI has pyspark but cannot run Spark: {reason}")
        pytest.skip(reason)
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    from fhir_app.spark.job import spark_session

    with spark_session(MASTER) as session:
        yield session


def without_timestamps(node: Any) -> Any:
    """A JSON value without the elements that record when it was written."""
    if isinstance(node, dict):
        return {k: without_timestamps(v) for k, v in node.items() if k not in TIMESTAMPS}
    if isinstance(node, list):
        return [without_timestamps(v) for v in node]
    return node


def ndjson_files(folder: Path) -> dict[str, list[Any]]:
    """Every NDJSON file of a folder, its lines parsed, in order."""
    return {
        path.name: [orjson.loads(line) for line in path.read_bytes().splitlines()]
        for path in sorted(folder.glob("*.ndjson"))
    }


def _finding(obs_id: str, patient: str, height_loss: int, level: str = "T7") -> dict[str, Any]:
    return samples.observation(
        obs_id, patient, "height_loss", height_loss, level=level, effective="2025-03-01T10:00:00Z"
    )


def feed_extras(path: Path) -> Path:
    """What a real feed carries beside clean resources, one line each."""
    nameless = {k: v for k, v in _finding("x", "spark-a", 30, "L2").items() if k != "id"}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": _finding("in-bundle", "spark-b", 60, "T9")}],
    }
    lines = [
        orjson.dumps(_finding("sent-thrice", "spark-a", 20)),
        b"",
        b"{broken",
        orjson.dumps({"resourceType": "Observation", "status": "bogus"}),
        orjson.dumps(_finding("sent-thrice", "spark-a", 60)) + b"\r",
        orjson.dumps(nameless),
        orjson.dumps(_finding("sent-thrice", "spark-a", 60)),
        orjson.dumps(_finding("mover", "spark-c", 20, "T4")),
        orjson.dumps(bundle),
        orjson.dumps(_finding("mover", "spark-d", 20, "T4")),
        # Conditions (CONTRACT 3, v2): a known primary, and a secondary making L2 a lesion level;
        # an Observation outside the contract about a Group, stored with no patient.
        orjson.dumps(_finding("e-l1", "spark-e", 40, "L1")),
        orjson.dumps(primary_condition("e-primary", "spark-e", "breast")),
        orjson.dumps(secondary_condition("e-met", "spark-e", "L2")),
        orjson.dumps(
            {
                "resourceType": "Observation",
                "id": "ward-hr",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": "Group/ward-3"},
            }
        ),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@dataclass(frozen=True)
class Runs:
    """The same inputs through both paths."""

    single: Path
    spark: Path
    single_result: BulkResult
    spark_result: Any


@pytest.fixture(scope="module")
def runs(spark: Any, tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> Runs:
    from fhir_app.spark.job import process

    folder = tmp_path_factory.mktemp("spark-equality")
    population = folder / "population.ndjson"
    write_population_file(population, patients=200, seed=14)
    inputs = [population, feed_extras(folder / "extras.ndjson"), EXAMPLE]
    database = folder / "single.db"
    shutil.copyfile(_sqlite_template, database)
    engine = make_engine(f"sqlite:///{database}")
    try:
        single = BulkProcessor(
            bulk_uow_factory(engine), options=BulkOptions(workers=0, chunk_records=400)
        ).run(inputs, folder / "single")
    finally:
        engine.dispose()
    spark_result = process(spark, inputs, folder / "spark", split_bytes=SPLIT_BYTES)
    return Runs(folder / "single", folder / "spark", single, spark_result)


def test_the_spark_outputs_equal_the_single_machine_outputs(runs: Runs) -> None:
    """Every output file, line for line and in the same order, apart from the timestamps.

    `meta.lastUpdated`, `issued` and `Provenance.recorded` are the moments the versions were
    made, which the contract lets differ between runs. Nothing else is left out: `meta.versionId`
    is 1 on both (a first run on an empty database makes version 1 of every output, which is
    what the Spark path stamps), and the version-specific references to inputs agree because
    the Spark path gives each input the version the store gives it (`sent-thrice` is version 2:
    its third sending repeats the second). OperationOutcome.ndjson is compared whole.
    """
    single, spark = ndjson_files(runs.single), ndjson_files(runs.spark)
    assert (
        set(single)
        == set(spark)
        == {
            "DiagnosticReport.ndjson",
            "Observation.ndjson",
            "OperationOutcome.ndjson",
            "Provenance.ndjson",
            "RiskAssessment.ndjson",
        }
    )
    for name in single:
        assert len(single[name]) == len(spark[name]), name
        assert without_timestamps(single[name]) == without_timestamps(spark[name]), name
    assert single["OperationOutcome.ndjson"] == spark["OperationOutcome.ndjson"]
    references = orjson.dumps(spark["Provenance.ndjson"]).decode()
    assert "Observation/sent-thrice/_history/2" in references
    assert "Condition/e-met/_history/1" in references


def test_the_counts_equal_the_single_machine_run(runs: Runs) -> None:
    single, spark = runs.single_result, runs.spark_result
    assert (spark.accepted, spark.rejected, spark.patients) == (
        single.accepted,
        single.rejected,
        single.patients,
    )
    assert spark.written == single.written
    assert single.rejected == 2
    assert single.patients > 200


def test_a_patient_an_input_moved_away_from_has_no_outputs(runs: Runs) -> None:
    """`mover` was sent for spark-c, then for spark-d: only spark-d has its outputs."""
    reports = ndjson_files(runs.spark)["DiagnosticReport.ndjson"]
    subjects = {report["subject"]["reference"] for report in reports}
    assert "Patient/spark-d" in subjects
    assert "Patient/spark-c" not in subjects


def test_the_lesion_table_is_the_one_of_the_single_machine_outputs(runs: Runs) -> None:
    """lesions.parquet holds the rows `lesion_rows` reads from the single path's outputs, in the
    same order (patient, then C1..S5), apart from `last_updated` (a timestamp)."""
    outputs = [r for lines in ndjson_files(runs.single).values() for r in lines]
    expected = [row.as_dict() for row in lesion_rows(outputs)]
    table = pq.read_table(runs.spark / "lesions.parquet").to_pylist()
    assert len(table) == len(expected) == runs.spark_result.lesions > 200
    for row in (*table, *expected):
        row.pop("last_updated")
    assert table == expected


def _row_key(row: dict[str, Any]) -> str:
    return repr(sorted((k, v) for k, v in row.items() if k != "last_updated"))


def test_the_views_give_the_same_rows_over_both_outputs(spark: Any, runs: Runs) -> None:
    """Each ViewDefinition of profiles/views/, evaluated in the executors over the Spark outputs,
    gives the rows the evaluator gives over the single path's outputs (but `last_updated`, the
    outputs' `meta.lastUpdated`); as a DataFrame, Spark SQL counts and sums the same rows."""
    from fhir_app.spark.views import view_frame, view_rows

    outputs = [r for lines in ndjson_files(runs.single).values() for r in lines]
    views = load_views(VIEWS)
    assert len(views) == 4
    for name, view in views.items():
        expected = evaluate(view, outputs)
        rows = view_rows(spark, runs.spark, view).collect()
        assert len(rows) > 200, name
        assert Counter(map(_row_key, rows)) == Counter(map(_row_key, expected)), name
    view = views["sins_score"]
    frame = view_frame(spark, runs.spark, view)
    assert frame.columns == column_names(view)
    frame.createOrReplaceTempView("sins_score")
    scores = evaluate(view, outputs)
    query = "SELECT count(*), sum(total), count(DISTINCT patient) FROM sins_score"
    assert tuple(spark.sql(query).first()) == (
        len(scores),
        sum(row["total"] for row in scores if row["total"] is not None),
        len({row["patient"] for row in scores}),
    )


def test_the_command_line_runs_the_spark_path(spark: Any, tmp_path: Path) -> None:
    """`fhir-app process --engine spark --master local[2]`: the files, the rejections on stderr,
    exit code 1 (some input rejected), and no database anywhere. (A second Spark, in its own
    process: `spark` is here for the skip when Spark cannot run.)"""
    extras = feed_extras(tmp_path / "extras.ndjson")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhir_app.cli",
            "process",
            str(extras),
            "--out",
            str(out),
            "--engine",
            "spark",
            "--master",
            "local[2]",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert "rejected extras.ndjson: line 3:" in done.stderr
    assert "11 accepted, 2 rejected" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "DiagnosticReport.ndjson",
        "Observation.ndjson",
        "OperationOutcome.ndjson",
        "Provenance.ndjson",
        "RiskAssessment.ndjson",
        "lesions.parquet",
    ]
    assert not list(tmp_path.glob("*.db"))
