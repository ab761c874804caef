"""The webhook outbox: rows written with the state change they announce.

Writers call `add_in(session, ...)` inside their own transaction (the sql output store),
or `hold` before and `release`/`drop` after a write to another store (DynamoDB). The
delivery worker (`core.webhooks.delivery`) sends what is `pending` and due.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from core import tracing
from core.db import Database
from core.db.models import WebhookDeliveryRow
from core.outputs.port import NewEvent
from core.webhooks.signing import new_message_id

MAX_ATTEMPTS = 5


def delivery_rows(
    events: Sequence[NewEvent], *, tenant_id: str, output_id: str | None, status: str
) -> list[WebhookDeliveryRow]:
    now = datetime.now(UTC)
    trace = tracing.traceparent()  # the delivery continues the change's trace
    return [
        WebhookDeliveryRow(
            id=new_message_id(),
            tenant_id=tenant_id,
            agent_id=e.agent_id,
            output_id=output_id,
            event_type=e.event_type,
            payload=e.payload,
            url=e.url,
            status=status,
            attempts=0,
            max_attempts=MAX_ATTEMPTS,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
            traceparent=trace,
        )
        for e in events
    ]


class Outbox:
    """Durable queue of webhook events in our database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add_in(
        self, s: Session, events: Sequence[NewEvent], *, tenant_id: str, output_id: str | None
    ) -> list[str]:
        rows = delivery_rows(events, tenant_id=tenant_id, output_id=output_id, status="pending")
        s.add_all(rows)
        return [r.id for r in rows]

    def hold(
        self, events: Sequence[NewEvent], *, tenant_id: str, output_id: str | None
    ) -> list[str]:
        """Write events that must not be sent until `release` (the change is not yet made)."""
        if not events:
            return []
        with self.db.session() as s:
            rows = delivery_rows(events, tenant_id=tenant_id, output_id=output_id, status="held")
            s.add_all(rows)
            return [r.id for r in rows]

    def release(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self.db.session() as s:
            s.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id.in_(ids), WebhookDeliveryRow.status == "held")
                .values(status="pending", next_attempt_at=datetime.now(UTC))
            )

    def drop(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self.db.session() as s:
            s.execute(
                delete(WebhookDeliveryRow).where(
                    WebhookDeliveryRow.id.in_(ids), WebhookDeliveryRow.status == "held"
                )
            )
