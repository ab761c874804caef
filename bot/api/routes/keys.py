"""`/keys` — a tenant's API keys, managed by its admins (or the root key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import Field

from bot.api.auth import AdminDep, BearerRoute
from bot.api.deps import ContainerDep
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.schemas import PageOut
from core.db.ids import MAX_ID_LENGTH
from core.keys.service import ApiKeyView, KeySpec

router = APIRouter(
    prefix=API_PREFIX + "/keys",
    tags=["keys"],
    responses=problem_responses(401, 403, 422),
    route_class=BearerRoute,
)

KeyId = Annotated[str, Path(max_length=MAX_ID_LENGTH, description="The key's id (`key_…`).")]


class CreatedKey(ApiKeyView):
    key: str = Field(
        description="The key itself (`cosmo_…`). Shown in this response only: Cosmo keeps a "
        "hash, so a lost key cannot be shown again; create another and revoke this one."
    )


@router.get("")
def list_keys(caller: AdminDep, c: ContainerDep) -> PageOut[ApiKeyView]:
    """The tenant's keys, oldest first, revoked ones included (never the keys themselves),
    all in one page (`next_cursor` is null)."""
    return PageOut(items=c.keys.list(caller.tenant_id), next_cursor=None)


@router.post("", status_code=201)
def create_key(body: KeySpec, caller: AdminDep, c: ContainerDep) -> CreatedKey:
    """Create a key for the caller's tenant, of the caller's role or lower."""
    view, key = c.keys.create(
        caller.tenant_id,
        body,
        created_by=caller.actor,
        creator_role=None if caller.root else caller.role,
    )
    return CreatedKey(**view.model_dump(), key=key)


@router.delete("/{key_id}", responses=problem_responses(404))
def revoke_key(key_id: KeyId, caller: AdminDep, c: ContainerDep) -> ApiKeyView:
    """Revoke a key: its next request is refused (401), in every process at once."""
    return c.keys.revoke(key_id, caller.tenant_id)
