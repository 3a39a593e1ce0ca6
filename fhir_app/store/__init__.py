"""Persistence: SQLAlchemy tables, repositories and the unit of work (the only importer of
SQLAlchemy). Works on SQLite and PostgreSQL (psycopg 3)."""

from fhir_app.store.audit import AuditQuery, AuditRepository, AuditRow
from fhir_app.store.bulk import BulkRepository
from fhir_app.store.engine import make_engine, normalize_database_url
from fhir_app.store.errors import (
    CommitOutcomeUnknown,
    ConflictRolledBack,
    DatabaseUrlError,
    StoreError,
    TransientStoreError,
    UnknownSchemaRevision,
    store_error,
)
from fhir_app.store.repository import (
    CheckpointRepository,
    ResourceRepository,
    StoredResource,
    checkpoint_key,
    content_hash,
    fhir_instant,
)
from fhir_app.store.schema import metadata
from fhir_app.store.uow import (
    BulkUnitOfWork,
    UnitOfWork,
    UnitOfWorkFactory,
    bulk_uow_factory,
    uow_factory,
)
from fhir_app.store.upgrade import alembic_config, migrate, missing_database

__all__ = [
    "AuditQuery",
    "AuditRepository",
    "AuditRow",
    "BulkRepository",
    "BulkUnitOfWork",
    "CheckpointRepository",
    "CommitOutcomeUnknown",
    "ConflictRolledBack",
    "DatabaseUrlError",
    "ResourceRepository",
    "StoreError",
    "StoredResource",
    "TransientStoreError",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "UnknownSchemaRevision",
    "alembic_config",
    "bulk_uow_factory",
    "checkpoint_key",
    "content_hash",
    "fhir_instant",
    "make_engine",
    "metadata",
    "migrate",
    "missing_database",
    "normalize_database_url",
    "store_error",
    "uow_factory",
]
