"""Edit before approve in Block Kit: the Edit modal per schema type (pinned as JSON), its
state read back into typed arguments, and the approval/decided messages naming revision,
edit, the request approval makes and who decided what."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.slack import blocks
from bot.slack.edit_form import (
    EditForm,
    edit_fields,
    edit_modal,
    errors_by_block,
    field_kind,
    read_submission,
)
from core.errors import FieldError
from core.execution.effect import PlannedEffect
from core.outputs.port import Output, OutputEdit, OutputStatus

WHEN = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
WHEN_TEXT = "<!date^1772443800^{date_short_pretty} at {time}|2026-03-02 09:30 UTC>"
SNAPSHOT = {"name": "send_email", "version": 1, "kind": "action", "input_schema": {}}


def output(**changes: Any) -> Output:
    values: dict[str, Any] = {
        "id": "out_01",
        "tenant_id": "default",
        "agent_id": "agt_01",
        "session_id": "ses_01",
        "skill": "send_email",
        "is_automatable": True,
        "arguments": {"to": "ana@example.com"},
        "content_type": "text/markdown",
        "content_sha256": "1a2b3c4d" + "0" * 56,
        "content_size": 12,
        "preview": "Hi Ana",
        "status": OutputStatus.PENDING,
        "skill_snapshot": SNAPSHOT,
        "requested_by": "U0ALICE001",
        "created_at": WHEN,
        "updated_at": WHEN,
    }
    values.update(changes)
    return Output(**values)


def modal_for(schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    form = edit_fields(schema, arguments)
    return edit_modal(
        skill_title="Send email",
        revision=1,
        form=form,
        metadata={"tenant": "default", "output_id": "out_01", "revision": 1, "channel": "C1"},
    )


def only_input(schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = [
        b for b in modal_for(schema, arguments)["blocks"] if b["type"] == "input"
    ]
    (block,) = inputs
    return block


def obj(prop: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"type": "object", "properties": {"f": prop}, "required": ["f"] if required else []}


# -- the modal, one schema type at a time -------------------------------------------------


def test_the_modal_carries_tenant_output_and_revision_and_explains_itself():
    modal = modal_for(obj({"type": "string", "format": "email"}), {"f": "a@b.c"})
    assert modal["callback_id"] == "output_edit_submit"
    assert json.loads(modal["private_metadata"]) == {
        "tenant": "default",
        "output_id": "out_01",
        "revision": 1,
        "channel": "C1",
    }
    assert modal["title"] == {"type": "plain_text", "text": "Edit before approving"}
    assert len(modal["title"]["text"]) <= 24
    assert modal["blocks"][0] == {
        "type": "context",
        "elements": [
            {
                "type": "mrkdwn",
                "text": "Editing *Send email* at revision 1. Saving makes revision 2; "
                "approvers see what changed.",
            }
        ],
    }


def test_a_structured_short_string_is_one_line_with_title_hint_and_required_mark():
    prop = {"type": "string", "format": "email", "title": "Recipient", "description": "Who"}
    assert only_input(obj(prop), {"f": "ana@example.com"}) == {
        "type": "input",
        "block_id": "arg:f",
        "optional": False,
        "label": {"type": "plain_text", "text": "Recipient"},
        "hint": {"type": "plain_text", "text": "Who"},
        "element": {
            "type": "plain_text_input",
            "action_id": "value",
            "multiline": False,
            "initial_value": "ana@example.com",
        },
    }


def test_free_text_is_multiline_with_its_length_limits():
    prop = {"type": "string", "maxLength": 500, "minLength": 2}
    assert only_input(obj(prop, required=False), {"f": "Helo Ana"}) == {
        "type": "input",
        "block_id": "arg:f",
        "optional": True,
        "label": {"type": "plain_text", "text": "f"},
        "element": {
            "type": "plain_text_input",
            "action_id": "value",
            "multiline": True,
            "max_length": 500,
            "min_length": 2,
            "initial_value": "Helo Ana",
        },
    }


@pytest.mark.parametrize(
    ("prop", "value", "kind"),
    [
        ({"type": "string", "format": "email"}, "a@b.c", "line"),
        ({"type": "string", "pattern": "^[A-Z]+$"}, "ABC", "line"),
        ({"type": "string", "maxLength": 80}, "short", "line"),
        ({"type": "string", "maxLength": 81}, "short", "text"),
        ({"type": "string"}, "short", "text"),
        ({"type": "string", "format": "email"}, "x" * 81, "text"),
        ({"type": "string", "format": "date"}, "2026-01-01\nand more", "text"),
        ({"type": "string", "enum": ["a", "b"]}, "a", "select"),
        ({"type": "boolean"}, True, "boolean"),
        ({"type": "integer"}, 3, "integer"),
        ({"type": "number"}, 3.5, "number"),
        ({"type": "array", "items": {"type": "string"}}, ["a", "b"], "lines"),
        ({"type": "array", "items": {"type": "string"}}, ["two\nlines"], "json"),
        ({"type": "array", "items": {"type": "integer"}}, [1, 2], "json"),
        ({"type": "object"}, {"a": 1}, "json"),
        ({"type": ["string", "null"]}, None, "json"),
        ({}, "anything", "json"),
    ],
)
def test_the_rule_that_picks_each_input(prop, value, kind):
    assert field_kind(prop, value) == kind


def test_an_integer_is_a_number_input_without_decimals_and_with_its_bounds():
    prop = {"type": "integer", "minimum": 1, "maximum": 5}
    assert only_input(obj(prop), {"f": 2})["element"] == {
        "type": "number_input",
        "action_id": "value",
        "is_decimal_allowed": False,
        "min_value": "1",
        "max_value": "5",
        "initial_value": "2",
    }


def test_a_number_allows_decimals():
    assert only_input(obj({"type": "number"}), {"f": 2.5})["element"] == {
        "type": "number_input",
        "action_id": "value",
        "is_decimal_allowed": True,
        "initial_value": "2.5",
    }


def test_an_enum_is_a_select_whose_values_keep_their_type():
    prop = {"enum": ["low", "high", 3]}
    assert only_input(obj(prop), {"f": 3})["element"] == {
        "type": "static_select",
        "action_id": "value",
        "options": [
            {"text": {"type": "plain_text", "text": "low"}, "value": '"low"'},
            {"text": {"type": "plain_text", "text": "high"}, "value": '"high"'},
            {"text": {"type": "plain_text", "text": "3"}, "value": "3"},
        ],
        "initial_option": {"text": {"type": "plain_text", "text": "3"}, "value": "3"},
    }


def test_a_boolean_is_a_yes_no_select():
    assert only_input(obj({"type": "boolean"}, required=False), {"f": False})["element"] == {
        "type": "static_select",
        "action_id": "value",
        "options": [
            {"text": {"type": "plain_text", "text": "Yes"}, "value": "true"},
            {"text": {"type": "plain_text", "text": "No"}, "value": "false"},
        ],
        "initial_option": {"text": {"type": "plain_text", "text": "No"}, "value": "false"},
    }


def test_an_array_of_strings_is_one_item_per_line():
    prop = {"type": "array", "items": {"type": "string"}, "description": "Who else"}
    block = only_input(obj(prop), {"f": ["a@x.com", "b@x.com"]})
    assert block["hint"] == {"type": "plain_text", "text": "Who else One item per line."}
    assert block["element"] == {
        "type": "plain_text_input",
        "action_id": "value",
        "multiline": True,
        "initial_value": "a@x.com\nb@x.com",
    }


def test_anything_nested_is_json_text():
    value = {"street": "Main St", "n": [1, 2]}
    block = only_input(obj({"type": "object"}), {"f": value})
    assert block["hint"] == {"type": "plain_text", "text": "JSON."}
    assert block["element"] == {
        "type": "plain_text_input",
        "action_id": "value",
        "multiline": True,
        "initial_value": json.dumps(value, indent=2),
    }


def test_a_missing_optional_value_starts_empty():
    block = only_input(obj({"type": "integer"}, required=False), {})
    assert block["optional"] is True and "initial_value" not in block["element"]


def test_slack_limits_are_kept_and_what_does_not_fit_is_kept_as_it_is():
    schema = {
        "type": "object",
        "properties": {
            **{f"p{i}": {"type": "string", "title": "T" * 2_500} for i in range(120)},
            "huge": {"type": "string"},
        },
    }
    arguments = {"huge": "x" * 3_001, "extra": 1, "p0": "a"}
    form = edit_fields(schema, arguments)
    modal = modal_for(schema, arguments)
    assert len(modal["blocks"]) <= 100
    assert all(len(b["label"]["text"]) <= 2_000 for b in modal["blocks"] if b["type"] == "input")
    assert form.kept == ["extra", "huge"]
    assert "`extra`, `huge`" in modal["blocks"][-1]["elements"][0]["text"]
    assert [b for b in modal["blocks"] if b.get("block_id") == "arg:huge"] == []
    # What the form did not show comes back unchanged.
    new, errors = read_submission(form, arguments, {"arg:p0": {"value": {"value": "b"}}})
    assert errors == {} and new == {"extra": 1, "huge": "x" * 3_001, "p0": "b"}


def test_inputs_come_required_first_then_by_name_whatever_order_the_store_kept():
    props = {"b": {"type": "string"}, "a": {"type": "string"}, "c": {"type": "string"}}
    for shuffled in (props, dict(reversed(props.items()))):
        form = edit_fields({"type": "object", "properties": shuffled, "required": ["c"]}, {})
        assert [f.name for f in form.fields] == ["c", "a", "b"]


def test_a_value_past_slacks_input_limit_is_kept_not_cut():
    form = edit_fields(
        {"type": "object", "properties": {"b": {"type": "string"}}}, {"b": "x" * 3_001}
    )
    assert form.fields == [] and form.kept == ["b"]
    assert (
        len(only_input(obj({"type": "string"}), {"f": "x" * 3_000})["element"]["initial_value"])
        == 3_000
    )


def test_a_schema_without_properties_is_edited_as_one_json_object():
    form = edit_fields({"type": "object"}, {"a": 1})
    new, errors = read_submission(form, {"a": 1}, {"arg:*": {"value": {"value": '{"a": 2}'}}})
    assert errors == {} and new == {"a": 2}


# -- reading a submission back -------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "to": {"type": "string", "format": "email"},
        "body": {"type": "string"},
        "priority": {"type": "integer"},
        "weight": {"type": "number"},
        "urgent": {"type": "boolean"},
        "tone": {"enum": ["warm", "formal"]},
        "cc": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object"},
    },
    "required": ["to", "body"],
}
ARGS = {"to": "ana@example.com", "body": "Helo", "priority": 2, "urgent": True}


def state(**values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            out[f"arg:{name}"] = {"value": value}
        else:
            out[f"arg:{name}"] = {"value": {"type": "plain_text_input", "value": value}}
    return out


def test_every_type_is_read_back_typed_and_empty_optionals_are_left_out():
    form = edit_fields(SCHEMA, ARGS)
    new, errors = read_submission(
        form,
        ARGS,
        state(
            to="bo@example.com",
            body="Hello\nBo",
            priority={"type": "number_input", "value": "4"},
            weight={"type": "number_input", "value": "2.5"},
            urgent={"type": "static_select", "selected_option": {"value": "false"}},
            tone={"type": "static_select", "selected_option": {"value": '"warm"'}},
            cc=" a@x.com \n\nb@x.com\n",
            meta='{"k": [1]}',
        ),
    )
    assert errors == {}
    assert new == {
        "to": "bo@example.com",
        "body": "Hello\nBo",
        "priority": 4,
        "weight": 2.5,
        "urgent": False,
        "tone": "warm",
        "cc": ["a@x.com", "b@x.com"],
        "meta": {"k": [1]},
    }
    new, errors = read_submission(
        form,
        ARGS,
        state(
            to="a@b.c",
            body="x",
            priority={"type": "number_input", "value": None},
            urgent={"type": "static_select", "selected_option": None},
            cc="",
        ),
    )
    assert errors == {} and new == {"to": "a@b.c", "body": "x"}


def test_unparseable_values_are_errors_on_their_fields():
    form = edit_fields(SCHEMA, ARGS)
    _, errors = read_submission(
        form,
        ARGS,
        state(
            to="a@b.c",
            body="  ",
            priority={"type": "number_input", "value": "2.5"},
            weight={"type": "number_input", "value": "lots"},
            meta="{not json",
        ),
    )
    assert set(errors) == {"arg:body", "arg:priority", "arg:weight", "arg:meta"}
    assert errors["arg:body"] == "This field is required."
    assert errors["arg:priority"] == "Enter a whole number."
    assert errors["arg:weight"] == "Enter a number."
    assert errors["arg:meta"].startswith("Not valid JSON")


def test_core_field_errors_land_on_their_inputs():
    form = edit_fields(SCHEMA, ARGS)
    errors = errors_by_block(
        form,
        [
            FieldError(("arguments", "to"), "'x' is not a 'email'"),
            FieldError(("arguments", "meta", "k", 0), "1 is not of type 'string'"),
            FieldError(("arguments",), "'body' is a required property"),
            FieldError(("arguments",), "the edit changes nothing"),
        ],
    )
    assert errors == {
        "arg:to": "'x' is not a 'email'; the edit changes nothing",
        "arg:meta": "k.0: 1 is not of type 'string'",
        "arg:body": "This field is required.",
    }
    assert errors_by_block(EditForm([], []), [FieldError(("arguments",), "x")]) == {}


# -- the messages ----------------------------------------------------------------------------


def test_buttons_carry_the_output_id_as_value_and_the_revision_in_the_block_id():
    buttons = blocks.decision_buttons(output(revision=3))
    assert buttons["block_id"] == "decide:out_01:r3"
    assert [(e["action_id"], e["value"]) for e in buttons["elements"]] == [
        ("output_approve", "out_01"),
        ("output_reject", "out_01"),
        ("output_edit", "out_01"),
    ]
    assert "(revision 3)" in buttons["elements"][0]["confirm"]["text"]["text"]
    # An output kept from before snapshots cannot be edited: no Edit button.
    legacy = blocks.decision_buttons(output(skill_snapshot=None))
    assert [e["action_id"] for e in legacy["elements"]] == ["output_approve", "output_reject"]


@pytest.mark.parametrize(
    ("block_id", "revision"),
    [
        ("decide:out_01:r3", 3),
        ("decide:out_01:r12", 12),
        ("decide:out_01", 1),  # posted before buttons named their revision
        ("output_approve_block", 1),
        (None, 1),
        ("decide:out_01:r0", 1),
        ("decide:out_01:rX", 1),
    ],
)
def test_a_click_names_the_revision_its_message_showed(block_id, revision):
    assert blocks.clicked_revision(block_id) == revision


def test_an_edited_output_shows_its_revision_editor_and_changes():
    edit = OutputEdit(
        revision=2,
        edited_by="U0LEAD0001",
        identity="verified",
        via="slack",
        edited_at=WHEN,
        changes=[
            {"field": "body", "old": "Helo <Ana>", "new": "Hello Ana"},
            {"field": "cc", "new": ["b@x.com"]},
        ],
    )
    (section,) = blocks.edit_blocks(output(revision=2, edits=[edit]))
    assert section == {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": f"✏️ *Revision 2* — edited by <@U0LEAD0001> · {WHEN_TEXT}\n"
            "• *body*: `Helo &lt;Ana&gt;` → `Hello Ana`\n"
            '• *cc*: _(none)_ → `["b@x.com"]`',
        },
    }
    assert blocks.edit_blocks(output()) == []
    _, message = blocks.approval_message(
        output(revision=2, edits=[edit]), agent_name="bot", content="Hello Ana", content_url=None
    )
    assert section in message
    assert "rev 2" in json.dumps(message)
    assert message[-1]["block_id"] == "decide:out_01:r2"


def test_the_request_approval_makes_is_shown_with_secret_headers_as_placeholders():
    effect = PlannedEffect(
        kind="http",
        method="POST",
        url="https://crm.example/api/notes?x=1&y=2",
        headers={"Authorization": "\u2039from CRM_TOKEN\u203a"},
        body={"note": "benign <note>", "n": 1},
    )
    (section,) = blocks.effect_blocks(effect)
    assert section["text"]["text"] == (
        "*Approving sends this request:*\n```POST https://crm.example/api/notes?x=1&amp;y=2\n"
        "Authorization: \u2039from CRM_TOKEN\u203a\n\n"
        '{\n  "note": "benign &lt;note&gt;",\n  "n": 1\n}```'
    )
    big = effect.model_copy(update={"body": {"fence": "```", "text": "<&>" * 10_000}})
    (long,) = blocks.effect_blocks(big)
    shown = long["text"]["text"]
    assert len(shown) <= blocks.SECTION_CHARS
    assert shown.count("```") == 2 and shown.endswith("…```")
    assert not re.search(r"&[a-z]*…", shown)  # never cut through an escaped character
    assert blocks.effect_blocks(None) == []


def test_a_request_that_cannot_be_built_says_so():
    effect = PlannedEffect(kind="http", method="POST", problem="no value for {{id}}")
    (section,) = blocks.effect_blocks(effect)
    assert section["text"]["text"].endswith("⚠️ no value for {{id}}")


def test_the_decided_message_says_who_decided_which_revision_and_its_fingerprint():
    decided = output(
        status=OutputStatus.EXECUTED,
        revision=2,
        decision="approved",
        decided_by="U0LEAD0001",
        decided_at=WHEN,
        decision_via="slack",
        decision_revision=2,
        decision_identity="verified",
    )
    assert blocks.decision_line(decided) == "Approved by <@U0LEAD0001> · rev 2 · sha256 1a2b3c4d"
    _, message = blocks.decided_message(decided, agent_name="bot", content="x", content_url=None)
    assert {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "Approved by <@U0LEAD0001> · rev 2 · sha256 1a2b3c4d"}
        ],
    } in message
    asserted = decided.model_copy(
        update={"decision_identity": "asserted", "decision_via": "webhook", "decided_by": "U123"}
    )
    assert blocks.decision_line(asserted) == (
        "Approved via webhook, as U123 (asserted) · rev 2 · sha256 1a2b3c4d"
    )
    rejected = decided.model_copy(
        update={"status": OutputStatus.REJECTED, "decision": "rejected", "decision_revision": 1}
    )
    assert blocks.decision_line(rejected) == "Rejected by <@U0LEAD0001> · rev 1 · sha256 1a2b3c4d"
    assert blocks.decision_line(output()) is None


def test_a_stale_click_is_told_where_the_latest_is():
    text = blocks.ephemeral_stale(2, "https://x.slack.com/archives/C1/p1")
    assert "edited since this message was posted" in text
    assert "<https://x.slack.com/archives/C1/p1|review the latest>" in text
    assert "(revision 2)" in text and "Nothing was decided" in text
