"""`/skills` — keyed by name, because agents and config files refer to skills by name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from bot.api.auth import AdminDep, BearerRoute, ReaderDep
from bot.api.deps import ContainerDep
from bot.api.problems import problem_responses
from bot.api.schemas import PageOut
from core.schemas.skill import SkillKind, SkillPatch, SkillSpec
from core.schemas.views import SkillView

router = APIRouter(
    prefix="/skills",
    tags=["skills"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


@router.get("", response_model=PageOut[SkillView])
def list_skills(
    caller: ReaderDep,
    c: ContainerDep,
    name: Annotated[str | None, Query(max_length=63, description="Name contains")] = None,
    kind: SkillKind | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> PageOut[SkillView]:
    page = c.skills.list(caller.tenant_id, name=name, kind=kind, cursor=cursor, limit=limit)
    return PageOut.of(page)


@router.post("", status_code=201, responses=problem_responses(409))
def create_skill(body: SkillSpec, caller: AdminDep, c: ContainerDep) -> SkillView:
    return c.skills.create(caller.tenant_id, body)


@router.get("/{name}", responses=problem_responses(404))
def get_skill(name: str, caller: ReaderDep, c: ContainerDep) -> SkillView:
    return c.skills.get(caller.tenant_id, name)


@router.patch("/{name}", responses=problem_responses(404))
def update_skill(name: str, body: SkillPatch, caller: AdminDep, c: ContainerDep) -> SkillView:
    return c.skills.update(caller.tenant_id, name, body)
