"""Decisions through REST and the approval callback: who may decide, first write wins,
execution, events in the outbox, rejection fed back to the session, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from core.approvals import lifecycle
from core.db.ids import new_id
from core.db.models import WebhookDeliveryRow
from core.outputs.port import NewOutput
from core.skills.runtime import SkillResult

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: Sales assistant}]
skills:
  - name: create_task
    description: Create a CRM task.
    kind: action
    is_automatable: true
    input_schema: {type: object, properties: {title: {type: string}}, required: [title]}
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}}, required: [to]}
agents:
  - name: bot
    persona: p
    skills: [create_task, draft_email]
    approvers: [U0LEAD, U0REQ]
    webhook: {url: "https://hooks.example.com/cosmo", secret_env: TEST_HOOK_SECRET}
"""


@pytest.fixture
def runs(container) -> list[dict[str, Any]]:
    """A `create_task` builtin that records its calls (so executions can be counted)."""
    calls: list[dict[str, Any]] = []

    async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        calls.append(arguments)
        if arguments["title"] == "explode":
            return SkillResult("CRM said 500", is_error=True)
        return SkillResult(f"task created: {arguments['title']}", data={"task_id": "T-1"})

    container.skill_factory.builtins.register("create_task", create_task)
    return calls


@pytest.fixture
def agent(client, runs) -> dict[str, Any]:
    r = client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    return dict(client.get("/api/v1/agents").json()["items"][0])


def make_output(
    container, agent, skill="create_task", arguments=None, *, requested_by="U0REQ", expires_at=None
):
    session = container.sessions.start("default", agent["id"], user_id=requested_by)
    new = NewOutput(
        id=new_id("out"),
        tenant_id="default",
        agent_id=agent["id"],
        session_id=session.id,
        skill=skill,
        is_automatable=skill == "create_task",
        arguments=arguments
        or ({"title": "Call Ana"} if skill == "create_task" else {"to": "a@b.c"}),
        content="Proposed: call Ana on Tuesday",
        requested_by=requested_by,
        expires_at=expires_at,
    )
    return container.outputs.create(new, container.events.created(agent["webhook"]["url"], new))


def events(db, output_id: str) -> list[WebhookDeliveryRow]:
    with db.session() as s:
        return list(
            s.scalars(
                select(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.output_id == output_id)
                .order_by(WebhookDeliveryRow.created_at, WebhookDeliveryRow.id)
            )
        )


def test_approving_an_automatable_output_runs_it_once(client, container, agent, runs, db):
    output = make_output(container, agent)

    r = client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0LEAD"})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["applied"] is True
    assert body["output"]["status"] == "executed"
    assert body["output"]["decided_by"] == "U0LEAD"
    assert body["output"]["execution_result"]["data"] == {"task_id": "T-1"}
    assert runs == [{"title": "Call Ana"}]
    kinds = [(e.event_type, e.payload["data"]["status"]) for e in events(db, output.id)]
    assert kinds == [
        ("output.created", "pending"),
        ("output.decided", "approved"),
        ("output.executed", "executed"),
    ]
    created = events(db, output.id)[0].payload["data"]
    assert created["approvalToken"].startswith("v1.approve.default.")
    assert created["contentUrl"].startswith("http://localhost:3000/api/v1/shared/outputs/")


def test_an_approved_manual_output_is_marked_for_follow_up(client, container, agent, runs):
    output = make_output(container, agent, skill="draft_email")
    body = client.post(f"/api/v1/outputs/{output.id}/approve", json={}).json()
    assert body["output"]["status"] == "manual"
    assert runs == []


def test_the_same_decision_twice_is_harmless_and_a_conflicting_one_names_the_winner(
    client, container, agent, runs
):
    output = make_output(container, agent)
    client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0LEAD"})

    again = client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0LEAD"})
    assert again.status_code == 200
    assert again.json()["applied"] is False
    assert again.json()["output"]["status"] == "executed"

    conflict = client.post(
        f"/api/v1/outputs/{output.id}/reject", json={"user_id": "U0LEAD", "reason": "no"}
    )
    assert conflict.status_code == 409
    problem = conflict.json()
    assert problem["decided_by"] == "U0LEAD"
    assert problem["status_now"] == "executed"
    assert "U0LEAD" in problem["detail"]
    assert runs == [{"title": "Call Ana"}]


def test_only_approvers_may_decide_and_refusals_are_audited(client, container, agent):
    output = make_output(container, agent)

    r = client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0INTRUDER"})

    assert r.status_code == 403
    assert "approvers" in r.json()["detail"]
    assert client.get(f"/api/v1/outputs/{output.id}").json()["status"] == "pending"
    audit = client.get(f"/api/v1/outputs/{output.id}/audit").json()["items"]
    assert [(a["actor"], a["action"], a["outcome"]) for a in audit] == [
        ("U0INTRUDER", "approve", "refused")
    ]


def test_requesters_cannot_approve_their_own_output_unless_allowed(client, container, agent):
    output = make_output(container, agent, requested_by="U0REQ")
    assert (
        client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0REQ"}).status_code
        == 403
    )
    # ...but may reject it
    assert (
        client.post(
            f"/api/v1/outputs/{output.id}/reject", json={"user_id": "U0REQ", "reason": "wrong one"}
        ).status_code
        == 200
    )

    client.patch(f"/api/v1/agents/{agent['id']}", json={"allow_self_approval": True})
    second = make_output(container, agent, requested_by="U0REQ")
    ok = client.post(f"/api/v1/outputs/{second.id}/approve", json={"user_id": "U0REQ"})
    assert ok.status_code == 200 and ok.json()["applied"] is True


def test_rejection_needs_a_reason_and_hands_it_back_to_the_session(client, container, agent, db):
    output = make_output(container, agent)
    missing = client.post(f"/api/v1/outputs/{output.id}/reject", json={"user_id": "U0LEAD"})
    assert missing.status_code == 422

    r = client.post(
        f"/api/v1/outputs/{output.id}/reject",
        json={"user_id": "U0LEAD", "reason": "Use the enterprise pricing"},
    )

    assert r.json()["output"]["status"] == "rejected"
    assert r.json()["output"]["decision_reason"] == "Use the enterprise pricing"
    history = client.get(f"/api/v1/sessions/{output.session_id}").json()["messages"]
    note = history[-1]["content"][0]["text"]
    assert history[-1]["role"] == "user"
    assert "rejected by U0LEAD" in note and "Use the enterprise pricing" in note
    assert [e.event_type for e in events(db, output.id)] == ["output.created", "output.decided"]


def test_a_failed_execution_can_be_retried(client, container, agent, runs):
    output = make_output(container, agent, arguments={"title": "explode"})
    body = client.post(f"/api/v1/outputs/{output.id}/approve", json={}).json()
    assert body["output"]["status"] == "execution_failed"
    assert body["output"]["execution_error"] == "CRM said 500"

    retried = client.post(f"/api/v1/outputs/{output.id}/retry", json={})
    assert retried.status_code == 200
    assert retried.json()["status"] == "execution_failed"
    assert len(runs) == 2
    executed = make_output(container, agent)
    client.post(f"/api/v1/outputs/{executed.id}/approve", json={})
    assert client.post(f"/api/v1/outputs/{executed.id}/retry", json={}).status_code == 409


def test_the_approval_callback_decides_with_the_token_from_the_created_event(
    client, container, agent, db, runs
):
    output = make_output(container, agent)
    token = events(db, output.id)[0].payload["data"]["approvalToken"]
    anonymous = {"Authorization": ""}

    first = client.post(
        "/api/v1/webhooks/approval",
        json={"approvalToken": token, "decision": "approve", "userId": "U0LEAD"},
        headers=anonymous,
    )
    assert first.status_code == 200, first.text
    assert first.json() == {
        "applied": True,
        "outputId": output.id,
        "status": "executed",
        "decidedBy": "U0LEAD",
        "decidedAt": first.json()["decidedAt"],
    }
    late = client.post(
        "/api/v1/webhooks/approval",
        json={"approvalToken": token, "decision": "reject", "userId": "U0REQ", "reason": "no"},
        headers=anonymous,
    )
    assert late.status_code == 200
    assert late.json()["applied"] is False
    assert late.json()["decidedBy"] == "U0LEAD"
    assert late.json()["status"] == "executed"

    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (tampered, "garbage", "v1.approve.x.y.z.w", "é" * 40):
        r = client.post(
            "/api/v1/webhooks/approval",
            json={"approvalToken": bad, "decision": "approve", "userId": "U0LEAD"},
            headers=anonymous,
        )
        assert r.status_code == 401, bad


def test_an_expired_approval_token_is_refused(client, container, agent):
    output = make_output(container, agent)
    old = container.tokens.issue(
        "approve", "default", output.id, now=datetime.now(UTC) - timedelta(days=30)
    )
    r = client.post(
        "/api/v1/webhooks/approval",
        json={"approvalToken": old, "decision": "approve", "userId": "U0LEAD"},
        headers={"Authorization": ""},
    )
    assert r.status_code == 401
    assert "expired" in r.json()["detail"]


def test_the_shared_content_link_serves_the_content_without_the_api_token(
    client, container, agent, db
):
    output = make_output(container, agent)
    link = events(db, output.id)[0].payload["data"]["contentUrl"]
    path = link.removeprefix("http://localhost:3000")

    r = client.get(path, headers={"Authorization": ""})
    assert r.status_code == 200
    assert r.text == "Proposed: call Ana on Tuesday"
    other = make_output(container, agent)
    wrong = path.replace(output.id, other.id, 1)
    assert client.get(wrong, headers={"Authorization": ""}).status_code == 401


async def test_expired_outputs_can_no_longer_be_decided(container, agent, client):
    output = make_output(container, agent, expires_at=datetime.now(UTC) + timedelta(milliseconds=1))
    pending = make_output(container, agent, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    r = client.post(f"/api/v1/outputs/{output.id}/approve", json={})
    assert r.status_code == 409
    assert r.json()["status_now"] == "expired"
    # What the `schedule.expire_outputs` job does with each output past its expiry.
    due = container.outputs.due_for_expiry(container.approvals.clock())
    assert [o.id for o in due] == [pending.id]
    assert await lifecycle.runner_of(container).expire_or_escalate(due[0]) == "expired"
    assert container.outputs.get("default", pending.id).status == "expired"
    assert container.outputs.due_for_expiry(container.approvals.clock()) == []
