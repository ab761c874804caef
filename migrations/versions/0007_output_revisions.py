"""output revisions: skill snapshots, edits, the revision a decision was made on

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 19:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Rolling upgrades (docs/operations.md): adds only; the previous release keeps working.
phase = "expand"


def upgrade() -> None:
    # Outputs made before this migration have no snapshot (NULL): executing one looks the
    # skill up by name once, as before, and says so in its audit detail.
    with op.batch_alter_table("outputs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("skill_snapshot", JSON_DOC, nullable=True))
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("edits", JSON_DOC, nullable=True))
        batch_op.add_column(sa.Column("decision_revision", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("decision_identity", sa.String(length=16), nullable=True))
    with op.batch_alter_table("skills", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "require_distinct_editor_approver",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
        batch_op.add_column(
            sa.Column(
                "accept_asserted_decisions",
                sa.Boolean(),
                nullable=False,
                server_default=sa.true(),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("accept_asserted_decisions")
        batch_op.drop_column("require_distinct_editor_approver")
    with op.batch_alter_table("skills", schema=None) as batch_op:
        batch_op.drop_column("version")
    with op.batch_alter_table("outputs", schema=None) as batch_op:
        batch_op.drop_column("decision_identity")
        batch_op.drop_column("decision_revision")
        batch_op.drop_column("edits")
        batch_op.drop_column("revision")
        batch_op.drop_column("skill_snapshot")
