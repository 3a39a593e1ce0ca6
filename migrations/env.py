"""Alembic environment of fhir-app: the application's metadata, on SQLite or PostgreSQL.

The database URL, first found wins: `config.attributes["database_url"]` (set by
fhir_app.store.migrate), FHIR_APP_DATABASE_URL, `sqlalchemy.url` in alembic.ini, the
application's default (an SQLite file in the working folder).
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.pool import NullPool

from fhir_app.config import Settings
from fhir_app.store.engine import make_engine, normalize_database_url
from fhir_app.store.schema import UtcDateTime, metadata

# Any constant shared by every migrating process: "fhir" in ASCII.
MIGRATION_LOCK_KEY = 0x66686972

config = context.config

# The CLI configures logging from alembic.ini; a host application (migrate()) keeps its own.
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The URL to migrate (see the module docstring for the order)."""
    url = (
        config.attributes.get("database_url")
        or os.environ.get("FHIR_APP_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or Settings().database_url
    )
    return normalize_database_url(url).render_as_string(hide_password=False)


def render_item(kind: str, item: Any, _context: AutogenContext) -> str | Literal[False]:
    """Write UtcDateTime as the column type it is, so revisions never import the app."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    """Write the SQL script instead of running it (`alembic upgrade head --sql`)."""
    context.configure(
        url=database_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live connection."""
    # Foreign keys off on SQLite: batch mode rebuilds tables by copy-and-drop, and the drop
    # must not cascade. NullPool: a one-shot tool keeps no connections behind.
    engine = make_engine(database_url(), sqlite_foreign_keys=False, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                # Batch operations: one migration file serves SQLite (table rebuild) and
                # PostgreSQL (plain ALTER).
                render_as_batch=True,
                compare_type=True,
                render_item=render_item,
                # SQLite does roll back DDL once BEGIN is emitted (make_engine does): one
                # transaction per run makes a failed upgrade leave nothing half-done, and
                # concurrent runs queue on BEGIN IMMEDIATE before reading the version table.
                transactional_ddl=True,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    # Processes starting together migrate one after the other; the lock ends
                    # with the transaction.
                    connection.exec_driver_sql(
                        f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                    )
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
