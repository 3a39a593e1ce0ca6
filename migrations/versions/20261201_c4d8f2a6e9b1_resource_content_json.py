"""Resource content as json, not jsonb, on PostgreSQL.

`resource_version.content` is read and written whole, never queried inside (search reads the
index tables of a3c9e5f1b7d2): jsonb's binary form made PostgreSQL parse every stored resource
(140 MB of derived outputs per 20,000 bulk inputs, mostly the report's page and picture) and
print it again on every read, which the client then parsed once more to restore the served
key order. `json` keeps the text as written (checked to be JSON on the way in), so a read hands
back exactly what was stored. SQLite stores JSON as text already: nothing changes there.

Revision ID: c4d8f2a6e9b1
Revises: a3c9e5f1b7d2
Create Date: 2026-12-01 16:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c4d8f2a6e9b1"
down_revision: str | Sequence[str] | None = "a3c9e5f1b7d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_context().dialect.name != "postgresql":
        return
    op.alter_column(
        "resource_version",
        "content",
        type_=postgresql.JSON(astext_type=sa.Text()),
        existing_type=postgresql.JSONB(astext_type=sa.Text()),
        existing_nullable=False,
        postgresql_using="content::json",
    )


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_context().dialect.name != "postgresql":
        return
    op.alter_column(
        "resource_version",
        "content",
        type_=postgresql.JSONB(astext_type=sa.Text()),
        existing_type=postgresql.JSON(astext_type=sa.Text()),
        existing_nullable=False,
        postgresql_using="content::jsonb",
    )
