"""Builds the Slack side: Bolt's `AsyncApp` with our listeners, mounted at `/slack/events`.

Bolt runs with `process_before_response=True`: our listeners persist what they must before
Slack gets its answer (a message is one deduplicated `slack.event` job), so nothing
acknowledged can be lost in a crash. Turns are answered by job workers (`job_kinds`), never
by the process that acked them; short follow-ups of clicks and commands still run in
`SlackRuntime.spawn`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import (
    agent_versions,
    approvals,
    assistant,
    commands,
    conversations,
    file_drop,
    home,
    kb_commands,
    stop,
)
from bot.slack.directory import SlackDirectory
from bot.slack.limiter import LimitedWebClient, SlackLimiter
from bot.slack.oauth import SlackOAuth, build_oauth
from bot.slack.runtime import SlackClients, SlackRuntime
from bot.slack.streaming import StreamingPolicy
from core.db import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS
from core.errors import ServiceUnavailable
from core.jobs import JobKind
from core.wiring import Container

log = logging.getLogger("cosmo.slack")


def web_client(
    token: str | None, base_url: str, limiter: SlackLimiter | None = None
) -> AsyncWebClient:
    """A Web API client that retries connection errors and honours 429 Retry-After.

    Retries happen inside the one call that hit them, so a rate-limited channel waits
    without holding up turns in other channels. With `limiter` (the process's), calls also
    wait for a slot in their workspace's per-method window first (`bot.slack.limiter`)."""
    url = base_url if base_url.endswith("/") else base_url + "/"
    connection = AsyncConnectionErrorRetryHandler(max_retry_count=2)
    if limiter is not None:
        return LimitedWebClient(
            token=token, base_url=url, retry_handlers=[connection], limiter=limiter
        )
    return AsyncWebClient(
        token=token,
        base_url=url,
        retry_handlers=[connection, AsyncRateLimitErrorRetryHandler(max_retry_count=3)],
    )


@dataclass
class SlackIntegration:
    app: AsyncApp
    runtime: SlackRuntime
    signing_secret: str

    def job_kinds(self) -> list[JobKind]:
        """Slack's work for the job layer's workers: recording, answering and stopping turns,
        and session statuses set on behalf of other processes."""
        return [
            *conversations.job_kinds(self.runtime),
            *stop.job_kinds(self.runtime),
            *file_drop.job_kinds(self.runtime),
        ]

    def ingest_observer(self) -> file_drop.SlackIngestProgress:
        """Shows the ingestion of files dropped in Slack in their threads."""
        return file_drop.SlackIngestProgress(self.runtime)

    async def aclose(self) -> None:
        await self.runtime.aclose()


class _ExpectedBoltWarnings(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment by itself and warns that the client
    we pass (which carries that same token) wins: true, intended, and noise on every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("slack_bolt")
    if not any(isinstance(f, _ExpectedBoltWarnings) for f in logger.filters):
        logger.addFilter(_ExpectedBoltWarnings())
    return logger


def build_slack(container: Container) -> SlackIntegration | None:
    """The Slack app, in one of two modes (`SLACK_SIGNING_SECRET` is needed by both):

    * multi-workspace (OAuth) when `SLACK_CLIENT_ID` and `SLACK_CLIENT_SECRET` are set:
      workspaces install through `/slack/install`, installations live in our database,
      each request is authorized with its workspace's bot token and the tenant is the team id;
    * single workspace when `SLACK_BOT_TOKEN` is set: one token, the default tenant.

    Neither: None (`/slack/events` answers 503). Socket Mode (`SLACK_APP_TOKEN`) is a
    transport on top of either; see `bot.slack.socket_mode`.
    """
    settings = container.settings
    if settings.slack_signing_secret is None:
        return None
    oauth_mode = settings.slack_oauth_enabled
    if not oauth_mode and settings.slack_bot_token is None:
        return None
    signing_secret = settings.slack_signing_secret.get_secret_value()

    limiter = SlackLimiter()

    def make_client(token: str | None) -> AsyncWebClient:
        return web_client(token, settings.slack_api_url, limiter)

    oauth: SlackOAuth | None = None
    if oauth_mode:
        oauth = build_oauth(settings, container.db.engine, make_client)
        if settings.slack_bot_token is not None:
            log.warning("SLACK_BOT_TOKEN is ignored: SLACK_CLIENT_ID/SECRET select OAuth mode")
        client = make_client(None)
    else:
        assert settings.slack_bot_token is not None
        client = make_client(settings.slack_bot_token.get_secret_value())
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        oauth_settings=oauth.settings if oauth is not None else None,
        process_before_response=True,
        # SlackRequestGuard verifies every request before Bolt; a second check could fail
        # at the 5-minute edge and would log the body.
        request_verification_enabled=False,
        logger=_bolt_logger(),
    )
    if oauth is None and app.oauth_flow is not None:
        # Bolt reads SLACK_CLIENT_ID/SECRET from the process environment by itself; exported
        # but empty, they make it drop the bot token for an installation store in $HOME.
        raise ServiceUnavailable(
            "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are in the environment but empty; "
            "remove them for a single-workspace install, or set both for OAuth"
        )
    clients = SlackClients(
        client, installation_lookup=oauth.client_for if oauth is not None else None
    )
    runtime = SlackRuntime(
        container=container,
        clients=clients,
        directory=SlackDirectory(clients),
        single_workspace=oauth is None,
        streaming=StreamingPolicy(enabled=settings.slack_streaming),
    )
    container.approvals.directory = runtime.directory
    app.error(on_listener_error)
    register_all(app, runtime)
    return SlackIntegration(app, runtime, signing_secret)


async def on_listener_error(error: Exception) -> BoltResponse | None:
    """A listener failed before Slack got its answer. With the database out of reach, the
    event was not recorded: answer 503 so Slack delivers it again, instead of acking an
    event nobody will handle. Anything else stays Bolt's 500 (Slack retries that too)."""
    if isinstance(error, DATABASE_UNAVAILABLE):
        log.warning(
            "database unavailable while handling a Slack request (%s); Slack will retry",
            type(error).__name__,
        )
        return BoltResponse(status=503, body="", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    log.error("a Slack listener failed", exc_info=error)
    return None


def register_all(app: AsyncApp, runtime: SlackRuntime) -> None:
    for module in (
        conversations,
        stop,
        approvals,
        file_drop,
        commands,
        agent_versions,
        kb_commands,
        home,
        assistant,
    ):
        module.register(app, runtime)
