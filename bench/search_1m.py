"""Search timings at a million stored resources on PostgreSQL, with the plans' index use.

Fills a fresh PostgreSQL database with `--resources` resources (default 1,000,000) through the
bulk write path (`BulkRepository.write_versions`, COPY, the index rows of
`fhir_app.fhir.search.index_rows`): synthetic patients of 8 resources each, inputs (Patient, two
findings, an ImagingStudy) and outputs (a SINS Observation, a RiskAssessment, a DiagnosticReport
whose result is the SINS Observation, a Provenance targeting the outputs). The outputs are
templates with each patient's ids, not derived: the searches only need their shape.

Then prints the median (and min / max) of `--runs` runs of:
  - patient search: `Observation?patient=<a random patient>`;
  - code search with includes: `DiagnosticReport?code=http://loinc.org|18748-4&_count=20
    &_include=DiagnosticReport:result` (a page of reports with their results, and the total of
    every report), and the same with `_total=none`;
  - a patient's report with its results and its Provenance (`_revinclude=Provenance:target`);
  - history since: `_history?_since=<the newest 1 %>&_count=100`, through
    `FhirService.history_page` (the query the route runs);
each with the indexes its statements' plans use (EXPLAIN of every statement the search sent).
Same-run ratios: each search against a primary-key read of one resource.

Run: `.venv/bin/python bench/search_1m.py [--resources 1000000] [--runs 9]`
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from harness import DatabaseUnavailable, fresh_postgres, machine_line, markdown_table
from sqlalchemy import Engine, event, text

from fhir_app.fhir.search import index_rows, parse_search
from fhir_app.searching import run_search
from fhir_app.service import FhirService
from fhir_app.store import content_hash, make_engine, migrate, uow_factory
from fhir_app.store.bulk import NewVersion, served_content

DEFAULT_RESOURCES: Final = 1_000_000
PER_PATIENT: Final = 8
BATCH_PATIENTS: Final = 1_000
EPOCH: Final = datetime(2024, 1, 1, tzinfo=UTC)
SINS: Final = "https://fhir-app.org/fhir/CodeSystem/sins"
FINDING: Final = "https://fhir-app.org/fhir/CodeSystem/spine-finding"
LOINC_REPORT: Final = "http://loinc.org|18748-4"
INDEX_USE: Final = re.compile(
    r"(?:Index (?:Only )?Scan(?: Backward)? using|Bitmap Index Scan on) (\w+)"
)
SEQ_SCAN: Final = re.compile(r"Seq Scan on (\w+)")


def patient_resources(n: int) -> list[dict[str, Any]]:
    """The 8 resources of synthetic patient `n`."""
    pid = f"p{n}"
    subject = {"reference": f"Patient/{pid}"}
    day = (EPOCH + timedelta(minutes=n)).strftime("%Y-%m-%d")
    finding = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": FINDING, "code": "appearance"}]},
        "subject": subject,
        "effectiveDateTime": day,
        "derivedFrom": [{"reference": f"ImagingStudy/s-{pid}"}],
    }
    return [
        {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1960-01-01"},
        {**finding, "id": f"f1-{pid}", "identifier": [{"system": "urn:feed", "value": f"{n}-1"}]},
        {**finding, "id": f"f2-{pid}"},
        {
            "resourceType": "ImagingStudy",
            "id": f"s-{pid}",
            "status": "available",
            "subject": subject,
            "started": day,
            "series": [{"uid": f"1.2.{n}", "modality": {"code": "CT"}}],
        },
        {
            "resourceType": "Observation",
            "id": f"sins-{pid}",
            "status": "final",
            "code": {"coding": [{"system": SINS, "code": "sins-total"}]},
            "subject": subject,
            "effectiveDateTime": day,
            "valueInteger": n % 18,
        },
        {
            "resourceType": "RiskAssessment",
            "id": f"risk-{pid}",
            "status": "final",
            "method": {"coding": [{"system": SINS, "code": "sins"}]},
            "subject": subject,
            "occurrenceDateTime": day,
            "basis": [{"reference": f"Observation/sins-{pid}"}],
        },
        {
            "resourceType": "DiagnosticReport",
            "id": f"report-{pid}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
            "subject": subject,
            "effectiveDateTime": day,
            "issued": f"{day}T12:00:00Z",
            "result": [{"reference": f"Observation/sins-{pid}"}],
        },
        {
            "resourceType": "Provenance",
            "id": f"prov-{pid}",
            "target": [
                {"reference": f"DiagnosticReport/report-{pid}/_history/1"},
                {"reference": f"RiskAssessment/risk-{pid}/_history/1"},
                {"reference": f"Observation/sins-{pid}/_history/1"},
            ],
            "recorded": f"{day}T12:00:00Z",
            "activity": {"coding": [{"code": "CREATE"}]},
            "entity": [{"role": "source", "what": {"reference": f"Observation/f1-{pid}"}}],
        },
    ]


OUTPUTS: Final = frozenset({"RiskAssessment", "DiagnosticReport", "Provenance"})


def versions_of(n: int, moment: datetime) -> Iterator[NewVersion]:
    """The versions the bulk path stores for patient `n`."""
    for resource in patient_resources(n):
        rtype, rid = resource["resourceType"], resource["id"]
        served = served_content(rtype, rid, 1, moment, resource)
        yield NewVersion(
            resource_type=rtype,
            resource_id=rid,
            version_id=1,
            last_updated=moment,
            patient_id=f"p{n}",
            status=resource.get("status"),
            is_output=rtype in OUTPUTS or rid.startswith("sins-"),
            content=orjson.dumps(served).decode(),
            content_hash=content_hash(resource),
            index=index_rows(resource),
        )


def fill(engine: Engine, patients: int) -> float:
    """Store every patient through the bulk path; the seconds it took."""
    factory = uow_factory(engine)
    started = time.perf_counter()
    for first in range(0, patients, BATCH_PATIENTS):
        last = min(patients, first + BATCH_PATIENTS)
        # One instant per patient, a minute apart: lastUpdated orders them.
        batch = [
            version
            for n in range(first, last)
            for version in versions_of(n, EPOCH + timedelta(minutes=n))
        ]
        with factory() as uow:
            uow.bulk.write_versions(batch, existing=())
            uow.commit()
        if (last // BATCH_PATIENTS) % 25 == 0 or last == patients:
            print(f"  stored {last * PER_PATIENT:,} resources", file=sys.stderr, flush=True)
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


@contextmanager
def recorded(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The statements (and parameters) sent while the block runs."""
    sent: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


def index_use(engine: Engine, statements: list[tuple[str, Any]]) -> str:
    """The indexes (and any sequential scans) of the plans of these statements."""
    used: list[str] = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute(f"EXPLAIN {statement}", parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            used.extend(INDEX_USE.findall(plan))
            used.extend(f"SEQ SCAN {name}" for name in SEQ_SCAN.findall(plan))
        raw.rollback()
    finally:
        raw.close()
    return ", ".join(dict.fromkeys(used)) or "-"


def timed(runs: int, work: Callable[[int], int]) -> tuple[list[float], int]:
    """Seconds of each run of `work(run)` (which returns how many resources it read)."""
    seconds, found = [], 0
    for run in range(runs):
        started = time.perf_counter()
        found = work(run)
        seconds.append(time.perf_counter() - started)
    return seconds, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=DEFAULT_RESOURCES)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    runs: int = args.runs
    patients = max(1, args.resources // PER_PATIENT)
    chooser = random.Random(args.seed)
    print(machine_line())
    try:
        with fresh_postgres() as url:
            measure(url, runs, patients, chooser)
    except DatabaseUnavailable as exc:
        print(f"PostgreSQL unavailable: {exc}")
        return 2
    return 0


def measure(url: str, runs: int, patients: int, chooser: random.Random) -> None:
    """Fill the database at `url`, then time and explain the searches."""
    migrate(url)
    engine = make_engine(url)
    fill_seconds = fill(engine, patients)
    print(
        f"filled {patients * PER_PATIENT:,} resources ({patients:,} patients) through the bulk"
        f" path in {fill_seconds:.0f} s ({patients * PER_PATIENT / fill_seconds:,.0f}/s)"
    )
    factory = uow_factory(engine)
    picks = [f"p{chooser.randrange(patients)}" for _ in range(runs)]

    def read_one(run: int) -> int:
        with factory() as uow:
            return 1 if uow.resources.current("Observation", f"f1-{picks[run]}") else 0

    def searched(rtype: str, *items: tuple[str, str]) -> Callable[[int], int]:
        def work(run: int) -> int:
            given = [(k, v.replace("{patient}", picks[run])) for k, v in items]
            query = parse_search(rtype, given, default_count=20, max_count=1000)
            with factory() as uow:
                result = run_search(uow.search, query)
            return len(result.matches) + len(result.included)

        return work

    since = EPOCH + timedelta(minutes=int(patients * 0.99))

    service = FhirService(factory)

    def history(run: int) -> int:
        return len(service.history_page(None, since=since, count=100))

    cases = [
        ("read one resource by id (reference)", read_one),
        ("Observation?patient=<id>", searched("Observation", ("patient", "{patient}"))),
        (
            "DiagnosticReport?code=<LOINC 18748-4>&_count=20&_include=DiagnosticReport:result",
            searched(
                "DiagnosticReport",
                ("code", LOINC_REPORT),
                ("_count", "20"),
                ("_include", "DiagnosticReport:result"),
            ),
        ),
        (
            "the same with _total=none (no count of every match)",
            searched(
                "DiagnosticReport",
                ("code", LOINC_REPORT),
                ("_count", "20"),
                ("_total", "none"),
                ("_include", "DiagnosticReport:result"),
            ),
        ),
        (
            "DiagnosticReport?patient=<id>&_include=DiagnosticReport:result"
            "&_revinclude=Provenance:target",
            searched(
                "DiagnosticReport",
                ("patient", "{patient}"),
                ("_include", "DiagnosticReport:result"),
                ("_revinclude", "Provenance:target"),
            ),
        ),
        ("_history?_since=<newest 1 %>&_count=100", history),
    ]
    rows = []
    reference = None
    for label, work in cases:
        work(0)  # warm the caches and the statement cache
        seconds, found = timed(runs, work)
        with recorded(engine) as sent:
            work(0)
        median = statistics.median(seconds)
        reference = reference or median
        rows.append(
            [
                label,
                f"{median * 1000:.1f}",
                f"{min(seconds) * 1000:.1f} / {max(seconds) * 1000:.1f}",
                str(found),
                f"{median / reference:.1f}x",
                index_use(engine, sent),
            ]
        )
    with engine.connect() as connection:
        size = connection.execute(
            text("SELECT pg_size_pretty(pg_database_size(current_database()))")
        ).scalar()
    print(f"database size: {size}; runs per search: {runs}")
    print(
        markdown_table(
            ["search", "median ms", "min / max ms", "resources", "vs read", "indexes used"],
            rows,
        )
    )
    engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
