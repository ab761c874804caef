"""`/agents` — configuration, versions, rollback, export and import."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response

from bot.api.auth import AdminDep, BearerRoute, ReaderDep
from bot.api.deps import ContainerDep
from bot.api.etags import expected_number
from bot.api.params import ContainsFilter, Cursor, Limit, NameFilter
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.schemas import ApplyReportOut, ChangeOut, PageOut, RollbackRequest
from core.concurrency import run_sync
from core.config_document import dump_document, parse_document
from core.db.pagination import DEFAULT_LIMIT
from core.schemas.agent import AgentPatch, AgentSpec, SkillList
from core.schemas.views import AgentVersionView, AgentView

router = APIRouter(
    prefix=API_PREFIX + "/agents",
    tags=["agents"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)

YAML = "application/yaml"


def _etag(response: Response, agent: AgentView) -> AgentView:
    response.headers["ETag"] = f'"{agent.version}"'
    return agent


def _expected_version(if_match: str | None) -> int | None:
    return expected_number(if_match, "agent", "3")


AgentRef = Annotated[
    str,
    Path(
        description="The agent's id (`agt_…`) or its name (`sales-bot`). An id-shaped value "
        "is always read as an id; names of that shape are refused on save."
    ),
]

IfMatch = Annotated[
    str | None,
    Header(description='ETag from a previous read (`"3"`); 412 if the agent changed since.'),
]


@router.get("", response_model=PageOut[AgentView])
def list_agents(
    caller: ReaderDep,
    c: ContainerDep,
    name: NameFilter = None,
    q: ContainsFilter = None,
    active: bool | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> PageOut[AgentView]:
    page = c.agents.list(
        caller.tenant_id, name=name, q=q, active=active, cursor=cursor, limit=limit
    )
    return PageOut.of(page)


@router.post("", status_code=201, responses=problem_responses(409))
def create_agent(
    body: AgentSpec, caller: AdminDep, c: ContainerDep, response: Response
) -> AgentView:
    return _etag(response, c.agents.create(caller.tenant_id, body, actor=caller.actor))


@router.post(
    "/import",
    responses=problem_responses(409),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A config document (apiVersion, personas, skills, agents).",
            "content": {
                YAML: {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def import_config(
    request: Request,
    caller: AdminDep,
    c: ContainerDep,
    dry_run: bool = False,
) -> ApplyReportOut:
    """Apply a document: create or update by name (never delete), all or nothing."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the document must be UTF-8 text") from None
    doc = parse_document(text, policy=c.skills.policy)

    report = await run_sync(
        c.config.apply, caller.tenant_id, doc, actor=caller.actor, dry_run=dry_run
    )
    return ApplyReportOut(
        changed=report.changed,
        dry_run=dry_run,
        changes=[
            ChangeOut(kind=ch.kind, name=ch.name, action=ch.action, fields=list(ch.fields))
            for ch in report.changes
        ],
    )


@router.get("/{agent}", responses=problem_responses(404))
def get_agent(agent: AgentRef, caller: ReaderDep, c: ContainerDep, response: Response) -> AgentView:
    agent_id = c.agents.resolve(caller.tenant_id, agent)
    return _etag(response, c.agents.get(caller.tenant_id, agent_id))


@router.patch("/{agent}", responses=problem_responses(400, 404, 409, 412))
def update_agent(
    agent: AgentRef,
    body: AgentPatch,
    caller: AdminDep,
    c: ContainerDep,
    response: Response,
    if_match: IfMatch = None,
) -> AgentView:
    updated = c.agents.update(
        caller.tenant_id,
        c.agents.resolve(caller.tenant_id, agent),
        body,
        actor=caller.actor,
        expected_version=_expected_version(if_match),
    )
    return _etag(response, updated)


@router.delete("/{agent}", status_code=204, responses=problem_responses(404, 409))
def delete_agent(
    agent: AgentRef,
    caller: AdminDep,
    c: ContainerDep,
    force: Annotated[
        bool,
        Query(description="Delete even while turns are pending or running (they then fail)."),
    ] = False,
) -> Response:
    """409 while any of the agent's turns is pending or running, unless `force=true`."""
    c.agents.delete(caller.tenant_id, c.agents.resolve(caller.tenant_id, agent), force=force)
    return Response(status_code=204)


@router.put("/{agent}/skills", responses=problem_responses(400, 404, 412))
def set_agent_skills(
    agent: AgentRef,
    body: SkillList,
    caller: AdminDep,
    c: ContainerDep,
    response: Response,
    if_match: IfMatch = None,
) -> AgentView:
    updated = c.agents.set_skills(
        caller.tenant_id,
        c.agents.resolve(caller.tenant_id, agent),
        body.skills,
        actor=caller.actor,
        expected_version=_expected_version(if_match),
    )
    return _etag(response, updated)


@router.get(
    "/{agent}/versions", response_model=PageOut[AgentVersionView], responses=problem_responses(404)
)
def list_agent_versions(
    agent: AgentRef,
    caller: ReaderDep,
    c: ContainerDep,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> PageOut[AgentVersionView]:
    """Newest first, in pages like every other list."""
    agent_id = c.agents.resolve(caller.tenant_id, agent)
    return PageOut.of(c.agents.versions(caller.tenant_id, agent_id, cursor=cursor, limit=limit))


@router.post("/{agent}/rollback", responses=problem_responses(404, 409))
def rollback_agent(
    agent: AgentRef, body: RollbackRequest, caller: AdminDep, c: ContainerDep, response: Response
) -> AgentView:
    agent_id = c.agents.resolve(caller.tenant_id, agent)
    rolled = c.agents.rollback(caller.tenant_id, agent_id, body.version, actor=caller.actor)
    return _etag(response, rolled)


@router.get(
    "/{agent}/export",
    response_class=Response,
    responses={
        200: {
            "description": "The agent with its persona and skills as a config document.",
            "content": {YAML: {"schema": {"type": "string"}}, "application/json": {}},
        },
        **problem_responses(404),
    },
)
def export_agent(
    agent: AgentRef,
    caller: ReaderDep,
    c: ContainerDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    doc = c.config.export_agent(caller.tenant_id, c.agents.resolve(caller.tenant_id, agent))
    wants_json = "json" in (accept or "") and "yaml" not in (accept or "")
    fmt: Any = "json" if wants_json else "yaml"
    media = "application/json" if wants_json else YAML
    return Response(dump_document(doc, fmt), media_type=media)
