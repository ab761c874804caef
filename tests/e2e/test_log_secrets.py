"""No log record of a whole product run holds a secret: chat in Slack, a proposal, an
approval, an execution that sends a skill credential, signed webhook deliveries (one
retried), REST calls with the root key and a tenant key, and requests that are refused.
Every record is captured at DEBUG, libraries at the floor `cosmo` sets for them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bot.cli.logging_setup import QUIET, JsonFormatter, TextFormatter
from core.keys.roles import Role
from core.keys.service import KeySpec
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, CHANNEL_ID
from tests.fakes.slack_requests import SIGNING_SECRET, SlackRequests
from tests.fakes.webhook_receiver import Reply as HookReply
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.server_support import LEAD, sales_team
from tests.slack_support import SlackApp, eventually, slack_app

ROOT_KEY = "cosmo_root-key-for-log-secrets-0123456789"
SECRET_KEY = "approval-signing-key-for-log-secrets-42"
ANTHROPIC_KEY = "sk-ant-api03-log-secrets-ABCDEFGHIJKLMNOP"
WEBHOOK_SECRET_B64 = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WEBHOOK_SECRET = "whsec_" + WEBHOOK_SECRET_B64
CRM_CREDENTIAL = "Bearer crm-credential-for-log-secrets-7777"
# Some receivers authenticate by a token in the URL's query: URLs must not reach logs whole.
HOOK_URL_TOKEN = "hook-url-token-for-log-secrets-5555"


def config(crm: WebhookReceiver, hooks: WebhookReceiver) -> str:
    return sales_team(
        crm.url,
        f"{hooks.url}?key={HOOK_URL_TOKEN}",
        credential="LOG_SECRETS_CRM_TOKEN",
        hook_secret=WEBHOOK_SECRET,
        drafts=False,
    )


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    # As `configure` leaves them: WARNING and up (not caplog.set_level, which would also
    # raise its handler's level to WARNING for every logger).
    quiet = [logging.getLogger(name) for name in QUIET]
    before = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    yield caplog
    for logger, level in zip(quiet, before, strict=True):
        logger.setLevel(level)


@pytest.fixture
def app(
    real_db, tmp_path, monkeypatch
) -> Iterator[tuple[SlackApp, WebhookReceiver, WebhookReceiver]]:
    monkeypatch.setenv("LOG_SECRETS_CRM_TOKEN", CRM_CREDENTIAL)
    with (
        WebhookReceiver(path="/api/tasks") as crm,
        WebhookReceiver() as hooks,
        slack_app(
            real_db,
            tmp_path,
            config(crm, hooks),
            COSMO_API_TOKEN=ROOT_KEY,
            COSMO_SECRET_KEY=SECRET_KEY,
            ANTHROPIC_API_KEY=ANTHROPIC_KEY,
            COSMO_SKILL_SECRETS="LOG_SECRETS_*",
            COSMO_SLACK_STREAMING=True,
        ) as running,
    ):
        running.slack.add_user(LEAD, "Lena Lead")
        yield running, crm, hooks


def rendered(record: logging.LogRecord) -> str:
    """Everything a handler could write for the record, in both formats, plus its raw args."""
    parts = [TextFormatter().format(record), JsonFormatter().format(record), repr(record.args)]
    parts.append(repr(getattr(record, "cosmo", "")))
    return "\n".join(parts)


def test_a_whole_run_logs_no_secret(app, logs):
    slack_app_, crm, hooks = app
    client = slack_app_.client
    root = {"Authorization": f"Bearer {ROOT_KEY}"}
    created = client.post("/api/v1/keys", json={"name": "ops", "role": "reviewer"}, headers=root)
    assert created.status_code == 201, created.text
    tenant_key = created.json()["key"]
    _, admin_key = slack_app_.container.keys.create(
        "default", KeySpec(name="admin", role=Role.ADMIN), created_by="test"
    )
    hooks.then(HookReply.error(503))  # the first delivery fails, to be retried later

    slack_app_.claude.push(
        Reply.tool_use("create_task", {"title": "Call Globex"}, text="On it."),
        Reply.text("Proposed; waiting for approval."),
    )
    mention = slack_app_.requests.app_mention(f"<@{BOT_USER_ID}> add a task to call Globex")
    assert slack_app_.send(mention).status_code == 200
    slack_app_.run_jobs()
    ts = mention.payload["event"]["ts"]
    approval = next(
        m
        for m in slack_app_.slack.messages_in(CHANNEL_ID, thread_ts=ts)
        if any(b["type"] == "actions" for b in m.blocks)
    )
    actions = next(b for b in approval.blocks if b["type"] == "actions")
    output_id = actions["elements"][0]["value"]
    click = slack_app_.requests.block_action(
        "output_approve", output_id, user=LEAD, message_ts=approval.ts, thread_ts=ts
    )
    assert slack_app_.send(click).status_code == 200
    slack_app_.run_jobs()
    (task,) = crm.requests
    assert task.headers["authorization"] == CRM_CREDENTIAL  # the credential was really sent
    webhooks: Any = slack_app_.container.webhooks
    client.portal.call(webhooks.run_once)
    eventually(lambda: len(hooks.requests) >= 3)

    # REST with each kind of key, and requests that are refused.
    assert client.get(f"/api/v1/outputs/{output_id}", headers=root).status_code == 200
    reviewer = {"Authorization": f"Bearer {tenant_key}"}
    assert client.get(f"/api/v1/outputs/{output_id}/audit", headers=reviewer).status_code == 200
    admin = {"Authorization": f"Bearer {admin_key}"}
    assert client.get("/api/v1/keys", headers=admin).status_code == 200
    refused = {"Authorization": f"Bearer {tenant_key}x"}
    assert client.get("/api/v1/agents", headers=refused).status_code == 401
    assert client.get("/metrics", headers=admin).status_code == 401
    forged = SlackRequests("not-the-signing-secret").app_mention("hello")
    assert slack_app_.send(forged).status_code == 401

    secrets = {
        "Slack bot token": BOT_TOKEN,
        "Slack signing secret": SIGNING_SECRET,
        "Anthropic key": ANTHROPIC_KEY,
        "root key": ROOT_KEY,
        "approval signing key": SECRET_KEY,
        "tenant key": tenant_key,
        "admin key": admin_key,
        "webhook secret": WEBHOOK_SECRET_B64,
        "skill credential": CRM_CREDENTIAL.removeprefix("Bearer "),
        "webhook URL token": HOOK_URL_TOKEN,
    }
    records = logs.records
    assert len(records) >= 10  # the run was logged: a capture of nothing would prove nothing
    leaks = [
        f"{what} in {record.name}: {record.getMessage()[:200]}"
        for record in records
        for what, value in secrets.items()
        if value in rendered(record)
    ]
    assert leaks == []
    # Libraries narrate URLs (a receiver's token may sit in the query) and payloads below
    # WARNING: nothing of theirs under it reaches the log.
    chatter = sorted(
        {r.name for r in records if r.levelno < logging.WARNING}
        - {r.name for r in records if r.name.split(".")[0] in ("cosmo", "uvicorn")}
    )
    assert chatter == []
