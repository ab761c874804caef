"""Conversations: a mention starts a thread session; replies in it, and DMs, continue it.

Slack gets its ack after ONE durable, deduplicated insert: a `slack.event` job keyed on the
message (team, channel, ts), so a retry (same event_id), a redelivery under a new event_id,
and the `message` + `app_mention` pair Slack sends for one mention land on the same job.
Concurrent acks share commits (`core.jobs.intake`). `/slack/events` takes message events
this way without Bolt (`take_event`); Socket Mode reaches the same function through Bolt's
listeners. Everything else runs in a worker:

* `slack.event` finds or starts the thread's session and records the turn; the turn's
  `slack.turn` job is enqueued in the turn's own transaction.
* `slack.turn` answers it, as a native stream (`streaming.StreamingReply`) or an edited
  placeholder (`reply.ThreadReply`). The message's ts goes into the job's progress as soon
  as it is posted; if the worker dies, another takes the job over once its lease lapses
  (~16 s) and answers in that same message (a stream is stopped first) instead of posting a
  second one. Every write names the
  job's claim, so a turn is answered once however long it runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from slack_bolt.async_app import AsyncApp

from bot.slack import approvals, file_drop, session_status
from bot.slack.blocks import thinking
from bot.slack.errors import slack_message
from bot.slack.reply import ThreadReply
from bot.slack.runtime import SlackRuntime
from core import tracing
from core.concurrency import run_sync
from core.errors import CosmoError
from core.jobs import JobContext, JobFailed, JobKind, LostClaim
from core.sessions.models import SessionNames, SessionView, TurnRecord, TurnView
from core.sessions.service import FINISHED_TURN

log = logging.getLogger("cosmo.slack.conversations")

EVENT_JOB = "slack.event"
TURN_JOB = "slack.turn"
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)>")
_IGNORED_SUBTYPES = {
    "bot_message",
    "message_changed",
    "message_deleted",
    "channel_join",
    "channel_leave",
    "thread_broadcast",
    "me_message",
}


class SlackMessage(BaseModel):
    """What the ack path keeps of a message event: the `slack.event` job's payload.

    The text is as Slack sent it; the worker decides whether the app was mentioned (it
    knows the bot's user id) and strips that mention. `mentioned` is set only by jobs
    queued before that worked this way (their text is already stripped)."""

    team: str | None
    channel: str
    ts: str
    thread_ts: str
    user: str
    text: str
    event_type: str = "message"
    mentioned: bool | None = None
    is_dm: bool
    files: list[str] = []
    """Ids of the files shared with the message (`file_share`): see `bot.slack.file_drop`."""


class TurnJob(BaseModel):
    """The `slack.turn` job's payload."""

    turn_id: str


def session_key(team_id: str | None, channel: str, thread_ts: str) -> str:
    return f"slack:{team_id or '-'}:{channel}:{thread_ts}"


def message_key(team_id: str | None, channel: str, ts: str) -> str:
    """Names the message, not the delivery: Slack may send one message again under a new
    event_id (and its retries keep the old one), so team, channel and ts are the key."""
    return f"slack:{team_id or '-'}:{channel}:{ts}"


MESSAGE_EVENTS = frozenset({"app_mention", "message"})


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    """Bolt's listeners for the message events: Socket Mode delivers through them (the
    HTTP route calls `take_event` before Bolt)."""

    async def on_message(body: dict[str, Any]) -> None:
        await take_event(rt, body)

    app.event("app_mention")(on_message)
    app.event("message")(on_message)


def is_message_event(payload: Mapping[str, Any]) -> bool:
    """An Events API envelope carrying a message or a mention: `take_event`'s to ack."""
    event = payload.get("event")
    return (
        payload.get("type") == "event_callback"
        and isinstance(event, Mapping)
        and event.get("type") in MESSAGE_EVENTS
    )


def job_kinds(rt: SlackRuntime) -> list[JobKind]:
    async def on_event(job: JobContext) -> dict[str, Any]:
        return await handle_event(rt, job)

    async def on_turn(job: JobContext) -> dict[str, Any]:
        return await answer_turn(rt, job)

    return [JobKind(EVENT_JOB, on_event), JobKind(TURN_JOB, on_turn)]


# -- the ack path ---------------------------------------------------------------------------


async def take_event(rt: SlackRuntime, body: Mapping[str, Any]) -> None:
    """Runs inside Slack's 3-second window: filter, then one deduplicated insert (its
    commit shared with concurrent acks). No session lookups, no Web API calls: the worker
    does those. Raises if the insert failed, so Slack is not told it succeeded."""
    event = body.get("event")
    if not isinstance(event, Mapping):
        return
    if event.get("bot_id") or event.get("subtype") in _IGNORED_SUBTYPES:
        return
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if not (isinstance(user, str) and isinstance(channel, str) and isinstance(ts, str)):
        return  # not a person's message (or not one we could ever answer)
    team = body.get("team_id") or event.get("team")
    team_id = team if isinstance(team, str) else None
    text = event.get("text")
    thread_ts = event.get("thread_ts")
    message = SlackMessage(
        team=team_id,
        channel=channel,
        ts=ts,
        thread_ts=thread_ts if isinstance(thread_ts, str) else ts,
        user=user,
        text=text if isinstance(text, str) else "",
        event_type=str(event.get("type")),
        is_dm=event.get("channel_type") == "im" or channel.startswith("D"),
        files=file_drop.file_ids(event),
    )
    with tracing.span(
        "slack.event",
        attributes={
            "slack.event.type": message.event_type,
            "slack.event.id": _text(body.get("event_id")),
            "slack.team.id": team_id,
            "slack.channel.id": channel,
        },
    ):
        await rt.intake.submit(
            tenant_id=rt.tenant_for(team_id),
            kind=EVENT_JOB,
            key=message_key(team_id, channel, ts),
            payload=message.model_dump(),
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def _addressed(rt: SlackRuntime, tenant: str, m: SlackMessage) -> tuple[bool, str] | None:
    """(mentioned, text without our mention), or None for the app's own message."""
    if m.mentioned is not None:  # queued by an earlier version: already worked out
        return m.mentioned, m.text
    bot = await rt.directory.bot_user_id(tenant)
    if m.user == bot:
        return None
    mentioned = m.event_type == "app_mention" or f"<@{bot}>" in m.text
    text = _MENTION.sub(lambda found: "" if found.group(1) == bot else found.group(0), m.text)
    return mentioned, text.strip()


# -- slack.event: from a message to a recorded turn -----------------------------------------


async def handle_event(rt: SlackRuntime, job: JobContext) -> dict[str, Any]:
    """Find or start the thread's session and record the turn, whose `slack.turn` job is
    enqueued in the same transaction. Run again after a crash, it finds what the first run
    recorded (the session by key, the turn by its dedupe key) and adds nothing."""
    try:
        m = SlackMessage.model_validate(job.payload)
    except ValidationError as exc:
        raise JobFailed(f"not a Slack message event: {exc.error_count()} invalid fields") from exc
    tenant = job.tenant_id
    c = rt.container
    addressed = await _addressed(rt, tenant, m)
    if addressed is None:
        return {"outcome": "own message"}
    mentioned, text = addressed
    key = session_key(m.team, m.channel, m.thread_ts)
    session = await run_sync(c.sessions.find_by_key, tenant, key)
    if m.files:
        offered = await file_drop.offer(
            rt,
            job,
            m,
            mentioned=mentioned,
            in_session=session is not None,
            has_text=bool(text),
        )
        if offered is not None:
            return offered
    if session is None:
        if not (mentioned or m.is_dm):
            return {"outcome": "not ours"}  # a thread we are not part of
        resolution = await run_sync(c.bindings.resolve, tenant, None if m.is_dm else m.channel)
        if resolution.agent_id is None:
            await _say_once(rt, job, m, _no_agent_text(resolution.why))
            return {"outcome": "no agent"}
        agent_id = resolution.agent_id
        try:
            session = await run_sync(
                lambda: c.sessions.start(
                    tenant,
                    agent_id,
                    user_id=m.user,
                    channel_id=m.channel,
                    thread_ts=m.thread_ts,
                    source="slack",
                    external_key=key,
                    context={"team_id": m.team} if m.team else {},
                )
            )
        except CosmoError as exc:
            await _say_once(rt, job, m, slack_message(exc))
            return {"outcome": "refused"}
        except Exception:  # another message in the thread started it first
            session = await run_sync(c.sessions.find_by_key, tenant, key)
            if session is None:
                raise
    if session.status == "ended":
        if mentioned or m.is_dm:
            await _say_once(
                rt,
                job,
                m,
                "This conversation has ended. Mention me in a new message to start another.",
            )
        return {"outcome": "ended"}

    def enqueue_answer(s: Any, turn: TurnView) -> None:
        c.jobs.enqueue(
            s,
            tenant_id=tenant,
            kind=TURN_JOB,
            key=f"turn:{turn.id}",
            payload=TurnJob(turn_id=turn.id).model_dump(),
            concurrency_key=f"agent:{turn.agent_id}",
        )

    session_id = session.id
    turn, created = await run_sync(
        lambda: c.sessions.begin_turn(
            tenant,
            session_id,
            user_id=m.user,
            user_message=text or "Hello!",
            dedupe_key=message_key(m.team, m.channel, m.ts),
            payload={"channel": m.channel, "thread_ts": m.thread_ts, "ts": m.ts, "team": m.team},
            on_recorded=enqueue_answer,
        )
    )
    return {"turn_id": turn.id, "created": created}


async def _say_once(rt: SlackRuntime, job: JobContext, m: SlackMessage, text: str) -> None:
    """A short note in the thread; a rerun after it was posted does not post it again."""
    if job.previous.get("said"):
        return
    client = await rt.clients.for_tenant(job.tenant_id)
    await client.chat_postMessage(
        channel=m.channel, thread_ts=m.thread_ts, text=text, unfurl_links=False, unfurl_media=False
    )
    await job.progress(said=True)


def _no_agent_text(why: str) -> str:
    if why == "none":
        return (
            "No agent is set up in this workspace yet. An admin can create one with "
            "`/agent create`."
        )
    return (
        "Several agents could answer here and none is chosen for this channel. "
        "Pick one with `/agent use NAME` (see `/agent list`)."
    )


# -- slack.turn: answering a recorded turn --------------------------------------------------


async def _orphaned_placeholder(reply: ThreadReply, after_ts: str) -> str | None:
    """A bot placeholder still reading "Thinking…" (or a stream started with no text yet)
    in the thread after the turn's message."""
    try:
        found = await reply.client.conversations_replies(
            channel=reply.channel, ts=reply.thread_ts, oldest=after_ts or None, limit=200
        )
    except Exception:
        log.warning("could not look for an earlier attempt's placeholder", exc_info=True)
        return None
    for message in found.get("messages") or []:
        if (
            message.get("bot_id")
            and (
                message.get("text") == thinking()
                or not (message.get("text") or message.get("blocks"))
            )
            and (not after_ts or _ts(message.get("ts")) > _ts(after_ts))
        ):
            return str(message["ts"])
    return None


def _ts(value: Any) -> tuple[int, int]:
    seconds, _, micros = str(value or "0").partition(".")
    return int(seconds or 0), int(micros or 0)


async def answer_turn(rt: SlackRuntime, job: JobContext) -> dict[str, Any]:
    try:
        turn_id = TurnJob.model_validate(job.payload).turn_id
    except ValidationError as exc:
        raise JobFailed("not a turn job: turn_id missing") from exc
    tenant = job.tenant_id
    c = rt.container
    turn = await run_sync(c.sessions.get_turn, tenant, turn_id)
    session = await run_sync(c.sessions.get, tenant, turn.session_id)
    channel = str(turn.payload.get("channel") or session.channel_id)
    thread_ts = str(turn.payload.get("thread_ts") or session.thread_ts)
    client = await rt.clients.for_tenant(tenant)
    team = turn.payload.get("team") or session.context.get("team_id")
    reply = rt.reply_for(
        client, channel, thread_ts, team_id=str(team) if team else None, user_id=turn.user_id
    )
    placeholder = job.previous.get("placeholder_ts")
    if turn.status in FINISHED_TURN:
        # The previous attempt finished the turn and died before its job ended: show what
        # it recorded (it may have died before its last edit), run nothing again. If it
        # had shown it, this is the same text once more: one edit in a rare crash, where
        # a mark saying so cost a commit on every turn.
        if placeholder and turn.reply is not None:
            await reply.adopt(placeholder)
            await reply.finish(_shown_text(turn), citations=turn.citations)
        return {"status": turn.status}

    async def remember(ts: str) -> None:
        # Not waiting for PostgreSQL's WAL flush: if a database crash loses the mark, the
        # next attempt finds the message in the thread, as when a worker dies before
        # writing it (`_orphaned_placeholder`).
        await job.progress(placeholder_ts=ts, durable=False)

    reply.on_first_message = remember
    try:
        return await _run_turn(rt, job, turn, session, reply, placeholder)
    except asyncio.CancelledError:
        await _stopped(rt, job, turn_id, reply)
        await session_status.settle(c, reply.client, session)
        raise


async def _run_turn(
    rt: SlackRuntime,
    job: JobContext,
    turn: TurnView,
    session: SessionView,
    reply: ThreadReply,
    placeholder: str | None,
) -> dict[str, Any]:
    tenant, c = job.tenant_id, rt.container
    if placeholder is None and job.claim.resumed:
        # The attempt before may have died between posting its placeholder and recording
        # it: adopt that message rather than leave a "Thinking…" behind for good.
        placeholder = await _orphaned_placeholder(reply, str(turn.payload.get("ts") or ""))
    try:
        if placeholder:
            await reply.adopt(placeholder)
        else:
            await reply.start()
    except LostClaim:
        raise
    except Exception:
        log.exception("turn %s: could not post the placeholder", turn.id)
    await session_status.set_status(
        reply.client, reply.channel, reply.thread_ts, session_status.PROCESSING
    )
    names = None
    if session.user_name is None or session.channel_name is None:
        names = SessionNames(
            session.id,
            user_name=await rt.directory.user_name(tenant, session.user_id),
            channel_name=await rt.directory.channel_name(tenant, reply.channel),
        )
        session = session.model_copy(
            update={"user_name": names.user_name, "channel_name": names.channel_name}
        )
    await run_sync(lambda: c.sessions.start_turn(tenant, turn.id, names=names))
    try:
        agent = await c.runner.agent(tenant, session.agent_id)
        speaker = await rt.directory.user_name(tenant, turn.user_id)
        result = await agent.chat(
            session,
            turn.user_message,
            on_text=reply.write,
            on_tool=reply.tool,
            turn=turn,
            user_name=speaker,
            fence=job.fence,
        )
    except LostClaim:
        raise  # another attempt owns the turn now: say nothing more
    except CosmoError as exc:
        await _fail(rt, job, turn.id, reply, exc.detail, exc.detail, session)
        return {"status": "failed"}
    except Exception:
        log.exception("turn %s failed unexpectedly", turn.id)
        await _fail(
            rt,
            job,
            turn.id,
            reply,
            "internal error",
            "Something went wrong on my side and I couldn't answer. Please try again.",
            session,
        )
        return {"status": "failed"}
    text = f"⚠️ {result.reply}" if result.failed else result.reply
    # A worker whose lease lapsed while the model ran may have been taken over: the new
    # attempt shows the answer, this one says nothing more (raises LostClaim).
    await job.ensure_held()
    await reply.finish(text, citations=result.citations)
    for output in result.outputs:
        await approvals.post_approval(rt, output, session)
    await session_status.settle(c, reply.client, session)
    return {"status": result.turn.status}


def _shown_text(turn: TurnView) -> str:
    reply = turn.reply or ""
    return f"⚠️ {reply}" if turn.status == "failed" and not reply.startswith("⚠️") else reply


async def _stopped(rt: SlackRuntime, job: JobContext, turn_id: str, reply: ThreadReply) -> None:
    """The task was cancelled. Only a cancel someone asked for ends the turn: a shutdown
    (or a lost lease) cancels the same way, and then the next attempt reruns the turn."""
    if not await job.cancel_requested():
        return
    try:
        await run_sync(
            lambda: rt.container.sessions.cancel_turn(
                job.tenant_id, turn_id, "stopped", fence=job.fence
            )
        )
        await reply.stopped()
    except LostClaim:
        return
    except Exception:
        log.exception("turn %s: could not record that it was stopped", turn_id)


async def _fail(
    rt: SlackRuntime,
    job: JobContext,
    turn_id: str,
    reply: ThreadReply,
    error: str,
    message: str,
    session: SessionView,
) -> None:
    await run_sync(
        lambda: rt.container.sessions.finish_turn(
            job.tenant_id,
            turn_id,
            TurnRecord(status="failed", reply=message, model=None, error=error),
            fence=job.fence,
        )
    )
    try:
        await reply.finish(f"⚠️ {message}")
    except Exception:
        log.exception("turn %s: could not tell the user about the failure", turn_id)
    await session_status.settle(rt.container, reply.client, session)
