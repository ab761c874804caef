"""Configuration as code over REST: export an agent, import documents (YAML or JSON)."""

from __future__ import annotations

import json

import yaml

AGENTS = "/api/v1/agents"
IMPORT = "/api/v1/agents/import"

DOC = {
    "apiVersion": "cosmo/v1",
    "personas": [
        {
            "name": "seller",
            "role": "Sales assistant",
            "tone": "warm",
            "instructions": "Help {{user_name}} in {{region}}.",
            "variables": {"region": {"default": "EMEA"}},
        }
    ],
    "skills": [
        {
            "name": "lookup",
            "description": "Find a contact",
            "input_schema": {
                "type": "object",
                "properties": {"email": {"type": "string"}},
                "required": ["email"],
            },
            "executor": {"type": "builtin", "function": "current_time"},
        },
        {
            "name": "send_email",
            "description": "Send an email",
            "kind": "action",
            "executor": {"type": "builtin", "function": "draft_email"},
        },
    ],
    "agents": [
        {
            "name": "sales",
            "persona": "seller",
            "description": "Sales helper",
            "skills": ["lookup", "send_email"],
            "approvers": ["U0ADMIN"],
            "limits": {"daily_output_limit": 10},
            "webhook": {"url": "https://hooks.example.com/sales", "secret_env": "SALES_SECRET"},
        },
        {"name": "support", "persona": "seller", "is_active": False},
    ],
}


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    return body


def import_yaml(client, doc, **params):
    return client.post(
        IMPORT,
        content=yaml.safe_dump(doc, sort_keys=False),
        headers={"Content-Type": "application/yaml"},
        params=params,
    )


def import_json(client, doc, **params):
    return client.post(IMPORT, json=doc, params=params)


def stored_names(client):
    def names(path):
        r = client.get(path)
        assert r.status_code == 200, r.text
        return sorted(item["name"] for item in r.json()["items"])

    return {
        "personas": names("/api/v1/personas"),
        "skills": names("/api/v1/skills"),
        "agents": names(AGENTS),
    }


def agent_named(client, name):
    [agent] = client.get(AGENTS, params={"name": name}).json()["items"]
    return agent


def test_yaml_import_creates_everything_and_reports_it(client):
    r = import_yaml(client, DOC)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["changed"] is True
    assert report["dry_run"] is False
    assert [(c["kind"], c["name"], c["action"]) for c in report["changes"]] == [
        ("persona", "seller", "created"),
        ("skill", "lookup", "created"),
        ("skill", "send_email", "created"),
        ("agent", "sales", "created"),
        ("agent", "support", "created"),
    ]
    assert stored_names(client) == {
        "personas": ["seller"],
        "skills": ["lookup", "send_email"],
        "agents": ["sales", "support"],
    }
    sales = agent_named(client, "sales")
    assert sales["skills"] == ["lookup", "send_email"]
    assert sales["limits"]["daily_output_limit"] == 10
    assert sales["webhook"]["secret_env"] == "SALES_SECRET"
    assert agent_named(client, "support")["is_active"] is False
    [version] = client.get(f"{AGENTS}/{sales['id']}/versions").json()["items"]
    assert version["change"] == "created"


def test_json_import_creates_the_same_configuration(client):
    r = import_json(client, DOC)
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True
    assert stored_names(client)["agents"] == ["sales", "support"]


def test_json_import_with_tab_indentation_is_accepted(client):
    text = json.dumps(DOC, indent="\t")
    r = client.post(IMPORT, content=text, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert stored_names(client)["agents"] == ["sales", "support"]


def test_re_import_reports_no_change_and_adds_no_version(client):
    assert import_yaml(client, DOC).status_code == 200
    r = import_json(client, DOC)
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is False
    assert {c["action"] for c in r.json()["changes"]} == {"unchanged"}
    sales = agent_named(client, "sales")
    assert sales["version"] == 1
    assert len(client.get(f"{AGENTS}/{sales['id']}/versions").json()["items"]) == 1


def test_import_updates_by_name_and_names_the_changed_fields(client):
    import_yaml(client, DOC)
    doc = json.loads(json.dumps(DOC))
    doc["agents"][0]["description"] = "Renamed duty"
    doc["agents"][0]["skills"] = ["lookup"]
    doc["skills"][1]["description"] = "Send one email"
    r = import_yaml(client, doc)
    assert r.status_code == 200, r.text
    changes = {(c["kind"], c["name"]): c for c in r.json()["changes"]}
    assert changes[("agent", "sales")]["action"] == "updated"
    assert sorted(changes[("agent", "sales")]["fields"]) == ["description", "skills"]
    assert changes[("skill", "send_email")]["fields"] == ["description"]
    assert changes[("agent", "support")]["action"] == "unchanged"
    sales = agent_named(client, "sales")
    assert sales["version"] == 2
    assert sales["description"] == "Renamed duty"
    assert client.get(f"{AGENTS}/{sales['id']}/versions").json()["items"][0]["change"] == (
        "applied from config"
    )


def test_dry_run_reports_changes_but_writes_nothing(client):
    r = import_yaml(client, DOC, dry_run="true")
    assert r.status_code == 200, r.text
    assert r.json()["dry_run"] is True
    assert r.json()["changed"] is True
    assert len(r.json()["changes"]) == 5
    assert stored_names(client) == {"personas": [], "skills": [], "agents": []}


def test_invalid_document_is_a_422_with_the_field_path(client):
    doc = json.loads(json.dumps(DOC))
    doc["agents"][1]["approvers"] = ["not-a-slack-id"]
    doc["skills"][0]["input_schema"] = {"type": "array"}
    body = problem(import_yaml(client, doc), 422)
    assert sorted(e["field"] for e in body["errors"]) == [
        "agents.1.approvers",
        "skills.0.input_schema",
    ]
    assert stored_names(client)["agents"] == []


def test_unknown_top_level_key_and_wrong_api_version_are_named(client):
    body = problem(import_yaml(client, {"apiVersion": "cosmo/v2", "agentz": []}), 422)
    assert sorted(e["field"] for e in body["errors"]) == ["agentz", "apiVersion"]


def test_document_that_is_not_yaml_or_not_a_mapping_is_a_422(client):
    for text in ("agents: [unclosed", "- just\n- a list\n", "plain string"):
        r = client.post(IMPORT, content=text, headers={"Content-Type": "application/yaml"})
        body = problem(r, 422)
        assert body["errors"][0]["field"] == ""


def test_last_agent_invalid_leaves_nothing_written(client):
    doc = json.loads(json.dumps(DOC))
    # Valid on its own, but refers to a persona that exists nowhere: found only while applying.
    doc["agents"].append({"name": "broken", "persona": "ghost"})
    body = problem(import_json(client, doc), 422)
    assert [e["field"] for e in body["errors"]] == ["agents.2.persona"]
    assert stored_names(client) == {"personas": [], "skills": [], "agents": []}


def test_last_agent_with_unknown_skill_leaves_existing_config_untouched(client):
    import_yaml(client, DOC)
    doc = json.loads(json.dumps(DOC))
    doc["agents"][0]["description"] = "should not stick"
    doc["agents"][1]["skills"] = ["ghost"]
    body = problem(import_yaml(client, doc), 422)
    assert [e["field"] for e in body["errors"]] == ["agents.1.skills"]
    sales = agent_named(client, "sales")
    assert sales["description"] == "Sales helper"
    assert sales["version"] == 1


def test_import_with_unsafe_webhook_names_the_agents_url(client):
    doc = json.loads(json.dumps(DOC))
    doc["agents"][1]["webhook"] = {"url": "https://10.0.0.8/hook", "secret_env": "HOOK_SECRET"}
    body = problem(import_json(client, doc), 422)
    assert [e["field"] for e in body["errors"]] == ["agents.1.webhook.url"]
    assert stored_names(client)["agents"] == []


def test_export_defaults_to_yaml_and_re_imports_without_change(client):
    import_yaml(client, DOC)
    sales = agent_named(client, "sales")
    r = client.get(f"{AGENTS}/{sales['id']}/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/yaml")
    exported = yaml.safe_load(r.text)
    assert exported["apiVersion"] == "cosmo/v1"
    assert [p["name"] for p in exported["personas"]] == ["seller"]
    assert [s["name"] for s in exported["skills"]] == ["lookup", "send_email"]
    [agent] = exported["agents"]
    assert agent["name"] == "sales"
    assert agent["skills"] == ["lookup", "send_email"]
    assert agent["webhook"] == {
        "url": "https://hooks.example.com/sales",
        "secret_env": "SALES_SECRET",
    }

    again = client.post(IMPORT, content=r.text, headers={"Content-Type": "application/yaml"})
    assert again.status_code == 200, again.text
    assert again.json()["changed"] is False


def test_export_as_json_by_accept_matches_the_yaml_export(client):
    import_yaml(client, DOC)
    sales = agent_named(client, "sales")
    as_json = client.get(f"{AGENTS}/{sales['id']}/export", headers={"Accept": "application/json"})
    as_yaml = client.get(f"{AGENTS}/{sales['id']}/export", headers={"Accept": "application/yaml"})
    assert as_json.status_code == as_yaml.status_code == 200
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert as_json.json() == yaml.safe_load(as_yaml.text)

    again = client.post(
        IMPORT, content=as_json.content, headers={"Content-Type": "application/json"}
    )
    assert again.status_code == 200, again.text
    assert again.json()["changed"] is False


def test_exported_agent_imports_into_another_tenant(client):
    import_yaml(client, DOC)
    sales = agent_named(client, "sales")
    text = client.get(f"{AGENTS}/{sales['id']}/export").text
    other = {"X-Cosmo-Tenant": "T0OTHER"}
    r = client.post(IMPORT, content=text, headers={**other, "Content-Type": "application/yaml"})
    assert r.status_code == 200, r.text
    assert {c["action"] for c in r.json()["changes"]} == {"created"}
    [copy] = client.get(AGENTS, headers=other).json()["items"]
    assert copy["tenant_id"] == "T0OTHER"
    assert copy["id"] != sales["id"]
    assert copy["skills"] == sales["skills"]


def test_export_of_unknown_agent_is_a_404(client):
    problem(client.get(f"{AGENTS}/agt_01aaaaaaaaaaaaaaaaaaaaaaaa/export"), 404)


def test_yaml_aliases_are_refused_quickly(client):
    # An alias bomb: nine levels of nine references expand to 9**9 items.
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    r = client.post(IMPORT, content="\n".join(lines), headers={"Content-Type": "application/yaml"})
    body = problem(r, 422)
    assert "alias" in body["detail"]


def test_deeply_nested_document_is_a_422_not_a_crash(client):
    deep = '{"type": "object", "properties": {"x": ' * 900 + "{}" + "}}" * 900
    text = "skills:\n- name: deep\n  description: d\n  input_schema: " + deep + "\n"
    body = problem(client.post(IMPORT, content=text), 422)
    assert "nest" in body["detail"]
    assert stored_names(client)["skills"] == []


def test_a_new_webhook_in_a_document_must_say_where_its_secret_comes_from(client):
    doc = json.loads(json.dumps(DOC))
    doc["agents"][1]["webhook"] = {"url": "https://hooks.example.com/cosmo"}
    body = problem(import_json(client, doc), 422)
    assert [e["field"] for e in body["errors"]] == ["agents.1.webhook.secret_env"]
    assert client.get("/api/v1/agents").json()["items"] == []

    doc["agents"][1]["webhook"]["secret_env"] = "SALES_WEBHOOK_SECRET"
    assert import_json(client, doc).status_code == 200
    agent = client.get("/api/v1/agents", params={"name": doc["agents"][1]["name"]}).json()
    assert agent["items"][0]["webhook"] == {
        "url": "https://hooks.example.com/cosmo",
        "secret_set": True,
        "secret_env": "SALES_WEBHOOK_SECRET",
        "secret": None,
    }
