"""`/personas`"""

from __future__ import annotations

from fastapi import APIRouter, Response

from bot.api.auth import AdminDep, BearerRoute, ReaderDep
from bot.api.deps import ContainerDep
from bot.api.params import ContainsFilter, Cursor, Limit, NameFilter
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.schemas import PageOut
from core.db.pagination import DEFAULT_LIMIT
from core.schemas.persona import PersonaPatch, PersonaSpec
from core.schemas.views import PersonaView

router = APIRouter(
    prefix=API_PREFIX + "/personas",
    tags=["personas"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


@router.get("", response_model=PageOut[PersonaView])
def list_personas(
    caller: ReaderDep,
    c: ContainerDep,
    name: NameFilter = None,
    q: ContainsFilter = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> PageOut[PersonaView]:
    return PageOut.of(c.personas.list(caller.tenant_id, name=name, q=q, cursor=cursor, limit=limit))


@router.post("", status_code=201, responses=problem_responses(409))
def create_persona(body: PersonaSpec, caller: AdminDep, c: ContainerDep) -> PersonaView:
    return c.personas.create(caller.tenant_id, body)


@router.get("/{persona_id}", responses=problem_responses(404))
def get_persona(persona_id: str, caller: ReaderDep, c: ContainerDep) -> PersonaView:
    return c.personas.get(caller.tenant_id, persona_id)


@router.patch("/{persona_id}", responses=problem_responses(404, 409))
def update_persona(
    persona_id: str, body: PersonaPatch, caller: AdminDep, c: ContainerDep
) -> PersonaView:
    return c.personas.update(caller.tenant_id, persona_id, body)


@router.delete("/{persona_id}", status_code=204, responses=problem_responses(404, 409))
def delete_persona(persona_id: str, caller: AdminDep, c: ContainerDep) -> Response:
    c.personas.delete(caller.tenant_id, persona_id)
    return Response(status_code=204)
