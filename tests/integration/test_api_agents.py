"""REST behaviour of `/api/v1/agents`: CRUD, filters, pagination, ETag/If-Match, skills."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bot.server import create_app
from core.wiring import build_container
from tests.conftest import AUTH, make_settings

AGENTS = "/api/v1/agents"
KNOWLEDGE = "/api/v1/knowledge-bases"

# A skill name need not be its function; it must name one that exists.
BUILTIN = {"executor": {"type": "builtin", "function": "current_time"}}


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def error_fields(body):
    return [e["field"] for e in body["errors"]]


@pytest.fixture
def setup(client):
    """A persona and three skills to build agents from."""
    for name in ("helper", "expert"):
        r = client.post("/api/v1/personas", json={"name": name, "role": f"{name} role"})
        assert r.status_code == 201, r.text
    for name in ("lookup", "draft_email", "open_ticket"):
        r = client.post("/api/v1/skills", json={"name": name, "description": name, **BUILTIN})
        assert r.status_code == 201, r.text
    return client


def create_agent(client, name="sales", **fields):
    r = client.post(AGENTS, json={"name": name, "persona": "helper", **fields})
    assert r.status_code == 201, r.text
    return r.json()


def test_created_agent_has_defaults_an_etag_and_reads_back(setup):
    client = setup
    r = client.post(AGENTS, json={"name": "sales", "persona": "helper", "skills": ["lookup"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["etag"] == '"1"'
    assert created["id"].startswith("agt_")
    assert created["version"] == 1
    assert created["persona"] == "helper"
    assert created["skills"] == ["lookup"]
    assert created["is_active"] is True
    assert created["memory_enabled"] is True
    assert created["limits"] == {"daily_output_limit": None, "daily_token_budget": None}
    assert created["webhook"] is None

    r = client.get(f"{AGENTS}/{created['id']}")
    assert r.status_code == 200
    assert r.headers["etag"] == '"1"'
    assert r.json() == created


def test_full_agent_configuration_round_trips(setup):
    client = setup
    assert client.post(KNOWLEDGE, json={"name": "handbook"}).status_code == 201
    created = create_agent(
        client,
        description="Helps the sales team",
        model="claude-haiku-4-5",
        skills=["open_ticket", "lookup"],
        knowledge_bases=["handbook"],
        memory_enabled=False,
        limits={"daily_output_limit": 20, "daily_token_budget": 100000},
        approvers=["U012ABC", "S0GROUP"],
        allow_self_approval=True,
        approval_channel="C0APPROVE",
        is_active=False,
    )
    stored = client.get(f"{AGENTS}/{created['id']}").json()
    assert stored["skills"] == ["open_ticket", "lookup"]
    assert stored["model"] == "claude-haiku-4-5"
    assert stored["knowledge_bases"] == ["handbook"]
    assert stored["memory_enabled"] is False
    assert stored["limits"] == {"daily_output_limit": 20, "daily_token_budget": 100000}
    assert stored["approvers"] == ["U012ABC", "S0GROUP"]
    assert stored["allow_self_approval"] is True
    assert stored["approval_channel"] == "C0APPROVE"
    assert stored["is_active"] is False


def test_unknown_persona_or_skill_is_a_422_naming_the_field(setup):
    client = setup
    body = problem(client.post(AGENTS, json={"name": "a", "persona": "ghost"}), 422)
    assert error_fields(body) == ["body.persona"]
    body = problem(
        client.post(AGENTS, json={"name": "a", "persona": "helper", "skills": ["lookup", "nope"]}),
        422,
    )
    assert error_fields(body) == ["body.skills"]
    assert "nope" in body["errors"][0]["msg"]
    assert client.get(AGENTS).json()["items"] == []


def test_an_unknown_knowledge_base_is_a_422_naming_the_item_and_how_to_create_it(setup):
    client = setup
    assert client.post(KNOWLEDGE, json={"name": "handbook"}).status_code == 201
    body = problem(
        client.post(
            AGENTS,
            json={"name": "a", "persona": "helper", "knowledge_bases": ["handbook", "pricing"]},
        ),
        422,
    )
    assert error_fields(body) == ["body.knowledge_bases.1"]
    assert "no knowledge base 'pricing'" in body["errors"][0]["msg"]
    assert "cosmo kb create pricing" in body["errors"][0]["msg"]
    assert client.get(AGENTS).json()["items"] == []

    agent = create_agent(client, "a", knowledge_bases=["handbook"])
    body = problem(
        client.patch(f"{AGENTS}/{agent['id']}", json={"knowledge_bases": ["ghost", "handbook"]}),
        422,
    )
    assert error_fields(body) == ["body.knowledge_bases.0"]
    stored = client.get(f"{AGENTS}/{agent['id']}").json()
    assert (stored["knowledge_bases"], stored["version"]) == (["handbook"], 1)


def test_an_unknown_knowledge_base_in_a_config_document_names_its_place(setup):
    client = setup
    document = """
apiVersion: cosmo/v1
agents:
  - name: support-bot
    persona: helper
    knowledge_bases: [ghost]
"""
    r = client.post(
        f"{AGENTS}/import", content=document, headers={"Content-Type": "application/yaml"}
    )
    body = problem(r, 422)
    assert error_fields(body) == ["agents.0.knowledge_bases.0"]
    assert "cosmo kb create ghost" in body["detail"]
    assert client.get(AGENTS).json()["items"] == []


def test_invalid_approver_and_channel_are_422s_with_paths(setup):
    client = setup
    body = problem(
        client.post(
            AGENTS,
            json={
                "name": "a",
                "persona": "helper",
                "approvers": ["alice"],
                "approval_channel": "#sales",
            },
        ),
        422,
    )
    assert sorted(error_fields(body)) == ["body.approval_channel", "body.approvers"]


def test_duplicate_agent_name_is_a_409(setup):
    create_agent(setup, "sales")
    body = problem(setup.post(AGENTS, json={"name": "sales", "persona": "expert"}), 409)
    assert "sales" in body["detail"]


def test_patch_updates_given_fields_bumps_version_and_etag(setup):
    client = setup
    agent = create_agent(client, description="old", skills=["lookup"])
    r = client.patch(f"{AGENTS}/{agent['id']}", json={"description": "new", "persona": "expert"})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    assert r.json()["version"] == 2
    stored = client.get(f"{AGENTS}/{agent['id']}").json()
    assert stored["description"] == "new"
    assert stored["persona"] == "expert"
    assert stored["skills"] == ["lookup"]


def test_patch_with_null_model_clears_it(setup):
    agent = create_agent(setup, model="claude-haiku-4-5")
    r = setup.patch(f"{AGENTS}/{agent['id']}", json={"model": None})
    assert r.status_code == 200, r.text
    assert setup.get(f"{AGENTS}/{agent['id']}").json()["model"] is None


def test_patch_with_current_if_match_succeeds(setup):
    agent = create_agent(setup)
    r = setup.patch(
        f"{AGENTS}/{agent['id']}", json={"description": "x"}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    # A weak validator and `*` are accepted too.
    r = setup.patch(
        f"{AGENTS}/{agent['id']}", json={"description": "y"}, headers={"If-Match": 'W/"2"'}
    )
    assert r.status_code == 200, r.text
    r = setup.patch(f"{AGENTS}/{agent['id']}", json={"description": "z"}, headers={"If-Match": "*"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 4


def test_stale_if_match_is_refused_with_412(setup):
    agent = create_agent(setup, description="original")
    url = f"{AGENTS}/{agent['id']}"
    etag = setup.get(url).headers["etag"]
    assert setup.patch(url, json={"description": "first writer"}).status_code == 200

    body = problem(
        setup.patch(url, json={"description": "second"}, headers={"If-Match": etag}), 412
    )
    assert body["detail"] == (
        "version 1 is out of date: it has changed since, the current version is 2; read it "
        'again (GET, whose ETag is the version), check the changes, and retry with If-Match: "2"'
    )
    stored = setup.get(url).json()
    assert stored["description"] == "first writer"
    assert stored["version"] == 2


def test_if_match_ahead_of_the_agent_is_not_called_stale(setup):
    agent = create_agent(setup)
    r = setup.patch(
        f"{AGENTS}/{agent['id']}", json={"description": "x"}, headers={"If-Match": '"7"'}
    )
    body = problem(r, 412)
    assert body["detail"].startswith("version 7 does not exist (the current version is 1); ")
    assert "stale" not in body["detail"] and 'If-Match: "1"' in body["detail"]


def test_stale_if_match_on_put_skills_is_refused_with_412(setup):
    agent = create_agent(setup)
    url = f"{AGENTS}/{agent['id']}"
    setup.patch(url, json={"description": "moved on"})
    problem(
        setup.put(f"{url}/skills", json={"skills": ["lookup"]}, headers={"If-Match": '"1"'}), 412
    )
    assert setup.get(url).json()["skills"] == []


def test_put_skills_replaces_the_list_in_the_given_order(setup):
    client = setup
    agent = create_agent(client, skills=["lookup"])
    url = f"{AGENTS}/{agent['id']}/skills"
    r = client.put(
        url,
        json={"skills": ["open_ticket", "draft_email", "open_ticket"]},
        headers={"If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    assert r.json()["skills"] == ["open_ticket", "draft_email"]
    assert client.get(f"{AGENTS}/{agent['id']}").json()["skills"] == ["open_ticket", "draft_email"]

    r = client.put(url, json={"skills": []})
    assert r.status_code == 200
    assert client.get(f"{AGENTS}/{agent['id']}").json()["skills"] == []


def test_put_skills_with_unknown_skill_changes_nothing(setup):
    agent = create_agent(setup, skills=["lookup"])
    body = problem(setup.put(f"{AGENTS}/{agent['id']}/skills", json={"skills": ["ghost"]}), 422)
    assert error_fields(body) == ["body.skills"]
    stored = setup.get(f"{AGENTS}/{agent['id']}").json()
    assert stored["skills"] == ["lookup"]
    assert stored["version"] == 1


def test_put_skills_on_unknown_agent_is_a_404(setup):
    problem(setup.put(f"{AGENTS}/agt_01aaaaaaaaaaaaaaaaaaaaaaaa/skills", json={"skills": []}), 404)


def test_rename_onto_an_existing_agent_name_is_a_409(setup):
    create_agent(setup, "first")
    second = create_agent(setup, "second")
    problem(setup.patch(f"{AGENTS}/{second['id']}", json={"name": "first"}), 409)
    assert setup.get(f"{AGENTS}/{second['id']}").json()["name"] == "second"


def test_delete_removes_the_agent_and_its_versions(setup):
    agent = create_agent(setup)
    url = f"{AGENTS}/{agent['id']}"
    r = setup.delete(url)
    assert r.status_code == 204
    assert r.content == b""
    problem(setup.get(url), 404)
    problem(setup.get(f"{url}/versions"), 404)
    problem(setup.delete(url), 404)
    # The name is free again.
    assert create_agent(setup, agent["name"])["version"] == 1


def test_delete_is_refused_while_a_turn_is_running_unless_forced(setup, container):
    agent = create_agent(setup)
    session = container.sessions.start("default", agent["id"], user_id="U1")
    container.sessions.begin_turn("default", session.id, user_id="U1", user_message="hi")
    url = f"{AGENTS}/{agent['name']}"

    body = problem(setup.delete(url), 409)

    assert "1 turn pending or running" in body["detail"]
    assert setup.get(url).status_code == 200
    assert setup.delete(f"{url}?force=true").status_code == 204
    problem(setup.get(url), 404)


def test_list_filters_by_exact_name_by_contained_text_and_active(setup):
    client = setup
    create_agent(client, "sales-eu")
    create_agent(client, "sales-us", is_active=False)
    create_agent(client, "support", is_active=False)

    def names(**params):
        r = client.get(AGENTS, params=params)
        assert r.status_code == 200, r.text
        return [a["name"] for a in r.json()["items"]]

    assert names() == ["sales-eu", "sales-us", "support"]
    assert names(q="sales") == ["sales-eu", "sales-us"]
    assert names(name="sales") == []  # `name` is the whole name, `q` a part of it
    assert names(name="sales-us") == ["sales-us"]
    assert names(active="true") == ["sales-eu"]
    assert names(active="false") == ["sales-us", "support"]
    assert names(q="SALES", active="false") == ["sales-us"]
    assert names(name="sales-eu", active="false") == []
    assert names(q="nothing") == []


def test_pagination_walks_all_pages_without_gaps_or_repeats(setup):
    client = setup
    ids = [create_agent(client, f"agent-{i}", is_active=i % 2 == 0)["id"] for i in range(7)]

    def walk(**params):
        seen, cursor, pages = [], None, 0
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            r = client.get(AGENTS, params=query)
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["items"]) <= params["limit"]
            seen += [a["id"] for a in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                return seen, pages

    assert walk(limit=3) == (ids, 3)
    assert walk(limit=7) == (ids, 1)
    assert walk(limit=1) == (ids, 7)
    # Filters hold on every page.
    assert walk(limit=2, active="true") == (ids[0::2], 2)


def test_out_of_range_limit_is_a_422_on_the_query(setup):
    for limit in (0, 201):
        body = problem(setup.get(AGENTS, params={"limit": limit}), 422)
        assert error_fields(body) == ["query.limit"]


def test_https_webhook_generates_a_secret_shown_once(setup):
    client = setup
    r = client.post(
        AGENTS,
        json={
            "name": "hooked",
            "persona": "helper",
            "webhook": {"url": "https://hooks.example.com/x"},
        },
    )
    assert r.status_code == 201, r.text
    hook = r.json()["webhook"]
    assert hook["url"] == "https://hooks.example.com/x"
    assert hook["secret_set"] is True
    assert hook["secret"].startswith("whsec_")

    agent_id = r.json()["id"]
    assert client.get(f"{AGENTS}/{agent_id}").json()["webhook"] == {
        "url": "https://hooks.example.com/x",
        "secret_set": True,
        "secret_env": None,
        "secret": None,
    }
    # Changing the URL keeps the stored secret and does not show it again.
    r = client.patch(
        f"{AGENTS}/{agent_id}", json={"webhook": {"url": "https://hooks.example.com/y"}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["webhook"]["secret"] is None
    assert r.json()["webhook"]["secret_set"] is True


def test_webhook_secret_from_environment_is_named_not_generated(setup):
    agent = create_agent(
        setup, webhook={"url": "https://hooks.example.com/x", "secret_env": "SALES_HOOK_SECRET"}
    )
    assert agent["webhook"]["secret"] is None
    assert agent["webhook"]["secret_env"] == "SALES_HOOK_SECRET"
    assert agent["webhook"]["secret_set"] is True


def test_patch_webhook_null_removes_it(setup):
    agent = create_agent(setup, webhook={"url": "https://hooks.example.com/x"})
    r = setup.patch(f"{AGENTS}/{agent['id']}", json={"webhook": None})
    assert r.status_code == 200, r.text
    assert setup.get(f"{AGENTS}/{agent['id']}").json()["webhook"] is None


def test_unsafe_webhook_url_is_a_422_on_webhook_url(setup):
    for url in [
        "http://hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://localhost/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "ftp://hooks.example.com/x",
    ]:
        r = setup.post(AGENTS, json={"name": "a", "persona": "helper", "webhook": {"url": url}})
        assert r.status_code == 422, (url, r.text)
        assert error_fields(problem(r, 422)) == ["body.webhook.url"], url
    assert setup.get(AGENTS).json()["items"] == []


def test_http_webhook_is_allowed_when_insecure_webhooks_are_enabled(db, tmp_path):
    settings = make_settings(tmp_path / "data", COSMO_WEBHOOK_ALLOW_INSECURE=True)
    app = create_app(container=build_container(settings, db=db), background=False)
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
        assert client.post("/api/v1/personas", json={"name": "p", "role": "r"}).status_code == 201
        r = client.post(
            AGENTS,
            json={"name": "local", "persona": "p", "webhook": {"url": "http://127.0.0.1:9000/h"}},
        )
        assert r.status_code == 201, r.text
        assert r.json()["webhook"]["url"] == "http://127.0.0.1:9000/h"
        # Cloud metadata stays refused even then.
        body = problem(
            client.post(
                AGENTS,
                json={
                    "name": "meta",
                    "persona": "p",
                    "webhook": {"url": "http://169.254.169.254/"},
                },
            ),
            422,
        )
        assert error_fields(body) == ["body.webhook.url"]


def test_agent_is_addressable_by_name_on_every_route(setup):
    client = setup
    agent = create_agent(client, "sales-bot")
    url = f"{AGENTS}/sales-bot"

    r = client.get(url)
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.headers["ETag"]) == (agent["id"], '"1"')
    r = client.patch(url, json={"description": "by name"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert client.put(f"{url}/skills", json={"skills": ["lookup"]}).status_code == 200
    assert [v["version"] for v in client.get(f"{url}/versions").json()["items"]] == [3, 2, 1]
    assert client.post(f"{url}/rollback", json={"version": 1}).json()["version"] == 4
    assert "name: sales-bot" in client.get(f"{url}/export").text
    assert client.get(f"{url}/usage").json()["agent_id"] == agent["id"]
    assert client.get(f"{url}/memory").status_code == 200
    session = client.post(f"{url}/sessions", json={"user_id": "U1"})
    assert session.status_code == 201, session.text
    assert session.json()["agent_id"] == agent["id"]
    assert client.delete(url).status_code == 204
    problem(client.get(f"{AGENTS}/{agent['id']}"), 404)


def test_unknown_name_is_a_404_naming_it(setup):
    body = problem(setup.get(f"{AGENTS}/ghost-bot"), 404)
    assert "ghost-bot" in body["detail"]


def test_an_id_shaped_name_is_refused_so_it_cannot_shadow_an_id(setup):
    client = setup
    first = create_agent(client, "first")
    # A name with another agent's id would make `/agents/<id>` ambiguous: refused, on
    # create and on rename, and an id-shaped reference is only ever read as an id.
    body = problem(client.post(AGENTS, json={"name": first["id"], "persona": "helper"}), 422)
    assert error_fields(body) == ["body.name"]
    assert "agt_" in body["errors"][0]["msg"]
    second = create_agent(client, "second")
    body = problem(client.patch(f"{AGENTS}/second", json={"name": first["id"]}), 422)
    assert error_fields(body) == ["body.name"]
    assert client.get(f"{AGENTS}/{first['id']}").json()["name"] == "first"
    assert client.get(f"{AGENTS}/{second['id']}").json()["name"] == "second"
    # A name that only starts like an id is an ordinary name.
    assert create_agent(client, "agt_team")["name"] == "agt_team"
    assert client.get(f"{AGENTS}/agt_team").json()["name"] == "agt_team"


def test_a_model_missing_from_the_pricing_table_is_saved_with_a_warning(setup):
    client = setup
    r = client.post(AGENTS, json={"name": "typo", "persona": "helper", "model": "claude-sonet-4"})
    assert r.status_code == 201, r.text
    [warning] = r.json()["warnings"]
    assert "'claude-sonet-4' is not in the pricing table" in warning and "$0" in warning
    assert client.get(f"{AGENTS}/typo").json()["warnings"] == [warning]

    fixed = client.patch(f"{AGENTS}/typo", json={"model": "claude-sonnet-4-5"})
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["warnings"] == []
    # No model of its own: COSMO_MODEL applies, which doctor checks.
    assert create_agent(client, "default-model")["warnings"] == []
