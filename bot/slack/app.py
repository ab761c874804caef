"""Builds the Slack side: Bolt's `AsyncApp` with our listeners, mounted at `/slack/events`.

Bolt runs with `process_before_response=True`: our listeners persist what they must (the
turn, deduplicated on `event_id`) before Slack gets its answer, and hand slow work to
`SlackRuntime.spawn`, so nothing acknowledged can be lost in a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import approvals, conversations
from bot.slack.directory import SlackDirectory
from bot.slack.runtime import SlackClients, SlackRuntime
from core.wiring import Container

log = logging.getLogger("cosmo.slack")


def web_client(token: str | None, base_url: str) -> AsyncWebClient:
    """A Web API client that retries connection errors and honours 429 Retry-After.

    Retries happen inside the one call that hit them, so a rate-limited channel waits
    without holding up turns in other channels."""
    return AsyncWebClient(
        token=token,
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


@dataclass
class SlackIntegration:
    app: AsyncApp
    runtime: SlackRuntime
    signing_secret: str

    async def recover(self) -> int:
        return await conversations.recover_turns(self.runtime)

    async def aclose(self) -> None:
        await self.runtime.aclose()


def build_slack(container: Container) -> SlackIntegration | None:
    settings = container.settings
    if settings.slack_bot_token is None or settings.slack_signing_secret is None:
        return None
    signing_secret = settings.slack_signing_secret.get_secret_value()
    client = web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        process_before_response=True,
        # SlackRequestGuard verifies every request before Bolt; a second check could fail
        # at the 5-minute edge and would log the body.
        request_verification_enabled=False,
        logger=logging.getLogger("slack_bolt"),
    )
    clients = SlackClients(client)
    runtime = SlackRuntime(
        container=container,
        clients=clients,
        directory=SlackDirectory(clients),
        single_workspace=True,
    )
    container.approvals.directory = runtime.directory
    register_all(app, runtime)
    return SlackIntegration(app, runtime, signing_secret)


def register_all(app: AsyncApp, runtime: SlackRuntime) -> None:
    conversations.register(app, runtime)
    approvals.register(app, runtime)
    for module in _optional_modules():
        module.register(app, runtime)


def _optional_modules() -> list[Any]:
    """Listener modules added by later features (commands, App Home), when present."""
    import importlib

    found = []
    for name in ("bot.slack.commands", "bot.slack.home", "bot.slack.assistant"):
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found
