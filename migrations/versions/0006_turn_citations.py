"""turn citations: the knowledge passages a turn's reply cites

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 09:12:40.511204
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Frozen copies of the column types, so later model changes never rewrite history.
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Rolling upgrades (docs/operations.md): adds only; the previous release keeps working.
phase = "expand"


def upgrade() -> None:
    # Nullable: turns finished before this migration cited nothing we recorded.
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("citations", JSON_DOC, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.drop_column("citations")
