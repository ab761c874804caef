"""Socket Mode: Slack delivers events, interactivity and commands over a WebSocket that this
process opens, instead of POSTing them to `/slack/events` (no public URL needed).

It is a transport only: envelopes go to the same Bolt `AsyncApp`, so the same listeners,
deduplication and durable turns apply, and Bolt acks each envelope once the listener has
persisted what it must (`process_before_response=True`). The aiohttp-based client is used:
aiohttp is already a dependency, the `websockets` package is not.

Started from the server's lifespan when `SLACK_APP_TOKEN` (an app-level `xapp-` token with
`connections:write`) is set:

    socket_mode = await start_socket_mode(slack, settings)   # None when not configured
    ...
    if socket_mode is not None:
        await socket_mode.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot.slack.app import SlackIntegration
from core.errors import ServiceUnavailable
from core.settings import Settings

log = logging.getLogger("cosmo.slack.socket_mode")

PING_INTERVAL_SECONDS = 10.0
# Slack's answers to `apps.connections.open` that no retry will fix.
_REFUSED = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "not_allowed_token_type",
        "token_revoked",
        "account_inactive",
        "missing_scope",
    }
)


class SocketMode:
    """One Socket Mode connection for this process, bound to the Slack app's `AsyncApp`."""

    def __init__(self, handler: AsyncSocketModeHandler) -> None:
        self.handler = handler
        # slack-sdk's SocketModeClient (its connect/close are not annotated).
        self._client: Any = handler.client
        self._connecting: asyncio.Task[Any] | None = None

    @property
    def app(self) -> AsyncApp:
        return self.handler.app

    def connect_in_background(self) -> None:
        """Connect without holding up startup; slack-sdk retries until it is connected,
        and reconnects by itself when Slack rotates or drops the connection."""
        self._connecting = asyncio.get_running_loop().create_task(
            self._client.connect(), name="slack-socket-mode-connect"
        )

    async def stop(self) -> None:
        self._client.closed = True  # ends a connect loop still retrying
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        await self._client.close()


async def start_socket_mode(
    slack: SlackIntegration | None, settings: Settings
) -> SocketMode | None:
    """Open the Socket Mode connection when `SLACK_APP_TOKEN` is set and Slack is configured.

    Must run inside the event loop (slack-sdk's client starts tasks when it is built). A token
    Slack refuses raises `ServiceUnavailable` at once, rather than retrying forever in the
    log; a network failure does not stop startup, the client keeps trying."""
    if slack is None or settings.slack_app_token is None:
        if settings.slack_app_token is not None:
            log.warning("SLACK_APP_TOKEN is set but Slack is not configured; no Socket Mode")
        return None
    app_token = settings.slack_app_token.get_secret_value()
    handler = AsyncSocketModeHandler(
        slack.app,
        app_token,
        logger=logging.getLogger("slack_bolt.socket_mode"),
        web_client=slack.app.client,  # SLACK_API_URL, our retry handlers
        ping_interval=PING_INTERVAL_SECONDS,
    )
    socket_mode = SocketMode(handler)
    try:
        opened = await handler.client.web_client.apps_connections_open(app_token=app_token)
        handler.client.wss_uri = opened["url"]
    except SlackApiError as exc:
        error = str(exc.response.get("error", ""))
        if error in _REFUSED:
            await socket_mode.stop()
            raise ServiceUnavailable(
                f"Slack refused SLACK_APP_TOKEN ({error}): use an app-level token (xapp-…) "
                "with the connections:write scope"
            ) from exc
        log.warning("apps.connections.open failed (%s); Socket Mode keeps retrying", error)
    except Exception as exc:  # network trouble: the client's own loop retries
        log.warning("Slack is not reachable for Socket Mode yet (%s); retrying", exc)
    socket_mode.connect_in_background()
    log.info("Slack Socket Mode enabled")
    return socket_mode
