"""REST behaviour of `/api/v1/personas`: CRUD, template variables, filters, pagination."""

from __future__ import annotations

PERSONAS = "/api/v1/personas"


def create_persona(client, name="helper", **fields):
    body = {"name": name, "role": "Helpful assistant", **fields}
    r = client.post(PERSONAS, json=body)
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


def walk(client, path, **params):
    """Every item of a paginated list, following `next_cursor` to the end."""
    items, pages, cursor = [], 0, None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get(path, params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages


def test_created_persona_is_returned_and_read_back(client):
    created = create_persona(
        client,
        tone="warm",
        instructions="Hello {{user_name}} in {{channel}}; region {{region}}.",
        variables={"region": {"default": "EMEA", "description": "sales region"}},
    )
    assert created["id"].startswith("per_")
    assert created["tenant_id"] == "default"
    assert created["variables"] == {"region": {"default": "EMEA", "description": "sales region"}}

    r = client.get(f"{PERSONAS}/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created


def test_all_builtin_variables_are_accepted_without_declaration(client):
    template = "{{user_name}} {{channel}} {{date}} {{ agent_name }}"
    created = create_persona(client, instructions=template)
    assert created["instructions"] == template
    assert created["variables"] == {}


def test_undeclared_template_variable_is_a_422_naming_instructions(client):
    r = client.post(
        PERSONAS,
        json={"name": "p", "role": "r", "instructions": "Hi {{user_name}}, see {{ticket_id}}"},
    )
    body = problem(r, 422)
    assert error_fields(body) == ["body.instructions"]
    assert "ticket_id" in body["errors"][0]["msg"]
    assert client.get(PERSONAS).json()["items"] == []


def test_redeclaring_a_builtin_variable_is_refused(client):
    r = client.post(
        PERSONAS, json={"name": "p", "role": "r", "variables": {"date": {"default": "x"}}}
    )
    body = problem(r, 422)
    assert error_fields(body) == ["body.variables"]
    assert "date" in body["errors"][0]["msg"]


def test_patch_changes_only_the_given_fields(client):
    created = create_persona(client, tone="warm", instructions="Hi {{user_name}}")
    r = client.patch(f"{PERSONAS}/{created['id']}", json={"tone": "formal"})
    assert r.status_code == 200, r.text
    assert r.json()["tone"] == "formal"
    assert r.json()["instructions"] == "Hi {{user_name}}"
    stored = client.get(f"{PERSONAS}/{created['id']}").json()
    assert stored["tone"] == "formal"
    assert stored["role"] == created["role"]


def test_patch_that_removes_a_variable_still_used_is_refused(client):
    created = create_persona(
        client, instructions="Region {{region}}", variables={"region": {"default": "EMEA"}}
    )
    r = client.patch(f"{PERSONAS}/{created['id']}", json={"variables": {}})
    body = problem(r, 422)
    assert error_fields(body) == ["body.instructions"]
    stored = client.get(f"{PERSONAS}/{created['id']}").json()
    assert stored["variables"] == {"region": {"default": "EMEA", "description": None}}


def test_patch_with_unknown_field_names_the_field(client):
    created = create_persona(client)
    body = problem(client.patch(f"{PERSONAS}/{created['id']}", json={"colour": "red"}), 422)
    assert error_fields(body) == ["body.colour"]


def test_duplicate_name_is_a_409(client):
    create_persona(client, "helper")
    body = problem(client.post(PERSONAS, json={"name": "helper", "role": "other"}), 409)
    assert "helper" in body["detail"]


def test_rename_onto_an_existing_name_is_a_409(client):
    create_persona(client, "first")
    second = create_persona(client, "second")
    problem(client.patch(f"{PERSONAS}/{second['id']}", json={"name": "first"}), 409)
    assert client.get(f"{PERSONAS}/{second['id']}").json()["name"] == "second"


def test_delete_removes_the_persona(client):
    created = create_persona(client)
    r = client.delete(f"{PERSONAS}/{created['id']}")
    assert r.status_code == 204
    assert r.content == b""
    problem(client.get(f"{PERSONAS}/{created['id']}"), 404)
    problem(client.delete(f"{PERSONAS}/{created['id']}"), 404)


def test_persona_used_by_an_agent_cannot_be_deleted_until_the_agent_moves(client):
    used = create_persona(client, "used")
    create_persona(client, "spare")
    agent = client.post("/api/v1/agents", json={"name": "bot", "persona": "used"}).json()

    body = problem(client.delete(f"{PERSONAS}/{used['id']}"), 409)
    assert "bot" in body["detail"]
    assert client.get(f"{PERSONAS}/{used['id']}").status_code == 200

    moved = client.patch(f"/api/v1/agents/{agent['id']}", json={"persona": "spare"})
    assert moved.status_code == 200, moved.text
    assert client.delete(f"{PERSONAS}/{used['id']}").status_code == 204


def test_list_filters_by_name_substring_case_insensitively_with_q(client):
    for name in ("sales-helper", "support", "sales_lead"):
        create_persona(client, name)
    names = [p["name"] for p in client.get(PERSONAS, params={"q": "SALES"}).json()["items"]]
    assert names == ["sales-helper", "sales_lead"]
    # `_` is a literal underscore, not a LIKE wildcard.
    names = [p["name"] for p in client.get(PERSONAS, params={"q": "s_h"}).json()["items"]]
    assert names == []
    names = [p["name"] for p in client.get(PERSONAS, params={"q": "s_"}).json()["items"]]
    assert names == ["sales_lead"]


def test_name_filter_matches_the_whole_name_only(client):
    for name in ("sales", "sales-helper"):
        create_persona(client, name)
    names = [p["name"] for p in client.get(PERSONAS, params={"name": "sales"}).json()["items"]]
    assert names == ["sales"]
    assert client.get(PERSONAS, params={"name": "SALES"}).json()["items"] == []


def test_pagination_walks_every_persona_once_in_creation_order(client):
    created = [create_persona(client, f"p{i}")["id"] for i in range(5)]
    items, pages = walk(client, PERSONAS, limit=2)
    assert [p["id"] for p in items] == created
    assert pages == 3
