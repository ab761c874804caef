"""Routes authenticated by a signed token instead of the API token: the approval callback
external systems call, and shared content links sent in webhooks."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from bot.api.deps import ContainerDep
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.routes.outputs import content_response
from core.approvals.policy import Actor
from core.approvals.service import MAX_REASON
from core.approvals.tokens import InvalidToken
from core.errors import OutputAlreadyDecided
from core.outputs.port import OutputStatus

router = APIRouter(prefix=API_PREFIX, tags=["callbacks"])


class ApprovalCallback(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    approval_token: str = Field(alias="approvalToken", min_length=1, max_length=500)
    decision: Literal["approve", "reject"]
    user_id: str = Field(alias="userId", min_length=1, max_length=64)
    reason: str | None = Field(default=None, max_length=MAX_REASON)
    revision: int | None = Field(
        default=None,
        ge=1,
        description="The revision the decider reviewed (`output.created`/`output.edited` "
        "carry it); a decision on an older one is refused with 409.",
    )


class CallbackResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    applied: bool
    output_id: str = Field(alias="outputId")
    status: str
    decided_by: str | None = Field(alias="decidedBy")
    decided_at: str | None = Field(alias="decidedAt")


@router.post(
    "/webhooks/approval",
    responses=problem_responses(401, 403, 404, 409, 422),
    response_model_by_alias=True,
)
async def approval_callback(body: ApprovalCallback, c: ContainerDep) -> CallbackResult:
    """Decide an output from an external system with the `approvalToken` of its
    `output.created` event. A decision that loses the race is still a 200 with
    `applied: false` and who decided, so senders do not retry forever."""
    claims = c.tokens.verify(body.approval_token, "approve")
    actor = Actor(body.user_id, "webhook")  # asserted: the token proves the system, not who
    try:
        result = await c.approvals.decide(
            claims.tenant_id, claims.output_id, body.decision, actor, body.reason, body.revision
        )
    except OutputAlreadyDecided as lost:
        return CallbackResult(
            applied=False,
            output_id=claims.output_id,
            status=lost.status,
            decided_by=lost.decided_by,
            decided_at=lost.decided_at.isoformat() if lost.decided_at else None,
        )
    output = result.output
    if output.status == OutputStatus.APPROVED:  # running on a worker: answer with its end
        output = await c.approvals.settled(claims.tenant_id, claims.output_id)
    return CallbackResult(
        applied=result.applied,
        output_id=output.id,
        status=output.status.value,
        decided_by=output.decided_by,
        decided_at=output.decided_at.isoformat() if output.decided_at else None,
    )


@router.get(
    "/shared/outputs/{output_id}/content",
    response_class=Response,
    responses={200: {"description": "The content."}, **problem_responses(401, 404)},
)
def shared_content(
    output_id: str,
    c: ContainerDep,
    token: Annotated[str, Query(min_length=1, max_length=500)],
) -> Response:
    """The content link from webhook payloads; valid until its token expires."""
    claims = c.tokens.verify(token, "content")
    if claims.output_id != output_id:
        raise InvalidToken("the token is for another output")
    return content_response(c, claims.tenant_id, output_id)
