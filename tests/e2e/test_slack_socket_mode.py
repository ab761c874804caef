"""Socket Mode end to end: our app opens a real WebSocket to a fake Socket Mode server, which
pushes Slack's envelopes; the same Bolt app, listeners and database answer them, and every
envelope is acked on the socket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from bot.server import create_app
from bot.slack.socket_mode import SocketMode, start_socket_mode
from core.errors import ServiceUnavailable
from core.wiring import build_container
from tests.conftest import make_settings
from tests.fakes import slack_methods
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, CHANNEL_ID, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET
from tests.fakes.slack_socket_mode import FakeSocketModeServer
from tests.slack_support import SlackApp, portal_of, slack_app, slack_of

APP_TOKEN = "xapp-1-A0COSMO001-1111-sockettoken"
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: helper, role: Assistant, instructions: "Help {{user_name}}."}]
agents: [{name: helper-bot, persona: helper}]
"""


@pytest.fixture
def socket_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSocketModeServer]:
    with FakeSocketModeServer() as server:
        monkeypatch.setitem(
            slack_methods.HANDLERS, "apps.connections.open", server.connections_open
        )
        yield server


@pytest.fixture
def app(real_db, tmp_path, socket_server) -> Iterator[SlackApp]:
    with slack_app(real_db, tmp_path, CONFIG) as running:
        running.slack.add_token(APP_TOKEN, user_id=BOT_USER_ID)
        yield running


def start(app: SlackApp, app_token: str = APP_TOKEN) -> SocketMode | None:
    settings = app.container.settings.model_copy(update={"slack_app_token": SecretStr(app_token)})
    return portal_of(app.client).call(start_socket_mode, slack_of(app.client), settings)


def thread(app: SlackApp, ts: str) -> list[Any]:
    return [m for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts) if m.ts != ts]


def test_events_over_the_socket_reach_the_same_listeners_and_are_acked(app, socket_server):
    socket_mode = start(app)
    assert socket_mode is not None
    assert socket_mode.app is app.client.app.state.slack.app
    socket_server.wait_connected()
    opened = app.slack.last("apps.connections.open")
    assert opened.token == APP_TOKEN and opened.ok

    app.claude.push(Reply.text("Hello over the socket."))
    mention = app.requests.app_mention(f"<@{BOT_USER_ID}> hi")
    envelope_id = socket_server.send_event(mention.payload)
    assert socket_server.wait_for_ack(envelope_id) == {"envelope_id": envelope_id}
    app.run_jobs()
    ts = mention.payload["event"]["ts"]
    assert [m.text for m in thread(app, ts)] == ["Hello over the socket."]

    # Slack redelivers an envelope it thinks was lost: acked again, answered once.
    again = socket_server.send_event(mention.payload, retry_attempt=1)
    socket_server.wait_for_ack(again)
    app.run_jobs()
    assert len(app.claude.message_requests) == 1
    assert [m.text for m in thread(app, ts)] == ["Hello over the socket."]

    app.client.portal.call(socket_mode.stop)
    socket_server.wait_disconnected()


def test_a_token_slack_refuses_stops_startup_with_a_clear_error(app, socket_server):
    bot_token = app.container.settings.slack_bot_token
    assert bot_token is not None
    with pytest.raises(ServiceUnavailable, match="not_allowed_token_type"):
        start(app, bot_token.get_secret_value())  # a bot token cannot open a socket
    with pytest.raises(ServiceUnavailable, match="invalid_auth"):
        start(app, "xapp-1-unknown")
    assert socket_server.connections == 0


def test_without_an_app_token_there_is_no_socket(app, socket_server):
    slack = app.client.app.state.slack
    assert app.container.settings.slack_app_token is None
    assert app.client.portal.call(start_socket_mode, slack, app.container.settings) is None
    assert app.slack.calls("apps.connections.open") == []


def test_serve_with_an_app_token_connects_in_the_lifespan(real_db, tmp_path, socket_server):
    with FakeSlackAPI() as slack:
        slack.add_token(APP_TOKEN, user_id=BOT_USER_ID)  # known before startup
        settings = make_settings(
            tmp_path / "data",
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_APP_TOKEN=APP_TOKEN,
            SLACK_API_URL=slack.base_url,
        )
        app = create_app(container=build_container(settings, db=real_db), background=False)
        with TestClient(app, raise_server_exceptions=False):
            socket_mode = app.state.socket_mode
            assert isinstance(socket_mode, SocketMode)
            assert socket_mode.app is app.state.slack.app
            socket_server.wait_connected()
        socket_server.wait_disconnected()
