"""A whole Slack app under test: our server (TestClient), fake Slack, fake Claude, a real
database. Shared by the Slack end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bot.server import create_app
from bot.slack.app import SlackIntegration
from bot.worker import build_worker
from core.config_document import parse_document
from core.db import Database
from core.embeddings.hashing import HashingEmbedder
from core.memory.local import LocalMemory
from core.wiring import Container, build_container
from tests.conftest import make_settings
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.slack_api import BOT_TOKEN, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET, SlackRequests


@dataclass
class SlackApp:
    client: TestClient
    container: Container
    slack: FakeSlackAPI
    claude: FakeAnthropicAPI
    requests: SlackRequests

    def send(self, request: Any) -> Any:
        return request.send(self.client)

    def run_jobs(self) -> int:
        return run_jobs(self.client, self.container)

    def agent_id(self, name: str) -> str:
        return self.container.agents.get_by_name("default", name).id


def portal_of(client: TestClient) -> BlockingPortal:
    """The open TestClient's event loop, where the app's coroutines run."""
    portal = client.portal
    assert portal is not None, "open the TestClient (`with TestClient(app) as client`) first"
    return portal


def slack_of(client: TestClient) -> SlackIntegration:
    """The Slack integration `create_app` put on the app's state."""
    app = client.app
    assert isinstance(app, FastAPI)  # TestClient types it as any ASGI app
    slack: SlackIntegration = app.state.slack
    return slack


def run_jobs(client: TestClient, container: Container) -> int:
    """Do the background work Slack's requests caused, as a worker would: the jobs they
    queued (recording and answering turns) and the jobs those queue, plus what listeners
    spawned (after clicks and commands), until nothing is left. Returns the jobs run."""
    slack = slack_of(client)
    worker = build_worker(container, slack)
    portal = portal_of(client)
    ran = 0
    while True:
        portal.call(slack.runtime.drain)
        now = portal.call(worker.run_until_idle)
        ran += now
        if not now and not slack.runtime.tasks:
            return ran


@contextmanager
def slack_app(
    db: Database,
    tmp_path: Path,
    config: str,
    builtins: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[SlackApp]:
    """A Slack app on the fakes with `config` applied; `builtins` are registered first,
    since a skill naming a built-in function that does not exist is refused."""
    with FakeSlackAPI() as slack, FakeAnthropicAPI() as claude:
        values = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.base_url,
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": claude.base_url,
            "COSMO_WEBHOOK_ALLOW_INSECURE": True,
            # The tests written for the chat.update path keep it; streaming tests turn it on.
            "COSMO_SLACK_STREAMING": False,
            **settings,
        }
        container = build_container(
            make_settings(tmp_path / "data", **values),
            db=db,
            memory=LocalMemory(db, HashingEmbedder()),
        )
        for name, function in (builtins or {}).items():
            container.skill_factory.builtins.register(name, function)
        container.config.apply("default", parse_document(config), actor="test")
        app = create_app(container=container, background=False)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield SlackApp(client, container, slack, claude, SlackRequests(SIGNING_SECRET))


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll until `check()` is truthy; its last value is returned (or the test fails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, "condition not met in time"
            return value
        time.sleep(0.02)
