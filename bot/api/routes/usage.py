"""`/usage` — tokens and cost per agent, session and UTC day."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from bot.api.auth import BearerRoute, ReaderDep
from bot.api.deps import ContainerDep
from bot.api.params import IdFilter
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.routes.agents import AgentRef
from core.limits.quotas import OUTPUTS, TOKENS, utc_day
from core.sessions.models import UsageTotals

router = APIRouter(
    prefix=API_PREFIX,
    tags=["usage"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class AgentUsage(BaseModel):
    agent_id: str
    day: str
    totals: UsageTotals
    outputs_today: int
    daily_output_limit: int | None
    tokens_today: int
    daily_token_budget: int | None


@router.get("/usage")
def usage(
    caller: ReaderDep,
    c: ContainerDep,
    agent_id: IdFilter = None,
    session_id: IdFilter = None,
    day: Annotated[str | None, Query(description="UTC day, YYYY-MM-DD")] = None,
) -> UsageTotals:
    if day is not None and not _DAY.match(day):
        raise HTTPException(422, "day must be YYYY-MM-DD")
    return c.sessions.usage(caller.tenant_id, agent_id=agent_id, session_id=session_id, day=day)


@router.get("/agents/{agent}/usage", responses=problem_responses(404))
def agent_usage(
    agent: AgentRef,
    caller: ReaderDep,
    c: ContainerDep,
    day: Annotated[str | None, Query(description="UTC day, YYYY-MM-DD; default today")] = None,
) -> AgentUsage:
    if day is not None and not _DAY.match(day):
        raise HTTPException(422, "day must be YYYY-MM-DD")
    agent_id = c.agents.resolve(caller.tenant_id, agent)
    view = c.agents.get(caller.tenant_id, agent_id)
    the_day = day or utc_day(c.quotas.clock())
    return AgentUsage(
        agent_id=agent_id,
        day=the_day,
        totals=c.sessions.usage(caller.tenant_id, agent_id=agent_id, day=the_day),
        outputs_today=c.quotas.used(caller.tenant_id, agent_id, OUTPUTS, the_day),
        daily_output_limit=view.limits.daily_output_limit,
        tokens_today=c.quotas.used(caller.tenant_id, agent_id, TOKENS, the_day),
        daily_token_budget=view.limits.daily_token_budget,
    )
