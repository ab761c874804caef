"""Approvals in Slack: the message with Approve / Reject / Edit, the reason and edit
modals, and keeping every copy of the message in step with decisions and edits made
anywhere (Slack, REST, webhook).

A button names the revision its message showed (`blocks.decision_block_id`); a decision or
edit on an older revision is refused by core as stale, and the clicker is pointed at the
current message."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import blocks, edit_form, lifecycle_blocks, session_status
from bot.slack.admins import may_configure
from bot.slack.errors import form_error, slack_message
from bot.slack.home import filters_of_view, publish_home
from bot.slack.runtime import SlackRuntime
from bot.slack.text import truncate
from core.approvals.policy import Actor, check_may_decide
from core.concurrency import run_sync
from core.errors import (
    CosmoError,
    NotFound,
    StaleRevision,
    ValidationFailed,
)
from core.execution.effect import planned_effect
from core.outputs.messages import MessageRef
from core.outputs.port import Output, OutputStatus, SlackStatus
from core.schemas.views import AgentView
from core.sessions.models import SessionView

FORM_ERROR_CHARS = 150

log = logging.getLogger("cosmo.slack.approvals")


async def _render(
    rt: SlackRuntime, output: Output, *, decided: bool, ping: bool = False
) -> tuple[str, Any]:
    c = rt.container
    agent: AgentView | None
    try:
        agent = await run_sync(c.agents.get, output.tenant_id, output.agent_id)
        agent_name = agent.name
    except NotFound:
        agent, agent_name = None, "a deleted agent"
    raw = await run_sync(c.outputs.read_content, output.tenant_id, output.id)
    content = raw.decode("utf-8", errors="replace")
    url = c.events.content_url(output.tenant_id, output.id)
    if decided:
        grant = await run_sync(c.grants.of_output, output.tenant_id, output.id)
        return blocks.decided_message(
            output, agent_name=agent_name, content=content, content_url=url, grant=grant
        )
    try:
        grantable = (await run_sync(c.skills.get, output.tenant_id, output.skill)).grantable
    except NotFound:
        grantable = False
    return blocks.approval_message(
        output,
        agent_name=agent_name,
        content=content,
        content_url=url,
        effect=planned_effect(c.skill_factory, output),
        policy=blocks.Policy.of(agent),
        ping=ping,
        grantable=grantable,
    )


#: DMs sent for one output at most (a user group of hundreds is a channel's job).
MAX_DMS = 25


async def approver_users(rt: SlackRuntime, tenant_id: str, approvers: list[str]) -> list[str]:
    """The agent's approvers as users, at most MAX_DMS (see `expand_principals`)."""
    return (await expand_principals(rt, tenant_id, approvers))[:MAX_DMS]


async def expand_principals(rt: SlackRuntime, tenant_id: str, principals: list[str]) -> list[str]:
    """Users and user groups as users: groups expanded (usergroups.users.list), in order,
    once each."""
    users: list[str] = []
    for principal in principals:
        if principal.startswith("S"):
            try:
                members = sorted(await rt.directory.members(tenant_id, principal))
            except Exception:
                log.warning("approver group %s could not be expanded", principal, exc_info=True)
                continue
            users += members
        else:
            users.append(principal)
    return list(dict.fromkeys(users))


async def post_approval(rt: SlackRuntime, output: Output, session: SessionView | None) -> None:
    """Route the approval message and record where it went (`Output.slack_status`).

    It goes in the conversation's thread (a Slack session) and in the agent's approval
    channel with the approvers @-mentioned; with no approval channel, each approver gets a
    DM with the buttons; with neither and no thread, the output is `unrouted`. Every copy
    is recorded, so decisions and edits update them all (DMs too)."""
    c = rt.container
    client = await rt.clients.for_tenant(output.tenant_id)
    agent = await run_sync(c.agents.get, output.tenant_id, output.agent_id)
    thread: list[tuple[str, str | None]] = []
    if session is not None and session.channel_id:
        thread.append((session.channel_id, session.thread_ts))
    routed: list[tuple[str, str | None]] = []
    status = SlackStatus.THREAD
    if agent.approval_channel and agent.approval_channel != (session and session.channel_id):
        routed.append((agent.approval_channel, None))
        status = SlackStatus.POSTED
    elif agent.approval_channel:
        status = SlackStatus.POSTED  # the approval channel is the conversation's channel
    elif agent.approvers:
        for user in await approver_users(rt, output.tenant_id, agent.approvers):
            try:
                opened = await client.conversations_open(users=user)
            except Exception:
                log.warning("output %s: no DM with approver %s", output.id, user, exc_info=True)
                continue
            routed.append((str(opened["channel"]["id"]), None))
        status = SlackStatus.DM
    if not (thread or routed):
        # Approvers none of whom could be reached is a failure; no one to ask is unrouted.
        nowhere = SlackStatus.FAILED if agent.approvers else SlackStatus.UNROUTED
        await run_sync(c.outputs.set_slack_status, output.tenant_id, output.id, nowhere)
        log.warning("output %s: its approval reached nobody in Slack (%s)", output.id, nowhere)
        return
    rendered = {
        ping: await _render(rt, output, decided=output.status != OutputStatus.PENDING, ping=ping)
        for ping in {channel == agent.approval_channel for channel, _ in [*thread, *routed]}
    }
    posted_to: list[tuple[str, str | None]] = []
    for channel, thread_ts in [*thread, *routed]:
        text, message = rendered[channel == agent.approval_channel]
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
        posted_to.append((channel, thread_ts))
        await run_sync(c.output_messages.add, output.tenant_id, output.id, channel, response["ts"])
    if not posted_to:
        status = SlackStatus.FAILED
    elif routed and not any(p in routed for p in posted_to):
        status = SlackStatus.THREAD  # only the thread copy made it
    elif status is SlackStatus.DM and not routed:
        status = SlackStatus.THREAD  # no approver could be reached by DM
    await run_sync(c.outputs.set_slack_status, output.tenant_id, output.id, status)


async def on_edit(rt: SlackRuntime, tenant_id: str, output_id: str, revision: int) -> None:
    """An edit made `revision`: every copy of the approval message shows it, with the
    changes and buttons for that revision. Reads the output again first, so a decision or
    a newer edit that landed meanwhile (and updates the copies itself) is not undone."""
    c = rt.container
    async with rt.message_lock(output_id):
        output = await run_sync(c.outputs.get, tenant_id, output_id)
        if output.status != OutputStatus.PENDING or output.revision != revision:
            return
        refs = await run_sync(c.output_messages.of, tenant_id, output_id)
        await _update_copies(rt, output, refs, decided=False)


async def _update_copies(
    rt: SlackRuntime, output: Output, refs: list[MessageRef], *, decided: bool
) -> None:
    if not refs:
        return
    client = await rt.clients.for_tenant(output.tenant_id)
    text, message = await _render(rt, output, decided=decided)
    for ref in refs:
        try:
            await client.chat_update(channel=ref.channel, ts=ref.ts, text=text, blocks=message)
        except Exception:
            log.exception("output %s: updating its message in %s failed", output.id, ref.channel)


async def current_message_link(
    rt: SlackRuntime, tenant_id: str, output_id: str, channel: str | None
) -> str | None:
    """A permalink to the output's approval message (the copy in `channel` if there is
    one, else the first posted); None if Slack cannot give one."""
    c = rt.container
    refs = await run_sync(c.output_messages.of, tenant_id, output_id)
    ref = next((r for r in refs if r.channel == channel), refs[0] if refs else None)
    if ref is None:
        return None
    client = await rt.clients.for_tenant(tenant_id)
    try:
        found = await client.chat_getPermalink(channel=ref.channel, message_ts=ref.ts)
    except Exception:
        log.info("output %s: no permalink for its message in %s", output_id, ref.channel)
        return None
    link = found.get("permalink")
    return str(link) if link else None


async def on_decision(rt: SlackRuntime, output: Output) -> None:
    """A decision or execution happened (from anywhere): update every copy, tell the thread.
    An edit (still pending) refreshes the copies after the caller was answered (a modal
    must be answered within 3 seconds)."""
    c = rt.container
    if output.status == OutputStatus.PENDING:
        rt.spawn(
            on_edit(rt, output.tenant_id, output.id, output.revision),
            name=f"edited:{output.id}",
        )
        return
    refs = await run_sync(c.output_messages.of, output.tenant_id, output.id)
    if not refs:
        return
    async with rt.message_lock(output.id):
        await _update_copies(rt, output, refs, decided=True)
    client = await rt.clients.for_tenant(output.tenant_id)
    try:
        session = await run_sync(c.sessions.get, output.tenant_id, output.session_id)
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
        await session_status.settle(c, client, session)


def register(app: AsyncApp, rt: SlackRuntime) -> None:
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
        latest = None
        if isinstance(exc, StaleRevision):
            tenant = rt.tenant_for((body.get("team") or {}).get("id"))
            channel = (body.get("channel") or {}).get("id")
            latest = await current_message_link(rt, tenant, exc.output_id, channel)
        await ephemeral(body, slack_message(exc, latest=latest))

    def clicked(body: dict[str, Any]) -> tuple[str, str, int, Actor]:
        """(tenant, output id, revision the message showed, who clicked)."""
        action = body["actions"][0]
        return (
            rt.tenant_for((body.get("team") or {}).get("id")),
            str(action["value"]),
            blocks.clicked_revision(action.get("block_id")),
            Actor(body["user"]["id"], "slack", verified=True),
        )

    async def decide_in_background(
        body: dict[str, Any],
        tenant: str,
        output_id: str,
        decision: str,
        reason: str | None,
        revision: int,
    ) -> None:
        actor = Actor(body["user"]["id"], "slack", verified=True)
        try:
            result = await c.approvals.decide(
                tenant,
                output_id,
                decision,  # type: ignore[arg-type]
                actor,
                reason,
                revision=revision,
            )
        except CosmoError as exc:
            await explain(body, exc)
            return
        if not result.applied:  # someone else already made this same decision
            o = result.output
            await ephemeral(
                body, blocks.ephemeral_already_decided(o.status.value, o.decided_by, o.decided_at)
            )

    async def on_approve(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        tenant, output_id, revision, _ = clicked(body)
        # Execution may take a while: answer Slack now, decide right after.
        rt.spawn(
            decide_in_background(body, tenant, output_id, "approve", None, revision),
            name=f"approve:{output_id}",
        )

    async def grant_in_background(
        body: dict[str, Any], tenant: str, output_id: str, revision: int
    ) -> None:
        actor = Actor(body["user"]["id"], "slack", verified=True)
        try:
            await c.grants.check_grantable(tenant, output_id)
            await c.approvals.decide(tenant, output_id, "approve", actor, revision=revision)
            await c.grants.grant(tenant, output_id, actor)
        except CosmoError as exc:
            await explain(body, exc)
            return
        current = await run_sync(c.outputs.get, tenant, output_id)
        await refresh_decided(rt, current)  # show the grant (and its Revoke) on the message

    async def on_approve_grant(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        tenant, output_id, revision, _ = clicked(body)
        rt.spawn(
            grant_in_background(body, tenant, output_id, revision),
            name=f"approve-grant:{output_id}",
        )

    async def on_revoke_grant(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        grant_id = str(body["actions"][0]["value"])
        actor = Actor(body["user"]["id"], "slack", verified=True)
        try:
            grant = await run_sync(c.grants.get, tenant, grant_id)
            output = await run_sync(c.outputs.get, tenant, grant.output_id)
            # Revoking only takes automation away: its granter, whoever may approve the
            # skill's outputs, and the workspace's admins may stop a grant.
            if actor.id != grant.granted_by and not await may_configure(rt, tenant, actor.id):
                await check_may_decide(
                    await c.approvals.agent_of(output),
                    output,
                    actor,
                    "reject",
                    c.approvals.directory,
                )
            await c.grants.revoke(tenant, grant_id, actor)
        except CosmoError as exc:
            await explain(body, exc)
            return
        await refresh_decided(rt, output)
        if (body.get("view") or {}).get("type") == "home":
            await publish_home(rt, tenant, actor.id, filters_of_view(body.get("view")))

    async def on_reject(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        tenant, output_id, revision, actor = clicked(body)
        try:
            await c.approvals.precheck(tenant, output_id, "reject", actor, revision)
        except CosmoError as exc:
            await explain(body, exc)
            return
        channel = (body.get("channel") or {}).get("id") or ""  # empty for App Home clicks
        view = blocks.reject_modal(
            output_id, {"channel": channel, "tenant": tenant, "revision": str(revision)}
        )
        await client.views_open(trigger_id=body["trigger_id"], view=view)

    async def on_edit_clicked(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        tenant, output_id, revision, actor = clicked(body)
        try:
            output = await c.approvals.precheck(tenant, output_id, "edit", actor, revision)
        except CosmoError as exc:
            await explain(body, exc)
            return
        if output.skill_snapshot is None:
            await ephemeral(
                body,
                "⚠️ This output was proposed before outputs kept a snapshot of their skill, "
                "so it cannot be edited; reject it and ask the agent again.",
            )
            return
        form = edit_form.edit_fields(output.skill_snapshot.get("input_schema"), output.arguments)
        if not form.fields:
            await ephemeral(
                body,
                "⚠️ Nothing in this output fits a Slack form; edit it over the API "
                f"(`PATCH /api/v1/outputs/{output.id}`).",
            )
            return
        channel = (body.get("channel") or {}).get("id") or ""
        view = edit_form.edit_modal(
            skill_title=blocks.skill_title(output.skill),
            revision=output.revision,
            form=form,
            metadata={
                "tenant": tenant,
                "output_id": output.id,
                "revision": output.revision,
                "channel": channel,
            },
        )
        await client.views_open(trigger_id=body["trigger_id"], view=view)

    async def on_edit_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        state = view.get("state", {}).get("values", {}) or {}
        first = next(iter(state), None)

        async def refuse(message: str) -> None:
            text = truncate(message, FORM_ERROR_CHARS)
            if first is None:  # a form with no inputs cannot carry an error: say it instead
                await ack(response_action="update", view=blocks.notice_modal("Not saved", text))
            else:
                await ack(response_action="errors", errors={first: text})

        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            output_id = str(meta["output_id"])
            revision = int(meta["revision"])
            if meta.get("tenant", tenant) != tenant:
                raise ValueError("another workspace's form")
        except (ValueError, KeyError, TypeError):
            await refuse("This form is stale; close it and press Edit again.")
            return
        actor = Actor(body["user"]["id"], "slack", verified=True)
        try:
            output = await c.approvals.precheck(tenant, output_id, "edit", actor, revision)
        except StaleRevision as exc:
            await refuse(
                f"Someone edited this output since you opened the form (revision {exc.current} "
                "is current). Nothing was saved: close it and edit the latest."
            )
            return
        except CosmoError as exc:
            await refuse(form_error(exc, prefix="Nothing was saved: "))
            return
        form = edit_form.edit_fields(
            (output.skill_snapshot or {}).get("input_schema"), output.arguments
        )
        arguments, errors = edit_form.read_submission(form, output.arguments, state)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        try:
            await c.approvals.edit(tenant, output_id, arguments, actor, revision=revision)
        except ValidationFailed as exc:
            errors = edit_form.errors_by_block(form, exc.errors)
            if errors:
                await ack(response_action="errors", errors=errors)
            else:
                await refuse(exc.detail)
            return
        except StaleRevision as exc:
            await refuse(
                f"Someone edited this output meanwhile (revision {exc.current} is current). "
                "Nothing was saved: close it and edit the latest."
            )
            return
        except CosmoError as exc:
            await refuse(form_error(exc, prefix="Nothing was saved: "))
            return
        await ack()

    async def on_reject_submitted(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        values = view.get("state", {}).get("values", {})
        reason = (
            (values.get(blocks.REASON_BLOCK, {}).get(blocks.REASON_INPUT, {}) or {}).get("value")
            or ""
        ).strip()
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            output_id = str(meta["output_id"])
            # Forms opened before reasons named their revision were opened on revision 1.
            revision = int(meta.get("revision") or 1)
        except (ValueError, KeyError, TypeError):
            await ack(response_action="errors", errors={blocks.REASON_BLOCK: "This form is stale."})
            return
        if not reason:
            await ack(response_action="errors", errors={blocks.REASON_BLOCK: "Please say why."})
            return
        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        actor = Actor(body["user"]["id"], "slack", verified=True)
        try:
            await c.approvals.precheck(tenant, output_id, "reject", actor, revision)
        except CosmoError as exc:
            await ack(
                response_action="errors",
                errors={blocks.REASON_BLOCK: truncate(form_error(exc), FORM_ERROR_CHARS)},
            )
            return
        await ack()
        event_body = {**body, "channel": {"id": meta.get("channel") or None}}
        rt.spawn(
            decide_in_background(event_body, tenant, output_id, "reject", reason, revision),
            name=f"reject:{output_id}",
        )

    app.action(blocks.APPROVE)(on_approve)
    app.action(blocks.REJECT)(on_reject)
    app.action(lifecycle_blocks.APPROVE_GRANT)(on_approve_grant)
    app.action(lifecycle_blocks.REVOKE_GRANT)(on_revoke_grant)
    app.action(edit_form.EDIT)(on_edit_clicked)
    app.view(blocks.REJECT_MODAL)(on_reject_submitted)
    app.view(edit_form.EDIT_MODAL)(on_edit_submitted)

    async def listener(output: Output) -> None:
        await on_decision(rt, output)

    async def proposed(output: Output, session: SessionView) -> None:
        await post_approval(rt, output, session)

    async def remind(output: Output, principals: list[str]) -> None:
        await dm_approvers(rt, output, principals, lifecycle_blocks.reminder_text)

    async def escalated(output: Output, principals: list[str]) -> None:
        await dm_approvers(rt, output, principals, lifecycle_blocks.escalation_text)

    c.approvals.on_change(listener)
    c.approvals.on_proposed(proposed)
    c.lifecycle.on_remind(remind)
    c.lifecycle.on_escalate(escalated)


async def refresh_decided(rt: SlackRuntime, output: Output) -> None:
    """Re-render every copy of a decided output's message (its grant changed)."""
    refs = await run_sync(rt.container.output_messages.of, output.tenant_id, output.id)
    if refs:
        async with rt.message_lock(output.id):
            await _update_copies(rt, output, refs, decided=output.status != OutputStatus.PENDING)


async def dm_approvers(
    rt: SlackRuntime,
    output: Output,
    principals: list[str],
    text_of: Callable[[Output, str, str | None], str],
) -> None:
    """DM each approver (user groups expanded) a line with a link to the approval
    message; posting to a user id lands in their DM with the app."""
    c = rt.container
    client = await rt.clients.for_tenant(output.tenant_id)
    users = await expand_principals(rt, output.tenant_id, principals)
    try:
        agent = await run_sync(c.agents.get, output.tenant_id, output.agent_id)
    except NotFound:
        return
    approved = {a.by for a in output.current_approvals()}
    if not agent.allow_self_approval:
        approved.add(output.requested_by or "")
    users = [u for u in users if u not in approved]
    if not users:
        return
    permalink = None
    refs = await run_sync(c.output_messages.of, output.tenant_id, output.id)
    if refs:
        try:
            found = await client.chat_getPermalink(channel=refs[0].channel, message_ts=refs[0].ts)
            permalink = found.get("permalink")
        except Exception:
            log.warning("output %s: no permalink for its approval message", output.id)
    text = text_of(output, agent.name, permalink)
    for user in users:
        try:
            await client.chat_postMessage(channel=user, text=text, unfurl_links=False)
        except Exception:
            log.exception("output %s: the DM to %s failed", output.id, user)
