"""Slack's Stop button (`agent_session_stopped`) and the `closed` session status.

While a thread's agent session is `processing`, Slack shows a Stop button; a click ends the
thread's streams on Slack's side and sends `agent_session_stopped`. Its ack path is one
durable, deduplicated insert (a `slack.stop` job), like every other event: the worker's job
layer then cancels the turn the same way the REST cancel does (`TurnJobs.cancel`: a queued
turn ends at once, a running one is asked to stop and its worker sees it within a second),
and the thread says who stopped it. The turn's own worker records it `cancelled`.

A Stop with nothing running, or from someone who has not spoken in the thread, is answered
with an ephemeral note and cancels nothing.

`slack.session_status` sets `closed` when a session ends outside Slack (the REST end): the
API process may have no Slack client, so a worker does it.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ValidationError

from bot.slack import session_status
from bot.slack.conversations import session_key
from bot.slack.runtime import SlackRuntime
from core.agent.turn_job import turn_jobs
from core.concurrency import run_sync
from core.errors import Conflict
from core.jobs import JobContext, JobFailed, JobKind
from core.sessions.models import SessionView, TurnView
from core.sessions.service import FINISHED_TURN
from core.wiring import Container

log = logging.getLogger("cosmo.slack.stop")

STOP_JOB = "slack.stop"
STATUS_JOB = "slack.session_status"
NOTHING_RUNNING = "Nothing is running in this thread right now, so there was nothing to stop."
NOT_YOURS = "Only people taking part in this conversation can stop it."


class StopRequest(BaseModel):
    """The `slack.stop` job's payload."""

    team: str | None
    channel: str
    thread_ts: str
    user: str


class StatusRequest(BaseModel):
    """The `slack.session_status` job's payload."""

    channel: str
    thread_ts: str
    status: str


def register(app: Any, rt: SlackRuntime) -> None:
    async def on_stopped(body: dict[str, Any], event: dict[str, Any]) -> None:
        await record_stop(rt, body, event)

    app.event("agent_session_stopped")(on_stopped)


def job_kinds(rt: SlackRuntime) -> list[JobKind]:
    async def on_stop(job: JobContext) -> dict[str, Any]:
        return await handle_stop(rt, job)

    async def on_status(job: JobContext) -> dict[str, Any]:
        return await handle_status(rt, job)

    return [JobKind(STOP_JOB, on_stop), JobKind(STATUS_JOB, on_status)]


async def record_stop(rt: SlackRuntime, body: dict[str, Any], event: dict[str, Any]) -> None:
    """Inside Slack's 3 seconds: one deduplicated insert, keyed on the delivery's event_id
    (Slack's retries keep it), so a retried Stop cancels once."""
    channel, thread_ts, user = event.get("channel"), event.get("thread_ts"), event.get("user")
    if not (channel and thread_ts and user):
        log.warning("agent_session_stopped without channel, thread_ts or user: ignored")
        return
    team = body.get("team_id") or event.get("team")
    request = StopRequest(team=team, channel=channel, thread_ts=thread_ts, user=user)
    await run_sync(
        rt.container.jobs.submit,
        tenant_id=rt.tenant_for(team),
        kind=STOP_JOB,
        key=f"stop:{body.get('event_id') or f'{channel}:{thread_ts}:{user}'}",
        payload=request.model_dump(),
    )


def _running_turn(c: Container, session: SessionView) -> TurnView | None:
    unfinished = [
        t for t in c.sessions.turns(session.tenant_id, session.id) if t.status not in FINISHED_TURN
    ]
    return unfinished[-1] if unfinished else None


def _takes_part(c: Container, session: SessionView, user: str) -> bool:
    if user == session.user_id:
        return True
    return any(t.user_id == user for t in c.sessions.turns(session.tenant_id, session.id))


async def handle_stop(rt: SlackRuntime, job: JobContext) -> dict[str, Any]:
    try:
        stop = StopRequest.model_validate(job.payload)
    except ValidationError as exc:
        raise JobFailed(f"not a Stop event: {exc.error_count()} invalid fields") from exc
    c, tenant = rt.container, job.tenant_id
    client = await rt.clients.for_tenant(tenant)

    async def tell(text: str) -> None:
        if job.previous.get("told"):
            return
        try:
            await client.chat_postEphemeral(
                channel=stop.channel, thread_ts=stop.thread_ts, user=stop.user, text=text
            )
        except Exception:
            log.warning("could not answer a Stop in %s", stop.channel, exc_info=True)
        await job.progress(told=True)

    session = await run_sync(
        c.sessions.find_by_key, tenant, session_key(stop.team, stop.channel, stop.thread_ts)
    )
    if session is None:
        await tell(NOTHING_RUNNING)
        return {"outcome": "no session"}
    if not await run_sync(_takes_part, c, session, stop.user):
        await tell(NOT_YOURS)
        return {"outcome": "not in the thread"}
    turn = await run_sync(_running_turn, c, session)
    if turn is None:
        await tell(NOTHING_RUNNING)
        await session_status.settle(c, client, session)  # Slack left it `processing`?
        return {"outcome": "nothing running"}
    turn_id = turn.id
    try:
        state = await run_sync(turn_jobs(c).cancel, tenant, turn_id)
    except Conflict:
        await tell(NOTHING_RUNNING)
        return {"outcome": "already ended"}
    if not job.previous.get("said"):
        await client.chat_postMessage(
            channel=stop.channel,
            thread_ts=stop.thread_ts,
            text=f"Stopped by <@{stop.user}>.",
            unfurl_links=False,
            unfurl_media=False,
        )
        await job.progress(said=True)
    if state.finished:  # it had not started: no worker will settle the status
        await session_status.settle(c, client, session)
    return {"outcome": "cancelled", "turn_id": turn_id}


async def handle_status(rt: SlackRuntime, job: JobContext) -> dict[str, Any]:
    try:
        request = StatusRequest.model_validate(job.payload)
    except ValidationError as exc:
        raise JobFailed(f"not a session status: {exc.error_count()} invalid fields") from exc
    client = await rt.clients.for_tenant(job.tenant_id)
    await session_status.set_status(client, request.channel, request.thread_ts, request.status)
    return {"status": request.status}


def closed_job(session: SessionView) -> dict[str, Any] | None:
    """The `slack.session_status` job that shows an ended Slack session as `closed`."""
    if session.source != "slack" or not session.channel_id or not session.thread_ts:
        return None
    request = StatusRequest(
        channel=session.channel_id, thread_ts=session.thread_ts, status=session_status.CLOSED
    )
    return {
        "tenant_id": session.tenant_id,
        "kind": STATUS_JOB,
        "key": f"closed:{session.id}",
        "payload": request.model_dump(),
    }
