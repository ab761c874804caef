"""`/agents/{id}/sessions`, `/sessions` — chat with an agent over HTTP."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bot.api.auth import BearerRoute, ReaderDep, ReviewerDep
from bot.api.deps import ContainerDep
from bot.api.params import Cursor, IdFilter, Limit
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.routes.agents import AgentRef
from bot.api.schemas import PageOut
from bot.slack.stop import closed_job
from core.agent.runner import ClaudeNotConfigured
from core.agent.turn_job import TurnJobs, TurnState, turn_jobs
from core.concurrency import run_sync
from core.db import DATABASE_UNAVAILABLE
from core.db.pagination import DEFAULT_LIMIT
from core.errors import Conflict, NotFound
from core.jobs import JobState
from core.knowledge.citations import Citation
from core.outputs.port import Output, OutputFilter
from core.sessions.models import MessageView, SessionView, TurnView, Usage
from core.sessions.service import FINISHED_TURN
from core.wiring import Container

router = APIRouter(
    prefix=API_PREFIX,
    tags=["sessions"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
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
    status: Literal["completed", "failed", "cancelled"]
    reply: str
    error: str | None
    outputs: list[Output]
    usage: Usage
    steps: list[StepOut]
    citations: list[Citation] = Field(
        description="Knowledge passages the reply cites with [n] markers, in first-cited order."
    )
    replayed: bool = Field(description="True when an Idempotency-Key repeated an earlier turn.")


class TurnOut(TurnView):
    job_id: str | None = Field(
        description="The job that runs the turn (`GET /api/v1/jobs/{id}`); null for a turn "
        "recorded before turns were jobs."
    )
    job_state: JobState | None
    cancel_requested: bool = Field(
        description="A cancel was asked for and the worker has not stopped the turn yet "
        "(it does within about a second)."
    )


class SessionDetail(BaseModel):
    session: SessionView
    messages: list[MessageView]
    turns: list[TurnView]
    outputs: list[Output]


@router.post("/agents/{agent}/sessions", status_code=201, responses=problem_responses(404, 409))
def start_session(
    agent: AgentRef, body: SessionStart, caller: ReviewerDep, c: ContainerDep
) -> SessionView:
    agent_id = c.agents.resolve(caller.tenant_id, agent)
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
    agent_id: IdFilter = None,
    user_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["active", "ended"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
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


@router.post(
    "/sessions/{session_id}/chat",
    response_model=ChatResponse,
    responses={
        202: {
            "model": TurnOut,
            "description": "The turn is still running (or queued) after "
            "`COSMO_CHAT_WAIT_SECONDS`: poll `Location` (the turn) until it ends.",
            "headers": {
                "Location": {
                    "description": "The turn: `GET /api/v1/sessions/{id}/turns/{turn_id}`.",
                    "schema": {"type": "string"},
                },
                "Retry-After": {
                    "description": "Seconds to wait before polling.",
                    "schema": {"type": "integer"},
                },
            },
        },
        **problem_responses(404, 409, 429, 503),
    },
)
async def chat(
    session_id: str,
    body: ChatRequest,
    caller: ReviewerDep,
    c: ContainerDep,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Repeat-safe: the same key returns the same turn."),
    ] = None,
) -> Any:
    """Send a message; a worker runs the turn (tools run; actions become outputs) while
    this waits for it, up to `COSMO_CHAT_WAIT_SECONDS`: 200 with the reply, else 202 with
    the turn to poll. A repeated `Idempotency-Key` answers with that turn the same way."""
    tenant = caller.tenant_id
    session = await run_sync(c.sessions.get, tenant, session_id)
    turns = turn_jobs(c)
    dedupe = f"api:{idempotency_key}" if idempotency_key else None
    if dedupe:
        replay = await run_sync(c.sessions.find_turn, tenant, dedupe)
        if replay is not None:
            return await _answer(c, request, turns, replay, replayed=True)
    await _refuse_early(c, tenant, session.agent_id)
    turn, created = await run_sync(
        lambda: turns.begin(
            tenant,
            session_id,
            user_id=session.user_id,
            message=body.message,
            dedupe_key=dedupe,
        )
    )
    return await _answer(c, request, turns, turn, replayed=not created)


async def _refuse_early(c: Container, tenant_id: str, agent_id: str) -> None:
    """What would fail the turn at once is refused before it is recorded, as before turns
    were jobs: no Claude (503), an inactive agent (409)."""
    runner = c.runner
    if runner.model is None:
        raise ClaudeNotConfigured(f"agents cannot answer: {runner.model_missing_reason}")
    config, _skills = await run_sync(runner.load, tenant_id, agent_id)
    if not config.agent.is_active:
        raise Conflict(f"agent {config.agent.name!r} is inactive")


async def _answer(
    c: Container, request: Request, turns: TurnJobs, turn: TurnView, *, replayed: bool
) -> Any:
    tenant = turn.tenant_id
    if replayed and turn.status not in FINISHED_TURN:
        turn = (await run_sync(turns.resume, tenant, turn.id)).turn
    ended = await _wait_for_end(c, turn, c.settings.chat_wait_seconds)
    if ended is None:
        state = await run_sync(turns.state, tenant, turn.id)
        if state.finished:  # it ended between the last look and now
            ended = state.turn
        else:
            location = str(request.url_for("get_turn", session_id=turn.session_id, turn_id=turn.id))
            return JSONResponse(
                _turn_out(state).model_dump(mode="json"),
                status_code=202,
                headers={"Location": location, "Retry-After": "1"},
            )
    return await run_sync(_chat_response, c, ended, replayed)


async def _wait_for_end(c: Container, turn: TurnView, wait: float) -> TurnView | None:
    """Poll the turn until it ends or `wait` passes (None). A database blip while waiting
    is waited out: the worker retries the turn, so the answer may still come in time."""
    if turn.status in FINISHED_TURN:
        return turn
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.02
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)
        try:
            current = await run_sync(c.sessions.get_turn, turn.tenant_id, turn.id)
        except DATABASE_UNAVAILABLE:
            continue
        if current.status in FINISHED_TURN:
            return current


def _chat_response(c: Container, turn: TurnView, replayed: bool) -> ChatResponse:
    outputs = c.outputs.list(
        turn.tenant_id, OutputFilter(session_id=turn.session_id), cursor=None, limit=200
    ).items
    status: Literal["completed", "failed", "cancelled"] = (
        turn.status if turn.status in ("failed", "cancelled") else "completed"
    )
    return ChatResponse(
        turn_id=turn.id,
        status=status,
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
        replayed=replayed,
    )


def _turn_out(state: TurnState) -> TurnOut:
    job = state.job
    return TurnOut.model_validate(
        {
            **state.turn.model_dump(),
            "job_id": job.id if job else None,
            "job_state": job.state if job else None,
            "cancel_requested": state.cancel_requested,
        }
    )


def _in_session(state: TurnState, session_id: str) -> TurnState:
    if state.turn.session_id != session_id:
        raise NotFound("turn", state.turn.id)
    return state


@router.get("/sessions/{session_id}/turns/{turn_id}", responses=problem_responses(404))
async def get_turn(session_id: str, turn_id: str, caller: ReaderDep, c: ContainerDep) -> TurnOut:
    """A turn with its reply once it ended, and the job that runs it."""
    state = await run_sync(turn_jobs(c).state, caller.tenant_id, turn_id)
    return _turn_out(_in_session(state, session_id))


@router.post("/sessions/{session_id}/turns/{turn_id}/cancel", responses=problem_responses(404, 409))
async def cancel_turn(
    session_id: str, turn_id: str, caller: ReviewerDep, c: ContainerDep
) -> TurnOut:
    """Stop a turn (REST or Slack). A queued turn is `cancelled` at once; a running one
    comes back with `cancel_requested` and its model stream stops within about a second,
    the turn then `cancelled` with nothing of it kept in the history. 409 once it ended."""
    turns = turn_jobs(c)
    _in_session(await run_sync(turns.state, caller.tenant_id, turn_id), session_id)
    return _turn_out(await run_sync(turns.cancel, caller.tenant_id, turn_id))


@router.post("/sessions/{session_id}/end", responses=problem_responses(404))
def end_session(session_id: str, caller: ReviewerDep, c: ContainerDep) -> SessionView:
    """End a session. A Slack thread's agent session then shows `closed` (set by a worker:
    this process may have no Slack client)."""
    ended = c.sessions.end(caller.tenant_id, session_id)
    closing = closed_job(ended)
    if closing is not None:
        c.jobs.submit(**closing)
    return ended
