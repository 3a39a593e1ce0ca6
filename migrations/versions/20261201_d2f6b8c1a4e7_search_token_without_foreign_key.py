"""search_token without its foreign key to resource_current.

The index tables of a3c9e5f1b7d2 were made without one: their rows are written and deleted with
the current row by the same code (store/search/indexing.py), and no current row is ever deleted
(a deletion is a version), so the cascade never fired. The check itself ran once per token row
(about 100,000 per 20,000 bulk inputs), a lookup and a row lock in resource_current each:
measured, it was 1-1.4 s of a 20-22 s bulk run on PostgreSQL.

Revision ID: d2f6b8c1a4e7
Revises: c4d8f2a6e9b1
Create Date: 2026-12-01 16:40:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "d2f6b8c1a4e7"
down_revision: str | Sequence[str] | None = "c4d8f2a6e9b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "fk_search_token_resource_type_resource_current"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("search_token", schema=None) as batch_op:
        batch_op.drop_constraint(_NAME, type_="foreignkey")


def downgrade() -> None:
    """Downgrade schema."""
    # Rows whose resource has no current row (none are written, but a downgrade must not fail
    # on them) are removed first, as the cascade would have.
    op.execute(
        "DELETE FROM search_token WHERE NOT EXISTS (SELECT 1 FROM resource_current AS c"
        " WHERE c.resource_type = search_token.resource_type"
        " AND c.resource_id = search_token.resource_id)"
    )
    with op.batch_alter_table("search_token", schema=None) as batch_op:
        batch_op.create_foreign_key(
            _NAME,
            "resource_current",
            ["resource_type", "resource_id"],
            ["resource_type", "resource_id"],
            ondelete="CASCADE",
        )
