"""Grants ("approve and allow for this thread") end to end: REST chat turns against the fake
Claude propose outputs; an approval with `grant: true` makes later identical outputs of the
same skill version in the same session approve themselves, until revoked."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.anthropic_api import Reply

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: Sales assistant}]
skills:
  - name: draft_email
    description: Draft an email for review.
    kind: action
    grantable: true
    input_schema:
      type: object
      properties: {to: {type: string}, subject: {type: string}}
      required: [to, subject]
  - name: send_quote
    description: Not grantable.
    kind: action
    executor: {type: builtin, function: draft_email}
    input_schema: {type: object, properties: {to: {type: string}}}
agents:
  - name: bot
    persona: p
    skills: [draft_email, send_quote]
    approvers: [U0LEAD]
    webhook: {url: "https://hooks.example.com/cosmo", secret_env: TEST_HOOK_SECRET}
"""
EMAIL = {"to": "ana@example.com", "subject": "Pricing"}


@pytest.fixture
def agent_id(claude_client) -> str:
    r = claude_client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    return str(claude_client.get("/api/v1/agents").json()["items"][0]["id"])


def open_session(client, agent_id: str) -> str:
    r = client.post(f"/api/v1/agents/{agent_id}/sessions", json={"user_id": "U0REQ"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def propose(client, fake_claude, session_id: str, skill: str = "draft_email", args=None):
    fake_claude.push(Reply.tool_use(skill, args or EMAIL), Reply.text("done"))
    r = client.post(f"/api/v1/sessions/{session_id}/chat", json={"message": "email Ana"})
    assert r.status_code == 200, r.text
    outputs: list[dict[str, Any]] = r.json()["outputs"]
    assert len(outputs) == 1
    return outputs[0]


def approve_and_grant(client, output_id: str):
    return client.post(
        f"/api/v1/outputs/{output_id}/approve", json={"user_id": "U0LEAD", "grant": True}
    )


def test_a_grant_approves_the_same_action_again_in_the_same_thread(
    claude_client, claude_container, fake_claude, agent_id
):
    session = open_session(claude_client, agent_id)
    first = propose(claude_client, fake_claude, session)
    granted = approve_and_grant(claude_client, first["id"])
    assert granted.status_code == 200, granted.text
    grant = granted.json()["grant"]
    assert (grant["granted_by"], grant["session_id"]) == ("U0LEAD", session)

    again = propose(claude_client, fake_claude, session)

    assert again["status"] == "manual"
    assert again["decided_by"] == "U0LEAD"
    assert again["approvals"][0]["grant_id"] == grant["id"]
    told = fake_claude.message_requests[-1].tool_results()[0]["content"]
    assert "approved at once under a reviewer's grant" in str(told)
    audit = claude_client.get(f"/api/v1/outputs/{again['id']}/audit").json()["items"]
    assert any(f"under grant {grant['id']}" in (a["detail"] or "") for a in audit)

    # Other arguments, or another session, are not covered.
    other_args = propose(claude_client, fake_claude, session, args={**EMAIL, "subject": "Hi"})
    assert other_args["status"] == "pending"
    elsewhere = propose(claude_client, fake_claude, open_session(claude_client, agent_id))
    assert elsewhere["status"] == "pending"


def test_a_revoked_grant_approves_nothing_more(claude_client, fake_claude, agent_id):
    session = open_session(claude_client, agent_id)
    first = propose(claude_client, fake_claude, session)
    grant = approve_and_grant(claude_client, first["id"]).json()["grant"]
    listed = claude_client.get("/api/v1/grants", params={"session_id": session}).json()["items"]
    assert [g["id"] for g in listed] == [grant["id"]]

    revoked = claude_client.delete(f"/api/v1/grants/{grant['id']}", params={"user_id": "U0LEAD"})

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_by"] == "U0LEAD"
    assert propose(claude_client, fake_claude, session)["status"] == "pending"
    missing = claude_client.delete("/api/v1/grants/gnt_nope")
    assert missing.status_code == 404


def test_a_grant_is_invisible_to_another_tenant(claude_client, fake_claude, agent_id):
    session = open_session(claude_client, agent_id)
    first = propose(claude_client, fake_claude, session)
    grant = approve_and_grant(claude_client, first["id"]).json()["grant"]
    other = {"X-Cosmo-Tenant": "other"}

    assert claude_client.get(f"/api/v1/grants/{grant['id']}", headers=other).status_code == 404
    assert claude_client.delete(f"/api/v1/grants/{grant['id']}", headers=other).status_code == 404
    assert claude_client.get("/api/v1/grants", headers=other).json()["items"] == []
    assert claude_client.get(f"/api/v1/grants/{grant['id']}").json()["revoked_at"] is None


def test_a_changed_skill_is_not_covered_by_an_older_grant(claude_client, fake_claude, agent_id):
    session = open_session(claude_client, agent_id)
    first = propose(claude_client, fake_claude, session)
    approve_and_grant(claude_client, first["id"])
    r = claude_client.patch(
        "/api/v1/skills/draft_email",
        json={
            "input_schema": {
                "type": "object",
                "properties": {"to": {"type": "string"}, "subject": {"type": "string"}},
                "required": ["to"],
            }
        },
    )
    assert r.status_code == 200, r.text

    assert propose(claude_client, fake_claude, session)["status"] == "pending"


def test_a_skill_that_is_not_grantable_refuses_before_deciding(
    claude_client, fake_claude, agent_id
):
    session = open_session(claude_client, agent_id)
    output = propose(claude_client, fake_claude, session, skill="send_quote", args={"to": "x"})

    r = approve_and_grant(claude_client, output["id"])

    assert r.status_code == 409
    assert "not grantable" in r.json()["detail"]
    assert claude_client.get(f"/api/v1/outputs/{output['id']}").json()["status"] == "pending"
