"""`/agent persona NAME` with variables and its preview, end to end (signed requests to our
/slack/events, the real Bolt app, the fake Slack Web API, a real database)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_slack_commands import ADA, CONFIG, block, command, opened_view, submit, text
from tests.slack_support import SlackApp, slack_app


@pytest.fixture
def app(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG) as running:
        running.slack.add_user(ADA, "ada", is_admin=True)
        yield running


def persona_values(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "role": text("Sales assistant"),
        "tone": text("warm"),
        "instructions": text("Help {{user_name}} sell in {{region}}."),
        "var1_name": text("region"),
        "var1_default": text("EMEA"),
        "var1_description": text("Where the team sells"),
        "var2_name": text(None),
        "var2_default": text(None),
        "var2_description": text(None),
    }
    values.update(changes)
    return values


def seller(app: SlackApp) -> Any:
    return app.container.personas.list("default", name="seller", limit=1).items[0]


def test_the_persona_form_shows_variables_rows_and_the_rendered_persona(app):
    command(app, "persona sales-bot", user=ADA)
    view = opened_view(app)

    assert {"var1_name", "var1_default", "var1_description", "var2_name"} <= {
        b.get("block_id") for b in view["blocks"]
    }
    preview = block(view, "persona_preview_text")["text"]["text"]
    assert "You are sales-bot, Sales assistant." in preview
    assert "Help the current speaker." in preview  # {{user_name}}, rendered as Claude reads it


def test_variables_are_declared_with_defaults_and_descriptions(app):
    command(app, "persona sales-bot", user=ADA)
    view = opened_view(app)

    undeclared = submit(app, view, persona_values(var1_name=text(None), var1_default=text(None),
                                                  var1_description=text(None)))  # fmt: skip
    assert set(undeclared["errors"]) == {"instructions"}
    assert "Variables rows of /agent persona" in undeclared["errors"]["instructions"]

    twice = submit(app, view, persona_values(var2_name=text("region")))
    assert set(twice["errors"]) == {"var2_name"}
    builtin = submit(
        app,
        view,
        persona_values(instructions=text("Hi."), var1_name=text("date"), var1_default=text("x")),
    )
    assert set(builtin["errors"]) == {"var1_name"}
    assert seller(app).variables == {}

    saved = submit(app, view, persona_values())
    assert saved["response_action"] == "update", saved
    variables = seller(app).variables
    assert {k: v.model_dump() for k, v in variables.items()} == {
        "region": {"default": "EMEA", "description": "Where the team sells"}
    }

    command(app, "persona sales-bot", user=ADA)
    again = opened_view(app)
    assert block(again, "var1_name")["element"]["initial_value"] == "region"
    assert block(again, "var1_default")["element"]["initial_value"] == "EMEA"
    assert (
        "Help the current speaker sell in EMEA."
        in block(again, "persona_preview_text")["text"]["text"]
    )

    removed = submit(
        app,
        again,
        persona_values(
            instructions=text("Help {{user_name}}."),
            var1_name=text(None),
            var1_default=text(None),
            var1_description=text(None),
        ),
    )
    assert removed["response_action"] == "update"
    assert seller(app).variables == {}


def test_update_preview_renders_what_is_typed_without_saving(app):
    command(app, "persona sales-bot", user=ADA)
    view = opened_view(app)
    values = {k: {k: v} for k, v in persona_values(var1_default=text("the Nordics")).items()}

    request = app.requests.view_action("persona_preview", view, values, user=ADA)
    assert app.send(request).status_code == 200
    app.run_jobs()

    updated = app.slack.last("views.update").response["view"]
    preview = block(updated, "persona_preview_text")["text"]["text"]
    assert "Help the current speaker sell in the Nordics." in preview
    assert seller(app).instructions == "Help {{user_name}}."  # nothing saved
