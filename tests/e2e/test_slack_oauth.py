"""Multi-workspace installs end to end: the browser's side of Slack's OAuth flow against our
server, `oauth.v2.access` at the fake Slack, installations in our database, and then signed
events from the installed workspace running under that workspace's tenant and bot token."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from bot.server import create_app
from bot.slack.conversations import session_key
from bot.slack.oauth_tables import BOTS, INSTALLATIONS, SLACK_METADATA
from core.config_document import parse_document
from core.db import Database
from core.embeddings.hashing import HashingEmbedder
from core.memory.local import LocalMemory
from core.settings import DEFAULT_SLACK_SCOPES
from core.wiring import Container, build_container
from tests.conftest import BACKENDS, make_settings
from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply
from tests.fakes.slack_api import (
    BOT_USER_ID,
    CHANNEL_ID,
    CLIENT_ID,
    CLIENT_SECRET,
    TEAM_ID,
    FakeSlackAPI,
)
from tests.fakes.slack_requests import SIGNING_SECRET, SlackRequests
from tests.slack_support import run_jobs

PUBLIC_URL = "https://cosmo.example.com"
REDIRECT_URI = f"{PUBLIC_URL}/slack/oauth_redirect"
COOKIE = "slack-app-oauth-state"
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: helper, role: Assistant, instructions: "Help {{user_name}}."}]
agents: [{name: helper-bot, persona: helper}]
"""

# slack-sdk (3.47) hands aiohttp a BasicAuth for oauth.v2.access, which aiohttp 3.14 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")

installations = SLACK_METADATA.tables[INSTALLATIONS]
bots = SLACK_METADATA.tables[BOTS]


@dataclass
class Server:
    client: TestClient
    container: Container
    slack: FakeSlackAPI
    claude: FakeAnthropicAPI
    db: Database

    def install(self, **code_options: Any) -> str:
        """Walk the installer's browser through /slack/install and back; the bot token."""
        state = self.start_install()
        code = self.slack.issue_oauth_code(redirect_uri=REDIRECT_URI, **code_options)
        page = self.client.get("/slack/oauth_redirect", params={"code": code, "state": state})
        assert page.status_code == 200, page.text
        return str(self.slack.last("oauth.v2.access").response["access_token"])

    def start_install(self) -> str:
        page = self.client.get("/slack/install")
        assert page.status_code == 200, page.text
        return install_state(page.text)

    def run_jobs(self) -> int:
        return run_jobs(self.client, self.container)

    def stored(self) -> list[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(installations)).mappings()]


def authorize_link(html: str) -> dict[str, list[str]]:
    """The query of the page's "Add to Slack" link."""
    found = re.search(r'href="(https://slack\.com/oauth/v2/authorize\?[^"]+)"', html)
    assert found, html
    return parse_qs(urlsplit(unescape(found[1])).query, keep_blank_values=True)


def install_state(html: str) -> str:
    return authorize_link(html)["state"][0]


@pytest.fixture
def server(real_db: Database, tmp_path) -> Iterator[Server]:
    with FakeSlackAPI() as slack, FakeAnthropicAPI() as claude:
        settings = make_settings(
            tmp_path / "data",
            SLACK_CLIENT_ID=CLIENT_ID,
            SLACK_CLIENT_SECRET=CLIENT_SECRET,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.base_url,
            COSMO_PUBLIC_URL=PUBLIC_URL,
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=claude.base_url,
        )
        container = build_container(
            settings, db=real_db, memory=LocalMemory(real_db, HashingEmbedder())
        )
        # Multi-workspace: the tenant is the workspace, so its agents live under its team id.
        container.config.apply(TEAM_ID, parse_document(CONFIG), actor="test")
        app = create_app(container=container, background=False)
        # https: the state cookie is Secure, so the client only sends it back over https.
        with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as c:
            yield Server(c, container, slack, claude, real_db)


def test_the_install_page_links_to_slack_with_our_scopes_and_sets_the_state_cookie(server):
    page = server.client.get("/slack/install")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    query = authorize_link(page.text)
    state = query["state"][0]
    assert query["client_id"] == [CLIENT_ID]
    assert query["scope"] == [DEFAULT_SLACK_SCOPES]
    assert query["redirect_uri"] == [REDIRECT_URI]
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={state};")
    assert "Secure" in cookie and "HttpOnly" in cookie


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_a_workspace_installs_and_its_events_run_under_its_own_tenant_and_token(server):
    state = server.start_install()
    code = server.slack.issue_oauth_code(redirect_uri=REDIRECT_URI)

    page = server.client.get("/slack/oauth_redirect", params={"code": code, "state": state})

    assert page.status_code == 200, page.text
    assert "Thank you!" in page.text
    exchange = server.slack.last("oauth.v2.access")
    assert exchange.ok
    assert exchange.params["code"] == code and exchange.params["redirect_uri"] == REDIRECT_URI
    token = exchange.response["access_token"]
    [row] = server.stored()
    assert (row["client_id"], row["team_id"], row["bot_token"]) == (CLIENT_ID, TEAM_ID, token)
    assert row["bot_user_id"] == BOT_USER_ID

    server.claude.push(Reply.text("Hi from your workspace."))
    mention = SlackRequests(SIGNING_SECRET).app_mention(f"<@{BOT_USER_ID}> hello")
    assert mention.send(server.client).status_code == 200
    server.run_jobs()

    ts = mention.payload["event"]["ts"]
    replies = [m for m in server.slack.messages_in(CHANNEL_ID, thread_ts=ts) if m.ts != ts]
    assert [m.text for m in replies] == ["Hi from your workspace."]
    posts = reply_calls(server)
    assert posts and {p.token for p in posts} == {token}
    session = server.container.sessions.find_by_key(TEAM_ID, session_key(TEAM_ID, CHANNEL_ID, ts))
    assert session is not None and session.tenant_id == TEAM_ID
    assert (
        server.container.sessions.find_by_key("default", session_key(TEAM_ID, CHANNEL_ID, ts))
        is None
    )


@pytest.mark.parametrize(
    ("cookie", "params", "reason"),
    [
        (None, {"code": "c", "state": "s"}, "invalid_browser"),  # no cookie at all
        ("s", {"code": "c", "state": "other"}, "invalid_browser"),  # cookie and state differ
        ("forged", {"code": "c", "state": "forged"}, "invalid_state"),  # never issued
        (None, {"code": "c"}, "invalid_browser"),  # no state parameter
    ],
)
def test_a_bad_or_missing_state_gets_a_400_page_and_no_exchange(server, cookie, params, reason):
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie is not None else {}

    page = server.client.get("/slack/oauth_redirect", params=params, headers=headers)

    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "Something Went Wrong" in page.text and reason in page.text
    assert 'href="/slack/install"' in page.text  # where to start again
    assert server.slack.calls("oauth.v2.access") == []
    assert server.stored() == []


def test_a_state_is_single_use_and_a_refused_code_is_a_400(server):
    state = server.start_install()
    page = server.client.get("/slack/oauth_redirect", params={"code": "nope", "state": state})
    assert page.status_code == 400 and "invalid_code" in page.text  # Slack refused the code
    assert server.slack.last("oauth.v2.access").error == "invalid_code"

    code = server.slack.issue_oauth_code(redirect_uri=REDIRECT_URI)
    replay = server.client.get(
        "/slack/oauth_redirect",
        params={"code": code, "state": state},
        headers={"Cookie": f"{COOKIE}={state}"},  # the failure page cleared the cookie
    )
    assert replay.status_code == 400 and "invalid_state" in replay.text
    assert server.stored() == []


def test_a_cancelled_install_says_so(server):
    state = server.start_install()
    page = server.client.get(
        "/slack/oauth_redirect", params={"error": "access_denied", "state": state}
    )
    assert page.status_code == 200 and "access_denied" in page.text
    assert server.stored() == []


def test_an_event_from_a_workspace_that_never_installed_is_not_processed(server):
    server.install()
    stranger = SlackRequests(SIGNING_SECRET, team_id="T0STRANGER")
    response = stranger.app_mention(f"<@{BOT_USER_ID}> hello").send(server.client)
    server.run_jobs()

    assert response.status_code == 200  # acked, so Slack does not retry it
    assert server.claude.message_requests == []
    assert reply_calls(server) == []


def reply_calls(server: Server) -> list[Any]:
    """The calls that showed a reply (streamed, or posted and edited)."""
    return [c for c in server.slack.calls() if c.method in REPLY_METHODS]


REPLY_METHODS = frozenset(
    {"chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream", "chat.stopStream"}
)


def expire_soon(server: Server) -> None:
    """Ten minutes left on the stored token: inside the refresh window."""
    [row] = server.stored()
    assert row["bot_refresh_token"] and row["bot_token_expires_at"] is not None
    soon = datetime.fromtimestamp(time.time() + 600, UTC).replace(tzinfo=None)  # naive UTC
    with server.db.engine.begin() as conn:
        for table in (installations, bots):
            conn.execute(update(table).values(bot_token_expires_at=soon))


def test_an_incoming_event_refreshes_an_expiring_token_at_our_slack_api_url(server):
    old = server.install(token_rotation=True)
    expire_soon(server)
    server.claude.push(Reply.text("Fresh token."))

    mention = SlackRequests(SIGNING_SECRET).app_mention(f"<@{BOT_USER_ID}> hello")
    assert mention.send(server.client).status_code == 200
    server.run_jobs()

    refresh = server.slack.last("oauth.v2.access")  # at the fake: SLACK_API_URL, not slack.com
    assert refresh.params["grant_type"] == "refresh_token"
    new = refresh.response["access_token"]
    assert new != old
    assert {p.token for p in reply_calls(server)} == {new}


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_background_work_refreshes_a_rotated_token_before_using_it(server):
    old = server.install(token_rotation=True)
    expire_soon(server)  # and no incoming request to refresh it

    clients = server.client.app.state.slack.runtime.clients

    async def three_at_once() -> list[Any]:
        return list(await asyncio.gather(*(clients.for_tenant(TEAM_ID) for _ in range(3))))

    found = server.client.portal.call(three_at_once)

    [refresh] = server.slack.calls("oauth.v2.access")[1:]  # one refresh, not three
    assert refresh.params["grant_type"] == "refresh_token"
    new = refresh.response["access_token"]
    assert {c.token for c in found} == {new} and new != old
    client = found[0]
    assert max(server.stored(), key=lambda r: r["installed_at"])["bot_token"] == new
    posted = server.client.portal.call(
        lambda: client.chat_postMessage(channel=CHANNEL_ID, text="still here")
    )
    assert posted["ok"]
    # Not expiring any more: the next lookup uses the saved token without another refresh.
    again = server.client.portal.call(clients.for_tenant, TEAM_ID)
    assert again.token == new
    assert len(server.slack.calls("oauth.v2.access")) == 2


def test_a_workspace_without_an_installation_gets_no_client(server):
    clients = server.client.app.state.slack.runtime.clients
    oauth_lookup = clients.installation_lookup
    assert server.client.portal.call(oauth_lookup, "T0NOBODY") is None
