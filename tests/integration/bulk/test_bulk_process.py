"""`fhir-app process`, the bulk path: formats, rejections, resumability, idempotence, equivalence
with the REST path, on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import orjson
from bulk_support import (
    database_content,
    environment,
    migrated,
    output_files,
    process_command,
    run_process,
    without_timestamps,
)
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from support.consistency import IncreasingClock, stale_patients
from support.population import write_population_file
from typer.testing import CliRunner

from fhir_app.bulk import BulkOptions, BulkProcessor, content_id
from fhir_app.cli import app
from fhir_app.fhir import samples
from fhir_app.fhir.inputs import JsonObject
from fhir_app.service import FhirService, current_outputs
from fhir_app.store import (
    TransientStoreError,
    UnitOfWork,
    bulk_uow_factory,
    make_engine,
    normalize_database_url,
    uow_factory,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def processor(url: str, **options: Any) -> BulkProcessor:
    return BulkProcessor(bulk_uow_factory(make_engine(url)), options=BulkOptions(**options))


def ndjson(path: Path, resources: list[JsonObject | bytes]) -> Path:
    lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in resources]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def population_lines(tmp_path: Path, patients: int, seed: int = 0) -> list[bytes]:
    source = tmp_path / f"population-{seed}.ndjson"
    write_population_file(source, patients=patients, seed=seed)
    return source.read_bytes().splitlines()


def obs(obs_id: str | None, patient: str, kind: str, value: Any, **kw: Any) -> JsonObject:
    raw = samples.observation(
        obs_id or "x", patient, kind, value, effective="2025-03-01T10:00:00Z", **kw
    )
    if obs_id is None:
        del raw["id"]
    return raw


def version_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            count: int = connection.execute(
                text("SELECT count(*) FROM resource_version")
            ).scalar_one()
            return count
    finally:
        engine.dispose()


# --- formats and outputs -------------------------------------------------------------------------


def test_ndjson_and_bundle_give_the_same_outputs(
    database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    feed, bundle = tmp_path / "feed.ndjson", tmp_path / "feed.json"
    summary = write_population_file(feed, patients=40)
    write_population_file(bundle, patients=40, fmt="bundle")
    from_lines = processor(database_url, workers=2, chunk_records=37).run([feed], tmp_path / "a")
    from_bundle = processor(migrated(empty_database_url), workers=0, chunk_records=53).run(
        [bundle], tmp_path / "b"
    )
    assert from_lines.accepted == from_bundle.accepted == summary.resources  # type: ignore[attr-defined]
    assert from_lines.rejected == from_bundle.rejected == 0
    assert from_lines.patients == from_bundle.patients == 40
    assert from_lines.written["DiagnosticReport"] == 40
    assert from_lines.written["RiskAssessment"] == summary.levels  # type: ignore[attr-defined]
    outputs = output_files(tmp_path / "a")
    assert outputs == output_files(tmp_path / "b")
    assert sorted(outputs) == [
        "DiagnosticReport.ndjson",
        "Observation.ndjson",
        "Provenance.ndjson",
        "RiskAssessment.ndjson",
    ]
    # A first derivation is final or preliminary, never amended, and each output is version 1.
    statuses = {r["status"] for r in outputs["RiskAssessment.ndjson"]}
    assert statuses <= {"final", "preliminary"}
    for name in ("DiagnosticReport.ndjson", "RiskAssessment.ndjson", "Observation.ndjson"):
        assert {r["meta"]["versionId"] for r in outputs[name]} == {"1"}


def test_bulk_and_rest_paths_derive_the_same_outputs(
    database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    """Every example through the bulk path and through REST transactions; then a changed and a
    withdrawn finding through both: the same outputs, versions and statuses."""
    examples = sorted(EXAMPLES.glob("patient-*.json"))
    service = FhirService(uow_factory(make_engine(migrated(empty_database_url))))
    bulk = processor(database_url, workers=0)
    patients: set[str] = set()
    for example in examples:
        bundle = orjson.loads(example.read_bytes())
        service.transaction(bundle)
        patients.update(
            e["resource"]["id"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Patient"
        )
    bulk.run(examples, tmp_path / "first")

    def rest_outputs(of: set[str]) -> list[Any]:
        rows = [without_timestamps(r) for r in current_outputs(service, of)]
        return sorted(rows, key=lambda r: (r["resourceType"], r["id"]))

    def bulk_outputs(folder: Path) -> list[Any]:
        rows = [r for name, rs in output_files(folder).items() for r in rs]
        return sorted(rows, key=lambda r: (r["resourceType"], r["id"]))

    assert bulk_outputs(tmp_path / "first") == rest_outputs(patients)
    # p01's L3 collapses further (a final output changes: amended); p09's T12 loses every
    # counting finding (its outputs are withdrawn: entered-in-error).
    changed = obs("p01-l3-collapse-2", "p01", "height_loss", 60, level="L3")
    p09 = orjson.loads((EXAMPLES / "patient-09-withdrawn-finding.json").read_bytes())
    withdrawn = [
        {**e["resource"], "status": "entered-in-error"}
        for e in p09["entry"]
        if e["resource"]["resourceType"] == "Observation" and "bodySite" in e["resource"]
    ]
    updates = [changed, *withdrawn]
    service.transaction(samples.transaction(updates))
    result = bulk.run([ndjson(tmp_path / "updates.ndjson", updates)], tmp_path / "second")
    assert (result.rejected, result.patients) == (0, 2)
    second = bulk_outputs(tmp_path / "second")
    assert second == rest_outputs({"p01", "p09"})
    statuses = {r["status"] for r in second if r["resourceType"] == "RiskAssessment"}
    assert {"amended", "entered-in-error"} <= statuses


def test_bad_lines_are_reported_per_entry_and_the_rest_is_stored(
    database_url: str, tmp_path: Path
) -> None:
    good = samples.patient("p1", "Doe", "Jane", "1950-01-01", "female")
    finding = obs("o1", "p1", "height_loss", 20, level="L2")
    bad_status = {**obs("o2", "p1", "pain", "mechanical", level="L2"), "status": "done"}
    feed = ndjson(
        tmp_path / "feed.ndjson",
        [good, b'{"resourceType": "Observation", "status": ', finding, bad_status, {"a": 1}],
    )
    done = run_process(database_url, [feed], tmp_path / "out")
    assert done.returncode == 1, done.stderr
    outcomes = [
        orjson.loads(x)
        for x in (tmp_path / "out" / "OperationOutcome.ndjson").read_bytes().splitlines()
    ]
    diagnostics = [o["issue"][0]["diagnostics"] for o in outcomes]
    assert [d.split(":")[1].strip() for d in diagnostics] == ["line 2", "line 4", "line 5"]
    assert [o["issue"][0]["code"] for o in outcomes] == ["invalid", "code-invalid", "required"]
    assert "rejected feed.ndjson: line 2: Malformed JSON" in done.stderr
    assert "2 accepted, 3 rejected; 1 patients" in done.stderr
    reports = output_files(tmp_path / "out")["DiagnosticReport.ndjson"]
    assert [r["subject"]["reference"] for r in reports] == ["Patient/p1"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    feed = ndjson(tmp_path / "feed.ndjson", [samples.patient("p1", "D", "J", "1950", "female")])
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for arguments in (
        [str(tmp_path / "missing.ndjson"), "--out", str(tmp_path / "o")],
        [str(feed)],  # no --out
        ["--out", str(tmp_path / "o")],  # no input
        [str(feed), "--out", str(a_file)],  # --out is a file
        [str(feed), "--out", str(tmp_path / "o"), "--workers", "-1"],
        [str(feed), "--out", str(tmp_path / "o"), "--chunk-size", "0"],
        [str(tmp_path), "--out", str(tmp_path / "o")],  # a folder as input
    ):
        done = CliRunner().invoke(app, ["process", *arguments], env={"FHIR_APP_DATABASE_URL": url})
        assert done.exit_code == 2, (arguments, done.output)
    assert not (tmp_path / "o").exists()


# --- workers that store -------------------------------------------------------------------------


def test_workers_store_on_connections_of_their_own_run_after_run(
    database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    """Worker processes derive and store batches on their own connections. The second run of the
    same processor forks its workers while the parent's pool holds connections of the first
    run: the workers must open their own (shared sockets would garble both sides)."""
    lines = population_lines(tmp_path, 30, seed=5)
    first_feed = ndjson(tmp_path / "first.ndjson", list(lines[: len(lines) // 2]))
    second_feed = ndjson(tmp_path / "second.ndjson", list(lines[len(lines) // 2 :]))
    bulk = processor(database_url, workers=2, chunk_records=20, derive_patients=3)
    bulk.run([first_feed], tmp_path / "a1")
    second = bulk.run([second_feed], tmp_path / "a2")
    clean_url = migrated(empty_database_url)
    clean = processor(clean_url, workers=0, chunk_records=20, derive_patients=3)
    clean.run([first_feed], tmp_path / "b1")
    expected = clean.run([second_feed], tmp_path / "b2")
    assert (second.accepted, second.patients, second.written) == (
        expected.accepted,
        expected.patients,
        expected.written,
    )
    assert output_files(tmp_path / "a2") == output_files(tmp_path / "b2")
    assert database_content(database_url) == database_content(clean_url)


def test_a_store_workers_cannot_open_derives_in_the_main_process(
    database_url: str, tmp_path: Path
) -> None:
    """A unit-of-work factory that does not say other processes may connect (an in-memory
    database, a test double) keeps every database access in the main process."""
    feed = ndjson(tmp_path / "feed.ndjson", list(population_lines(tmp_path, 8)))
    engine = make_engine(database_url)
    try:
        bulk = BulkProcessor(lambda: UnitOfWork(engine), options=BulkOptions(workers=2))
        result = bulk.run([feed], tmp_path / "out")
    finally:
        engine.dispose()
    assert (result.patients, result.written["DiagnosticReport"]) == (8, 8)
    reference = processor(database_url, workers=0).run([feed], tmp_path / "again")
    assert output_files(tmp_path / "out") == output_files(tmp_path / "again")
    assert reference.accepted == result.accepted


def test_a_derivation_whose_store_fails_transiently_is_derived_again_under_the_lock(
    database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    """A lost race or a dropped connection while a derived batch is stored (the first, unlocked
    try) is no loss: the batch is read, derived and stored again inside one locked transaction."""
    feed = ndjson(tmp_path / "feed.ndjson", list(population_lines(tmp_path, 6)))
    engine = make_engine(database_url)
    failures = [TransientStoreError("the connection was lost")] * 2

    class FlakyBulk:
        def __init__(self, bulk: Any) -> None:
            self._bulk = bulk

        def __getattr__(self, name: str) -> Any:
            return getattr(self._bulk, name)

        def write_versions(self, versions: Any, existing: Any) -> None:
            if failures and any(v.is_output for v in versions):
                raise failures.pop()
            self._bulk.write_versions(versions, existing=existing)

    class FlakyUnitOfWork(UnitOfWork):
        def __enter__(self) -> Self:
            super().__enter__()
            self.bulk = FlakyBulk(self.bulk)  # type: ignore[assignment]
            return self

    try:
        result = BulkProcessor(
            lambda: FlakyUnitOfWork(engine), options=BulkOptions(workers=0, derive_patients=2)
        ).run([feed], tmp_path / "out")
    finally:
        engine.dispose()
    assert failures == []  # both failures were met
    assert (result.patients, result.written["DiagnosticReport"]) == (6, 6)
    clean_url = migrated(empty_database_url)
    processor(clean_url, workers=0, derive_patients=2).run([feed], tmp_path / "clean")
    assert output_files(tmp_path / "out") == output_files(tmp_path / "clean")
    assert database_content(database_url) == database_content(clean_url)


# --- idempotence and ids -------------------------------------------------------------------------


def test_running_the_same_input_again_writes_no_new_version(
    database_url: str, tmp_path: Path
) -> None:
    anonymous = obs(None, "bench-0-0", "pain", "mechanical", level="T5")
    lines = [*population_lines(tmp_path, 12), orjson.dumps(anonymous), orjson.dumps(anonymous)]
    feed = ndjson(tmp_path / "feed.ndjson", list(lines))
    first = processor(database_url, workers=0, chunk_records=10).run([feed], tmp_path / "a")
    versions = version_count(database_url)
    again = processor(database_url, workers=2, chunk_records=7).run([feed], tmp_path / "b")
    assert version_count(database_url) == versions
    assert (again.accepted, again.rejected, again.patients) == (
        first.accepted,
        first.rejected,
        first.patients,
    )
    assert output_files(tmp_path / "a") == output_files(tmp_path / "b")
    # The input without an id was stored once, at an id derived from its content.
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT count(*) FROM resource_current WHERE resource_id = :id"),
                {"id": content_id(anonymous)},
            ).scalar_one()
    finally:
        engine.dispose()
    assert stored == 1


def test_an_output_cannot_be_overwritten_by_an_input(database_url: str, tmp_path: Path) -> None:
    first = ndjson(tmp_path / "a.ndjson", [obs("o1", "p1", "height_loss", 20, level="L2")])
    processor(database_url, workers=0).run([first], tmp_path / "a")
    derived = output_files(tmp_path / "a")["Observation.ndjson"][0]
    intruder = obs(derived["id"], "p1", "height_loss", 40, level="L2")
    feed = ndjson(tmp_path / "b.ndjson", [intruder])
    result = processor(database_url, workers=0).run([feed], tmp_path / "b")
    assert (result.accepted, result.rejected) == (0, 1)
    [outcome] = output_files(tmp_path / "b")["OperationOutcome.ndjson"]
    assert outcome["issue"][0]["code"] == "conflict"


def test_progress_is_reported(database_url: str, tmp_path: Path) -> None:
    feed = ndjson(tmp_path / "feed.ndjson", list(population_lines(tmp_path, 20)))
    seen: dict[str, int] = {"resources": 0, "patients": 0, "queued": -1, "bytes": 0}

    class Recorder:
        def ingest_started(self, total_bytes: int) -> None:
            assert total_bytes == feed.stat().st_size

        def ingested(self, resources: int, bytes_read: int) -> None:
            seen["resources"] += resources
            assert bytes_read >= seen["bytes"]
            seen["bytes"] = bytes_read

        def derive_started(self, patients: int) -> None:
            seen["queued"] = patients

        def derived(self, patients: int) -> None:
            seen["patients"] += patients

    result = processor(database_url, workers=0, chunk_records=25, derive_patients=6).run(
        [feed], tmp_path / "out", Recorder()
    )
    assert seen == {
        "resources": result.accepted,
        "patients": 20,
        "queued": 20,
        "bytes": feed.stat().st_size,
    }


# --- kill -9 and resume --------------------------------------------------------------------------


class RunState:
    """Reads how far a run has come, without taking the database's write lock."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(normalize_database_url(url), poolclass=NullPool)

    def scalar(self, sql: str) -> int:
        with self.engine.connect() as connection:
            value = connection.execute(text(sql)).scalar_one()
        return int(value or 0)

    def position(self) -> int:
        return self.scalar("SELECT max(position) FROM ingest_checkpoint")

    def pending(self) -> int:
        return self.scalar("SELECT count(*) FROM derivation_pending")

    def rejections(self) -> int:
        return self.scalar("SELECT count(*) FROM bulk_run_rejection")


def kill_when(process: subprocess.Popen[bytes], condition: Callable[[], bool]) -> None:
    """SIGKILL the process as soon as `condition` holds (fails if it ends first)."""
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_killed_run_resumes_to_the_result_of_a_clean_run(
    database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    lines = population_lines(tmp_path, 240, seed=3)
    lines.insert(2, b'{"resourceType": "Observation", "status": ')  # rejected before the kill
    lines.insert(9, orjson.dumps({**orjson.loads(lines[9]), "status": "done"}))
    lines.append(orjson.dumps({"resourceType": "Condition", "id": "c1"}))  # rejected at the end
    lines.append(orjson.dumps(obs(None, "bench-3-7", "pain", "pain-free", level="L1")))
    feed = ndjson(tmp_path / "feed.ndjson", list(lines))
    out = tmp_path / "out"
    command = process_command(
        [feed], out, "--chunk-size", "40", "--derive-batch", "6", "--workers", "2"
    )
    state = RunState(database_url)
    try:
        # Killed while ingesting, after some chunks (and the first rejections) were committed.
        first = subprocess.Popen(command, env=environment(database_url), stderr=subprocess.DEVNULL)
        kill_when(first, lambda: state.position() >= 120)
        assert state.position() < len(lines)
        assert state.rejections() == 2
        # Killed again while deriving, after some patients were derived.
        second = subprocess.Popen(command, env=environment(database_url), stderr=subprocess.DEVNULL)
        queued: list[int] = []

        def deriving() -> bool:
            if state.position() < len(lines):
                return False
            queued.append(state.pending())
            return queued[-1] < max(queued) and queued[-1] > 0

        kill_when(second, deriving)
    finally:
        state.engine.dispose()
    resumed = subprocess.run(
        command, env=environment(database_url), capture_output=True, text=True, check=False
    )
    clean_url = migrated(empty_database_url)
    clean = run_process(clean_url, [feed], tmp_path / "clean")
    assert (resumed.returncode, clean.returncode) == (1, 1), resumed.stderr + clean.stderr
    assert resumed.stderr.splitlines()[-1] == clean.stderr.splitlines()[-1].replace(
        str(tmp_path / "clean"), str(out)
    )
    assert "rejected feed.ndjson: line 3: Malformed JSON" in resumed.stderr
    files = output_files(out)
    assert files == output_files(tmp_path / "clean")
    assert len(files["OperationOutcome.ndjson"]) == 3
    assert len(files["DiagnosticReport.ndjson"]) == 240
    resumed_content = database_content(database_url)
    assert resumed_content == database_content(clean_url)
    assert set(resumed_content["run state rows"].values()) == {0}


def test_a_changed_file_is_taken_in_from_its_start(database_url: str, tmp_path: Path) -> None:
    """A checkpoint belongs to the file as it was (path, size, time): edited, it starts over."""
    feed = ndjson(tmp_path / "feed.ndjson", list(population_lines(tmp_path, 5)))
    bulk = processor(database_url, workers=0, chunk_records=4)
    bulk.run([feed], tmp_path / "a")
    c4 = samples.level_site("C4")["coding"][0]["code"]
    lines = [
        *feed.read_bytes().splitlines(),
        orjson.dumps(obs("late", "bench-0-1", "pain", "mechanical", level="C4")),
    ]
    ndjson(feed, list(lines))
    result = bulk.run([feed], tmp_path / "b")
    assert result.accepted == len(lines)
    sites = [
        r["bodySite"]["coding"][0]["code"]
        for r in output_files(tmp_path / "b")["Observation.ndjson"]
        if r["subject"]["reference"] == "Patient/bench-0-1" and "bodySite" in r
    ]
    assert c4 in sites


def test_bulk_run_and_rest_writes_of_the_same_patients_leave_outputs_derived_from_all_inputs(
    database_url: str, tmp_path: Path
) -> None:
    """The bulk path obeys the REST path's rule (issue 8): a run that ingests and derives patients
    while REST transactions write findings of the same patients leaves every patient's outputs
    derived from all of its committed inputs."""
    patients = [f"mix-{n}" for n in range(4)]
    effective = IncreasingClock()
    kinds = [
        ("pain", "mechanical"),
        ("pain", "pain-free"),
        ("height_loss", 65),
        ("height_loss", 0),
        ("alignment", "subluxation-translation"),
        ("alignment", "normal-alignment"),
    ]

    def finding(obs_id: str, patient: str, n: int) -> JsonObject:
        kind, value = kinds[n % len(kinds)]
        return samples.observation(
            obs_id, patient, kind, value, level="T5" if n % 3 else "L1", effective=effective()
        )

    source = ndjson(
        tmp_path / "mix.ndjson",
        [finding(f"bulk-{n}", patients[n % len(patients)], n) for n in range(240)],
    )
    engine = make_engine(database_url)
    service = FhirService(uow_factory(engine))
    failures: list[BaseException] = []

    def rest_client(index: int) -> None:
        try:
            for number in range(12):
                patient = patients[(index + number) % len(patients)]
                resources = [
                    finding(f"rest-{index}-{number}-{k}", patient, index + number + k)
                    for k in range(3)
                ]
                service.transaction(samples.transaction(resources))
        except BaseException as error:
            failures.append(error)

    def bulk_run() -> None:
        try:
            options = {"workers": 0, "chunk_records": 8, "derive_patients": 1}
            processor(database_url, **options).run([source], tmp_path / "out")
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=bulk_run)]
    threads += [threading.Thread(target=rest_client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    engine.dispose()
    assert not failures, failures
    check = make_engine(database_url)
    try:
        assert stale_patients(uow_factory(check), patients) == []
    finally:
        check.dispose()
