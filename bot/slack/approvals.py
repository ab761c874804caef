"""Approvals in Slack: the message with Approve / Reject, the reason modal, and keeping
every copy of the message in step with decisions made anywhere (Slack, REST, webhook)."""

from __future__ import annotations

import json
import logging
from typing import Any

from anyio import to_thread

from bot.slack import blocks
from bot.slack.runtime import SlackRuntime
from core.approvals.policy import Actor
from core.errors import CosmoError, NotFound, OutputAlreadyDecided
from core.outputs.port import Output
from core.sessions.models import SessionView

log = logging.getLogger("cosmo.slack.approvals")


async def _render(rt: SlackRuntime, output: Output, *, decided: bool) -> tuple[str, Any]:
    c = rt.container
    try:
        agent_name = (
            await to_thread.run_sync(c.agents.get, output.tenant_id, output.agent_id)
        ).name
    except NotFound:
        agent_name = "a deleted agent"
    raw = await to_thread.run_sync(c.outputs.read_content, output.tenant_id, output.id)
    content = raw.decode("utf-8", errors="replace")
    url = c.events.content_url(output.tenant_id, output.id)
    render = blocks.decided_message if decided else blocks.approval_message
    return render(output, agent_name=agent_name, content=content, content_url=url)


async def post_approval(rt: SlackRuntime, output: Output, session: SessionView) -> None:
    """Post the approval message in the thread, and in the agent's approval channel."""
    c = rt.container
    client = await rt.clients.for_tenant(output.tenant_id)
    text, message = await _render(rt, output, decided=False)
    targets: list[tuple[str, str | None]] = []
    if session.channel_id:
        targets.append((session.channel_id, session.thread_ts))
    agent = await to_thread.run_sync(c.agents.get, output.tenant_id, output.agent_id)
    if agent.approval_channel and agent.approval_channel != session.channel_id:
        targets.append((agent.approval_channel, None))
    for channel, thread_ts in targets:
        try:
            response = await client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=text,
                blocks=message,
                unfurl_links=False,
                unfurl_media=False,
            )
        except Exception:
            log.exception(
                "output %s: posting the approval message to %s failed", output.id, channel
            )
            continue
        await to_thread.run_sync(
            c.output_messages.add, output.tenant_id, output.id, channel, response["ts"]
        )


async def on_decision(rt: SlackRuntime, output: Output) -> None:
    """A decision or execution happened (from anywhere): update every copy, tell the thread."""
    c = rt.container
    refs = await to_thread.run_sync(c.output_messages.of, output.tenant_id, output.id)
    if not refs:
        return
    client = await rt.clients.for_tenant(output.tenant_id)
    text, message = await _render(rt, output, decided=True)
    for ref in refs:
        try:
            await client.chat_update(channel=ref.channel, ts=ref.ts, text=text, blocks=message)
        except Exception:
            log.exception("output %s: updating its message in %s failed", output.id, ref.channel)
    try:
        session = await to_thread.run_sync(c.sessions.get, output.tenant_id, output.session_id)
    except NotFound:
        return
    if session.channel_id and session.thread_ts:
        await client.chat_postMessage(
            channel=session.channel_id,
            thread_ts=session.thread_ts,
            text=blocks.outcome_text(output),
            unfurl_links=False,
            unfurl_media=False,
        )


def register(app: Any, rt: SlackRuntime) -> None:
    c = rt.container

    async def ephemeral(body: dict[str, Any], text: str) -> None:
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        user = (body.get("user") or {}).get("id")
        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        if not user:
            return
        client = await rt.clients.for_tenant(tenant)
        if not channel:  # a click in App Home: there is no channel, so tell them in the DM
            await client.chat_postMessage(channel=user, text=text)
            return
        thread_ts = (body.get("message") or {}).get("thread_ts")
        await client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)

    async def explain(body: dict[str, Any], exc: CosmoError) -> None:
        if isinstance(exc, OutputAlreadyDecided):
            await ephemeral(
                body, blocks.ephemeral_already_decided(exc.status, exc.decided_by, exc.decided_at)
            )
        else:
            await ephemeral(body, f"⚠️ {exc.detail}")

    async def decide_in_background(
        body: dict[str, Any], tenant: str, output_id: str, decision: str, reason: str | None
    ) -> None:
        actor = Actor(body["user"]["id"], "slack", verified=True)
        try:
            result = await c.approvals.decide(tenant, output_id, decision, actor, reason)  # type: ignore[arg-type]
        except CosmoError as exc:
            await explain(body, exc)
            return
        if not result.applied:  # someone else already made this same decision
            o = result.output
            await ephemeral(
                body, blocks.ephemeral_already_decided(o.status.value, o.decided_by, o.decided_at)
            )

    async def on_approve(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        output_id = body["actions"][0]["value"]
        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        # Execution may take a while: answer Slack now, decide right after.
        rt.spawn(
            decide_in_background(body, tenant, output_id, "approve", None),
            name=f"approve:{output_id}",
        )

    async def on_reject(ack: Any, body: dict[str, Any], client: Any) -> None:
        await ack()
        output_id = body["actions"][0]["value"]
        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        actor = Actor(body["user"]["id"], "slack", verified=True)
        try:
            await c.approvals.precheck(tenant, output_id, "reject", actor)
        except CosmoError as exc:
            await explain(body, exc)
            return
        channel = (body.get("channel") or {}).get("id") or ""  # empty for App Home clicks
        view = blocks.reject_modal(output_id, {"channel": channel, "tenant": tenant})
        await client.views_open(trigger_id=body["trigger_id"], view=view)

    async def on_reject_submitted(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view.get("state", {}).get("values", {})
        reason = (
            (values.get(blocks.REASON_BLOCK, {}).get(blocks.REASON_INPUT, {}) or {}).get("value")
            or ""
        ).strip()
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            output_id = str(meta["output_id"])
        except (ValueError, KeyError, TypeError):
            await ack(response_action="errors", errors={blocks.REASON_BLOCK: "This form is stale."})
            return
        if not reason:
            await ack(response_action="errors", errors={blocks.REASON_BLOCK: "Please say why."})
            return
        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        actor = Actor(body["user"]["id"], "slack", verified=True)
        try:
            await c.approvals.precheck(tenant, output_id, "reject", actor)
        except CosmoError as exc:
            message = (
                blocks.ephemeral_already_decided(exc.status, exc.decided_by, exc.decided_at)
                if isinstance(exc, OutputAlreadyDecided)
                else exc.detail
            )
            await ack(response_action="errors", errors={blocks.REASON_BLOCK: message[:150]})
            return
        await ack()
        event_body = {**body, "channel": {"id": meta.get("channel") or None}}
        rt.spawn(
            decide_in_background(event_body, tenant, output_id, "reject", reason),
            name=f"reject:{output_id}",
        )

    app.action(blocks.APPROVE)(on_approve)
    app.action(blocks.REJECT)(on_reject)
    app.view(blocks.REJECT_MODAL)(on_reject_submitted)

    async def listener(output: Output) -> None:
        await on_decision(rt, output)

    c.approvals.on_change(listener)
