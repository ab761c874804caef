"""`/outputs` — what agents proposed, and its content."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from bot.api.auth import BearerRoute, ReaderDep, ReviewerDep
from bot.api.deps import ContainerDep
from bot.api.problems import problem_responses
from bot.api.schemas import PageOut
from core.approvals.audit import AuditEntry
from core.outputs.port import Output, OutputFilter, OutputStatus

router = APIRouter(
    prefix="/outputs",
    tags=["outputs"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


@router.get("", response_model=PageOut[Output])
def list_outputs(
    caller: ReaderDep,
    c: ContainerDep,
    agent_id: Annotated[str | None, Query(max_length=40)] = None,
    session_id: Annotated[str | None, Query(max_length=40)] = None,
    status: OutputStatus | None = None,
    skill: Annotated[str | None, Query(max_length=63)] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> PageOut[Output]:
    filters = OutputFilter(
        agent_id=agent_id,
        session_id=session_id,
        status=status,
        skill=skill,
        created_after=created_after,
        created_before=created_before,
    )
    return PageOut.of(c.outputs.list(caller.tenant_id, filters, cursor=cursor, limit=limit))


@router.get("/{output_id}", responses=problem_responses(404))
def get_output(output_id: str, caller: ReaderDep, c: ContainerDep) -> Output:
    return c.outputs.get(caller.tenant_id, output_id)


CONTENT_TTL_SECONDS = 900


@router.get(
    "/{output_id}/content",
    response_class=Response,
    responses={
        200: {"description": "The content (embedded store)."},
        307: {"description": "Redirect to a short-lived presigned URL (AWS store)."},
        **problem_responses(404),
    },
)
def get_output_content(output_id: str, caller: ReaderDep, c: ContainerDep) -> Response:
    return content_response(c, caller.tenant_id, output_id)


def content_response(c: ContainerDep, tenant_id: str, output_id: str) -> Response:
    output = c.outputs.get(tenant_id, output_id)
    url = c.outputs.content_url(tenant_id, output_id, CONTENT_TTL_SECONDS)
    if url is not None:
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    data = c.outputs.read_content(tenant_id, output_id)
    return Response(
        data,
        media_type=output.content_type,
        headers={"X-Content-SHA256": output.content_sha256, "Cache-Control": "private"},
    )


class DecisionBody(BaseModel):
    model_config = {"extra": "forbid"}

    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Slack user deciding (asserted); the agent's approver rules apply to "
        "them. A key bound to a Slack user decides as that user (verified) and may only name "
        "it. Omitted: an admin key or the root key decides as itself; a reviewer key must "
        "name the user unless it is bound.",
    )
    reason: str | None = Field(default=None, max_length=2_000)


class RejectBody(DecisionBody):
    reason: str = Field(min_length=1, max_length=2_000)


class DecisionOut(BaseModel):
    applied: bool = Field(description="False when this decision had already been made.")
    output: Output


@router.post("/{output_id}/approve", responses=problem_responses(403, 404, 409))
async def approve_output(
    output_id: str, caller: ReviewerDep, c: ContainerDep, body: DecisionBody | None = None
) -> DecisionOut:
    """Approve a pending output. Automatable outputs run at once; others become `manual`.

    Repeating the decision that stands answers 200 with `applied: false`; a conflicting
    decision answers 409 naming who decided first."""
    body = body or DecisionBody()
    result = await c.approvals.decide(
        caller.tenant_id, output_id, "approve", caller.decider(body.user_id), body.reason
    )
    return DecisionOut(applied=result.applied, output=result.output)


@router.post("/{output_id}/reject", responses=problem_responses(403, 404, 409))
async def reject_output(
    output_id: str, body: RejectBody, caller: ReviewerDep, c: ContainerDep
) -> DecisionOut:
    """Reject a pending output with a reason; the agent sees the reason in its session."""
    result = await c.approvals.decide(
        caller.tenant_id, output_id, "reject", caller.decider(body.user_id), body.reason
    )
    return DecisionOut(applied=result.applied, output=result.output)


@router.post("/{output_id}/retry", responses=problem_responses(403, 404, 409))
async def retry_output(
    output_id: str, caller: ReviewerDep, c: ContainerDep, body: DecisionBody | None = None
) -> Output:
    """Run an output whose execution failed again."""
    return await c.approvals.retry_execution(
        caller.tenant_id, output_id, caller.decider((body or DecisionBody()).user_id)
    )


@router.get("/{output_id}/audit", responses=problem_responses(404))
def output_audit(output_id: str, caller: ReaderDep, c: ContainerDep) -> list[AuditEntry]:
    c.outputs.get(caller.tenant_id, output_id)
    return c.audit.for_output(caller.tenant_id, output_id)
