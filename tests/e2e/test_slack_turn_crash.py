"""Slack turns survive dead processes: real `cosmo serve --workers 0` and `cosmo worker`
processes on one SQLite database, killed with SIGKILL; Slack and Claude are local fakes.

The deadlines below are functional bounds (a takeover happens within a lease, ~16 s), not
timing claims: bench/jobs.py measures those."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.cosmo_process import cosmo_background, cosmo_serve_process
from tests.fakes.anthropic_api import FakeAnthropicAPI, RecordedRequest, Reply
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET, SlackRequests
from tests.server_support import process_env
from tests.slack_support import eventually

TOKEN = "crash-token"
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: helper, role: Assistant}]
agents: [{name: helper-bot, persona: helper}]
"""
#: Generous: a dead worker's job is free after its 15 s lease and claimed at the next poll.
TAKEOVER_DEADLINE = 45.0


class Gate:
    """Claude's answers wait here until the test opens the gate (a stopping fake opens it)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.open = threading.Event()

    def __call__(self, _request: RecordedRequest) -> Reply:
        self.open.wait(60)
        return Reply.text(self.answer)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlackAPI, FakeAnthropicAPI]]:
    with FakeSlackAPI() as slack, FakeAnthropicAPI() as claude:
        yield slack, claude


def environment(tmp_path: Path, slack: FakeSlackAPI, claude: FakeAnthropicAPI) -> dict[str, str]:
    return process_env(
        tmp_path / "data",
        slack,
        claude,
        COSMO_API_TOKEN=TOKEN,
        COSMO_SLACK_STREAMING="false",  # these tests follow the chat.update placeholder
    )


def import_config(base: str) -> None:
    r = httpx.post(
        f"{base}/api/v1/agents/import",
        content=CONFIG,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/yaml"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def mention(base: str, text_: str) -> str:
    request = SlackRequests(SIGNING_SECRET).app_mention(f"<@{BOT_USER_ID}> {text_}")
    r = httpx.post(f"{base}/slack/events", content=request.body, headers=request.headers)
    assert r.status_code == 200, r.text
    return str(request.payload["event"]["ts"])


def bot_messages(slack: FakeSlackAPI, ts: str) -> list[Any]:
    return [m for m in slack.messages_in(CHANNEL_ID, thread_ts=ts) if m.user == BOT_USER_ID]


def turn_rows(tmp_path: Path) -> list[tuple[str, str | None]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'cosmo.db'}")
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT status, reply FROM turns"))]
    finally:
        engine.dispose()


def turn_job_owner(tmp_path: Path) -> int:
    """The pid of the worker holding the running `slack.turn` job (owner is host:pid:tag)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'cosmo.db'}")
    try:
        with engine.connect() as conn:
            owner = conn.scalar(
                text("SELECT lease_owner FROM jobs WHERE kind = 'slack.turn' AND state = 'running'")
            )
    finally:
        engine.dispose()
    assert owner, "no worker holds the turn"
    return int(str(owner).split(":")[1])


def test_an_acked_event_is_answered_by_a_worker_started_after_the_server_died(tmp_path, fakes):
    slack, claude = fakes
    gate = Gate("Answered by the worker.")
    claude.respond_with(gate)
    env = environment(tmp_path, slack, claude)
    try:
        with cosmo_serve_process(env, args=["--workers", "0"]) as (base, server):
            import_config(base)
            ts = mention(base, "are you there?")
            # Whatever the server would do with it on its own has a moment to start.
            with contextlib.suppress(TimeoutError):
                claude.wait_for_requests(1, timeout=2)
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
        gate.open.set()
        with cosmo_background(env, "worker", log=tmp_path / "worker.log"):
            answered = eventually(
                lambda: [m for m in bot_messages(slack, ts) if m.text == gate.answer],
                timeout=TAKEOVER_DEADLINE,
            )
        assert len(answered) == 1
        assert [m.text for m in bot_messages(slack, ts)] == [gate.answer]
        assert turn_rows(tmp_path) == [("completed", gate.answer)]
    finally:
        gate.open.set()


def test_a_worker_killed_mid_turn_is_taken_over_and_the_same_placeholder_answers(tmp_path, fakes):
    slack, claude = fakes
    stuck = Gate("never shown")
    answer = "Answered after the takeover."
    claude_calls: list[int] = []

    def first_then_answer(request: RecordedRequest) -> Reply:
        claude_calls.append(1)
        if len(claude_calls) == 1:
            return stuck(request)  # the first attempt hangs at the model until it is killed
        return Reply.text(answer)

    claude.respond_with(first_then_answer)
    env = environment(tmp_path, slack, claude)
    try:
        with (
            cosmo_serve_process(env, args=["--workers", "0"]) as (base, _server),
            cosmo_background(env, "worker", log=tmp_path / "worker-1.log") as one,
            cosmo_background(env, "worker", log=tmp_path / "worker-2.log") as two,
        ):
            import_config(base)
            ts = mention(base, "take your time")
            claude.wait_for_requests(1, timeout=60)
            (placeholder,) = eventually(lambda: bot_messages(slack, ts), timeout=30)
            holder = {one.pid: one, two.pid: two}[turn_job_owner(tmp_path)]
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
            eventually(lambda: bot_messages(slack, ts)[0].text == answer, timeout=TAKEOVER_DEADLINE)
        posts = [
            c
            for c in slack.calls("chat.postMessage")
            if c.params.get("thread_ts") == ts and c.params.get("channel") == CHANNEL_ID
        ]
        assert len(posts) == 1  # the placeholder, and nothing after it
        (only,) = bot_messages(slack, ts)
        assert only.ts == placeholder.ts and only.text == answer
        updates = [c for c in slack.calls("chat.update") if c.params.get("ts") == placeholder.ts]
        assert any(c.params.get("text") == answer for c in updates)
        assert len(claude.message_requests) == 2
        assert turn_rows(tmp_path) == [("completed", answer)]
    finally:
        stuck.open.set()
