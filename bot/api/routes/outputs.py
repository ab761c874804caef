"""`/outputs` — what agents proposed, and its content."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from bot.api.auth import BearerRoute, ReaderDep, ReviewerDep
from bot.api.deps import ContainerDep
from bot.api.etags import expected_number
from bot.api.params import Cursor, IdFilter, Limit
from bot.api.problems import problem_of, problem_responses
from bot.api.routes import API_PREFIX
from bot.api.schemas import PageOut
from core.approvals.audit import AuditEntry
from core.approvals.grants import GrantView
from core.approvals.service import MAX_REASON
from core.db.ids import MAX_ID_LENGTH
from core.db.pagination import DEFAULT_LIMIT
from core.errors import CosmoError, StaleRevision, StaleRevisionPrecondition
from core.execution.effect import PlannedEffect, planned_effect
from core.outputs.port import Output, OutputFilter, OutputStatus, SlackStatus
from core.schemas.common import SLUG_MAX_LENGTH
from core.wiring import Container

router = APIRouter(
    prefix=API_PREFIX + "/outputs",
    tags=["outputs"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


@router.get("", response_model=PageOut[Output])
def list_outputs(
    caller: ReaderDep,
    c: ContainerDep,
    agent_id: IdFilter = None,
    session_id: IdFilter = None,
    status: OutputStatus | None = None,
    skill: Annotated[str | None, Query(max_length=SLUG_MAX_LENGTH)] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    slack_status: SlackStatus | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> PageOut[Output]:
    filters = OutputFilter(
        agent_id=agent_id,
        session_id=session_id,
        status=status,
        skill=skill,
        created_after=created_after,
        created_before=created_before,
        slack_status=slack_status,
    )
    return PageOut.of(c.outputs.list(caller.tenant_id, filters, cursor=cursor, limit=limit))


class OutputDetail(Output):
    effect: PlannedEffect | None = Field(
        default=None,
        description="For automatable http/mcp skills: the request approval will make "
        "(secret header values shown as `\u2039from VARIABLE\u203a`).",
    )

    @classmethod
    def of(cls, c: Container, output: Output, response: Response | None = None) -> OutputDetail:
        if response is not None:
            response.headers["ETag"] = f'"{output.revision}"'
        return cls(**output.model_dump(), effect=planned_effect(c.skill_factory, output))


@router.get("/{output_id}", responses=problem_responses(404))
def get_output(
    output_id: str, caller: ReaderDep, c: ContainerDep, response: Response
) -> OutputDetail:
    """The output, its current `revision` (also the `ETag`) and the effect approval has."""
    return OutputDetail.of(c, c.outputs.get(caller.tenant_id, output_id), response)


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
        headers={
            # The fingerprint covers snapshot + arguments + content, not these bytes alone.
            "X-Output-Revision": str(output.revision),
            "X-Output-SHA256": output.content_sha256,
            "Cache-Control": "private",
        },
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
    reason: str | None = Field(default=None, max_length=MAX_REASON)
    revision: int | None = Field(
        default=None,
        ge=1,
        description="The revision you reviewed; if the output was edited since, the "
        "decision is refused (409) instead of deciding a revision you did not see.",
    )


class ApproveBody(DecisionBody):
    grant: bool = Field(
        default=False,
        description="Approve and allow for this thread: later outputs of this (grantable) "
        "skill in the same session with the same arguments are approved under your name "
        "until the grant is revoked (`DELETE /api/v1/grants/{id}`). 409 for a skill that "
        "is not grantable (nothing is decided then).",
    )


class RejectBody(DecisionBody):
    reason: str = Field(min_length=1, max_length=MAX_REASON)


class DecisionOut(BaseModel):
    applied: bool = Field(description="False when this decision had already been made.")
    output: Output
    grant: GrantView | None = Field(default=None, description="The grant made (`grant: true`).")


IfMatch = Annotated[
    str | None,
    Header(
        description='The revision you reviewed, as the `ETag` of `GET /outputs/{id}` (`"2"`); '
        "412 if the output was edited since."
    ),
]
T = TypeVar("T")


def _if_match(if_match: str | None) -> int | None:
    return expected_number(if_match, "output", "2")


def _expected(if_match: str | None, revision: int | None) -> tuple[int | None, bool]:
    """The revision the caller saw, and whether it came from `If-Match` (412, not 409)."""
    header = _if_match(if_match)
    if header is not None and revision is not None and header != revision:
        raise HTTPException(400, "If-Match and revision name different revisions")
    return (header, True) if header is not None else (revision, False)


async def _guarded(call: Awaitable[T], from_header: bool) -> T:
    try:
        return await call
    except StaleRevision as stale:
        if from_header:
            raise StaleRevisionPrecondition(stale) from None
        raise


@router.post("/{output_id}/approve", responses=problem_responses(403, 404, 409, 412))
async def approve_output(
    output_id: str,
    caller: ReviewerDep,
    c: ContainerDep,
    body: ApproveBody | None = None,
    if_match: IfMatch = None,
) -> DecisionOut:
    """Approve a pending output. Automatable outputs run at once (on a worker; the answer
    waits up to 30 s for the run to end, else shows the output still `approved`); others
    become `manual`.

    Repeating the decision that stands answers 200 with `applied: false`; a conflicting
    decision answers 409 naming who decided first. Name the revision you reviewed
    (`revision` or `If-Match`) so an edit made meanwhile is never approved unseen."""
    body = body or ApproveBody()
    revision, from_header = _expected(if_match, body.revision)
    decider = caller.decider(body.user_id)
    if body.grant:
        await c.grants.check_grantable(caller.tenant_id, output_id)
    result = await _guarded(
        c.approvals.decide(
            caller.tenant_id,
            output_id,
            "approve",
            decider,
            body.reason,
            revision,
        ),
        from_header,
    )
    grant = await c.grants.grant(caller.tenant_id, output_id, decider) if body.grant else None
    output = result.output
    if output.status == OutputStatus.APPROVED:
        output = await c.approvals.settled(caller.tenant_id, output_id)
    return DecisionOut(applied=result.applied, output=output, grant=grant)


@router.post("/{output_id}/reject", responses=problem_responses(403, 404, 409, 412))
async def reject_output(
    output_id: str,
    body: RejectBody,
    caller: ReviewerDep,
    c: ContainerDep,
    if_match: IfMatch = None,
) -> DecisionOut:
    """Reject a pending output with a reason; the agent sees the reason in its session."""
    revision, from_header = _expected(if_match, body.revision)
    result = await _guarded(
        c.approvals.decide(
            caller.tenant_id,
            output_id,
            "reject",
            caller.decider(body.user_id),
            body.reason,
            revision,
        ),
        from_header,
    )
    return DecisionOut(applied=result.applied, output=result.output)


MAX_BULK = 100


class DecisionItem(BaseModel):
    model_config = {"extra": "forbid"}

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="The output to decide.")
    decision: Literal["approve", "reject"]
    revision: int | None = Field(
        default=None, ge=1, description="The revision you reviewed (409 if edited since)."
    )
    reason: str | None = Field(
        default=None, max_length=MAX_REASON, description="Required to reject; the agent sees it."
    )


class DecisionsBody(BaseModel):
    model_config = {"extra": "forbid"}

    items: list[DecisionItem] = Field(min_length=1, max_length=MAX_BULK)
    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Slack user deciding every item (asserted), as for a single decision.",
    )


class ItemResult(BaseModel):
    id: str
    status: int = Field(description="What deciding this item alone would have answered.")
    applied: bool = Field(
        description="True when this call made the decision; false when it had already been "
        "made (the same decision: status 200) or someone decided first (see `problem`)."
    )
    output: Output | None = None
    problem: dict[str, Any] | None = Field(
        default=None, description="The problem+json body when status is not 200."
    )


class DecisionsOut(BaseModel):
    results: list[ItemResult] = Field(description="One per item, in the order given.")
    applied: int = Field(description="Items this call decided.")
    decided_elsewhere: int = Field(
        description="Items someone else had already decided (409, or the same decision)."
    )


@router.post("/decisions", responses=problem_responses(403))
async def decide_outputs(body: DecisionsBody, caller: ReviewerDep, c: ContainerDep) -> DecisionsOut:
    """Decide up to 100 outputs at once. Each item is its own first-write-wins decision
    (one conditional write, one transaction), exactly as `POST /outputs/{id}/approve` or
    `/reject` would make it; one item's failure never touches another. The answer is 200
    with a result per item: its own status (404 for an unknown id or another tenant's,
    409 when someone decided first, naming them) and problem. Approved automatable outputs
    run on a worker; results show them `approved` without waiting for the run."""
    actor = caller.decider(body.user_id)
    results: list[ItemResult] = []
    for item in body.items:
        try:
            decided = await c.approvals.decide(
                caller.tenant_id, item.id, item.decision, actor, item.reason, item.revision
            )
        except CosmoError as exc:
            problem = problem_of(exc)
            results.append(
                ItemResult(id=item.id, status=problem["status"], applied=False, problem=problem)
            )
            continue
        results.append(
            ItemResult(id=item.id, status=200, applied=decided.applied, output=decided.output)
        )
    elsewhere = sum(
        1
        for r in results
        if (r.status == 200 and not r.applied and r.output and r.output.decided_by != actor.id)
        or (r.status == 409 and r.problem and "status_now" in r.problem)
    )
    return DecisionsOut(
        results=results,
        applied=sum(1 for r in results if r.applied),
        decided_elsewhere=elsewhere,
    )


class EditBody(BaseModel):
    model_config = {"extra": "forbid"}

    arguments: dict[str, Any] = Field(
        description="The complete new arguments, checked against the skill's input schema."
    )
    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Slack user editing (asserted); the agent's approver rules apply.",
    )


@router.patch("/{output_id}", responses=problem_responses(403, 404, 409, 412))
async def edit_output(
    output_id: str,
    body: EditBody,
    caller: ReviewerDep,
    c: ContainerDep,
    response: Response,
    if_match: IfMatch = None,
) -> OutputDetail:
    """Edit a pending output's arguments before deciding it: a new `revision`, its content
    rendered again, every approval message updated and `output.edited` sent. 422 names
    each invalid field; 409 once decided (or, without If-Match, edited by someone else)."""
    revision = _if_match(if_match)
    output = await _guarded(
        c.approvals.edit(
            caller.tenant_id, output_id, body.arguments, caller.decider(body.user_id), revision
        ),
        revision is not None,
    )
    return OutputDetail.of(c, output, response)


@router.post("/{output_id}/retry", responses=problem_responses(403, 404, 409))
async def retry_output(
    output_id: str, caller: ReviewerDep, c: ContainerDep, body: DecisionBody | None = None
) -> Output:
    """Run an output whose execution failed (or whose outcome is unknown) again. Like
    approve, the answer waits up to 30 s for the run to end."""
    await c.approvals.retry_execution(
        caller.tenant_id, output_id, caller.decider((body or DecisionBody()).user_id)
    )
    return await c.approvals.settled(caller.tenant_id, output_id)


@router.get("/{output_id}/audit", responses=problem_responses(404))
def output_audit(output_id: str, caller: ReaderDep, c: ContainerDep) -> PageOut[AuditEntry]:
    """The output's audit entries, oldest first, all in one page (`next_cursor` is null)."""
    c.outputs.get(caller.tenant_id, output_id)
    return PageOut(items=c.audit.for_output(caller.tenant_id, output_id), next_cursor=None)
