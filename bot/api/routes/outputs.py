"""`/outputs` — what agents proposed, and its content."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from bot.api.deps import BearerRoute, CallerDep, ContainerDep
from bot.api.problems import problem_responses
from bot.api.schemas import PageOut
from core.outputs.port import Output, OutputFilter, OutputStatus

router = APIRouter(
    prefix="/outputs",
    tags=["outputs"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


@router.get("", response_model=PageOut[Output])
def list_outputs(
    caller: CallerDep,
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
def get_output(output_id: str, caller: CallerDep, c: ContainerDep) -> Output:
    return c.outputs.get(caller.tenant_id, output_id)


@router.get(
    "/{output_id}/content",
    response_class=Response,
    responses={200: {"description": "The output's content."}, **problem_responses(404)},
)
def get_output_content(output_id: str, caller: CallerDep, c: ContainerDep) -> Response:
    output = c.outputs.get(caller.tenant_id, output_id)
    data = c.outputs.read_content(caller.tenant_id, output_id)
    return Response(
        data,
        media_type=output.content_type,
        headers={"X-Content-SHA256": output.content_sha256, "Cache-Control": "private"},
    )
