"""REST behaviour of `/api/v1/skills`: keyed by name, JSON Schema inputs, executors."""

from __future__ import annotations

SKILLS = "/api/v1/skills"
# A skill name need not be its function; it must name one that exists.
BUILTIN = {"executor": {"type": "builtin", "function": "current_time"}}

LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {"email": {"type": "string", "format": "email"}},
    "required": ["email"],
}


def create_skill(client, name="lookup", **fields):
    body = {"name": name, "description": f"The {name} skill", **BUILTIN, **fields}
    r = client.post(SKILLS, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def error_fields(body):
    return [e["field"] for e in body["errors"]]


def test_created_skill_has_defaults_and_reads_back_by_name(client):
    created = create_skill(client, "lookup", input_schema=LOOKUP_SCHEMA)
    assert created["id"].startswith("skl_")
    assert created["kind"] == "read"
    assert created["is_automatable"] is False
    assert created["executor"] == {"type": "builtin", "function": "current_time"}
    assert (created["usable"], created["problem"]) == (True, None)
    assert created["input_schema"] == LOOKUP_SCHEMA

    r = client.get(f"{SKILLS}/lookup")
    assert r.status_code == 200
    assert r.json() == created


def test_action_skill_with_http_executor_is_stored_as_given(client):
    executor = {
        "type": "http",
        "method": "POST",
        "url": "https://crm.example.com/contacts/{{email}}",
        "headers": {"Accept": "application/json"},
        "secret_headers": {"Authorization": "CRM_AUTH_HEADER"},
        "body_template": {"note": "{{email}}"},
        "timeout_seconds": 5.0,
        "max_response_bytes": 1024,
    }
    create_skill(client, "crm_note", kind="action", is_automatable=True, executor=executor)
    stored = client.get(f"{SKILLS}/crm_note").json()
    assert stored["kind"] == "action"
    assert stored["is_automatable"] is True
    assert stored["executor"] == executor


def test_input_schema_that_is_not_valid_json_schema_is_a_422(client):
    r = client.post(
        SKILLS,
        json={"name": "bad", "description": "d", "input_schema": {"type": "object", "required": 3}},
    )
    body = problem(r, 422)
    assert error_fields(body) == ["body.input_schema"]
    assert "required" in body["errors"][0]["msg"]
    problem(client.get(f"{SKILLS}/bad"), 404)


def test_input_schema_must_describe_an_object(client):
    r = client.post(
        SKILLS, json={"name": "bad", "description": "d", "input_schema": {"type": "string"}}
    )
    body = problem(r, 422)
    assert error_fields(body) == ["body.input_schema"]
    assert "object" in body["errors"][0]["msg"]


def test_credentials_in_plain_headers_are_refused_with_the_executor_path(client):
    r = client.post(
        SKILLS,
        json={
            "name": "leaky",
            "description": "d",
            "executor": {
                "type": "http",
                "url": "https://crm.example.com",
                "headers": {"Authorization": "Bearer abc"},
            },
        },
    )
    body = problem(r, 422)
    assert error_fields(body) == ["body.executor.http.headers"]
    assert "secret_headers" in body["errors"][0]["msg"]


def test_patch_updates_the_skill_and_keeps_the_rest(client):
    create_skill(client, "lookup", input_schema=LOOKUP_SCHEMA)
    r = client.patch(
        f"{SKILLS}/lookup", json={"description": "Look a contact up", "kind": "action"}
    )
    assert r.status_code == 200, r.text
    stored = client.get(f"{SKILLS}/lookup").json()
    assert stored["description"] == "Look a contact up"
    assert stored["kind"] == "action"
    assert stored["input_schema"] == LOOKUP_SCHEMA


def test_patch_with_invalid_input_schema_is_a_422_and_changes_nothing(client):
    create_skill(client, "lookup", input_schema=LOOKUP_SCHEMA)
    body = problem(client.patch(f"{SKILLS}/lookup", json={"input_schema": {"type": "array"}}), 422)
    assert error_fields(body) == ["body.input_schema"]
    assert client.get(f"{SKILLS}/lookup").json()["input_schema"] == LOOKUP_SCHEMA


def test_skill_names_cannot_be_changed_by_patch(client):
    create_skill(client, "lookup")
    body = problem(client.patch(f"{SKILLS}/lookup", json={"name": "other"}), 422)
    assert error_fields(body) == ["body.name"]


def test_unknown_skill_is_a_404_for_get_and_patch(client):
    problem(client.get(f"{SKILLS}/nope"), 404)
    problem(client.patch(f"{SKILLS}/nope", json={"description": "x"}), 404)


def test_duplicate_name_is_a_409(client):
    create_skill(client, "lookup")
    body = problem(
        client.post(SKILLS, json={"name": "lookup", "description": "again", **BUILTIN}), 409
    )
    assert "lookup" in body["detail"]


def test_list_filters_by_kind_name_and_q(client):
    create_skill(client, "find_contact")
    create_skill(client, "send_email", kind="action")
    create_skill(client, "find_deal", kind="action")

    def names(**params):
        r = client.get(SKILLS, params=params)
        assert r.status_code == 200, r.text
        return [s["name"] for s in r.json()["items"]]

    assert names(kind="action") == ["send_email", "find_deal"]
    assert names(q="find") == ["find_contact", "find_deal"]
    assert names(q="find", kind="read") == ["find_contact"]
    assert names(name="find") == []
    assert names(name="find_deal") == ["find_deal"]
    assert problem(client.get(SKILLS, params={"kind": "write"}), 422)["errors"][0]["field"] == (
        "query.kind"
    )


def test_pagination_walks_every_skill_once(client):
    created = [create_skill(client, f"s{i}")["name"] for i in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get(SKILLS, params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += [s["name"] for s in r.json()["items"]]
        pages += 1
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == created
    assert pages == 3


def test_unknown_json_schema_keywords_are_refused_naming_keyword_and_path(client):
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Name", "email or domain": None},
            "tags": {"type": "array", "items": {"type": "string", "minLenght": 2}},
        },
    }
    payload = {"name": "s", "description": "d", "input_schema": schema, **BUILTIN}
    body = problem(client.post(SKILLS, json=payload), 422)
    assert error_fields(body) == [
        "body.input_schema.properties.query",
        "body.input_schema.properties.tags.items",
    ]
    assert "'email or domain' is not a JSON Schema keyword" in body["errors"][0]["msg"]
    assert "'minLenght'" in body["errors"][1]["msg"]
    assert client.get(f"{SKILLS}/s").status_code == 404  # nothing half-written

    create_skill(client, "ok")
    r = client.patch(f"{SKILLS}/ok", json={"input_schema": schema})
    assert error_fields(problem(r, 422))[0] == "body.input_schema.properties.query"


def test_every_keyword_the_edit_form_and_tools_use_is_accepted(client):
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Ticket",
        "properties": {
            "email": {"type": "string", "format": "email", "maxLength": 80},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$", "minLength": 3},
            "priority": {"enum": ["low", "high"], "default": "low", "description": "How soon"},
            "count": {"type": "integer", "minimum": 1, "maximum": 9, "examples": [2]},
            "labels": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "when": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
            "extra": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["email"],
        "additionalProperties": False,
        "$defs": {"id": {"type": "string", "x-display": "short"}},
    }
    assert create_skill(client, "form", input_schema=schema)["input_schema"] == schema
