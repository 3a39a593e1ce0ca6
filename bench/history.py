"""Type- and system-level `_history` at scale on PostgreSQL: page latency and the plan's index use.

Fills a fresh PostgreSQL database (migrated to head) with `--versions` resource versions (default
1 million) spread over the six stored types and `--versions / 20` patients, one version per
millisecond, by one set-based INSERT (the REST path would take hours and measures something
else). Then times, through `FhirService.history_page` (the query the routes run), a page of 50:

- system history, first page and a page deep in the history (keyset from the middle);
- type history of Observation, first page and with `_since` one hour before the end;
- system history of one patient (what a `patient/*.rs` token reads).

Each case runs `--repeat` times; the median is printed with the plan of its statement (EXPLAIN
ANALYZE: which index it scanned). Then the three history indexes of migration b7e1a9c4d2f0 are
dropped and the cases timed again in the same run: the ratio is what the indexes buy.

Run: `.venv/bin/python bench/history.py [--versions 1000000] [--repeat 20]`
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from harness import DatabaseUnavailable, fresh_postgres, machine_line, markdown_table
from sqlalchemy import Engine, event, text

from fhir_app.service import FhirService, HistoryCursor
from fhir_app.store import make_engine
from fhir_app.store.uow import uow_factory
from fhir_app.store.upgrade import migrate

TYPES: Final = (
    "Observation",
    "ImagingStudy",
    "Patient",
    "RiskAssessment",
    "DiagnosticReport",
    "Provenance",
)
START: Final = datetime(2026, 1, 1, tzinfo=UTC)
PAGE: Final = 50
INDEXES: Final = {
    "ix_resource_version_updated": "(last_updated, resource_type, resource_id, version_id)",
    "ix_resource_version_type_updated": "(resource_type, last_updated, resource_id, version_id)",
    "ix_resource_version_patient_updated": "(patient_id, last_updated)",
}


def fill(engine: Engine, versions: int) -> None:
    """`versions` versions, one per millisecond from START, in one INSERT ... SELECT."""
    types = "ARRAY[" + ", ".join(f"'{t}'" for t in TYPES) + "]"
    patients = max(1, versions // 20)
    statement = f"""
        INSERT INTO resource_version (resource_type, resource_id, version_id, last_updated,
            deleted, patient_id, status, is_output, content, raw, content_hash)
        SELECT t.rtype, 'r' || g, 1,
            :start + g * interval '1 millisecond', false, 'p' || (g % {patients}), 'final',
            t.rtype NOT IN ('Observation', 'ImagingStudy', 'Patient'),
            jsonb_build_object('resourceType', t.rtype, 'id', 'r' || g,
                'meta', jsonb_build_object('versionId', '1')),
            NULL, NULL
        FROM generate_series(1, :versions) AS g,
            LATERAL (SELECT ({types})[1 + g % {len(TYPES)}] AS rtype) AS t
    """
    with engine.begin() as connection:
        connection.execute(text(statement), {"start": START, "versions": versions})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE resource_version"))


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements run while the block runs, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", remember)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", remember)


def plan(engine: Engine, statement: str, parameters: Any) -> str:
    """The indexes (or sequential scans) in the executed plan of `statement`."""
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)
            lines = [row[0] for row in cursor.fetchall()]
    scans = [line.strip().removeprefix("->  ").split("  (")[0] for line in lines if "Scan" in line]
    return "; ".join(scans)


def cases(versions: int) -> list[tuple[str, Callable[[FhirService], object]]]:
    end = START + timedelta(milliseconds=versions)
    middle = HistoryCursor(START + timedelta(milliseconds=versions // 2), "Z", "Z", 1)
    return [
        ("system, first page", lambda s: s.history_page(None, count=PAGE)),
        ("system, deep page", lambda s: s.history_page(None, before=middle, count=PAGE)),
        ("Observation, first page", lambda s: s.history_page("Observation", count=PAGE)),
        (
            "Observation, _since end-1h",
            lambda s: s.history_page("Observation", since=end - timedelta(hours=1), count=PAGE),
        ),
        ("system, one patient", lambda s: s.history_page(None, count=PAGE, patient="p7")),
    ]


def timed(
    service: FhirService, engine: Engine, versions: int, repeat: int
) -> list[tuple[str, float, str]]:
    """(case, median ms, plan) of every case."""
    out = []
    for name, run in cases(versions):
        run(service)  # warm
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            rows = run(service)
            samples.append((time.perf_counter() - started) * 1000)
            assert isinstance(rows, list), name
            assert rows, name
        with captured(engine) as seen:
            run(service)
        statement, parameters = next(s for s in seen if "resource_version" in s[0])
        out.append((name, statistics.median(samples), plan(engine, statement, parameters)))
    return out


def main(argv: list[str] | None = None) -> int:
    """Fill, time with and without the history indexes, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--versions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        database = fresh_postgres()
        url = database.__enter__()
    except DatabaseUnavailable as exc:
        print(f"PostgreSQL is not available: {exc}", file=sys.stderr)
        return 2
    try:
        migrate(url)
        engine = make_engine(url)
        started = time.perf_counter()
        fill(engine, args.versions)
        print(machine_line())
        print(f"{args.versions} versions stored in {time.perf_counter() - started:.1f} s\n")
        service = FhirService(uow_factory(engine))
        indexed = timed(service, engine, args.versions, args.repeat)
        with engine.begin() as connection:
            for name in INDEXES:
                connection.execute(text(f"DROP INDEX {name}"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE resource_version"))
        bare = timed(service, engine, args.versions, max(3, args.repeat // 4))
        rows = [
            [name, f"{ms:.2f}", f"{bare_ms:.2f}", f"{bare_ms / ms:.1f}", scans]
            for (name, ms, scans), (_, bare_ms, _) in zip(indexed, bare, strict=True)
        ]
        header = ["page of 50", "ms (indexes)", "ms (no indexes)", "ratio", "plan (indexes)"]
        print(markdown_table(header, rows))
        print("\nwithout the indexes: " + "; ".join(f"{n}: {p}" for n, _, p in bare))
        engine.dispose()
    finally:
        database.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
