"""approval lifecycle: `approval` policies on agents and skills, grantable skills, on
outputs the policy they were proposed under, the approvals recorded and escalation, and
the grants table

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Rolling upgrades (docs/operations.md): adds only; the previous release keeps working
#: (it ignores the new columns; outputs it creates have one required approval, as before).
phase = "expand"


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("approval", JSON_DOC, nullable=True))
    with op.batch_alter_table("skills") as batch:
        batch.add_column(sa.Column("approval", JSON_DOC, nullable=True))
        batch.add_column(
            sa.Column("grantable", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("outputs") as batch:
        batch.add_column(sa.Column("approval_policy", JSON_DOC, nullable=True))
        batch.add_column(sa.Column("approvals", JSON_DOC, nullable=True))
        batch.add_column(
            sa.Column("approval_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("skill", sa.String(length=63), nullable=False),
        sa.Column("skill_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("arguments_sha256", sa.String(length=64), nullable=False),
        sa.Column("arguments", JSON_DOC, nullable=False),
        sa.Column("output_id", sa.String(length=40), nullable=False),
        sa.Column("granted_by", sa.String(length=64), nullable=False),
        sa.Column("identity", sa.String(length=16), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
    )
    op.create_index(
        "ix_grants_session_skill", "grants", ["tenant_id", "session_id", "skill"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_grants_session_skill", table_name="grants")
    op.drop_table("grants")
    with op.batch_alter_table("outputs") as batch:
        batch.drop_column("escalated_at")
        batch.drop_column("approval_count")
        batch.drop_column("approvals")
        batch.drop_column("approval_policy")
    with op.batch_alter_table("skills") as batch:
        batch.drop_column("grantable")
        batch.drop_column("approval")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("approval")
