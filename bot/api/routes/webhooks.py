"""`/webhook-deliveries` — what was announced to agents' webhooks, and sending it again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from bot.api.auth import AdminDep, BearerRoute, ReaderDep
from bot.api.deps import ContainerDep
from bot.api.params import Cursor, IdFilter, Limit
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.schemas import PageOut
from core.db.ids import MAX_ID_LENGTH
from core.db.pagination import DEFAULT_LIMIT
from core.webhooks.deliveries import (
    DeliveryStatus,
    WebhookDeliveries,
    WebhookDelivery,
    WebhookDeliveryDetail,
)

router = APIRouter(
    prefix=API_PREFIX + "/webhook-deliveries",
    tags=["webhooks"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


def get_deliveries(c: ContainerDep) -> WebhookDeliveries:
    return c.webhooks.deliveries


DeliveriesDep = Annotated[WebhookDeliveries, Depends(get_deliveries)]
DeliveryId = Annotated[
    str, Path(max_length=MAX_ID_LENGTH, description="The delivery's `webhook-id`.")
]


@router.get("", response_model=PageOut[WebhookDelivery])
def list_webhook_deliveries(
    caller: ReaderDep,
    deliveries: DeliveriesDep,
    status: DeliveryStatus | None = None,
    output_id: IdFilter = None,
    agent_id: IdFilter = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> PageOut[WebhookDelivery]:
    """Newest first, each with its attempts."""
    page = deliveries.list(
        caller.tenant_id,
        status=status,
        output_id=output_id,
        agent_id=agent_id,
        cursor=cursor,
        limit=limit,
    )
    return PageOut.of(page)


@router.get("/{delivery_id}", responses=problem_responses(404))
def get_webhook_delivery(
    delivery_id: DeliveryId, caller: AdminDep, deliveries: DeliveriesDep
) -> WebhookDeliveryDetail:
    return deliveries.get(caller.tenant_id, delivery_id)


@router.post("/{delivery_id}/replay", status_code=202, responses=problem_responses(404, 409))
def replay_webhook_delivery(
    delivery_id: DeliveryId, caller: AdminDep, deliveries: DeliveriesDep
) -> WebhookDeliveryDetail:
    """Queue a delivered or failed event again: new attempts, the same `webhook-id`."""
    return deliveries.replay(caller.tenant_id, delivery_id)
