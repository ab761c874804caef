"""200 reviewers click at once through every entry point; exactly one decision wins.

A real uvicorn server on a real database (each backend); decisions arrive concurrently
over HTTP through `POST /outputs/{id}/approve|reject` and the approval callback.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from bot.server import create_app
from core.config_document import parse_document
from core.db.ids import new_id
from core.db.models import WebhookDeliveryRow
from core.outputs.port import NewOutput
from core.skills.runtime import SkillResult
from core.wiring import build_container
from tests.conftest import AUTH, BACKENDS, make_settings

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: r}]
skills:
  - {name: create_task, description: d, kind: action, is_automatable: true}
agents:
  - name: bot
    persona: p
    skills: [create_task]
    webhook: {url: "https://hooks.example.com/x", secret_env: HOOK}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_two_hundred_racing_decisions_yield_one_decision_one_execution_one_event(real_db, tmp_path):
    container = build_container(make_settings(tmp_path), db=real_db)
    executions: list[dict[str, Any]] = []

    async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        executions.append(arguments)
        return SkillResult("done")

    container.skill_factory.builtins.register("create_task", create_task)
    container.config.apply("default", parse_document(CONFIG), actor="test")
    agent = container.agents.get_by_name("default", "bot")
    session = container.sessions.start("default", agent.id, user_id="U0REQ")
    new = NewOutput(
        id=new_id("out"),
        tenant_id="default",
        agent_id=agent.id,
        session_id=session.id,
        skill="create_task",
        is_automatable=True,
        arguments={},
        content="do it",
        requested_by="U0REQ",
    )
    assert agent.webhook is not None
    created_events = container.events.created(agent.webhook.url, new)
    container.outputs.create(new, created_events)
    token = created_events[0].payload["data"]["approvalToken"]

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(container=container), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}/api/v1"
    barrier = threading.Barrier(200)
    results: list[tuple[str, int, dict[str, Any]]] = []
    lock = threading.Lock()

    def reviewer(i: int) -> None:
        rng = random.Random(i)
        kind = ("rest-approve", "rest-reject", "callback-approve", "callback-reject")[i % 4]
        user = f"U{i:04d}"
        with httpx.Client(timeout=60) as http:
            barrier.wait()
            time.sleep(rng.random() * 0.01)
            if kind == "rest-approve":
                r = http.post(
                    f"{base}/outputs/{new.id}/approve", json={"user_id": user}, headers=AUTH
                )
            elif kind == "rest-reject":
                r = http.post(
                    f"{base}/outputs/{new.id}/reject",
                    json={"user_id": user, "reason": "no"},
                    headers=AUTH,
                )
            else:
                decision = kind.split("-")[1]
                r = http.post(
                    f"{base}/webhooks/approval",
                    json={
                        "approvalToken": token,
                        "decision": decision,
                        "userId": user,
                        "reason": "no",
                    },
                )
        with lock:
            results.append((kind, r.status_code, r.json()))

    threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.should_exit = True
    thread.join(timeout=10)

    assert len(results) == 200
    statuses = Counter(code for _, code, _ in results)
    assert set(statuses) <= {200, 409}, statuses
    applied = [r for _, code, r in results if code == 200 and r.get("applied") is True]
    assert len(applied) == 1, applied
    final = container.outputs.get("default", new.id)
    winner = final.decided_by
    for _kind, code, body in results:
        if code == 409:
            assert body["decided_by"] == winner
        elif "output" in body:  # REST: same decision as the winner's, not applied
            assert body["applied"] or body["output"]["decided_by"] == winner
        else:  # approval callback
            assert body["applied"] or body["decidedBy"] == winner
    assert len(executions) == (1 if final.decision == "approved" else 0)
    with real_db.session() as s:
        decided = s.scalar(
            select(func.count())
            .select_from(WebhookDeliveryRow)
            .where(
                WebhookDeliveryRow.output_id == new.id,
                WebhookDeliveryRow.event_type == "output.decided",
            )
        )
    assert decided == 1
