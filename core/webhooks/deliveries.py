"""Delivery records: listing, inspecting and replaying them, and settling `held` rows.

The REST API and the operators' questions ("was it sent? why not?") live here; sending
lives in `core.webhooks.delivery`. Nothing here needs an HTTP client.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from core.db import Database
from core.db.models import WebhookAttemptRow, WebhookDeliveryRow
from core.db.pagination import Page, check_limit
from core.db.repository import storable
from core.errors import Conflict, FieldError, NotFound, ValidationFailed
from core.outputs.port import NotificationStatus, OutputStore

log = logging.getLogger("cosmo.webhooks")


class DeliveryStatus(StrEnum):
    HELD = "held"  # written before a change in another store; not sendable yet
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# --- Views -------------------------------------------------------------------------------


class WebhookAttempt(BaseModel):
    """One HTTP attempt. `attempt` counts across replays, so history never repeats a number."""

    attempt: int
    status_code: int | None = None
    error: str | None = None
    duration_ms: int
    created_at: datetime


class WebhookDelivery(BaseModel):
    """One event for one webhook; `id` is the `webhook-id` every attempt carries."""

    id: str
    tenant_id: str
    agent_id: str
    output_id: str | None = None
    event_type: str
    url: str
    status: DeliveryStatus
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    history: list[WebhookAttempt]


class WebhookDeliveryDetail(WebhookDelivery):
    """A delivery with the event body it sends."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class HeldSweep:
    """What `resolve_held` did: released (now sendable), dropped, or left for later."""

    released: int = 0
    dropped: int = 0
    left: int = 0


HeldCheck = Callable[[WebhookDeliveryRow], bool | None]

# --- Read and replay -----------------------------------------------------------------------


class WebhookDeliveries:
    """Listing, inspecting and replaying deliveries, and settling `held` rows."""

    def __init__(
        self,
        db: Database,
        outputs: OutputStore | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.outputs = outputs
        self.clock = clock or (lambda: datetime.now(UTC))

    def list(
        self,
        tenant_id: str,
        *,
        status: DeliveryStatus | None = None,
        output_id: str | None = None,
        agent_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[WebhookDelivery]:
        """Newest first. Keyset on (created_at, id): delivery ids are random, not sortable."""
        check_limit(limit)
        after = _decode_cursor(cursor)
        if not all(storable(v) for v in (output_id or "", agent_id or "")):
            return Page([], None)
        row = WebhookDeliveryRow
        stmt = select(row).where(row.tenant_id == tenant_id)
        if status is not None:
            stmt = stmt.where(row.status == status.value)
        if output_id is not None:
            stmt = stmt.where(row.output_id == output_id)
        if agent_id is not None:
            stmt = stmt.where(row.agent_id == agent_id)
        if after is not None:
            at, last_id = after
            stmt = stmt.where(
                or_(row.created_at < at, and_(row.created_at == at, row.id < last_id))
            )
        stmt = stmt.order_by(row.created_at.desc(), row.id.desc()).limit(limit + 1)
        with self.db.session() as s:
            rows = list(s.scalars(stmt))
            more = len(rows) > limit
            rows = rows[:limit]
            history = _histories(s, [r.id for r in rows])
        next_cursor = _encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return Page([_view(r, history.get(r.id, [])) for r in rows], next_cursor)

    def get(self, tenant_id: str, delivery_id: str) -> WebhookDeliveryDetail:
        if not storable(delivery_id):
            raise NotFound("webhook delivery", delivery_id)
        with self.db.session() as s:
            row = s.get(WebhookDeliveryRow, delivery_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound("webhook delivery", delivery_id)
            history = _histories(s, [row.id]).get(row.id, [])
            view = _view(row, history).model_dump()
            return WebhookDeliveryDetail.model_validate({**view, "payload": row.payload})

    def replay(self, tenant_id: str, delivery_id: str) -> WebhookDeliveryDetail:
        """Send a delivered or failed event again: a new cycle of attempts, same webhook-id."""
        if not storable(delivery_id):
            raise NotFound("webhook delivery", delivery_id)
        now = self.clock()
        with self.db.session() as s:
            result = s.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.id == delivery_id,
                    WebhookDeliveryRow.tenant_id == tenant_id,
                    WebhookDeliveryRow.status.in_(
                        [DeliveryStatus.DELIVERED.value, DeliveryStatus.FAILED.value]
                    ),
                )
                .values(
                    status=DeliveryStatus.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    lease_owner=None,
                    lease_until=None,
                    delivered_at=None,
                    last_status_code=None,
                    last_error=None,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if rowcount(result) != 1:
                current = s.get(WebhookDeliveryRow, delivery_id)
                if current is None or current.tenant_id != tenant_id:
                    raise NotFound("webhook delivery", delivery_id)
                raise Conflict(
                    f"webhook delivery {delivery_id} is {current.status}; only delivered or "
                    "failed deliveries can be replayed"
                )
            output_id = s.scalar(
                select(WebhookDeliveryRow.output_id).where(WebhookDeliveryRow.id == delivery_id)
            )
        if output_id is not None:
            set_notification(self.outputs, tenant_id, output_id, NotificationStatus.PENDING)
        return self.get(tenant_id, delivery_id)

    def resolve_held(
        self, check: HeldCheck, *, older_than: timedelta = timedelta(minutes=5), limit: int = 100
    ) -> HeldSweep:
        """Settle `held` rows whose writer never released or dropped them (it crashed).

        `check(row)` says whether the announced change happened: True releases the row,
        False drops it, None (cannot tell yet) leaves it for the next sweep. The check runs
        outside any transaction because it usually asks another store.
        """
        cutoff = self.clock() - older_than
        with self.db.session() as s:
            rows = list(
                s.scalars(
                    select(WebhookDeliveryRow)
                    .where(
                        WebhookDeliveryRow.status == DeliveryStatus.HELD.value,
                        WebhookDeliveryRow.created_at <= cutoff,
                    )
                    .order_by(WebhookDeliveryRow.created_at)
                    .limit(limit)
                )
            )
        released = dropped = left = 0
        for row in rows:
            try:
                verdict = check(row)
            except Exception as exc:
                log.warning("held webhook %s: check failed (%s)", row.id, type(exc).__name__)
                verdict = None
            if verdict is None:
                left += 1
                continue
            held = and_(
                WebhookDeliveryRow.id == row.id,
                WebhookDeliveryRow.status == DeliveryStatus.HELD.value,
            )
            with self.db.session() as s:
                if verdict:
                    now = self.clock()
                    s.execute(
                        update(WebhookDeliveryRow)
                        .where(held)
                        .values(
                            status=DeliveryStatus.PENDING.value, next_attempt_at=now, updated_at=now
                        )
                    )
                    released += 1
                else:
                    s.execute(delete(WebhookDeliveryRow).where(held))
                    dropped += 1
        return HeldSweep(released=released, dropped=dropped, left=left)


def _view(row: WebhookDeliveryRow, history: list[WebhookAttempt]) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        tenant_id=row.tenant_id,
        agent_id=row.agent_id,
        output_id=row.output_id,
        event_type=row.event_type,
        url=row.url,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=history,
    )


def _histories(s: Session, ids: Sequence[str]) -> dict[str, list[WebhookAttempt]]:
    found: dict[str, list[WebhookAttempt]] = {}
    if not ids:
        return found
    attempts = s.scalars(
        select(WebhookAttemptRow)
        .where(WebhookAttemptRow.delivery_id.in_(ids))
        .order_by(WebhookAttemptRow.delivery_id, WebhookAttemptRow.attempt)
    )
    for a in attempts:
        found.setdefault(a.delivery_id, []).append(
            WebhookAttempt(
                attempt=a.attempt,
                status_code=a.status_code,
                error=a.error,
                duration_ms=a.duration_ms,
                created_at=a.created_at,
            )
        )
    return found


def _encode_cursor(created_at: datetime, delivery_id: str) -> str:
    raw = f"{created_at.astimezone(UTC).isoformat()}|{delivery_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The position to continue after; a cursor we did not mint is a 422, not a 500."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        stamp, _, delivery_id = text.partition("|")
        at = datetime.fromisoformat(stamp)
        if at.tzinfo is None or not delivery_id or len(delivery_id) > 40 or "\x00" in text:
            raise ValueError("incomplete cursor")
    except (binascii.Error, UnicodeError, ValueError):
        raise ValidationFailed(
            [FieldError(("query", "cursor"), "not a cursor this API issued")]
        ) from None
    return at, delivery_id


def rowcount(result: Any) -> int:
    return int(result.rowcount)


def set_notification(
    outputs: OutputStore | None, tenant_id: str, output_id: str, status: NotificationStatus
) -> None:
    if outputs is None:
        return
    try:
        outputs.set_notification_status(tenant_id, output_id, status)
    except Exception as exc:  # the delivery itself is recorded; this is a courtesy
        log.warning(
            "output %s: could not set notification status %s (%s)",
            output_id,
            status.value,
            type(exc).__name__,
        )
