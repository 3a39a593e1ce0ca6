"""The Alembic migrations: stairway, no drift from the models, programmatic and CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from fhir_app.store import make_engine, metadata, migrate
from fhir_app.store.upgrade import alembic_config, project_root

ROOT = Path(__file__).resolve().parents[2]
APP_TABLES = {
    "resource_version",
    "resource_current",
    "search_token",
    "search_reference",
    "search_date",
    "search_string",
    "conditional_create",
    "ingest_checkpoint",
    "audit_event",
}


def revisions_oldest_first() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def drift(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "render_as_batch": True}
        )
        return list(compare_metadata(context, metadata))


def test_there_is_exactly_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_stairway_upgrade_downgrade_upgrade_every_revision(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    revisions = revisions_oldest_first()
    assert revisions
    for revision in revisions:
        command.upgrade(config, revision)
        command.downgrade(config, "-1")
        command.upgrade(config, revision)
    assert table_names(empty_database_url) >= APP_TABLES
    command.downgrade(config, "base")
    assert table_names(empty_database_url) == {"alembic_version"}


def test_models_and_migrations_do_not_drift(empty_database_url: str) -> None:
    migrate(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        assert drift(engine) == []
    finally:
        engine.dispose()
    # The same check CI runs (`alembic check`): raises when autogenerate would emit anything.
    command.check(alembic_config(empty_database_url))


def test_migrate_is_idempotent(empty_database_url: str) -> None:
    migrate(empty_database_url)
    migrate(empty_database_url)
    assert table_names(empty_database_url) >= APP_TABLES


def test_processes_starting_together_both_migrate(empty_database_url: str) -> None:
    # Separate processes, as at a deployment: each waits for the other's upgrade and finds
    # the schema at head.
    program = "import sys; from fhir_app.store import migrate; migrate(sys.argv[1])"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", program, empty_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(run.wait(timeout=120), run.communicate()[1]) for run in runs]
    assert [code for code, _ in outcomes] == [0, 0, 0], [error for _, error in outcomes]
    assert table_names(empty_database_url) >= APP_TABLES
    config = alembic_config(empty_database_url)
    script = ScriptDirectory.from_config(config)
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            heads = MigrationContext.configure(connection).get_current_heads()
    finally:
        engine.dispose()
    assert heads == tuple(script.get_heads())


def test_constraint_names_follow_the_convention_and_fit_postgresql() -> None:
    names: list[str] = []
    for table in metadata.sorted_tables:
        names.extend(str(c.name) for c in table.constraints)
        names.extend(str(i.name) for i in table.indexes)
    assert names
    assert all(name.split("_", 1)[0] in {"pk", "fk", "uq", "ix", "ck"} for name in names)
    assert max(len(name) for name in names) <= 63


def test_alembic_cli_reads_the_database_url_from_the_environment(tmp_path: Path) -> None:
    database = tmp_path / "from-env.db"
    environment = {**os.environ, "FHIR_APP_DATABASE_URL": f"sqlite:///{database}"}
    alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
    subprocess.run([*alembic, "upgrade", "head"], env=environment, check=True, cwd=tmp_path)
    checked = subprocess.run(
        [*alembic, "check"], env=environment, cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert table_names(f"sqlite:///{database}") >= APP_TABLES


def test_offline_sql_for_postgresql_names_every_table() -> None:
    environment = {
        **os.environ,
        "FHIR_APP_DATABASE_URL": "postgresql://nobody@db.invalid/fhirapp",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(ROOT / "alembic.ini"),
            "upgrade",
            "head",
            "--sql",
        ],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    for table in APP_TABLES:
        assert f"CREATE TABLE {table}" in result.stdout
    assert "JSONB" in result.stdout


def test_project_root_is_the_source_checkout() -> None:
    assert project_root() == ROOT


def test_migrations_outside_a_checkout_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fhir_app.store.upgrade as upgrade_module

    monkeypatch.setattr(upgrade_module, "_SOURCE_ROOT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"alembic\.ini and migrations/"):
        project_root()
