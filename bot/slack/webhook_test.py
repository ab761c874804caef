"""The agent form's "Send test event" button.

Slack gets its ack at once; the test runs after (`SlackRuntime.spawn`): the URL and secret
variable typed in the form (not saved yet) are checked as saving would check them
(`WebhookSpec`, the SSRF guard), then one signed `webhook.test` event is POSTed through
the delivery worker's own path (`WebhookDispatcher.send_test`). The outcome replaces the
note under the button with `views.update`; the inputs keep what was typed because their
block and action ids do not change (Slack preserves input state on update then).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp

from bot.slack import admin_forms as forms
from bot.slack.admins import may_configure
from bot.slack.form_submission import (
    META_AGENT,
    META_TENANT,
    read_metadata,
    register_modal_button,
)
from bot.slack.invocation import NOT_ADMIN
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape, truncate
from core.concurrency import run_sync
from core.errors import UnsafeWebhookUrl
from core.schemas.agent import WebhookSpec
from core.schemas.validation import field_errors
from core.webhooks.url_guard import check_webhook_url_when_saved


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


def _note(text: str) -> dict[str, Any]:
    return {
        "type": "context",
        "block_id": forms.WEBHOOK_TEST_RESULT,
        "elements": [{"type": "mrkdwn", "text": truncate(text, 2_000)}],
    }


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    register_modal_button(app, rt, forms.WEBHOOK_TEST, outcome, _note, "webhook test event")
