"""Bulk test helpers: the CLI as a subprocess, fresh databases, content without timestamps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text

from fhir_app.store import make_engine, migrate

# Set by the store on every version, or by the derivation clock: differ between two runs.
TIMESTAMPS = frozenset({"lastUpdated", "issued", "recorded", "creation"})
RUN_STATE_TABLES = (
    "bulk_run",
    "bulk_run_patient",
    "bulk_run_rejection",
    "derivation_pending",
    "ingest_checkpoint",
)


def process_command(inputs: list[Path], out: Path, *options: str) -> list[str]:
    """`fhir-app process` as this interpreter runs it."""
    return [
        sys.executable,
        "-m",
        "fhir_app.cli",
        "process",
        *map(str, inputs),
        "--out",
        str(out),
        *options,
    ]


def environment(database_url: str) -> dict[str, str]:
    """This environment with the given database."""
    env = dict(os.environ)
    env["FHIR_APP_DATABASE_URL"] = database_url
    return env


def run_process(
    database_url: str, inputs: list[Path], out: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    """Run `fhir-app process` to its end."""
    return subprocess.run(
        process_command(inputs, out, *options),
        env=environment(database_url),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def migrated(url: str) -> str:
    """`url`, brought to the newest schema."""
    migrate(url)
    return url


def without_timestamps(node: Any) -> Any:
    """A JSON value without the elements that record when it was written."""
    if isinstance(node, dict):
        return {k: without_timestamps(v) for k, v in node.items() if k not in TIMESTAMPS}
    if isinstance(node, list):
        return [without_timestamps(v) for v in node]
    return node


def output_files(folder: Path) -> dict[str, list[Any]]:
    """Every NDJSON file of an output folder, lines in order, timestamps left out."""
    return {
        path.name: [
            without_timestamps(orjson.loads(line)) for line in path.read_bytes().splitlines()
        ]
        for path in sorted(folder.glob("*.ndjson"))
    }


def database_content(url: str) -> dict[str, Any]:
    """What a database holds, timestamps left out: every version, current row and token.

    The content hash of an output covers `issued` / `recorded` and is left out with them.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            versions = connection.execute(
                text(
                    "SELECT resource_type, resource_id, version_id, deleted, patient_id, status,"
                    " is_output, content, raw, content_hash FROM resource_version"
                )
            ).all()
            current = connection.execute(
                text(
                    "SELECT resource_type, resource_id, version_id, deleted, patient_id, status,"
                    " is_output, content_hash FROM resource_current"
                )
            ).all()
            tokens = connection.execute(text("SELECT * FROM search_token")).all()
            state = {
                table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in RUN_STATE_TABLES
            }
    finally:
        engine.dispose()

    def content(value: Any) -> Any:
        return without_timestamps(orjson.loads(value) if isinstance(value, str) else value)

    return {
        "versions": sorted(
            (
                *row[:7],
                orjson.dumps(content(row[7]), option=orjson.OPT_SORT_KEYS),
                row[8],
                None if row[6] else row[9],
            )
            for row in versions
        ),
        "current": sorted((*row[:7], None if row[6] else row[7]) for row in current),
        "tokens": sorted(tuple(row) for row in tokens),
        "run state rows": state,
    }
