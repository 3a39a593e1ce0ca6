"""History indexes.

Type- and system-level `_history` (issue 12) read versions newest first, paged by the key
(lastUpdated, type, id, version): one index per order, so a page is an index range scan; and
the history of one patient (a patient-context token) by patient and lastUpdated.

Revision ID: b7e1a9c4d2f0
Revises: 5e1c0a7d2b13
Create Date: 2026-12-01 13:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b7e1a9c4d2f0"
down_revision: str | Sequence[str] | None = "5e1c0a7d2b13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        "ix_resource_version_updated",
        "resource_version",
        ["last_updated", "resource_type", "resource_id", "version_id"],
        unique=False,
    )
    op.create_index(
        "ix_resource_version_type_updated",
        "resource_version",
        ["resource_type", "last_updated", "resource_id", "version_id"],
        unique=False,
    )
    op.create_index(
        "ix_resource_version_patient_updated",
        "resource_version",
        ["patient_id", "last_updated"],
        unique=False,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_resource_version_patient_updated", table_name="resource_version")
    op.drop_index("ix_resource_version_type_updated", table_name="resource_version")
    op.drop_index("ix_resource_version_updated", table_name="resource_version")
