"""`/agents/{id}/memory` — what an agent remembers about its users."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from bot.api.auth import AdminDep, BearerRoute
from bot.api.deps import ContainerDep
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.routes.agents import AgentRef
from core.memory.port import MemoryProvider

router = APIRouter(
    prefix=API_PREFIX,
    tags=["memory"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


class MemoryOut(BaseModel):
    id: str
    text: str
    user_id: str | None
    agent_id: str | None
    session_id: str | None
    created_at: datetime


class MemoryList(BaseModel):
    provider: str
    items: list[MemoryOut]


class Cleared(BaseModel):
    deleted: int


def _memory(c: ContainerDep) -> MemoryProvider:
    if c.memory is None:
        raise HTTPException(503, "long-term memory is not configured")
    return c.memory


@router.get("/agents/{agent}/memory", responses=problem_responses(404, 503))
def list_memory(
    agent: AgentRef,
    caller: AdminDep,
    c: ContainerDep,
    user_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MemoryList:
    agent_id = c.agents.resolve(caller.tenant_id, agent)
    c.agents.get(caller.tenant_id, agent_id)  # 404 for an unknown agent id
    memory = _memory(c)
    records = memory.list(caller.tenant_id, user_id=user_id, agent_id=agent_id, limit=limit)
    return MemoryList(
        provider=memory.name,
        items=[
            MemoryOut(
                id=r.id,
                text=r.text,
                user_id=r.user_id,
                agent_id=r.agent_id,
                session_id=r.session_id,
                created_at=r.created_at,
            )
            for r in records
        ],
    )


@router.delete("/agents/{agent}/memory", responses=problem_responses(404, 503))
def clear_memory(
    agent: AgentRef,
    caller: AdminDep,
    c: ContainerDep,
    user_id: Annotated[
        str | None, Query(min_length=1, max_length=64, description="Only this user's")
    ] = None,
) -> Cleared:
    agent_id = c.agents.resolve(caller.tenant_id, agent)
    c.agents.get(caller.tenant_id, agent_id)
    deleted = _memory(c).clear(caller.tenant_id, user_id=user_id, agent_id=agent_id)
    return Cleared(deleted=deleted)
