"""Agent versions: every change stores an immutable snapshot; rollback is a new version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

AGENTS = "/api/v1/agents"

# A skill name need not be its function; it must name one that exists.
BUILTIN = {"executor": {"type": "builtin", "function": "current_time"}}


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    return body


@pytest.fixture
def agent(client):
    assert client.post("/api/v1/personas", json={"name": "helper", "role": "r"}).status_code == 201
    for name in ("lookup", "draft_email"):
        r = client.post("/api/v1/skills", json={"name": name, "description": name, **BUILTIN})
        assert r.status_code == 201
    r = client.post(
        AGENTS,
        json={"name": "sales", "persona": "helper", "description": "v1", "skills": ["lookup"]},
    )
    assert r.status_code == 201, r.text
    return r.json()


def versions(client, agent_id):
    r = client.get(f"{AGENTS}/{agent_id}/versions")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["next_cursor"] is None
    return page["items"]


def test_create_stores_version_one_with_a_full_snapshot(client, agent):
    started = datetime.now(UTC)
    [v1] = versions(client, agent["id"])
    assert v1["version"] == 1
    assert v1["agent_id"] == agent["id"]
    assert v1["change"] == "created"
    assert v1["created_by"] == "api"
    created_at = datetime.fromisoformat(v1["created_at"])
    assert abs(created_at - started) < timedelta(minutes=1)
    snap = v1["snapshot"]
    assert snap["agent"]["name"] == "sales"
    assert snap["agent"]["description"] == "v1"
    assert snap["agent"]["skills"] == ["lookup"]
    assert snap["persona"]["name"] == "helper"
    assert [s["name"] for s in snap["skills"]] == ["lookup"]


def test_patch_and_put_skills_each_add_a_version_newest_first(client, agent):
    url = f"{AGENTS}/{agent['id']}"
    assert client.patch(url, json={"description": "v2"}).status_code == 200
    assert client.put(f"{url}/skills", json={"skills": ["draft_email"]}).status_code == 200

    listed = versions(client, agent["id"])
    assert [v["version"] for v in listed] == [3, 2, 1]
    assert [v["change"] for v in listed] == ["skills updated", "updated", "created"]
    assert listed[0]["snapshot"]["agent"]["skills"] == ["draft_email"]
    assert listed[1]["snapshot"]["agent"]["description"] == "v2"
    # Older snapshots are immutable: version 1 still shows what it was.
    assert listed[2]["snapshot"]["agent"]["description"] == "v1"
    assert listed[2]["snapshot"]["agent"]["skills"] == ["lookup"]
    assert len({v["id"] for v in listed}) == 3


def test_no_op_patch_adds_no_version(client, agent):
    url = f"{AGENTS}/{agent['id']}"
    r = client.patch(url, json={"description": "v1", "skills": ["lookup"]})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert r.headers["etag"] == '"1"'
    assert client.patch(url, json={}).json()["version"] == 1
    assert client.put(f"{url}/skills", json={"skills": ["lookup"]}).json()["version"] == 1
    assert [v["version"] for v in versions(client, agent["id"])] == [1]


def test_rollback_restores_settings_as_a_new_version(client, agent):
    url = f"{AGENTS}/{agent['id']}"
    client.patch(url, json={"description": "v2", "is_active": False, "skills": ["draft_email"]})
    client.patch(url, json={"description": "v3", "limits": {"daily_output_limit": 5}})

    r = client.post(f"{url}/rollback", json={"version": 1})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"4"'
    rolled = r.json()
    assert rolled["version"] == 4
    assert rolled["description"] == "v1"
    assert rolled["is_active"] is True
    assert rolled["skills"] == ["lookup"]
    assert rolled["limits"]["daily_output_limit"] is None
    assert client.get(url).json() == rolled

    listed = versions(client, agent["id"])
    assert [v["version"] for v in listed] == [4, 3, 2, 1]
    assert listed[0]["change"] == "rolled back to version 1"
    assert listed[0]["snapshot"]["agent"] == listed[3]["snapshot"]["agent"]
    # History is kept: version 3 is still there to roll forward to.
    r = client.post(f"{url}/rollback", json={"version": 3})
    assert r.json()["description"] == "v3"
    assert r.json()["version"] == 5


def test_rollback_to_the_current_settings_adds_no_version(client, agent):
    r = client.post(f"{AGENTS}/{agent['id']}/rollback", json={"version": 1})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert len(versions(client, agent["id"])) == 1


def test_rollback_to_unknown_version_is_a_404(client, agent):
    body = problem(client.post(f"{AGENTS}/{agent['id']}/rollback", json={"version": 9}), 404)
    assert "9" in body["detail"]


def test_rollback_with_an_invalid_version_number_is_a_422(client, agent):
    url = f"{AGENTS}/{agent['id']}/rollback"
    for version in (0, -1, "one", 1.5, None):
        body = problem(client.post(url, json={"version": version}), 422)
        assert [e["field"] for e in body["errors"]] == ["body.version"], version
    body = problem(client.post(url, json={}), 422)
    assert [e["field"] for e in body["errors"]] == ["body.version"]


def test_rollback_to_a_version_beyond_any_column_is_a_404(client, agent):
    for version in (2**31, 2**63, 10**30):
        body = problem(
            client.post(f"{AGENTS}/{agent['id']}/rollback", json={"version": version}), 404
        )
        assert str(version) in body["detail"]
    assert len(versions(client, agent["id"])) == 1


def test_rollback_that_re_adds_a_webhook_shows_the_new_secret_once(client, agent):
    url = f"{AGENTS}/{agent['id']}"
    r = client.patch(url, json={"webhook": {"url": "https://hooks.example.com/a"}})
    first_secret = r.json()["webhook"]["secret"]
    assert first_secret.startswith("whsec_")
    client.patch(url, json={"webhook": None})

    r = client.post(f"{url}/rollback", json={"version": 2})
    assert r.status_code == 200, r.text
    hook = r.json()["webhook"]
    assert hook["url"] == "https://hooks.example.com/a"
    assert hook["secret_set"] is True
    # The old secret was deleted with the webhook; the restored webhook has a new one, and
    # this response is the only place it can be learnt.
    assert hook["secret"].startswith("whsec_")
    assert hook["secret"] != first_secret
    assert client.get(url).json()["webhook"]["secret"] is None


def test_versions_of_unknown_agent_is_a_404(client):
    problem(client.get(f"{AGENTS}/agt_01aaaaaaaaaaaaaaaaaaaaaaaa/versions"), 404)
    problem(
        client.post(f"{AGENTS}/agt_01aaaaaaaaaaaaaaaaaaaaaaaa/rollback", json={"version": 1}), 404
    )


def test_versions_are_a_page_like_every_other_list(client, agent):
    for n in range(2, 6):
        r = client.patch(f"{AGENTS}/{agent['id']}", json={"description": f"v{n}"})
        assert r.status_code == 200, r.text
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"{AGENTS}/sales/versions", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_cursor"}
        seen += [v["version"] for v in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]
    assert pages == 3


def test_versions_cursor_that_was_not_issued_is_a_422(client, agent):
    problem(client.get(f"{AGENTS}/{agent['id']}/versions", params={"cursor": "bogus"}), 422)
