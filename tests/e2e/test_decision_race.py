"""200 reviewers decide one output at once through every entry point; exactly one wins.

A real uvicorn server with the Slack app enabled, on a real store: the sql store on each
database backend, and the aws store on a single-threaded moto server (moto's threaded
modes are not linearizable for conditional writes). Decisions arrive concurrently over
HTTP as REST approve/reject calls, approval callbacks and signed Slack button clicks.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from bot.server import create_app
from core.config_document import parse_document
from core.db.ids import new_id
from core.db.models import WebhookDeliveryRow
from core.outputs.aws_setup import ensure_bucket_and_table
from core.outputs.port import NewOutput
from core.skills.runtime import SkillResult
from core.tls import tls_context
from core.wiring import aws_clients, build_container
from tests.conftest import AUTH, BACKENDS, execution_worker, make_settings
from tests.fakes.moto_server import MotoServer
from tests.fakes.slack_api import BOT_TOKEN, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET, SlackRequests

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
KINDS = ("rest-approve", "rest-reject", "callback-approve", "callback-reject", "slack-approve")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


STORES = [("sql", backend) for backend in BACKENDS] + [("aws", "sqlite")]


@pytest.mark.parametrize(
    ("store", "real_db"), STORES, indirect=["real_db"], ids=[f"{s}-{b}" for s, b in STORES]
)
def test_two_hundred_racing_decisions_yield_one_decision_one_execution_one_event(
    store, real_db, tmp_path, monkeypatch, request
):
    extra: dict[str, Any] = {}
    if store == "aws":
        moto = request.getfixturevalue("moto")
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        table = f"outputs-{new_id('tbl')[4:14]}"
        extra = {
            "OUTPUT_STORE": "aws",
            "S3_BUCKET": "cosmo-race",
            "DYNAMODB_TABLE": table,
            "AWS_ENDPOINT_URL": moto.endpoint_url,
        }
    with FakeSlackAPI() as slack:
        settings = make_settings(
            tmp_path,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.base_url,
            **extra,
        )
        if store == "aws":
            ensure_bucket_and_table(*aws_clients(settings), extra["S3_BUCKET"], table)
        container = build_container(settings, db=real_db)
        assert container.outputs.name == store
        run_race(container, slack)


def run_race(container: Any, slack: FakeSlackAPI) -> None:
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
    created_events = container.events.created(agent.webhook.url, new)
    container.outputs.create(new, created_events)
    token = created_events[0].payload["data"]["approvalToken"]

    app = create_app(container=container, background=False)
    # The approval's execution runs on a worker, as under `cosmo serve`.
    worker_loop = asyncio.new_event_loop()
    worker = execution_worker(container)
    threading.Thread(target=worker_loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(worker.start(), worker_loop).result()
    # Bound here and handed over: a port from free_port() could be taken by another test's
    # fake before uvicorn binds it, and this loop would then wait forever.
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    clicks = SlackRequests(SIGNING_SECRET)
    barrier = threading.Barrier(200)
    results: list[tuple[str, int, dict[str, Any]]] = []
    lock = threading.Lock()

    def reviewer(i: int) -> None:
        kind = KINDS[i % len(KINDS)]
        user = f"U{i:04d}"
        # The process's one TLS context: httpx would build one per client, loading the CA
        # bundle, about 30 ms of CPU each, taken from the server under test.
        with httpx.Client(timeout=60, verify=tls_context()) as http:
            barrier.wait()
            time.sleep(random.Random(i).random() * 0.01)
            if kind == "rest-approve":
                r = http.post(
                    f"{base}/api/v1/outputs/{new.id}/approve", json={"user_id": user}, headers=AUTH
                )
            elif kind == "rest-reject":
                r = http.post(
                    f"{base}/api/v1/outputs/{new.id}/reject",
                    json={"user_id": user, "reason": "no"},
                    headers=AUTH,
                )
            elif kind.startswith("callback"):
                r = http.post(
                    f"{base}/api/v1/webhooks/approval",
                    json={
                        "approvalToken": token,
                        "decision": kind.split("-")[1],
                        "userId": user,
                        "reason": "no",
                    },
                )
            else:
                click = clicks.block_action("output_approve", new.id, user=user)
                r = http.post(f"{base}/slack/events", content=click.body, headers=click.headers)
        body = r.json() if r.headers.get("content-type", "").startswith("application") else {}
        with lock:
            results.append((kind, r.status_code, body))

    threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Slack clicks decide after the ack; wait for that background work before judging.
    deadline = time.monotonic() + 30
    while app.state.slack.runtime.tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    while container.outputs.get("default", new.id).status == "approved":  # a Slack click won
        assert time.monotonic() < deadline, "the approved output was never executed"
        time.sleep(0.05)
    server.should_exit = True
    thread.join(timeout=10)
    asyncio.run_coroutine_threadsafe(worker.stop(), worker_loop).result()
    worker_loop.call_soon_threadsafe(worker_loop.stop)

    assert len(results) == 200
    assert set(Counter(code for _, code, _ in results)) <= {200, 409}
    final = container.outputs.get("default", new.id)
    winner = final.decided_by
    applied = [
        a
        for a in container.audit.for_output("default", new.id)
        if a.outcome == "applied" and a.action in ("approve", "reject")
    ]
    assert len(applied) == 1, applied
    assert applied[0].actor == winner
    for kind, code, body in results:
        if code == 409:
            assert body["decided_by"] == winner
        elif kind.startswith("rest"):
            assert body["applied"] is False or body["output"]["decided_by"] == winner
        elif kind.startswith("callback"):
            assert body["applied"] is False or body["decidedBy"] == winner
    assert len(executions) == (1 if final.decision == "approved" else 0)
    with container.db.session() as s:
        decided = s.scalar(
            select(func.count())
            .select_from(WebhookDeliveryRow)
            .where(
                WebhookDeliveryRow.output_id == new.id,
                WebhookDeliveryRow.event_type == "output.decided",
                WebhookDeliveryRow.status == "pending",
            )
        )
    assert decided == 1
    told = [m for m in slack.ephemeral_messages() if "Too late" in m.text]
    slack_clicks = sum(1 for kind, _, _ in results if kind == "slack-approve")
    slack_won = 1 if applied[0].via == "slack" else 0
    # Every Slack click that did not win was told who decided first.
    assert len(told) == slack_clicks - slack_won
    assert all(winner in m.text for m in told)
