"""Conversations: a mention starts a thread session; replies in it, and DMs, continue it.

Every event is recorded as a turn (deduplicated on the message: team, channel, ts) BEFORE
Slack gets its ack, then answered in the background. A turn recorded but never finished (the process
died) is picked up again by the recovery sweep.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from anyio import to_thread

from bot.slack import approvals
from bot.slack.reply import ThreadReply
from bot.slack.runtime import SlackRuntime
from core.errors import CosmoError
from core.sessions.models import TurnRecord

log = logging.getLogger("cosmo.slack.conversations")

STALE_TURN = timedelta(minutes=3)
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


def session_key(team_id: str | None, channel: str, thread_ts: str) -> str:
    return f"slack:{team_id or '-'}:{channel}:{thread_ts}"


def register(app: Any, rt: SlackRuntime) -> None:
    async def on_mention(body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        await record_event(rt, body, event, context.get("bot_user_id"), mentioned=True)

    async def on_message(body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        bot_user = context.get("bot_user_id")
        if (
            bot_user
            and f"<@{bot_user}>" in (event.get("text") or "")
            and event.get("channel_type") != "im"
        ):
            return  # the app_mention event for this message answers it
        await record_event(rt, body, event, bot_user, mentioned=False)

    app.event("app_mention")(on_mention)
    app.event("message")(on_message)


async def record_event(
    rt: SlackRuntime,
    body: dict[str, Any],
    event: dict[str, Any],
    bot_user_id: str | None,
    *,
    mentioned: bool,
) -> None:
    """Runs inside Slack's 3-second window: decide, persist, schedule. No model calls."""
    if event.get("bot_id") or event.get("subtype") in _IGNORED_SUBTYPES:
        return
    user = event.get("user")
    if not user or user == bot_user_id:
        return
    team_id = body.get("team_id") or event.get("team")
    tenant = rt.tenant_for(team_id)
    channel = event["channel"]
    is_dm = event.get("channel_type") == "im" or channel.startswith("D")
    thread_ts = event.get("thread_ts") or event["ts"]
    text = _MENTION.sub(
        lambda m: "" if m.group(1) == bot_user_id else m.group(0), event.get("text") or ""
    ).strip()
    c = rt.container
    key = session_key(team_id, channel, thread_ts)
    session = await to_thread.run_sync(c.sessions.find_by_key, tenant, key)
    if session is None:
        if not (mentioned or is_dm):
            return  # a thread we are not part of
        resolution = await to_thread.run_sync(
            c.bindings.resolve, tenant, None if is_dm else channel
        )
        if resolution.agent_id is None:
            rt.spawn(
                _explain_no_agent(rt, tenant, channel, thread_ts, resolution.why), name="no-agent"
            )
            return
        try:
            session = await to_thread.run_sync(
                lambda: c.sessions.start(
                    tenant,
                    resolution.agent_id or "",
                    user_id=user,
                    channel_id=channel,
                    thread_ts=thread_ts,
                    source="slack",
                    external_key=key,
                    context={"team_id": team_id} if team_id else {},
                )
            )
        except CosmoError as exc:
            rt.spawn(_say(rt, tenant, channel, thread_ts, f"⚠️ {exc.detail}"), name="say")
            return
        except Exception:  # a concurrent delivery created it first
            session = await to_thread.run_sync(c.sessions.find_by_key, tenant, key)
            if session is None:
                raise
    if session.status == "ended":
        if mentioned or is_dm:
            rt.spawn(
                _say(
                    rt,
                    tenant,
                    channel,
                    thread_ts,
                    "This conversation has ended. Mention me in a new message to start another.",
                ),
                name="say",
            )
        return
    if not text:
        text = "Hello!"
    turn, created = await to_thread.run_sync(
        lambda: c.sessions.begin_turn(
            tenant,
            session.id,
            user_id=user,
            user_message=text,
            # The message, not the delivery: Slack may send one message again under a new
            # event_id (and retries keep the old one), so team, channel and ts name it.
            dedupe_key=f"slack:{team_id or '-'}:{channel}:{event['ts']}",
            payload={
                "channel": channel,
                "thread_ts": thread_ts,
                "ts": event["ts"],
                "team": team_id,
            },
        )
    )
    if created:
        rt.spawn(process_turn(rt, tenant, turn.id), name=f"turn:{turn.id}")


async def process_turn(rt: SlackRuntime, tenant: str, turn_id: str) -> None:
    """Answer one recorded turn, exactly once across workers (the claim is conditional)."""
    async with rt.turn_slots:
        await _answer(rt, tenant, turn_id)


async def _answer(rt: SlackRuntime, tenant: str, turn_id: str) -> None:
    c = rt.container
    claimed = await to_thread.run_sync(
        lambda: c.sessions.claim_turn(turn_id, stale_after=STALE_TURN)
    )
    if not claimed:
        return
    turn = await to_thread.run_sync(c.sessions.get_turn, tenant, turn_id)
    session = await to_thread.run_sync(c.sessions.get, tenant, turn.session_id)
    channel = str(turn.payload.get("channel") or session.channel_id)
    thread_ts = str(turn.payload.get("thread_ts") or session.thread_ts)
    client = await rt.clients.for_tenant(tenant)
    if session.user_name is None or session.channel_name is None:
        user_name = await rt.directory.user_name(tenant, session.user_id)
        channel_name = await rt.directory.channel_name(tenant, channel)
        session = await to_thread.run_sync(
            lambda: c.sessions.set_names(
                tenant, session.id, user_name=user_name, channel_name=channel_name
            )
        )
    reply = rt.reply_factory(client, channel, thread_ts)
    try:
        await reply.start()
    except Exception:
        log.exception("turn %s: could not post the placeholder", turn_id)
    try:
        agent = await c.runner.agent(tenant, session.agent_id)
        speaker = await rt.directory.user_name(tenant, turn.user_id)
        result = await agent.chat(
            session, turn.user_message, on_text=reply.write, turn=turn, user_name=speaker
        )
    except CosmoError as exc:
        await _fail(c, tenant, turn_id, reply, exc.detail, exc.detail)
        return
    except Exception:
        log.exception("turn %s failed unexpectedly", turn_id)
        await _fail(
            c,
            tenant,
            turn_id,
            reply,
            "internal error",
            "Something went wrong on my side and I couldn't answer. Please try again.",
        )
        return
    text = f"⚠️ {result.reply}" if result.failed else result.reply
    await reply.finish(text, citations=result.citations)
    for output in result.outputs:
        await approvals.post_approval(rt, output, session)


async def recover_turns(rt: SlackRuntime) -> int:
    """Pick up Slack turns that were recorded but not finished (e.g. after a crash)."""
    turns = await to_thread.run_sync(
        lambda: rt.container.sessions.unfinished_turns(200, source="slack")
    )
    for turn in turns:
        rt.spawn(process_turn(rt, turn.tenant_id, turn.id), name=f"recover:{turn.id}")
    return len(turns)


async def _fail(
    c: Any, tenant: str, turn_id: str, reply: ThreadReply, error: str, message: str
) -> None:
    await to_thread.run_sync(
        lambda: c.sessions.finish_turn(
            tenant, turn_id, TurnRecord(status="failed", reply=message, model=None, error=error)
        )
    )
    try:
        await reply.finish(f"⚠️ {message}")
    except Exception:
        log.exception("turn %s: could not tell the user about the failure", turn_id)


async def _say(rt: SlackRuntime, tenant: str, channel: str, thread_ts: str, text: str) -> None:
    client = await rt.clients.for_tenant(tenant)
    await client.chat_postMessage(
        channel=channel, thread_ts=thread_ts, text=text, unfurl_links=False, unfurl_media=False
    )


async def _explain_no_agent(
    rt: SlackRuntime, tenant: str, channel: str, thread_ts: str, why: str
) -> None:
    if why == "none":
        text = (
            "No agent is set up in this workspace yet. An admin can create one with "
            "`/agent create`."
        )
    else:
        text = (
            "Several agents could answer here and none is chosen for this channel. "
            "Pick one with `/agent use NAME` (see `/agent list`)."
        )
    await _say(rt, tenant, channel, thread_ts, text)
