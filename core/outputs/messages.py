"""Where each output's approval message lives in chat, so every copy can be updated."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.db import Database
from core.db.models import OutputMessageRow


@dataclass(frozen=True)
class MessageRef:
    channel: str
    ts: str


class OutputMessages:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, tenant_id: str, output_id: str, channel: str, ts: str) -> None:
        try:
            with self.db.session() as s:
                s.add(
                    OutputMessageRow(
                        output_id=output_id, channel=channel, ts=ts, tenant_id=tenant_id
                    )
                )
        except IntegrityError:
            pass  # already recorded (a retried post)

    def of(self, tenant_id: str, output_id: str) -> list[MessageRef]:
        with self.db.session() as s:
            rows = s.scalars(
                select(OutputMessageRow)
                .where(
                    OutputMessageRow.tenant_id == tenant_id,
                    OutputMessageRow.output_id == output_id,
                )
                .order_by(OutputMessageRow.created_at)
            )
            return [MessageRef(r.channel, r.ts) for r in rows]
