"""Search index: reference, date and string rows next to the tokens, filled from the table of
search parameters (issue 12). (`_history` since is served by the history indexes of b7e1a9c4d2f0.)

The data part rebuilds every index row of the current, non-deleted resources with the function
every write path uses (fhir_app.fhir.search.index_rows), in batches, so that a database written
before this revision finds by the new parameters (status, date, typed references...) at once.

Revision ID: a3c9e5f1b7d2
Revises: b7e1a9c4d2f0
Create Date: 2026-12-01 13:00:00+00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from fhir_app.fhir.search import index_rows

revision: str = "a3c9e5f1b7d2"
# After the history indexes of the REST branch of issue 12 (both were written from 5e1c0a7d2b13).
down_revision: str | Sequence[str] | None = "b7e1a9c4d2f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _owner_columns() -> list[Any]:
    return [
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=32), nullable=False),
    ]


def upgrade() -> None:
    """Upgrade schema, then fill the index from the stored current resources."""
    op.create_table(
        "search_reference",
        *_owner_columns(),
        sa.Column("target_type", sa.String(length=64), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(
            "resource_type",
            "resource_id",
            "param",
            "target_type",
            "target_id",
            name=op.f("pk_search_reference"),
        ),
    )
    op.create_index(
        "ix_search_reference_target",
        "search_reference",
        ["target_type", "target_id", "param", "resource_type"],
        unique=False,
    )
    op.create_table(
        "search_date",
        *_owner_columns(),
        sa.Column("low", sa.DateTime(timezone=True), nullable=False),
        sa.Column("high", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "resource_type", "resource_id", "param", "low", "high", name=op.f("pk_search_date")
        ),
    )
    op.create_index(
        "ix_search_date_range",
        "search_date",
        ["resource_type", "param", "low", "high"],
        unique=False,
    )
    op.create_table(
        "search_string",
        *_owner_columns(),
        sa.Column("exact", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "resource_type", "resource_id", "param", "exact", name=op.f("pk_search_string")
        ),
    )
    op.create_index(
        "ix_search_string_value",
        "search_string",
        ["resource_type", "param", "value"],
        unique=False,
        postgresql_ops={"value": "text_pattern_ops"},
    )
    if context.is_offline_mode():
        # A SQL script (`alembic upgrade --sql`) cannot read the stored resources, so it cannot
        # fill their index: upgrade a database that holds resources online (`fhir-app migrate`).
        return
    backfill()


def backfill() -> None:
    """Every index row of every current, non-deleted resource, made again (keyset batches)."""
    connection = op.get_bind()
    meta = sa.MetaData()
    current = sa.Table(
        "resource_current",
        meta,
        sa.Column("resource_type", sa.String(64)),
        sa.Column("resource_id", sa.String(64)),
        sa.Column("version_id", sa.Integer),
        sa.Column("deleted", sa.Boolean),
    )
    version = sa.Table(
        "resource_version",
        meta,
        sa.Column("resource_type", sa.String(64)),
        sa.Column("resource_id", sa.String(64)),
        sa.Column("version_id", sa.Integer),
        sa.Column("content", _JSON),
    )

    def owner() -> list[sa.Column[Any]]:
        return [sa.Column("resource_type", sa.String(64)), sa.Column("resource_id", sa.String(64))]

    tables = {
        "tokens": sa.Table(
            "search_token",
            meta,
            *owner(),
            sa.Column("param", sa.String(32)),
            sa.Column("system", sa.Text),
            sa.Column("code", sa.Text),
        ),
        "references": sa.Table(
            "search_reference",
            meta,
            *owner(),
            sa.Column("param", sa.String(32)),
            sa.Column("target_type", sa.String(64)),
            sa.Column("target_id", sa.String(64)),
        ),
        "dates": sa.Table(
            "search_date",
            meta,
            *owner(),
            sa.Column("param", sa.String(32)),
            sa.Column("low", sa.DateTime(timezone=True)),
            sa.Column("high", sa.DateTime(timezone=True)),
        ),
        "strings": sa.Table(
            "search_string",
            meta,
            *owner(),
            sa.Column("param", sa.String(32)),
            sa.Column("exact", sa.Text),
            sa.Column("value", sa.Text),
        ),
    }
    # The rows written before this revision (code and identifier only) are made again too.
    connection.execute(tables["tokens"].delete())
    after: tuple[str, str] = ("", "")
    while True:
        rows = connection.execute(
            sa.select(current.c.resource_type, current.c.resource_id, version.c.content)
            .join(
                version,
                sa.and_(
                    version.c.resource_type == current.c.resource_type,
                    version.c.resource_id == current.c.resource_id,
                    version.c.version_id == current.c.version_id,
                ),
            )
            .where(
                current.c.deleted == sa.false(),
                sa.tuple_(current.c.resource_type, current.c.resource_id) > sa.tuple_(*after),
            )
            .order_by(current.c.resource_type, current.c.resource_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        found: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        for rtype, rid, content in rows:
            index = index_rows(content)
            key = {"resource_type": rtype, "resource_id": rid}
            found["tokens"] += [
                {**key, "param": p, "system": s, "code": c} for p, s, c in index.tokens
            ]
            found["references"] += [
                {**key, "param": p, "target_type": t, "target_id": i}
                for p, t, i in index.references
            ]
            found["dates"] += [
                {**key, "param": p, "low": low, "high": high} for p, low, high in index.dates
            ]
            found["strings"] += [
                {**key, "param": p, "value": v, "exact": e} for p, v, e in index.strings
            ]
        for name, values in found.items():
            if values:
                connection.execute(tables[name].insert(), values)
        after = (rows[-1][0], rows[-1][1])


def downgrade() -> None:
    """Downgrade schema (the token rows stay: the earlier code reads code and identifier)."""
    op.drop_index("ix_search_string_value", table_name="search_string")
    op.drop_table("search_string")
    op.drop_index("ix_search_date_range", table_name="search_date")
    op.drop_table("search_date")
    op.drop_index("ix_search_reference_target", table_name="search_reference")
    op.drop_table("search_reference")
