"""outputs.slack_status: where the approval message went in Slack (posted, dm, thread,
unrouted, failed), apart from the webhook's notification_status

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-07 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Rolling upgrades (docs/operations.md): adds only; the previous release keeps working.
phase = "expand"


def upgrade() -> None:
    with op.batch_alter_table("outputs") as batch:
        batch.add_column(
            sa.Column("slack_status", sa.String(16), nullable=False, server_default="pending")
        )
        batch.create_index("ix_outputs_slack_status", ["slack_status", "status"])
    # Outputs whose message was posted before this column existed were posted somewhere.
    op.execute("UPDATE outputs SET slack_status = 'posted' WHERE slack_channel IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("outputs") as batch:
        batch.drop_index("ix_outputs_slack_status")
        batch.drop_column("slack_status")
