"""`/agent skill new|edit|test` end to end: signed slash commands and `view_submission`s to
our /slack/events, the real Bolt app, the fake Slack Web API and a real database."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import NotFound
from core.outputs.port import OutputFilter
from core.schemas.skill import SkillSpec
from tests.e2e.test_slack_commands import (
    ADA,
    ALICE,
    CONFIG,
    block,
    command,
    last_answer,
    multi,
    opened_view,
    select,
    submit,
    text,
)
from tests.slack_support import slack_app


@pytest.fixture
def app(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG, COSMO_SKILL_SECRETS="CRM_*") as running:
        running.slack.add_user(ADA, "ada", is_admin=True)
        yield running


def skill_values(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": text("lookup_customer"),
        "description": text("Find a customer in the CRM by email."),
        "kind": select("read"),
        "options": multi(kind="checkboxes"),
        "executor": select("http"),
        "http_method": select("GET"),
        "http_url": text("https://crm.example.com/customers?email={{email}}"),
        "http_headers": text("Accept: application/json"),
        "http_secret_headers": text("Authorization: CRM_TOKEN"),
        "http_body": text(None),
        "mcp_tool": text(None),
        "input_schema": text(None),
        "field1_name": text("email"),
        "field1_type": select("string"),
        "field1_choices": text(None),
        "field1_description": text("The customer's email"),
        "field2_name": text("tier"),
        "field2_type": select("enum"),
        "field2_choices": text("free, pro, enterprise"),
        "field2_description": text(None),
        "fields_required": multi("1", kind="checkboxes"),
    }
    values.update(changes)
    return values


def skill_names(app: Any) -> list[str]:
    return sorted(s.name for s in app.container.skills.list("default", limit=200).items)


def test_skill_new_opens_a_form_and_saves_an_http_skill_built_from_field_rows(app):
    command(app, "skill new", user=ADA)
    view = opened_view(app)
    assert view["callback_id"] == "skill_new"
    functions = block(view, "builtin_function")["element"]["options"]
    assert [o["value"] for o in functions] == sorted(app.container.skill_factory.builtins.names())
    assert all(b.get("block_id") != "mcp_command" for b in view["blocks"])

    result = submit(app, view, skill_values(), user=ADA)

    assert result.get("response_action") == "update", result
    skill = app.container.skills.get("default", "lookup_customer")
    assert skill.kind == "read"
    executor = skill.executor.model_dump(mode="json") if skill.executor else {}
    assert executor["type"] == "http"
    assert executor["method"] == "GET"
    assert executor["headers"] == {"Accept": "application/json"}
    assert executor["secret_headers"] == {"Authorization": "CRM_TOKEN"}
    assert skill.input_schema == {
        "type": "object",
        "properties": {
            "email": {"type": "string", "description": "The customer's email"},
            "tier": {"type": "string", "enum": ["free", "pro", "enterprise"]},
        },
        "required": ["email"],
    }


def test_skill_new_puts_each_error_on_its_field_and_saves_nothing(app):
    command(app, "skill new", user=ADA)
    view = opened_view(app)
    before = skill_names(app)

    both = submit(
        app,
        view,
        skill_values(
            name=text("Lookup Customer"),
            input_schema=text('{"type": "object", "properties": {}}'),
            field2_choices=text(None),
        ),
    )
    assert set(both["errors"]) == {"input_schema", "field2_choices"}
    assert "not both" in both["errors"]["input_schema"]

    schema_typo = submit(
        app,
        view,
        skill_values(
            name=text("Lookup Customer"),
            input_schema=text('{"type": "object", "properties": {"q": {"minLenght": 2}}}'),
            **{f"field{i}_{part}": text(None) for i in (1, 2) for part in ("name", "choices")},
            field1_type={"type": "static_select", "selected_option": None},
            field2_type={"type": "static_select", "selected_option": None},
            field1_description=text(None),
            fields_required=multi(kind="checkboxes"),
        ),
    )
    assert "name" in schema_typo["errors"]  # the slug rule, from SkillSpec

    keyword = submit(
        app,
        view,
        skill_values(
            input_schema=text('{"type": "object", "properties": {"q": {"minLenght": 2}}}'),
            **{f"field{i}_{part}": text(None) for i in (1, 2) for part in ("name", "choices")},
            field1_type={"type": "static_select", "selected_option": None},
            field2_type={"type": "static_select", "selected_option": None},
            field1_description=text(None),
            fields_required=multi(kind="checkboxes"),
        ),
    )
    assert set(keyword["errors"]) == {"input_schema"}
    assert "'minLenght' is not a JSON Schema keyword" in keyword["errors"]["input_schema"]

    secret = submit(
        app, view, skill_values(http_secret_headers=text("Authorization: DATABASE_URL"))
    )
    assert set(secret["errors"]) == {"http_secret_headers"}

    plain_credential = submit(app, view, skill_values(http_headers=text("Authorization: Bearer x")))
    assert set(plain_credential["errors"]) == {"http_headers"}
    assert "secret_headers" in plain_credential["errors"]["http_headers"]

    assert skill_names(app) == before


def test_skill_new_refuses_an_mcp_server_the_operator_did_not_configure(app):
    command(app, "skill new", user=ADA)
    view = opened_view(app)
    assert all(b.get("block_id") != "mcp_server" for b in view["blocks"])  # none configured

    result = submit(
        app,
        view,
        skill_values(executor=select("mcp"), mcp_server=select("tickets")),
    )

    assert set(result["errors"]) == {"mcp_server"}
    with pytest.raises(NotFound):
        app.container.skills.get("default", "lookup_customer")


def test_skill_forms_are_for_agent_admins(app):
    command(app, "skill new")
    assert "Only agent admins" in last_answer(app)
    assert not app.slack.calls("views.open")

    command(app, "skill new", user=ADA)
    view = opened_view(app)
    refused = submit(app, view, skill_values(), user=ALICE)
    assert "Only agent admins" in refused["errors"]["name"]
    assert "lookup_customer" not in skill_names(app)


def test_skill_edit_shows_the_skill_and_saves_changes_through_the_same_rules(app):
    command(app, "skill edit draft_email", user=ADA)
    view = opened_view(app)
    assert view["callback_id"] == "skill_edit"
    assert block(view, "kind")["element"]["initial_option"]["value"] == "action"
    assert '"to"' in block(view, "input_schema")["element"]["initial_value"]
    schema_before = app.container.skills.get("default", "draft_email").input_schema

    unchanged_schema = block(view, "input_schema")["element"]["initial_value"]
    values = {
        "description": text("Draft an email for a person to approve."),
        "kind": select("action"),
        "options": multi("is_automatable", kind="checkboxes"),
        "executor": select("builtin"),
        "builtin_function": select("draft_email"),
        "input_schema": text(unchanged_schema),
    }
    bad = submit(
        app,
        view,
        values | {"builtin_function": select("current_time"), "input_schema": text("{not json")},
    )
    assert set(bad["errors"]) == {"input_schema"}

    saved = submit(app, view, values)

    assert saved.get("response_action") == "update", saved
    skill = app.container.skills.get("default", "draft_email")
    assert skill.description == "Draft an email for a person to approve."
    assert skill.is_automatable is True
    assert skill.input_schema == schema_before


def test_skill_test_runs_a_read_skill_once_and_refuses_action_skills(app):
    command(app, 'skill test current_time {"timezone": "Europe/Paris"}', user=ADA)
    answer = last_answer(app, ADA)
    assert "current_time" in answer and "answered" in answer
    assert "Now (Europe/Paris)" in answer

    command(app, 'skill test draft_email {"to": "a@example.com", "body": "hi"}', user=ADA)
    assert "action skill" in last_answer(app, ADA)
    outputs = app.container.outputs.list("default", OutputFilter(), cursor=None, limit=10)
    assert outputs.items == []

    command(app, "skill test current_time {oops", user=ADA)
    assert "not valid JSON" in last_answer(app, ADA)

    command(app, "skill test current_time {}")
    assert "Only agent admins" in last_answer(app)


def test_skill_test_goes_through_the_egress_guard_of_a_turn(app):
    """Even with local addresses allowed (these tests), a skill may never call this server."""
    ours = f"http://127.0.0.1:{app.container.settings.port}/api/v1/agents"
    app.container.skills.create(
        "default",
        SkillSpec.model_validate(
            {
                "name": "internal_lookup",
                "description": "Look something up on an internal host.",
                "executor": {"type": "http", "method": "GET", "url": ours},
            }
        ),
    )

    command(app, "skill test internal_lookup", user=ADA)

    answer = last_answer(app, ADA)
    assert "`internal_lookup` failed" in answer
    assert "this Cosmo server's own port" in answer and "answered" not in answer
