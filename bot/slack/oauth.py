"""Multi-workspace installs: Slack's OAuth flow, with installations kept in our database.

`/slack/install` hands the installer a state cookie and the "Add to Slack" link;
`/slack/oauth_redirect` checks the state, exchanges the code with `oauth.v2.access` and stores
the installation. From then on each workspace (team id) is its own tenant: Bolt authorizes
incoming requests with that workspace's bot token, and `SlackOAuth.client_for` gives
background work (turn recovery, decisions made over REST or webhooks) the same token.

The stores are slack-sdk's SQLAlchemy ones over *our* sync engine (the tables come from
migration 0004), each call run in a worker thread. slack-sdk's async SQLAlchemy stores would
need a second, async engine and driver (aiosqlite is not installed, and SQLite needs the
pragmas and `BEGIN IMMEDIATE` that `core.db.make_engine` sets up); one engine keeps one pool,
one set of connection settings and one place to point `DATABASE_URL` at.

Token rotation: Bolt refreshes an expiring token only while authorizing an incoming request.
Work that starts without one (a REST approval, the recovery sweep) goes through `client_for`,
which refreshes first and saves the new token, so it never posts with an expired one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.error import BoltError
from slack_bolt.oauth.async_callback_options import (
    AsyncCallbackOptions,
    AsyncFailureArgs,
    AsyncSuccessArgs,
    DefaultAsyncCallbackOptions,
)
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth import OAuthStateUtils, RedirectUriPageRenderer
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import Engine, delete

from bot.slack.oauth_tables import BOTS, INSTALLATIONS, OAUTH_STATES
from core.concurrency import run_sync
from core.db.database import READ_ONLY
from core.settings import Settings

log = logging.getLogger("cosmo.slack.oauth")
bolt_log = logging.getLogger("slack_bolt.oauth")

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_TTL_SECONDS = OAuthStateUtils.default_expiration_seconds
REFRESH_MINUTES_BEFORE_EXPIRY = 120
"""Slack's rotating bot tokens live 12 hours; refresh when less than this is left."""

# Why the installer landed on the failure page -> the status that says so. Bolt suggests 401
# for a bad state or code; nothing here is about credentials, the request itself is bad.
_FAILURE_STATUS = {
    "invalid_browser": 400,  # no state cookie, or it does not match the state parameter
    "invalid_state": 400,  # unknown, expired or already used state
    "missing_code": 400,
    "invalid_code": 400,  # Slack refused to exchange the code
    "storage_error": 500,
}

ClientFactory = Callable[[str | None], AsyncWebClient]
"""Builds a Web API client for a token (our base URL and retry handlers)."""


class ThreadedInstallationStore(AsyncInstallationStore):
    """slack-sdk's `SQLAlchemyInstallationStore` behind the async interface Bolt wants.

    Lookups run on a read-only view of the engine, so on SQLite they never queue behind a
    writer; saves wrap database errors in `BoltError`, which Bolt's OAuth flow turns into its
    `storage_error` page instead of a 500 with a traceback.
    """

    def __init__(self, client_id: str, engine: Engine) -> None:
        self.client_id = client_id
        self._writer = SQLAlchemyInstallationStore(
            client_id, engine, bots_table_name=BOTS, installations_table_name=INSTALLATIONS
        )
        self._reader = SQLAlchemyInstallationStore(
            client_id,
            engine.execution_options(**{READ_ONLY: True}),
            bots_table_name=BOTS,
            installations_table_name=INSTALLATIONS,
        )

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_save(self, installation: Installation) -> None:
        await self._write(self._writer.save, installation)

    async def async_save_bot(self, bot: Bot) -> None:
        await self._write(self._writer.save_bot, bot)

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        found: Bot | None = await run_sync(
            lambda: self._reader.find_bot(
                enterprise_id=enterprise_id,
                team_id=team_id,
                is_enterprise_install=is_enterprise_install,
            )
        )
        return found

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        found: Installation | None = await run_sync(
            lambda: self._reader.find_installation(
                enterprise_id=enterprise_id,
                team_id=team_id,
                user_id=user_id,
                is_enterprise_install=is_enterprise_install,
            )
        )
        return found

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await run_sync(
            lambda: self._writer.delete_bot(enterprise_id=enterprise_id, team_id=team_id)
        )

    async def async_delete_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
    ) -> None:
        await run_sync(
            lambda: self._writer.delete_installation(
                enterprise_id=enterprise_id, team_id=team_id, user_id=user_id
            )
        )

    async def _write(self, save: Callable[[Any], None], value: Any) -> None:
        try:
            await run_sync(save, value)
        except Exception as exc:
            log.exception("saving a Slack installation failed")
            raise BoltError(f"could not save the installation: {type(exc).__name__}") from exc


class ThreadedOAuthStateStore(AsyncOAuthStateStore):
    """slack-sdk's `SQLAlchemyOAuthStateStore` behind the async interface, run in a thread.

    States are single use (consuming deletes the row); issuing also deletes expired ones, so
    visits that never came back from Slack do not pile up."""

    def __init__(self, engine: Engine, expiration_seconds: int = STATE_TTL_SECONDS) -> None:
        self._store = SQLAlchemyOAuthStateStore(
            expiration_seconds=expiration_seconds, engine=engine, table_name=OAUTH_STATES
        )
        self._engine = engine

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        return await run_sync(self._issue)

    async def async_consume(self, state: str) -> bool:
        consumed: bool = await run_sync(self._store.consume, state)
        return consumed

    def _issue(self) -> str:
        state: str = self._store.issue()
        table = self._store.oauth_states
        now = datetime.now(UTC).replace(tzinfo=None)  # the column is naive UTC
        with self._engine.begin() as conn:
            conn.execute(delete(table).where(table.c.expire_at < now))
        return state


@dataclass
class SlackOAuth:
    """The OAuth settings handed to Bolt, and token lookups for work outside a request."""

    settings: AsyncOAuthSettings
    installations: ThreadedInstallationStore
    rotator: AsyncTokenRotator
    make_client: ClientFactory
    refresh_minutes: int = REFRESH_MINUTES_BEFORE_EXPIRY
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict, repr=False)

    async def client_for(self, tenant_id: str) -> AsyncWebClient | None:
        """A client with the workspace's bot token, refreshed first if it is about to expire;
        None when the workspace has not installed the app (or has no bot token)."""
        installation = await self._find(tenant_id)
        if installation is not None and self._expiring(installation):
            # One refresh per workspace at a time: Slack's refresh tokens are single use.
            async with self._locks.setdefault(tenant_id, asyncio.Lock()):
                installation = await self._find(tenant_id)  # refreshed while we waited?
                if installation is not None and self._expiring(installation):
                    installation = await self._refreshed(installation)
        if installation is None or installation.bot_token is None:
            return None
        return self.make_client(installation.bot_token)

    async def _find(self, tenant_id: str) -> Installation | None:
        return await self.installations.async_find_installation(
            enterprise_id=None, team_id=tenant_id
        )

    def _expiring(self, installation: Installation) -> bool:
        expires_at = installation.bot_token_expires_at
        return (
            installation.bot_refresh_token is not None
            and expires_at is not None
            and expires_at <= time.time() + self.refresh_minutes * 60
        )

    async def _refreshed(self, installation: Installation) -> Installation:
        try:
            refreshed = await self.rotator.perform_token_rotation(
                installation=installation, minutes_before_expiration=self.refresh_minutes
            )
        except SlackTokenRotationError:
            # Another process (or Bolt, for an incoming event) refreshed it first and used up
            # the refresh token: what it saved is the current token.
            log.warning("refreshing the bot token of %s failed; rereading it", installation.team_id)
            current = await self.installations.async_find_installation(
                enterprise_id=None, team_id=installation.team_id
            )
            return current if current is not None and current.bot_token else installation
        if refreshed is None:
            return installation
        await self.installations.async_save(refreshed)
        return refreshed


def build_oauth(settings: Settings, engine: Engine, make_client: ClientFactory) -> SlackOAuth:
    """OAuth settings from `SLACK_CLIENT_ID`, `SLACK_CLIENT_SECRET`, `SLACK_SCOPES` and, when
    set, `COSMO_PUBLIC_URL` (which fixes the redirect URL Slack sends installers back to)."""
    if settings.slack_client_id is None or settings.slack_client_secret is None:
        raise ValueError("OAuth needs SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
    client_id = settings.slack_client_id
    client_secret = settings.slack_client_secret.get_secret_value()
    installations = ThreadedInstallationStore(client_id, engine)
    redirect_uri = settings.public_url.rstrip("/") + REDIRECT_PATH if settings.public_url else None
    oauth_settings = AsyncOAuthSettings(
        client_id=client_id,
        client_secret=client_secret,
        scopes=settings.slack_scope_list,
        user_scopes=[],
        redirect_uri=redirect_uri,
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        installation_store=installations,
        installation_store_bot_only=False,
        token_rotation_expiration_minutes=REFRESH_MINUTES_BEFORE_EXPIRY,
        state_store=ThreadedOAuthStateStore(engine),
        state_expiration_seconds=STATE_TTL_SECONDS,
        logger=bolt_log,
    )
    # Bolt's default authorize refreshes rotated tokens through a client on slack.com; ours
    # uses SLACK_API_URL like every other call. It caches `auth.test` per token (a rotated
    # token is a new key), so an event costs one indexed lookup, not an extra HTTP call.
    rotation_client = make_client(None)
    oauth_settings.authorize = AsyncInstallationStoreAuthorize(
        logger=bolt_log,
        installation_store=installations,
        client_id=client_id,
        client_secret=client_secret,
        token_rotation_expiration_minutes=REFRESH_MINUTES_BEFORE_EXPIRY,
        cache_enabled=True,
        client=rotation_client,
    )
    oauth_settings.callback_options = _callback_options(oauth_settings)
    rotator = AsyncTokenRotator(
        client_id=client_id, client_secret=client_secret, client=rotation_client
    )
    return SlackOAuth(oauth_settings, installations, rotator, make_client)


def _callback_options(settings: AsyncOAuthSettings) -> AsyncCallbackOptions:
    """Bolt's success and failure pages, with a 4xx for a bad state or code instead of 401."""
    default = DefaultAsyncCallbackOptions(
        logger=bolt_log,
        state_utils=settings.state_utils,
        redirect_uri_page_renderer=RedirectUriPageRenderer(
            install_path=settings.install_path, redirect_uri_path=settings.redirect_uri_path
        ),
    )

    async def success(args: AsyncSuccessArgs) -> BoltResponse:
        installation = args.installation
        log.info(
            "Slack workspace %s (%s) installed the app",
            installation.team_id,
            installation.team_name,
        )
        return await default.success(args)

    async def failure(args: AsyncFailureArgs) -> BoltResponse:
        status = _FAILURE_STATUS.get(args.reason, args.suggested_status_code)
        # `reason` can come from the query string (`?error=...`): quoted and cut short.
        log.warning("Slack install failed: %r (answered %d)", args.reason[:100], status)
        response = await default.failure(args)
        response.status = status
        return response

    return AsyncCallbackOptions(success=success, failure=failure)
