"""Append-only audit log of decisions and refused attempts to decide."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from core.db import Database
from core.db.ids import new_id
from core.db.models import AuditRow

Outcome = Literal["applied", "lost", "refused", "repeated"]


class AuditEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    output_id: str | None
    actor: str
    action: str
    outcome: str
    via: str | None
    detail: str | None
    created_at: datetime


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        tenant_id: str,
        output_id: str | None,
        *,
        actor: str,
        action: str,
        outcome: Outcome,
        via: str | None,
        detail: str | None = None,
    ) -> None:
        with self.db.session() as s:
            s.add(
                AuditRow(
                    id=new_id("aud"),
                    tenant_id=tenant_id,
                    output_id=output_id,
                    actor=actor[:200],
                    action=action,
                    outcome=outcome,
                    via=via,
                    detail=(detail or None) and detail[:2000],
                )
            )

    def for_output(self, tenant_id: str, output_id: str) -> list[AuditEntry]:
        with self.db.session() as s:
            rows = s.scalars(
                select(AuditRow)
                .where(AuditRow.tenant_id == tenant_id, AuditRow.output_id == output_id)
                .order_by(AuditRow.id)
            )
            return [AuditEntry.model_validate(r) for r in rows]
