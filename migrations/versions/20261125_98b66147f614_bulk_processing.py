"""Bulk processing.

The derivation queue (patients whose outputs must be derived again) and the state of a resumable
`fhir-app process` run: its counters, the patients it touched and the inputs it refused.

Revision ID: 98b66147f614
Revises: 011a7941a96d
Create Date: 2026-11-25 19:32:00.409786+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "98b66147f614"
down_revision: str | Sequence[str] | None = "011a7941a96d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "bulk_run",
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_key", name=op.f("pk_bulk_run")),
    )
    op.create_table(
        "derivation_pending",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_derivation_pending")),
    )
    op.create_table(
        "bulk_run_patient",
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column(
            "patient_id",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["run_key"],
            ["bulk_run.run_key"],
            name=op.f("fk_bulk_run_patient_run_key_bulk_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_key", "patient_id", name=op.f("pk_bulk_run_patient")),
    )
    op.create_table(
        "bulk_run_rejection",
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column("source_index", sa.Integer(), nullable=False),
        sa.Column("record_index", sa.BigInteger(), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column(
            "outcome",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["run_key"],
            ["bulk_run.run_key"],
            name=op.f("fk_bulk_run_rejection_run_key_bulk_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "run_key",
            "source_index",
            "record_index",
            "item_index",
            name=op.f("pk_bulk_run_rejection"),
        ),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("bulk_run_rejection")
    op.drop_table("bulk_run_patient")
    op.drop_table("derivation_pending")
    op.drop_table("bulk_run")
