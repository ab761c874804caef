"""`POST /api/v1/outputs/decisions`: many decisions in one call, each its own first-write-
wins decision with its own answer; bad items get a clear per-item 4xx, never a 500, and
never touch the other items."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.server import create_app
from core.config_document import parse_document
from core.db import Database
from core.db.ids import new_id
from core.keys.roles import Role
from core.keys.service import KeySpec
from core.outputs.port import NewOutput
from core.wiring import Container, build_container
from tests.conftest import AUTH, BACKENDS, make_settings

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: Sales assistant}]
skills:
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}}, required: [to]}
agents:
  - name: bot
    persona: p
    skills: [draft_email]
    approvers: [U0LEAD, U0PEER]
"""
URL = "/api/v1/outputs/decisions"


def build(db: Database, tmp_path: Path) -> Container:
    container = build_container(make_settings(tmp_path / "data"), db=db)
    for tenant in ("default", "T2"):
        container.config.apply(tenant, parse_document(CONFIG), actor="test")
    return container


@pytest.fixture
def app(db: Database, tmp_path: Path) -> Iterator[tuple[TestClient, Container]]:
    container = build(db, tmp_path)
    with TestClient(create_app(container=container, background=False), headers=AUTH) as client:
        yield client, container


def propose(container: Container, tenant: str = "default", n: int = 1) -> list[str]:
    agent = container.agents.get_by_name(tenant, "bot")
    session = container.sessions.start(tenant, agent.id, user_id="U0REQ")
    ids = []
    for i in range(n):
        new = NewOutput(
            id=new_id("out"),
            tenant_id=tenant,
            agent_id=agent.id,
            session_id=session.id,
            skill="draft_email",
            is_automatable=False,
            arguments={"to": f"a{i}@example.com"},
            content=f"Draft {i}",
            requested_by="U0REQ",
        )
        ids.append(container.outputs.create(new).id)
    return ids


def approve(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "decision": "approve"} for i in ids]


def test_each_item_gets_its_own_answer_and_bad_ones_touch_nothing_else(app):
    client, container = app
    ok, rejected, done_before = propose(container, n=3)
    [foreign] = propose(container, tenant="T2")
    client.post(f"/api/v1/outputs/{done_before}/approve", json={"user_id": "U0PEER"})
    items = [
        *approve(ok),
        {"id": "out_does_not_exist", "decision": "approve"},
        {"id": foreign, "decision": "approve"},
        {"id": rejected, "decision": "reject"},  # no reason
        {"id": rejected, "decision": "reject", "reason": "wrong customer"},
        {"id": done_before, "decision": "reject", "reason": "too late"},
    ]

    r = client.post(URL, json={"items": items, "user_id": "U0LEAD"})

    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(x["id"], x["status"], x["applied"]) for x in results] == [
        (ok, 200, True),
        ("out_does_not_exist", 404, False),
        (foreign, 404, False),  # another tenant's output does not exist for this caller
        (rejected, 422, False),
        (rejected, 200, True),
        (done_before, 409, False),
    ]
    assert results[0]["output"]["status"] == "manual"
    assert results[3]["problem"]["errors"][0]["field"] == "reason"
    assert results[5]["problem"]["decided_by"] == "U0PEER"
    assert r.json()["applied"] == 2 and r.json()["decided_elsewhere"] == 1
    assert container.outputs.get("T2", foreign).status == "pending"  # untouched
    assert container.outputs.get("default", done_before).status == "manual"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": approve(*(f"out_{i}" for i in range(101)))}, "items"),
        ({"items": [{"id": "out_1", "decision": "maybe"}]}, "items.0.decision"),
        ({"items": [{"id": "out_1", "decision": "approve", "extra": 1}]}, "items.0.extra"),
        ({"items": [{"id": "out_1", "decision": "approve", "revision": 0}]}, "items.0.revision"),
    ],
)
def test_a_malformed_list_is_a_422_that_decides_nothing(app, body, field):
    client, _ = app
    r = client.post(URL, json=body)
    assert r.status_code == 422, r.text
    assert any(e["field"].endswith(field) for e in r.json()["errors"]), r.json()


def test_readers_may_not_decide_in_bulk(app):
    client, container = app
    [output] = propose(container)
    _, key = container.keys.create("default", KeySpec(name="r", role=Role.READER), created_by="t")
    r = client.post(
        URL, json={"items": approve(output)}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 403
    assert container.outputs.get("default", output).status == "pending"


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_bulk_approve_of_20_while_another_reviewer_races_5_of_them(real_db, tmp_path):
    """Each output is decided exactly once; the bulk results say which someone else took."""
    container = build(real_db, tmp_path)
    with TestClient(create_app(container=container, background=False), headers=AUTH) as client:
        ids = propose(container, n=20)
        raced = ids[::4]  # 5 of them, spread through the list
        start = threading.Barrier(2)
        answers: dict[str, Any] = {}

        def lead() -> None:
            start.wait()
            answers["bulk"] = client.post(URL, json={"items": approve(*ids), "user_id": "U0LEAD"})

        def peer() -> None:
            start.wait()
            for output_id in reversed(raced):
                answers[output_id] = client.post(
                    f"/api/v1/outputs/{output_id}/reject",
                    json={"user_id": "U0PEER", "reason": "not this one"},
                )

        threads = [threading.Thread(target=lead), threading.Thread(target=peer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

        bulk = answers["bulk"]
        assert bulk.status_code == 200, bulk.text
        results = {x["id"]: x for x in bulk.json()["results"]}
        for output_id in ids:
            final = container.outputs.get("default", output_id)
            decisions = [
                e
                for e in container.audit.for_output("default", output_id)
                if e.action in ("approve", "reject") and e.outcome == "applied"
            ]
            assert len(decisions) == 1, (output_id, decisions)  # decided exactly once
            mine = results[output_id]
            if output_id not in raced:
                assert (mine["status"], mine["applied"], final.status) == (200, True, "manual")
            elif final.status == "rejected":  # the peer was first: the bulk says so
                assert answers[output_id].status_code == 200
                assert (mine["status"], mine["applied"]) == (409, False)
                assert mine["problem"]["decided_by"] == "U0PEER"
            else:  # the bulk was first: the peer was told
                assert (mine["status"], mine["applied"], final.status) == (200, True, "manual")
                assert answers[output_id].status_code == 409
        peer_won = sum(1 for i in raced if container.outputs.get("default", i).status == "rejected")
        assert bulk.json()["applied"] == 20 - peer_won
        assert bulk.json()["decided_elsewhere"] == peer_won
