"""`/skills` — keyed by name, because agents and config files refer to skills by name."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from bot.api.auth import AdminDep, BearerRoute, ReaderDep
from bot.api.deps import ContainerDep
from bot.api.params import ContainsFilter, Cursor, Limit, NameFilter
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.schemas import PageOut
from core.db.pagination import DEFAULT_LIMIT
from core.outputs import stats
from core.schemas.skill import SkillKind, SkillPatch, SkillSpec
from core.schemas.views import SkillView

router = APIRouter(
    prefix=API_PREFIX + "/skills",
    tags=["skills"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


@router.get("", response_model=PageOut[SkillView])
def list_skills(
    caller: ReaderDep,
    c: ContainerDep,
    name: NameFilter = None,
    q: ContainsFilter = None,
    kind: SkillKind | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> PageOut[SkillView]:
    page = c.skills.list(caller.tenant_id, name=name, q=q, kind=kind, cursor=cursor, limit=limit)
    return PageOut.of(page)


@router.post("", status_code=201, responses=problem_responses(409))
def create_skill(body: SkillSpec, caller: AdminDep, c: ContainerDep) -> SkillView:
    return c.skills.create(caller.tenant_id, body)


@router.get("/{name}", responses=problem_responses(404))
def get_skill(name: str, caller: ReaderDep, c: ContainerDep) -> SkillView:
    return c.skills.get(caller.tenant_id, name)


class SkillStatsOut(stats.SkillStats):
    pass  # core's figures, under the name the OpenAPI document has always given them


@router.get("/{name}/stats", responses=problem_responses(404))
def skill_stats_route(
    name: str,
    caller: ReaderDep,
    c: ContainerDep,
    days: Annotated[int, Query(ge=1, le=365, description="The window, in days.")] = 30,
) -> SkillStatsOut:
    """How reviewers treated the skill's outputs over the last `days` (30 by default):
    approved unchanged, approved with edits, rejected, expired, and the median time to a
    decision. The evidence to have before marking a skill automatable."""
    c.skills.get(caller.tenant_id, name)  # 404 for a skill that does not exist
    figures = stats.skill_stats(
        c.outputs, caller.tenant_id, name, c.quotas.clock(), timedelta(days=days)
    )
    return SkillStatsOut(**figures.model_dump())


@router.patch("/{name}", responses=problem_responses(404))
def update_skill(name: str, body: SkillPatch, caller: AdminDep, c: ContainerDep) -> SkillView:
    return c.skills.update(caller.tenant_id, name, body)
