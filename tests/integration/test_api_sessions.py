"""Sessions over REST: start, list with filters, detail, end (no model needed)."""

from __future__ import annotations

import pytest

DOC = """
apiVersion: cosmo/v1
personas: [{name: p, role: Helper}]
agents:
  - {name: one, persona: p}
  - {name: two, persona: p}
  - {name: sleepy, persona: p, is_active: false}
"""


@pytest.fixture
def agents(client) -> dict[str, str]:
    r = client.post(
        "/api/v1/agents/import", content=DOC, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    return {a["name"]: a["id"] for a in client.get("/api/v1/agents").json()["items"]}


def start(client, agent_id: str, **body):
    return client.post(f"/api/v1/agents/{agent_id}/sessions", json=body)


def test_sessions_list_filters_by_agent_user_and_status(client, agents):
    a = start(client, agents["one"], user_id="U1").json()
    start(client, agents["one"], user_id="U2")
    start(client, agents["two"], user_id="U1")
    client.post(f"/api/v1/sessions/{a['id']}/end")

    def ids(**params):
        return [s["id"] for s in client.get("/api/v1/sessions", params=params).json()["items"]]

    assert len(ids()) == 3
    assert len(ids(agent_id=agents["one"])) == 2
    assert len(ids(user_id="U1")) == 2
    assert ids(status="ended") == [a["id"]]
    assert len(ids(status="active")) == 2
    assert ids(until="2000-01-01T00:00:00Z") == []


def test_a_session_starts_active_with_its_context_and_no_history(client, agents):
    r = start(client, agents["one"], user_id="U9", user_name="Ana", prompt_context="Globex deal")
    assert r.status_code == 201
    session = r.json()
    assert session["status"] == "active"
    assert session["context"] == {"prompt_context": "Globex deal"}
    detail = client.get(f"/api/v1/sessions/{session['id']}").json()
    assert detail["messages"] == [] and detail["turns"] == [] and detail["outputs"] == []


def test_ending_twice_is_harmless(client, agents):
    session = start(client, agents["one"]).json()
    first = client.post(f"/api/v1/sessions/{session['id']}/end").json()
    second = client.post(f"/api/v1/sessions/{session['id']}/end").json()
    assert first["ended_at"] == second["ended_at"] is not None


def test_an_inactive_or_unknown_agent_cannot_start_a_session(client, agents):
    assert start(client, agents["sleepy"]).status_code == 409
    assert start(client, "agt_01m00000000000000000000000").status_code == 404


def test_sessions_are_invisible_to_other_tenants(client, agents):
    session = start(client, agents["one"]).json()
    other = {"X-Cosmo-Tenant": "T999"}
    assert client.get(f"/api/v1/sessions/{session['id']}", headers=other).status_code == 404
    assert client.get("/api/v1/sessions", headers=other).json()["items"] == []
