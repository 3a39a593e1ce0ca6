"""Initial schema.

Resource versions, current pointers, search tokens, conditional-create claims, ingest checkpoints.

Revision ID: 011a7941a96d
Revises:
Create Date: 2026-11-25 19:07:43.637074+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "011a7941a96d"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "conditional_create",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("criteria_hash", sa.String(length=64), nullable=False),
        sa.Column("criteria", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "resource_type", "criteria_hash", name=op.f("pk_conditional_create")
        ),
    )
    op.create_table(
        "ingest_checkpoint",
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_key", name=op.f("pk_ingest_checkpoint")),
    )
    op.create_table(
        "resource_version",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("is_output", sa.Boolean(), nullable=False),
        sa.Column(
            "content",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint(
            "resource_type", "resource_id", "version_id", name=op.f("pk_resource_version")
        ),
    )
    op.create_table(
        "resource_current",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("is_output", sa.Boolean(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_type", "resource_id", "version_id"],
            [
                "resource_version.resource_type",
                "resource_version.resource_id",
                "resource_version.version_id",
            ],
            name=op.f("fk_resource_current_resource_type_resource_version"),
        ),
        sa.PrimaryKeyConstraint("resource_type", "resource_id", name=op.f("pk_resource_current")),
    )
    with op.batch_alter_table("resource_current", schema=None) as batch_op:
        batch_op.create_index(
            "ix_resource_current_patient",
            ["patient_id", "is_output", "resource_type"],
            unique=False,
        )
        batch_op.create_index(
            "ix_resource_current_type_updated",
            ["resource_type", "last_updated", "resource_id"],
            unique=False,
        )

    op.create_table(
        "search_token",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=32), nullable=False),
        sa.Column("system", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_type", "resource_id"],
            ["resource_current.resource_type", "resource_current.resource_id"],
            name=op.f("fk_search_token_resource_type_resource_current"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "resource_type", "resource_id", "param", "system", "code", name=op.f("pk_search_token")
        ),
    )
    with op.batch_alter_table("search_token", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_token_code", ["resource_type", "param", "code", "system"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("search_token", schema=None) as batch_op:
        batch_op.drop_index("ix_search_token_code")

    op.drop_table("search_token")
    with op.batch_alter_table("resource_current", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_current_type_updated")
        batch_op.drop_index("ix_resource_current_patient")

    op.drop_table("resource_current")
    op.drop_table("resource_version")
    op.drop_table("ingest_checkpoint")
    op.drop_table("conditional_create")
