"""REST turns run as jobs: chat waits for the worker up to a bound, then answers 202 with
the turn to poll; an Idempotency-Key replay never answers 409 for good; a turn can be
cancelled, queued (at once) or running (its model stream stops)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.server import create_app
from core.agent.turn_job import job_key
from core.db import Database
from core.embeddings.hashing import HashingEmbedder
from core.memory.local import LocalMemory
from core.settings import Settings
from core.wiring import Container, build_container
from tests.conftest import AUTH, make_settings
from tests.fakes.anthropic_api import Reply
from tests.job_support import running_worker

CONFIG = """
apiVersion: cosmo/v1
personas:
  - name: helper
    role: Assistant
skills:
  - name: current_time
    description: Current time in UTC.
    kind: read
agents:
  - name: turn-bot
    persona: helper
    model: claude-sonnet-4-6
    skills: [current_time]
"""
#: A reply that streams for about a minute unless its reader goes away.
SLOW = Reply.text("word " * 400).with_options(delta_delay=0.15)


@pytest.fixture
def turn_settings(tmp_path: Path, fake_claude) -> Settings:
    # No waiting: every chat answers 202 unless the turn already ended, so each test
    # decides when the worker runs.
    return make_settings(
        tmp_path / "data",
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=fake_claude.base_url,
        COSMO_CHAT_WAIT_SECONDS=0,
    )


@pytest.fixture
def turn_container(db: Database, turn_settings: Settings) -> Container:
    return build_container(turn_settings, db=db, memory=LocalMemory(db, HashingEmbedder()))


@pytest.fixture
def api(turn_container: Container) -> Iterator[TestClient]:
    """The API without a worker: turns stay queued until a test starts one."""
    app = create_app(container=turn_container, background=False)
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def session_id(api: TestClient) -> str:
    r = api.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    agent = api.get("/api/v1/agents", params={"name": "turn-bot"}).json()["items"][0]
    r = api.post(f"/api/v1/agents/{agent['id']}/sessions", json={"user_id": "U1"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def send(api: TestClient, session_id: str, message: str, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return api.post(
        f"/api/v1/sessions/{session_id}/chat", json={"message": message}, headers=headers
    )


def turn_until(api: TestClient, url: str, *statuses: str, within: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        r = api.get(url)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"turn still {body['status']}"
        time.sleep(0.05)


def history_of(api: TestClient, session_id: str, turn_id: str) -> list[dict[str, Any]]:
    messages = api.get(f"/api/v1/sessions/{session_id}").json()["messages"]
    return [m for m in messages if m["turn_id"] == turn_id]


def test_a_turn_still_running_at_the_bound_is_a_202_with_the_turn_to_poll(
    api, turn_container, fake_claude, session_id
):
    fake_claude.push(Reply.text("Here you are."))
    r = send(api, session_id, "hello", key="k-202")

    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "pending"
    assert accepted["job_state"] == "queued"
    assert accepted["job_id"].startswith("job")
    location = r.headers["location"]
    assert location.endswith(f"/api/v1/sessions/{session_id}/turns/{accepted['id']}")

    with running_worker(api, turn_container):
        done = turn_until(api, location, "completed")
    assert done["reply"] == "Here you are."
    assert api.get(location).json()["job_state"] == "succeeded"  # the worker has stopped

    again = send(api, session_id, "hello", key="k-202")
    assert again.status_code == 200, again.text
    assert again.json()["turn_id"] == accepted["id"]
    assert again.json()["reply"] == "Here you are."
    assert again.json()["replayed"] is True
    assert len(fake_claude.message_requests) == 1


def test_a_replay_while_the_turn_runs_is_a_202_not_a_409(api, fake_claude, session_id):
    first = send(api, session_id, "hello", key="k-busy")
    assert first.status_code == 202

    again = send(api, session_id, "hello", key="k-busy")

    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]


def test_a_turn_left_without_a_job_is_answered_when_the_key_is_repeated(
    api, turn_container, fake_claude, session_id
):
    # What a process killed mid-turn left behind before turns were jobs: a pending turn
    # that nothing would ever run, and every retry answered 409 "still running".
    orphan, _ = turn_container.sessions.begin_turn(
        "default", session_id, user_id="U1", user_message="hello", dedupe_key="api:k-orphan"
    )
    fake_claude.push(Reply.text("Answered at last."))

    with running_worker(api, turn_container):
        r = send(api, session_id, "hello", key="k-orphan")
        assert r.status_code in (200, 202), r.text
        done = turn_until(api, f"/api/v1/sessions/{session_id}/turns/{orphan.id}", "completed")

    assert done["reply"] == "Answered at last."
    assert send(api, session_id, "hello", key="k-orphan").json()["replayed"] is True


def test_the_chat_answers_200_when_the_turn_ends_within_the_bound(
    claude_client, fake_claude, session_id
):
    # claude_client waits the default 120 s; its worker answers at once.
    fake_claude.push(Reply.text("Quick."))
    r = send(claude_client, session_id, "hi")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    assert r.json()["reply"] == "Quick."


def test_cancelling_a_queued_turn_ends_it_at_once(api, fake_claude, session_id):
    accepted = send(api, session_id, "never mind").json()

    r = api.post(f"/api/v1/sessions/{session_id}/turns/{accepted['id']}/cancel")

    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["job_state"] == "cancelled"
    assert r.json()["cancel_requested"] is False
    shown = api.get(f"/api/v1/sessions/{session_id}/turns/{accepted['id']}").json()
    assert shown["status"] == "cancelled"
    assert history_of(api, session_id, accepted["id"]) == []
    assert fake_claude.message_requests == []


def test_cancelling_a_running_turn_stops_its_model_stream(
    api, turn_container, fake_claude, session_id
):
    fake_claude.push(SLOW)
    accepted = send(api, session_id, "write me an essay").json()
    url = f"/api/v1/sessions/{session_id}/turns/{accepted['id']}"

    with running_worker(api, turn_container):
        fake_claude.wait_for_requests(1, timeout=20)
        turn_until(api, url, "running")
        r = api.post(f"{url}/cancel")
        assert r.status_code == 200, r.text
        asked = r.json()
        assert asked["status"] == "cancelled" or asked["cancel_requested"] is True

        ended = turn_until(api, url, "cancelled", within=10)
        fake_claude.wait_for_hang_ups(1, timeout=10)

    assert api.get(url).json()["job_state"] == "cancelled"
    assert ended["error"] == "cancelled on request"
    assert ended["reply"] is None
    assert history_of(api, session_id, accepted["id"]) == []


def test_cancelling_a_finished_turn_is_a_409(claude_client, fake_claude, session_id):
    fake_claude.push(Reply.text("Done."))
    turn = send(claude_client, session_id, "hi").json()

    r = claude_client.post(f"/api/v1/sessions/{session_id}/turns/{turn['turn_id']}/cancel")

    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert "already ended (completed)" in r.json()["detail"]


def test_another_tenants_turn_is_not_found(api, session_id):
    accepted = send(api, session_id, "hi").json()
    url = f"/api/v1/sessions/{session_id}/turns/{accepted['id']}"
    other = {"X-Cosmo-Tenant": "T-other"}

    assert api.get(url, headers=other).status_code == 404
    assert api.post(f"{url}/cancel", headers=other).status_code == 404
    assert api.get(url).json()["status"] == "pending"  # untouched


def test_a_turn_is_only_found_under_its_own_session(api, session_id):
    accepted = send(api, session_id, "hi").json()
    agent_id = api.get(f"/api/v1/sessions/{session_id}").json()["session"]["agent_id"]
    other = api.post(f"/api/v1/agents/{agent_id}/sessions", json={}).json()["id"]

    url = f"/api/v1/sessions/{other}/turns/{accepted['id']}"
    assert api.get(url).status_code == 404
    assert api.post(f"{url}/cancel").status_code == 404


def test_a_turn_whose_agent_was_deactivated_fails_once_with_the_reason(
    api, turn_container, fake_claude, session_id
):
    accepted = send(api, session_id, "hi").json()
    agent_id = api.get(f"/api/v1/sessions/{session_id}").json()["session"]["agent_id"]
    assert api.patch(f"/api/v1/agents/{agent_id}", json={"is_active": False}).status_code == 200

    with running_worker(api, turn_container):
        url = f"/api/v1/sessions/{session_id}/turns/{accepted['id']}"
        failed = turn_until(api, url, "failed")

    assert "inactive" in failed["error"]
    job = turn_container.jobs.find(job_key(accepted["id"]))
    assert job is not None
    assert job.state == "dead"
    assert job.attempt == 1
    assert "inactive" in (job.error or "")
    assert fake_claude.message_requests == []


def test_without_slack_a_rest_turns_output_is_flagged_unrouted(api, turn_container, fake_claude):
    """Seen: such an output reached nobody, yet nothing said so. Without Slack configured
    nothing can post it: it is `unrouted` (decide it over REST), never passed off as sent."""
    config = """
apiVersion: cosmo/v1
personas: [{name: helper, role: Assistant}]
skills:
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}}, required: [to]}
agents:
  - {name: mail-bot, persona: helper, skills: [draft_email], approvers: [U0LEAD]}
"""
    r = api.post(
        "/api/v1/agents/import", content=config, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    agent = api.get("/api/v1/agents", params={"name": "mail-bot"}).json()["items"][0]
    session = api.post(f"/api/v1/agents/{agent['id']}/sessions", json={"user_id": "U1"}).json()
    fake_claude.push(Reply.tool_use("draft_email", {"to": "ana@example.com"}), Reply.text("Done."))
    accepted = send(api, session["id"], "draft it").json()

    with running_worker(api, turn_container):
        turn_until(api, f"/api/v1/sessions/{session['id']}/turns/{accepted['id']}", "completed")

    [output] = api.get("/api/v1/outputs", params={"session_id": session["id"]}).json()["items"]
    assert output["slack_status"] == "unrouted"
    assert api.get("/readyz").json()["unrouted_outputs"] == 1
