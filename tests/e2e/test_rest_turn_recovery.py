"""REST turns survive what used to strand them, over real processes: `cosmo serve --workers 0`
for HTTP and `cosmo worker` for the turns. A worker killed mid-turn (kill -9) is replaced
and the Idempotency-Key retry gets the answer; database connections dropped under running
and queued turns leave none of them pending."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_URL
from tests.cosmo_process import cosmo, cosmo_serve, cosmo_worker, embedded_env
from tests.fakes.anthropic_api import FakeAnthropicAPI, RecordedRequest, Reply

TOKEN = "turn-recovery-token"
CONFIG = """
apiVersion: cosmo/v1
personas:
  - name: helper
    role: Assistant
agents:
  - name: durable-bot
    persona: helper
    model: claude-sonnet-4-6
"""
FINISHED = {"completed", "failed", "cancelled"}


class Api:
    def __init__(self, base: str) -> None:
        self.http = httpx.Client(
            base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def session(self) -> str:
        agents = self.http.get("/agents", params={"name": "durable-bot"}).json()["items"]
        r = self.http.post(f"/agents/{agents[0]['id']}/sessions", json={"user_id": "U1"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def chat(self, session_id: str, message: str, key: str) -> httpx.Response:
        return self.http.post(
            f"/sessions/{session_id}/chat",
            json={"message": message},
            headers={"Idempotency-Key": key},
        )

    def turn(self, session_id: str, turn_id: str) -> dict[str, Any] | None:
        """The turn, or None while the database is away (503)."""
        r = self.http.get(f"/sessions/{session_id}/turns/{turn_id}")
        if r.status_code == 503:
            return None
        assert r.status_code == 200, r.text
        return dict(r.json())


def environment(tmp_path: Path, claude: FakeAnthropicAPI, **extra: str) -> dict[str, str]:
    env = embedded_env(
        tmp_path / "data",
        COSMO_API_TOKEN=TOKEN,
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=claude.base_url,
        COSMO_CHAT_WAIT_SECONDS="1",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[Api]:
    cosmo(env, "db", "upgrade")
    with cosmo_serve(env, args=("--workers", "0")) as base:
        api = Api(base)
        r = api.http.post(
            "/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
        )
        assert r.status_code == 200, r.text
        yield api


def test_a_worker_killed_mid_turn_is_replaced_and_the_retry_gets_the_answer(tmp_path: Path):
    with FakeAnthropicAPI() as claude:
        # The first attempt streams for a minute; the rerun answers at once.
        claude.push(Reply.text("slow " * 400).with_options(delta_delay=0.15))
        claude.push(Reply.text("Recovered after the crash."))
        env = environment(tmp_path, claude)
        with serving(env) as api:
            session_id = api.session()
            with cosmo_worker(env, tmp_path / "worker-1.log") as first:
                r = api.chat(session_id, "hello", key="crash-1")
                assert r.status_code == 202, r.text
                turn_id = r.json()["id"]
                claude.wait_for_requests(1, timeout=60)
                first.kill()  # kill -9, mid-stream
                first.wait()

            retry = api.chat(session_id, "hello", key="crash-1")
            assert retry.status_code == 202, retry.text  # still running, never 409
            assert retry.json()["id"] == turn_id

            with cosmo_worker(env, tmp_path / "worker-2.log"):
                deadline = time.monotonic() + 60
                while True:
                    retry = api.chat(session_id, "hello", key="crash-1")
                    assert retry.status_code in (200, 202), retry.text
                    if retry.status_code == 200:
                        break
                    assert time.monotonic() < deadline, "the turn was not resumed"
                    time.sleep(0.5)

            answer = retry.json()
            assert answer["turn_id"] == turn_id
            assert answer["status"] == "completed"
            assert answer["reply"] == "Recovered after the crash."
            assert answer["replayed"] is True
            messages = api.http.get(f"/sessions/{session_id}").json()["messages"]
            replies = [m for m in messages if m["role"] == "assistant"]
            assert len(replies) == 1  # answered exactly once


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_turns_under_dropped_database_connections_all_end(tmp_path: Path, postgres):
    url = postgres.create()
    database = url.rsplit("/", 1)[1]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")

    def slow_answer(request: RecordedRequest) -> Reply:
        return Reply.text(f"answer to {request.last_user_text()}").with_options(
            first_byte_delay=1.5
        )

    def drop_connections() -> int:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all()
            )

    try:
        with FakeAnthropicAPI() as claude:
            claude.respond_with(slow_answer)
            env = environment(tmp_path, claude, DATABASE_URL=url, COSMO_CHAT_WAIT_SECONDS="0")
            with serving(env) as api, cosmo_worker(env, tmp_path / "worker.log") as worker:
                sessions = [api.session() for _ in range(8)]
                turns = []
                for i, session_id in enumerate(sessions):
                    r = api.chat(session_id, f"question {i}", key=f"drop-{i}")
                    assert r.status_code == 202, r.text
                    turns.append((session_id, r.json()["id"]))
                # Four run (the per-agent limit), four wait in the queue.
                claude.wait_for_requests(4, timeout=60)
                # Drop every connection, again and again for three seconds, so claims,
                # heartbeats and turn writes fail midway, not just idle pooled connections.
                dropped = 0
                until = time.monotonic() + 3
                while time.monotonic() < until:
                    dropped += drop_connections()
                    time.sleep(0.05)
                assert dropped > 0

                ended: dict[str, dict[str, Any]] = {}
                deadline = time.monotonic() + 90
                while len(ended) < len(turns):
                    for session_id, turn_id in turns:
                        if turn_id in ended:
                            continue
                        with contextlib.suppress(httpx.TransportError):
                            turn = api.turn(session_id, turn_id)
                            if turn is not None and turn["status"] in FINISHED:
                                ended[turn_id] = turn
                    left = len(turns) - len(ended)
                    assert time.monotonic() < deadline, f"{left} turns never ended"
                    time.sleep(0.5)
                assert worker.poll() is None  # it reconnected and carried on

        for turn in ended.values():
            assert turn["status"] in ("completed", "failed"), turn
            if turn["status"] == "failed":
                assert turn["error"], turn  # a reason, never a silent failure
        completed = [t for t in ended.values() if t["status"] == "completed"]
        assert all(t["reply"] == f"answer to {t['user_message']}" for t in completed)
    finally:
        admin.dispose()
