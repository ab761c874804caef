"""knowledge ingestion as jobs: document status and the uploaded bytes awaiting ingestion

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Rolling upgrades (docs/operations.md): adds only; the previous release keeps working.
phase = "expand"


def upgrade() -> None:
    with op.batch_alter_table("knowledge_documents") as batch:
        # Documents ingested before jobs were ingested in one go: they are ready.
        batch.add_column(
            sa.Column("status", sa.String(length=16), server_default="ready", nullable=False)
        )
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("job_id", sa.String(length=40), nullable=True))
    op.create_table(
        "knowledge_uploads",
        sa.Column("document_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["knowledge_documents.id"],
            name=op.f("fk_knowledge_uploads_document_id_knowledge_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_knowledge_uploads")),
    )


def downgrade() -> None:
    op.drop_table("knowledge_uploads")
    with op.batch_alter_table("knowledge_documents") as batch:
        batch.drop_column("job_id")
        batch.drop_column("error")
        batch.drop_column("status")
