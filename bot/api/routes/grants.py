"""`/grants` — the "approve and allow for this thread" grants reviewers made: list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Query

from bot.api.auth import BearerRoute, ReaderDep, ReviewerDep
from bot.api.deps import ContainerDep
from bot.api.params import IdFilter
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.schemas import PageOut
from core.approvals.grants import GrantView

router = APIRouter(
    prefix=API_PREFIX + "/grants",
    tags=["grants"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


@router.get("")
def list_grants(
    caller: ReaderDep,
    c: ContainerDep,
    session_id: IdFilter = None,
) -> PageOut[GrantView]:
    """Grants of this tenant, newest first (revoked ones included, with `revoked_at`), all
    in one page (`next_cursor` is null)."""
    return PageOut(items=c.grants.list(caller.tenant_id, session_id), next_cursor=None)


@router.get("/{grant_id}", responses=problem_responses(404))
def get_grant(grant_id: str, caller: ReaderDep, c: ContainerDep) -> GrantView:
    return c.grants.get(caller.tenant_id, grant_id)


@router.delete("/{grant_id}", responses=problem_responses(403, 404))
async def revoke_grant(
    grant_id: str,
    caller: ReviewerDep,
    c: ContainerDep,
    user_id: str | None = Query(default=None, max_length=64),
) -> GrantView:
    """Revoke a grant: later outputs it would have covered wait for a person again.
    Revoking a revoked grant answers it as it is."""
    return await c.grants.revoke(caller.tenant_id, grant_id, caller.decider(user_id))
