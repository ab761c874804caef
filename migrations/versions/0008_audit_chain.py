"""audit chain and receipts: audit entries chained by hash per tenant, signed receipts

Existing audit entries are chained in the order they were written (created_at, id), so
`cosmo audit verify` covers them from the start; their identity is unknown (null).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Rolling upgrades (docs/operations.md): the audit chain columns become NOT NULL, so
#: releases before it cannot write audit rows.
phase = "contract"

# Frozen copy of the version-1 entry hash (core/approvals/audit.py), so later code changes
# never change what this migration wrote.
GENESIS = "0" * 64
HASHED = (
    "id", "tenant_id", "seq", "prev_hash", "output_id", "actor", "identity", "via", "key_id",
    "key_name", "action", "outcome", "revision", "content_sha256", "detail", "created_at",
)  # fmt: skip


def _hash(fields: dict[str, Any]) -> str:
    doc = {name: fields[name] for name in HASHED}
    created = fields["created_at"]
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
    doc["created_at"] = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc["v"] = 1
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identity", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("key_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("key_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("content_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("entry_hash", sa.String(length=64), nullable=True))

    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_audit_heads")),
    )
    _chain_existing_entries()

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("entry_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index("ux_audit_log_tenant_seq", ["tenant_id", "seq"], unique=True)

    op.create_table(
        "receipts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("output_id", sa.String(length=40), nullable=False),
        sa.Column("audit_id", sa.String(length=40), nullable=False),
        sa.Column("audit_hash", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=24), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("how", sa.String(length=16), nullable=False),
        sa.Column("identity", sa.String(length=16), nullable=False),
        sa.Column("api_key_id", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result_sha256", sa.String(length=64), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipts")),
    )
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_receipts_tenant_output", ["tenant_id", "output_id", "id"], unique=False
        )
        batch_op.create_index("ix_receipts_audit", ["audit_id"], unique=False)


def _chain_existing_entries() -> None:
    bind = op.get_bind()
    audit = sa.table(
        "audit_log",
        *(sa.column(name) for name in HASHED if name != "created_at"),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("entry_hash"),
    )
    heads = sa.table(
        "audit_heads",
        sa.column("tenant_id"),
        sa.column("seq"),
        sa.column("last_hash"),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    rows = bind.execute(
        sa.select(*(audit.c[name] for name in HASHED if name not in ("seq", "prev_hash"))).order_by(
            audit.c.tenant_id, audit.c.created_at, audit.c.id
        )
    ).mappings()
    chains: dict[str, tuple[int, str]] = {}
    updates = []
    for row in rows:
        seq, prev = chains.get(row["tenant_id"], (0, GENESIS))
        fields = dict(row, seq=seq + 1, prev_hash=prev)
        digest = _hash(fields)
        updates.append({"b_id": row["id"], "seq": seq + 1, "prev_hash": prev, "entry_hash": digest})
        chains[row["tenant_id"]] = (seq + 1, digest)
    if updates:
        bind.execute(
            audit.update()
            .where(audit.c.id == sa.bindparam("b_id"))
            .values(
                seq=sa.bindparam("seq"),
                prev_hash=sa.bindparam("prev_hash"),
                entry_hash=sa.bindparam("entry_hash"),
            ),
            updates,
        )
    now = datetime.now(UTC)
    for tenant_id, (seq, last) in chains.items():
        bind.execute(
            heads.insert().values(tenant_id=tenant_id, seq=seq, last_hash=last, updated_at=now)
        )


def downgrade() -> None:
    op.drop_table("receipts")
    op.drop_table("audit_heads")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ux_audit_log_tenant_seq")
        for name in (
            "entry_hash",
            "prev_hash",
            "seq",
            "content_sha256",
            "revision",
            "key_name",
            "key_id",
            "identity",
        ):
            batch_op.drop_column(name)
