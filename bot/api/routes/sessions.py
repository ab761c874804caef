"""`/agents/{id}/sessions`, `/sessions` — chat with an agent over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bot.api.auth import BearerRoute, ReaderDep, ReviewerDep
from bot.api.deps import ContainerDep
from bot.api.problems import problem_responses
from bot.api.schemas import PageOut
from core.errors import Conflict
from core.knowledge.citations import Citation
from core.outputs.port import Output, OutputFilter
from core.sessions.models import MessageView, SessionView, TurnView, Usage

router = APIRouter(
    tags=["sessions"], responses=problem_responses(401, 422), route_class=BearerRoute
)


class SessionStart(BaseModel):
    model_config = {"extra": "forbid"}

    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description='Who speaks (asserted); "api" if omitted. A key bound to a Slack user '
        "speaks as that user and may only name it.",
    )
    user_name: str | None = Field(default=None, max_length=200)
    channel: str | None = Field(default=None, max_length=200)
    prompt_context: str | None = Field(
        default=None,
        max_length=50_000,
        description="CRM or other context shown to the agent (as data) on every turn.",
    )


class ChatRequest(BaseModel):
    model_config = {"extra": "forbid"}

    message: str = Field(min_length=1, max_length=50_000)


class StepOut(BaseModel):
    kind: str
    name: str
    duration_ms: float
    detail: dict[str, Any]


class ChatResponse(BaseModel):
    turn_id: str
    status: Literal["completed", "failed"]
    reply: str
    error: str | None
    outputs: list[Output]
    usage: Usage
    steps: list[StepOut]
    citations: list[Citation] = Field(
        description="Knowledge passages the reply cites with [n] markers, in first-cited order."
    )
    replayed: bool = Field(description="True when an Idempotency-Key repeated an earlier turn.")


class SessionDetail(BaseModel):
    session: SessionView
    messages: list[MessageView]
    turns: list[TurnView]
    outputs: list[Output]


@router.post("/agents/{agent_id}/sessions", status_code=201, responses=problem_responses(404, 409))
def start_session(
    agent_id: str, body: SessionStart, caller: ReviewerDep, c: ContainerDep
) -> SessionView:
    context = {"prompt_context": body.prompt_context} if body.prompt_context else {}
    return c.sessions.start(
        caller.tenant_id,
        agent_id,
        user_id=caller.speaker(body.user_id),
        user_name=body.user_name,
        channel_name=body.channel,
        source="api",
        context=context,
    )


@router.get("/sessions", response_model=PageOut[SessionView])
def list_sessions(
    caller: ReaderDep,
    c: ContainerDep,
    agent_id: Annotated[str | None, Query(max_length=40)] = None,
    user_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["active", "ended"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> PageOut[SessionView]:
    page = c.sessions.list(
        caller.tenant_id,
        agent_id=agent_id,
        user_id=user_id,
        status=status,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return PageOut.of(page)


@router.get("/sessions/{session_id}", responses=problem_responses(404))
def get_session(session_id: str, caller: ReaderDep, c: ContainerDep) -> SessionDetail:
    session = c.sessions.get(caller.tenant_id, session_id)
    outputs = c.outputs.list(
        caller.tenant_id, OutputFilter(session_id=session_id), cursor=None, limit=200
    )
    return SessionDetail(
        session=session,
        messages=c.sessions.messages(caller.tenant_id, session_id),
        turns=c.sessions.turns(caller.tenant_id, session_id),
        outputs=outputs.items,
    )


@router.post("/sessions/{session_id}/chat", responses=problem_responses(404, 409, 429, 503))
async def chat(
    session_id: str,
    body: ChatRequest,
    caller: ReviewerDep,
    c: ContainerDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Repeat-safe: the same key returns the same turn."),
    ] = None,
) -> ChatResponse:
    """Send a message and wait for the agent's reply (tools run; actions become outputs)."""
    session = await run_in_threadpool(c.sessions.get, caller.tenant_id, session_id)
    dedupe = f"api:{idempotency_key}" if idempotency_key else None
    if dedupe:
        turn, created = await run_in_threadpool(
            lambda: c.sessions.begin_turn(
                caller.tenant_id,
                session_id,
                user_id=session.user_id,
                user_message=body.message,
                dedupe_key=dedupe,
            )
        )
        if not created:
            return _replayed(c, caller.tenant_id, turn)
        agent = await c.runner.agent(caller.tenant_id, session.agent_id)
        result = await agent.chat(session, body.message, turn=turn)
    else:
        result = await c.runner.chat(session, body.message)
    return ChatResponse(
        turn_id=result.turn.id,
        status="failed" if result.failed else "completed",
        reply=result.reply,
        error=result.error,
        outputs=result.outputs,
        usage=result.turn.usage,
        steps=[
            StepOut(
                kind=s.kind,
                name=s.name,
                duration_ms=round(s.duration_ms, 2),
                detail=s.detail,
            )
            for s in result.steps
        ],
        citations=result.citations,
        replayed=False,
    )


def _replayed(c: Any, tenant_id: str, turn: TurnView) -> ChatResponse:
    if turn.status in ("pending", "running"):
        raise Conflict("the turn with this Idempotency-Key is still running; retry shortly")
    outputs = c.outputs.list(
        tenant_id, OutputFilter(session_id=turn.session_id), cursor=None, limit=200
    ).items
    return ChatResponse(
        turn_id=turn.id,
        status="failed" if turn.status == "failed" else "completed",
        reply=turn.reply or "",
        error=turn.error,
        outputs=[o for o in outputs if o.turn_id == turn.id],
        usage=turn.usage,
        steps=[
            StepOut(
                kind=str(s.get("kind")),
                name=str(s.get("name")),
                duration_ms=float(s.get("duration_ms", 0)),
                detail={k: v for k, v in s.items() if k not in ("kind", "name", "duration_ms")},
            )
            for s in turn.steps
        ],
        citations=turn.citations,
        replayed=True,
    )


@router.post("/sessions/{session_id}/end", responses=problem_responses(404))
def end_session(session_id: str, caller: ReviewerDep, c: ContainerDep) -> SessionView:
    return c.sessions.end(caller.tenant_id, session_id)
