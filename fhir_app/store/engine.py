"""Engines for SQLite (development, single host) and PostgreSQL (production, psycopg 3)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from fhir_app.store.errors import DatabaseUrlError

SQLITE_BUSY_TIMEOUT_SECONDS = 30
# PostgreSQL: how long opening a connection may take (libpq `connect_timeout`; a URL's own
# `?connect_timeout=` wins) and how long a request waits for a pooled connection when all are
# busy. An unreachable or overloaded database then gives a prompt 503, not a hanging request.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5
POSTGRES_POOL_TIMEOUT_SECONDS = 10
# libpq TCP settings: a server that vanished without closing its connections (a host down, a
# failover) is noticed within about a minute instead of the kernel's ~15 minutes. A URL's own
# values win.
POSTGRES_TCP_ARGS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms that sent data may stay unacknowledged
}


def normalize_database_url(url: str | URL) -> URL:
    """The URL with the installed PostgreSQL driver: `postgres://` and `postgresql://` (which
    would pick psycopg2, not installed) become `postgresql+psycopg://`."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        # SQLAlchemy's message is generic; the string itself may hold a password: not quoted.
        raise DatabaseUrlError(
            "FHIR_APP_DATABASE_URL cannot be parsed as a database URL (expected e.g. "
            "sqlite:///./fhir-app.db or postgresql+psycopg://user@host/db)"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        parsed.get_dialect().import_dbapi()
    except (ArgumentError, ImportError) as error:
        # Unknown dialect (NoSuchModuleError) or a driver module that is not installed.
        reason = error.msg if isinstance(error, ImportError) and error.msg else str(error)
        raise DatabaseUrlError(
            f"FHIR_APP_DATABASE_URL names a database driver that is not installed "
            f"({parsed.render_as_string(hide_password=True)}: {reason}); fhir-app supports "
            "sqlite:/// and postgresql+psycopg://"
        ) from None
    return parsed


class _NoResultRows(logging.Filter):
    """Drops SQLAlchemy's DEBUG records: they are the result rows, i.e. patient data."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_ROW_FILTER = _NoResultRows()


def keep_patient_data_out_of_sql_logs() -> None:
    """Statements may be logged (INFO, parameters hidden by `hide_parameters`), rows never,
    whatever level a deployment sets. Idempotent."""
    logger = logging.getLogger("sqlalchemy.engine.Engine")
    if _ROW_FILTER not in logger.filters:
        logger.addFilter(_ROW_FILTER)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str | URL, *, sqlite_foreign_keys: bool = True, **overrides: Any) -> Engine:
    """An Engine for `url`, configured for this application's transactions.

    SQLite: foreign keys on, WAL journal, a busy timeout, and every transaction opened with
    `BEGIN IMMEDIATE` so that writers queue on the database lock instead of failing on an
    upgraded read lock; SAVEPOINTs then work inside the transaction. An in-memory database uses
    one shared connection (no concurrency). PostgreSQL: a pre-pinged pool of modest size, with
    short connect and pool timeouts.
    `sqlite_foreign_keys=False` is for migrations only: SQLite's batch table rebuilds must not
    fire foreign-key actions. `overrides` go to `create_engine` (e.g. `poolclass=NullPool`).
    """
    parsed = normalize_database_url(url)
    keep_patient_data_out_of_sql_logs()
    # hide_parameters: SQL parameters are patient data; errors and echo must never log them.
    options: dict[str, Any] = {
        "json_serializer": _dumps,
        "json_deserializer": orjson.loads,
        "hide_parameters": True,
    }
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        connect_args: dict[str, Any] = {
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
            "check_same_thread": False,
        }
        options["connect_args"] = connect_args
        if parsed.database in (None, "", ":memory:"):
            options["poolclass"] = StaticPool
    elif backend == "postgresql":
        defaults = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS, **POSTGRES_TCP_ARGS}
        postgres_args: dict[str, Any] = {"application_name": "fhir-app"}
        postgres_args.update((k, v) for k, v in defaults.items() if k not in parsed.query)
        options["connect_args"] = postgres_args
        if "poolclass" not in overrides:
            # pre_ping: a pooled connection that the server closed (restart, terminated
            # backend) is replaced at checkout instead of failing the request that takes it.
            options.update(
                pool_size=5,
                max_overflow=10,
                pool_pre_ping=True,
                pool_recycle=1800,
                pool_timeout=POSTGRES_POOL_TIMEOUT_SECONDS,
            )
    options.update(overrides)
    engine = create_engine(parsed, **options)
    if backend == "sqlite":
        _configure_sqlite(
            engine,
            in_memory=parsed.database in (None, "", ":memory:"),
            foreign_keys=sqlite_foreign_keys,
        )
    return engine


def _configure_sqlite(engine: Engine, *, in_memory: bool, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the sqlite3 module (it skips it before SELECT and SAVEPOINT);
        # the "begin" listener below emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                # Durable enough in WAL mode: a power loss can lose the last commits, not corrupt.
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
