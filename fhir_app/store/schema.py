"""The tables: every version of every resource, the current pointer, search indexes, claims.

The naming convention on the MetaData is fixed before the first migration so that constraint
names are the same on SQLite and PostgreSQL and later migrations can drop them by name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSON as PG_JSON
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    # First column only: every name must fit PostgreSQL's 63 characters.
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# FHIR ids are at most 64 characters; resource type names are far shorter.
ID_LENGTH = 64
TYPE_LENGTH = 64
HASH_LENGTH = 64  # hex sha256


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps `timestamptz`; SQLite has no time zones, so the value is stored as naive UTC
    and made aware again on the way out. Naive datetimes are refused: their zone is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; strip the zone for SQLite, which would store it as text."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to the store: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Always hand back an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (indexable, compact), plain JSON text on SQLite.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")
# A stored resource: read and written whole, never queried inside (the search index tables are
# what is queried), so PostgreSQL keeps it as the JSON text written (json), not parsed (jsonb).
ResourceDocument = JSON().with_variant(PG_JSON(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JsonDocument,
        datetime: UtcDateTime(),
    }


class ResourceVersion(Base):
    """Every version of every resource, inputs and outputs, including deletions."""

    __tablename__ = "resource_version"

    resource_type: Mapped[str] = mapped_column(String(TYPE_LENGTH), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime]
    deleted: Mapped[bool] = mapped_column(Boolean)
    patient_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    status: Mapped[str | None] = mapped_column(String(32))
    is_output: Mapped[bool] = mapped_column(Boolean)
    # The resource as served: id, meta.versionId and meta.lastUpdated set.
    content: Mapped[dict[str, Any]] = mapped_column(ResourceDocument)
    # The exact text received, for audit; None for outputs and deletions.
    raw: Mapped[str | None] = mapped_column(Text)
    # sha256 of the canonical content without the server-set meta: detects an identical resend.
    content_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))

    __table_args__ = (
        # System and type history, newest first, paged by this key (FHIR R4 http.html#history).
        Index(
            "ix_resource_version_updated",
            "last_updated",
            "resource_type",
            "resource_id",
            "version_id",
        ),
        Index(
            "ix_resource_version_type_updated",
            "resource_type",
            "last_updated",
            "resource_id",
            "version_id",
        ),
        # The history a patient-context token reads: one patient's versions, newest first.
        Index("ix_resource_version_patient_updated", "patient_id", "last_updated"),
    )


class ResourceCurrent(Base):
    """One row per resource: which version is current. The primary key serialises creation."""

    __tablename__ = "resource_current"

    resource_type: Mapped[str] = mapped_column(String(TYPE_LENGTH), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean)
    patient_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    status: Mapped[str | None] = mapped_column(String(32))
    is_output: Mapped[bool] = mapped_column(Boolean)
    last_updated: Mapped[datetime]
    content_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))

    __table_args__ = (
        ForeignKeyConstraint(
            ["resource_type", "resource_id", "version_id"],
            [
                "resource_version.resource_type",
                "resource_version.resource_id",
                "resource_version.version_id",
            ],
        ),
        # A patient's inputs or outputs (derivation, export).
        Index("ix_resource_current_patient", "patient_id", "is_output", "resource_type"),
        # Search pages are ordered by lastUpdated then id.
        Index("ix_resource_current_type_updated", "resource_type", "last_updated", "resource_id"),
    )


class SearchToken(Base):
    """Token search parameters (code, identifier, status...) of the current version of a resource.

    `system` is the empty string for a coding without a system, so that `|code` can be searched
    and the primary key stays NOT NULL.
    """

    __tablename__ = "search_token"

    resource_type: Mapped[str] = mapped_column(String(TYPE_LENGTH), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    param: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Text: system URLs and identifier values have no useful length bound.
    system: Mapped[str] = mapped_column(Text, primary_key=True)
    code: Mapped[str] = mapped_column(Text, primary_key=True)

    # No foreign key to resource_current, like the index tables below (migration d2f6b8c1a4e7).
    __table_args__ = (
        # Search by code (any system) and by system|code.
        Index("ix_search_token_code", "resource_type", "param", "code", "system"),
    )


class SearchReference(Base):
    """Reference search parameters (subject, result, target...) of the current version: the
    type and id each reference points to (version-specific references point to the resource).

    The index tables of issue 12 have no foreign key to `resource_current`: their rows are
    written and deleted with the current row by the same code (store/search/indexing.py), and a
    foreign-key check per row slowed the bulk path's COPY by a sixth to a third (measured).
    """

    __tablename__ = "search_reference"

    resource_type: Mapped[str] = mapped_column(String(TYPE_LENGTH), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    param: Mapped[str] = mapped_column(String(32), primary_key=True)
    target_type: Mapped[str] = mapped_column(String(TYPE_LENGTH), primary_key=True)
    target_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)

    __table_args__ = (
        # Search by reference (`subject=Patient/x`) and `_revinclude` (what points here); the
        # primary key serves `_include` (what these resources point to).
        Index("ix_search_reference_target", "target_type", "target_id", "param", "resource_type"),
    )


class SearchDate(Base):
    """Date search parameters of the current version: each value as the half-open UTC range
    [low, high) of its precision (a Period from its start to its end)."""

    __tablename__ = "search_date"

    resource_type: Mapped[str] = mapped_column(String(TYPE_LENGTH), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    param: Mapped[str] = mapped_column(String(32), primary_key=True)
    low: Mapped[datetime] = mapped_column(primary_key=True)
    high: Mapped[datetime] = mapped_column(primary_key=True)

    __table_args__ = (Index("ix_search_date_range", "resource_type", "param", "low", "high"),)


class SearchString(Base):
    """String search parameters (names) of the current version: the text normalised (case and
    accents folded: the default and `:contains` searches) and as written (`:exact`)."""

    __tablename__ = "search_string"

    resource_type: Mapped[str] = mapped_column(String(TYPE_LENGTH), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    param: Mapped[str] = mapped_column(String(32), primary_key=True)
    exact: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        # text_pattern_ops: `LIKE 'abc%'` uses the index whatever the database's collation.
        Index(
            "ix_search_string_value",
            "resource_type",
            "param",
            "value",
            postgresql_ops={"value": "text_pattern_ops"},
        ),
    )


class ConditionalCreate(Base):
    """Which resource owns an If-None-Exist criteria: makes conditional create race-free.

    The criteria is keyed by its sha256 so that long query strings fit any index.
    """

    __tablename__ = "conditional_create"

    resource_type: Mapped[str] = mapped_column(String(TYPE_LENGTH), primary_key=True)
    criteria_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    criteria: Mapped[str] = mapped_column(Text)
    resource_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    created_at: Mapped[datetime]


class IngestCheckpoint(Base):
    """How far a bulk input file has been processed, to resume after an interruption."""

    __tablename__ = "ingest_checkpoint"

    # sha256 of the input file's path, size and modification time.
    source_key: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


metadata = Base.metadata

# Core handles for DML (typed as Table, which the mapped classes' __table__ is not).
resource_version_table = metadata.tables["resource_version"]
resource_current_table = metadata.tables["resource_current"]
search_token_table = metadata.tables["search_token"]
search_reference_table = metadata.tables["search_reference"]
search_date_table = metadata.tables["search_date"]
search_string_table = metadata.tables["search_string"]
# Every index table of the search parameters, rows keyed by (resource_type, resource_id).
search_index_tables = (
    search_token_table,
    search_reference_table,
    search_date_table,
    search_string_table,
)
conditional_create_table = metadata.tables["conditional_create"]
ingest_checkpoint_table = metadata.tables["ingest_checkpoint"]
