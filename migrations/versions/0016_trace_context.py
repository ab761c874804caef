"""outputs.traceparent and webhook_deliveries.traceparent: the W3C trace context of a
proposal and of the change an outbox row announces, so a decision (a later request) and a
delivery (any worker) continue the turn's trace (core.tracing)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 05:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Rolling upgrades (docs/operations.md): adds nullable columns; the previous release
#: neither reads nor writes them.
phase = "expand"


def upgrade() -> None:
    for table in ("outputs", "webhook_deliveries"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("traceparent", sa.String(64), nullable=True))


def downgrade() -> None:
    for table in ("outputs", "webhook_deliveries"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("traceparent")
