"""The SDK adapter (`core/agent/anthropic_client.py`) in a turn: REST in, the real anthropic
SDK against the fake Messages API. What lives at the wire is tested here: streaming, error
mapping, the SDK's retries and prompt caching. The engine's own logic runs on a scripted
model in tests/integration/test_agent_engine.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from core.agent.model import ModelOnFirstUse
from core.config_document import parse_document
from core.sessions.models import SessionView
from core.wiring import Container
from tests.fakes.anthropic_api import Reply

CONFIG = """
apiVersion: cosmo/v1
personas:
  - name: plain
    role: Assistant
agents:
  - name: plain-bot
    persona: plain
    model: claude-sonnet-4-6
"""


@pytest.fixture
def session(claude_container: Container) -> SessionView:
    claude_container.config.apply("default", parse_document(CONFIG), actor="test")
    bot = claude_container.agents.get_by_name("default", "plain-bot")
    return claude_container.sessions.start("default", bot.id, user_id="U123")


def chat(client, session_id: str, message: str) -> dict[str, Any]:
    r = client.post(f"/api/v1/sessions/{session_id}/chat", json={"message": message})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_text_streams_to_the_caller_as_it_arrives(claude_container, fake_claude, session):
    agent = await claude_container.runner.agent("default", session.agent_id)
    fake_claude.push(Reply.text("A fairly long answer that arrives in several pieces."))
    chunks: list[str] = []

    async def on_text(text: str) -> None:
        chunks.append(text)

    result = await agent.chat(session, "tell me", on_text=on_text)

    assert fake_claude.message_requests[0].stream is True
    assert len(chunks) > 3
    assert "".join(chunks) == result.reply


def test_history_is_replayed_and_the_second_turn_reads_the_cache(
    claude_client, fake_claude, session
):
    fake_claude.push(Reply.text("First answer."), Reply.text("Second answer."))
    first = chat(claude_client, session.id, "question one")
    second = chat(claude_client, session.id, "question two")

    replay = fake_claude.message_requests[1].messages
    assert [m["role"] for m in replay] == ["user", "assistant", "user"]
    assert first["usage"]["cache_write_tokens"] > 0
    assert second["usage"]["cache_read_tokens"] > 0


def test_a_refused_api_key_fails_the_turn_once_with_a_clear_message(
    claude_client, fake_claude, session
):
    fake_claude.push(Reply.error(401, "authentication_error", "invalid x-api-key"))

    body = chat(claude_client, session.id, "hi")

    assert body["status"] == "failed"
    assert "API key was refused" in body["reply"]
    assert len(fake_claude.message_requests) == 1
    turn = claude_client.get(f"/api/v1/sessions/{session.id}").json()["turns"][0]
    assert turn["status"] == "failed"
    assert claude_client.get(f"/api/v1/sessions/{session.id}").json()["messages"] == []


def test_a_spend_limit_is_not_retried(claude_client, fake_claude, session):
    fake_claude.push(
        Reply.error(
            429,
            "rate_limit_error",
            "spend limit reached",
            retry_after=0.01,
            details={"error_code": "enforced_spend_limit_reached"},
        ),
        Reply.text("never sent"),
    )

    body = chat(claude_client, session.id, "hi")

    assert body["status"] == "failed"
    assert "usage limit" in body["reply"]
    assert len(fake_claude.message_requests) == 1


def test_an_overloaded_api_is_retried_by_the_sdk(claude_client, fake_claude, session):
    fake_claude.push(
        Reply.error(529, "overloaded_error", "Overloaded", retry_after=0.01),
        Reply.text("Back again."),
    )

    body = chat(claude_client, session.id, "hi")

    assert body["reply"] == "Back again."
    assert len(fake_claude.message_requests) == 2


SERVE_THEN_WORKER = """
import sys
from bot.server import create_app
from bot.worker.runtime import build_worker
from core.settings import Settings

settings = Settings()
app = create_app(settings, background=False)  # what `cosmo serve` builds
print("serve", "anthropic" in sys.modules)
app = create_app(settings)  # a process that runs jobs
print("worker", "anthropic" in sys.modules)
"""


def test_only_a_process_that_runs_turns_imports_the_sdk_and_it_does_so_at_start(tmp_path):
    """`cosmo serve` never calls Claude; its replicas should not spend a second of CPU
    importing the SDK. A process with a job worker builds the client as the worker is made,
    not on its first turn's event loop."""
    env = {
        **os.environ,
        "COSMO_DATA_DIR": str(tmp_path),
        "ANTHROPIC_API_KEY": "sk-test",
        "COSMO_EMBEDDER": "hashing",
    }
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", SERVE_THEN_WORKER],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["serve", "False", "worker", "True"]


def test_the_client_is_built_once_however_many_turns_ask_for_it_first():
    built: list[object] = []

    def factory() -> Any:
        built.append(object())
        return built[-1]

    model = ModelOnFirstUse(factory)
    start = threading.Barrier(8)

    def first_turn(_: int) -> object:
        start.wait()
        return model.build()

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(first_turn, range(8)))

    assert len(built) == 1
    assert seen == built * 8
