"""The agent form's "Send test event" button.

Slack gets its ack at once; the test runs after (`SlackRuntime.spawn`): the URL and secret
variable typed in the form (not saved yet) are checked as saving would check them
(`WebhookSpec`, the SSRF guard), then one signed `webhook.test` event is POSTed through
the delivery worker's own path (`WebhookDispatcher.send_test`). The outcome replaces the
note under the button with `views.update`; the inputs keep what was typed because their
block and action ids do not change (Slack preserves input state on update then).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import admin_forms as forms
from bot.slack.admins import may_configure
from bot.slack.form_submission import META_AGENT, META_TENANT, NOT_ADMIN, read_metadata
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape, truncate
from core.concurrency import run_sync
from core.errors import UnsafeWebhookUrl
from core.schemas.agent import WebhookSpec
from core.schemas.validation import field_errors
from core.webhooks.url_guard import check_webhook_url_when_saved

log = logging.getLogger("cosmo.slack.webhook_test")

# What `views.update` takes of the view Slack sent back (the rest is Slack's own).
_VIEW_KEYS = ("type", "callback_id", "private_metadata", "title", "submit", "close", "blocks")


def _typed(values: forms.State, block: str) -> str:
    state = (values.get(block) or {}).get(block) or {}
    value = state.get("value")
    return value.strip() if isinstance(value, str) else ""


async def outcome(rt: SlackRuntime, body: dict[str, Any]) -> str:
    """What to say under the button (mrkdwn)."""
    view = body.get("view") or {}
    meta = read_metadata(view)
    if not meta:
        return "⚠️ " + "This form is out of date. Close it and run the command again."
    tenant = meta[META_TENANT]
    if not await may_configure(rt, tenant, body["user"]["id"]):
        return "⚠️ " + NOT_ADMIN
    values = (view.get("state") or {}).get("values") or {}
    url = _typed(values, "webhook_url")
    variable = _typed(values, "webhook_secret_env") or None
    if not url:
        return "⚠️ Type the webhook URL first."
    try:
        spec = WebhookSpec.model_validate({"url": url, "secret_env": variable})
    except ValidationError as exc:
        problems = "; ".join(f"{e.path}: {e.msg}" for e in field_errors(exc))
        return f"⚠️ {escape(truncate(problems, 500))}"
    settings = rt.container.settings
    try:
        await run_sync(
            check_webhook_url_when_saved,
            spec.url,
            allow_insecure=settings.webhook_allow_insecure,
        )
    except UnsafeWebhookUrl as exc:
        return f"⚠️ {escape(exc.detail)}"
    agent_id = meta.get(META_AGENT)
    result = await rt.container.webhooks.send_test(
        tenant,
        spec.url,
        agent_id=str(agent_id) if agent_id else None,
        agent_name=_typed(values, "name") or "new agent",
        secret_env=spec.secret_env,
    )
    if result.status_code is not None:
        mark = "✅" if result.delivered else "⚠️"
        return (
            f"{mark} Test event sent: the receiver answered *{result.status_code}* "
            f"in {result.duration_ms} ms."
        )
    return f"⚠️ Test event not delivered: {escape(truncate(result.error or 'no answer', 500))}"


def _with_note(view: dict[str, Any], note: str) -> dict[str, Any]:
    updated = {k: view[k] for k in _VIEW_KEYS if k in view}
    blocks = []
    for block in view.get("blocks") or []:
        if block.get("block_id") == forms.WEBHOOK_TEST_RESULT:
            block = {
                "type": "context",
                "block_id": forms.WEBHOOK_TEST_RESULT,
                "elements": [{"type": "mrkdwn", "text": truncate(note, 2_000)}],
            }
        blocks.append(block)
    updated["blocks"] = blocks
    return updated


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    async def on_click(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rt.spawn(run(body, client), name="webhook test event")

    async def run(body: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            note = await outcome(rt, body)
        except Exception:
            log.exception("webhook test event failed")
            note = "⚠️ Something went wrong on my side. Please try again."
        view = body.get("view") or {}
        try:
            await client.views_update(view_id=view.get("id"), view=_with_note(view, note))
        except SlackApiError as exc:  # the modal was closed or submitted meanwhile
            log.info("could not show the webhook test result: %s", exc.response.get("error"))

    app.action(forms.WEBHOOK_TEST)(on_click)
