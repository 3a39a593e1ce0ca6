"""Bring a database to the newest schema with the project's Alembic migrations."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import inspect

from fhir_app.store.engine import make_engine, normalize_database_url
from fhir_app.store.errors import UnknownSchemaRevision

# The source checkout keeps migrations/ and alembic.ini next to the fhir_app package; an
# installed copy (the Docker image) keeps them in the working folder.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
# Alembic keeps its running environment in module globals: one migration per process at a time.
# (Processes exclude each other in the database: see migrations/env.py.)
_ALEMBIC_LOCK = threading.Lock()


def project_root() -> Path:
    """The folder holding `alembic.ini` and `migrations/`."""
    for candidate in (_SOURCE_ROOT, Path.cwd()):
        if (candidate / "alembic.ini").is_file() and (
            candidate / "migrations" / "env.py"
        ).is_file():
            return candidate
    raise FileNotFoundError(
        "alembic.ini and migrations/ not found next to the fhir_app sources or in the working "
        f"folder ({Path.cwd()}): run from the project (or image) folder"
    )


def alembic_config(url: str) -> Config:
    """The Alembic configuration of this project, aimed at `url` (overrides the environment)."""
    root = project_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    # env.py reads this first; an attribute, not an ini option, so '%' in passwords is safe.
    config.attributes["database_url"] = normalize_database_url(url).render_as_string(
        hide_password=False
    )
    # The host application owns logging; Alembic's fileConfig must not replace it.
    config.attributes["configure_logging"] = False
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision` (default: the newest). Idempotent; on
    PostgreSQL concurrent callers wait for each other (advisory lock in env.py)."""
    config = alembic_config(url)
    with _ALEMBIC_LOCK:
        try:
            command.upgrade(config, revision)
        except CommandError as error:
            # Alembic wraps the ResolutionError of a revision id its scripts do not have: the
            # database's own (after a code rollback), when `revision` is one of ours.
            if not isinstance(error.__cause__, ResolutionError):
                raise
            raise UnknownSchemaRevision(
                f"the database's schema revision {error.__cause__.argument!r} is unknown to this "
                "version of fhir-app (did a newer version write it?): downgrade the schema with "
                'that newer version first (README, "Rolling back")'
            ) from error


def missing_database(url: str) -> str | None:
    """Why the database at `url` holds nothing of fhir-app (None when it holds the schema): a
    SQLite file that does not exist (not created here), or a database never migrated. For the
    commands that only read what was stored."""
    parsed = normalize_database_url(url)
    database = parsed.database or ""
    file_named = database not in ("", ":memory:") and not database.startswith("file:")
    if parsed.get_backend_name() == "sqlite" and file_named and not Path(database).is_file():
        return "there is no such file"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            found = inspect(connection).has_table("alembic_version")
    finally:
        engine.dispose()
    return None if found else "it holds no fhir-app schema (nothing was ever stored there)"
