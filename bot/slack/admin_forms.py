"""The agent forms (modals) of `/agent create|edit|skills|persona`: rendered, read back,
and their validation errors put on the field. Pure functions, no I/O.

Each input's `block_id` (and `action_id`) is the field it edits, so a form is rendered and
read back here, and `form_errors` maps the field paths of pydantic / `ValidationFailed`
errors back onto those blocks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.slack.admin_blocks import VIEW_BLOCKS_MAX, View, code_list, context, plain, section
from bot.slack.blocks import Blocks
from bot.slack.text import escape, truncate
from core.errors import FieldError
from core.schemas.common import SLUG_MAX_LENGTH, SLUG_PATTERN
from core.schemas.views import AgentView, PersonaView, SkillView
from core.webhooks.url_guard import MAX_URL_LENGTH

CREATE_MODAL = "agent_create"
EDIT_MODAL = "agent_edit"
SKILLS_MODAL = "agent_skills"
PERSONA_MODAL = "agent_persona"
# Option value of "a new persona" in the create form; persona names are slugs, never this.
NEW_PERSONA = "__new__"
# Model select values that are no model name (model names never start with `_`).
DEFAULT_MODEL = "__default__"
OTHER_MODEL = "__other__"
PERSONA_PREVIEW = "persona_preview"  # the "Update preview" button's action_id
PERSONA_PREVIEW_TEXT = "persona_preview_text"
SPARE_VARIABLE_ROWS = 2
WEBHOOK_TEST = "webhook_test"  # the "Send test event" button's action_id
WEBHOOK_TEST_RESULT = "webhook_test_result"  # the context block that shows its outcome

# Slack's limits that shape these forms.
MAX_OPTIONS = 100  # static / multi-static select
TEXT_INPUT_MAX = 3_000  # plain_text_input max_length and initial_value
MODAL_TITLE_MAX = 24

# Form field -> the block that edits it.
AGENT_FIELDS = {
    "name": "name",
    "description": "description",
    "persona": "persona",
    "model": "model",
    "skills": "skills",
    "knowledge_bases": "knowledge_bases",
    "approvers": "approvers",
    "webhook": "webhook_url",
    "webhook.url": "webhook_url",
    "webhook.secret_env": "webhook_secret_env",
    "approval_channel": "approval_channel",
    "daily_output_limit": "daily_output_limit",
    "daily_token_budget": "daily_token_budget",
    "approval": "approval_on_expiry",
    "approval.required_approvals": "approval_required",
    "approval.expires_after": "approval_expires_after",
    "approval.on_expiry": "approval_on_expiry",
    "approval.escalate_to": "approval_escalate_to",
    "approval.remind_after": "approval_remind_after",
    "approval.remind_every": "approval_remind_every",
    "memory_enabled": "options",
    "allow_self_approval": "options",
    "is_active": "options",
}
NEW_PERSONA_FIELDS = {
    "name": "name",
    "role": "persona_role",
    "tone": "persona_tone",
    "instructions": "persona_instructions",
    "variables": "persona_instructions",
}
PERSONA_FIELDS = {
    "role": "role",
    "tone": "tone",
    "instructions": "instructions",
    "variables": "var1_name",
}
SKILLS_FIELDS = {"skills": "skills"}
_OPTIONS = {
    "memory_enabled": "Remember what people tell it (per person)",
    "allow_self_approval": "Let people approve outputs they asked for",
    "is_active": "Active: answers in Slack",
}

# -- forms (modals) -----------------------------------------------------------------------


def modal(
    callback_id: str, title: str, blocks: Blocks, metadata: str, submit: str | None = "Save"
) -> View:
    view: View = {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": metadata,
        "title": plain(title, MODAL_TITLE_MAX),
        "close": plain("Cancel"),
        "blocks": blocks[:VIEW_BLOCKS_MAX],
    }
    if submit:
        view["submit"] = plain(submit)
    return view


def input_block(
    block_id: str,
    label: str,
    element: dict[str, Any],
    *,
    optional: bool = False,
    hint: str | None = None,
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "label": plain(label, 2_000),
        "element": {**element, "action_id": block_id},
        "optional": optional,
    }
    if hint:
        block["hint"] = plain(hint, 2_000)
    return block


def text_input(
    initial: str | None = None,
    *,
    placeholder: str | None = None,
    multiline: bool = False,
    max_length: int | None = None,
) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "plain_text_input", "multiline": multiline}
    if initial:
        element["initial_value"] = initial
    if placeholder:
        element["placeholder"] = plain(placeholder, 150)
    if max_length:
        element["max_length"] = max_length
    return element


def _number_input(initial: int | None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "number_input",
        "is_decimal_allowed": False,
        "min_value": "0",
    }
    if initial is not None:
        element["initial_value"] = str(initial)
    return element


def option(value: str, text: str, description: str | None = None) -> dict[str, Any]:
    option: dict[str, Any] = {"text": plain(text), "value": value}
    if description:
        option["description"] = plain(description)
    return option


def _skill_option(skill: SkillView) -> dict[str, Any]:
    kind = "read" if skill.kind == "read" else "action · needs approval"
    about = f"{kind} — {skill.description}" if skill.description else kind
    return option(skill.name, skill.name, about)


def _skills_select(skills: Sequence[SkillView], selected: Sequence[str]) -> dict[str, Any]:
    options = [_skill_option(s) for s in sorted(skills, key=lambda s: s.name)][:MAX_OPTIONS]
    chosen = [o for o in options if o["value"] in set(selected)]
    element: dict[str, Any] = {
        "type": "multi_static_select",
        "placeholder": plain("Choose skills"),
        "options": options,
    }
    if chosen:
        element["initial_options"] = chosen
    return element


def agent_form(
    *,
    agent: AgentView | None,
    personas: Sequence[PersonaView],
    skills: Sequence[SkillView],
    default_model: str,
    metadata: str,
    models: Sequence[str] = (),
    groups: Sequence[tuple[str, str]] | None = (),
    knowledge_bases: Sequence[str] = (),
) -> View:
    """`/agent create` (agent None) or `/agent edit NAME`: one form, validated on submit by
    `AgentSpec` / `AgentPatch`. Skills are chosen in `/agent skills` (and at creation),
    persona text in `/agent persona`.

    `models` are offered by name (plus "other", typed); `groups` are the workspace's user
    groups as (id, label), None when Slack would not list them (then stored groups are
    kept, and said so); `knowledge_bases` are the names that may be attached."""
    creating = agent is None
    listed = list(personas)[: MAX_OPTIONS - 1]
    if agent is not None and all(p.name != agent.persona for p in listed):
        listed += [p for p in personas if p.name == agent.persona]  # past Slack's 100
    persona_options = [option(p.name, p.name, p.role or None) for p in listed]
    if creating:
        persona_options.append(option(NEW_PERSONA, "✨ A new persona (describe it below)"))
    persona_select: dict[str, Any] = {
        "type": "static_select",
        "placeholder": plain("Choose a persona"),
        "options": persona_options,
    }
    current = agent.persona if agent else (None if personas else NEW_PERSONA)
    initial_persona = next((o for o in persona_options if o["value"] == current), None)
    if initial_persona:
        persona_select["initial_option"] = initial_persona

    blocks: Blocks = [
        input_block(
            "name",
            "Name",
            text_input(
                agent.name if agent else None, placeholder="sales-bot", max_length=SLUG_MAX_LENGTH
            ),
            hint="Lower-case letters, digits, - and _; people type it in /agent commands.",
        ),
        input_block(
            "description",
            "What it is for",
            text_input(agent.description if agent else None, max_length=500),
            optional=True,
        ),
        input_block("persona", "Persona", persona_select),
    ]
    if creating:
        blocks += [
            input_block(
                "persona_role",
                "New persona: role",
                text_input(placeholder="Sales assistant for the EMEA team", max_length=500),
                optional=True,
                hint="Only for a new persona. It gets the agent's name.",
            ),
            input_block(
                "persona_tone",
                "New persona: tone",
                text_input(placeholder="warm and concise", max_length=500),
                optional=True,
            ),
            input_block(
                "persona_instructions",
                "New persona: instructions",
                text_input(multiline=True, max_length=TEXT_INPUT_MAX),
                optional=True,
                hint="Placeholders: {{user_name}}, {{channel}}, {{date}}, {{agent_name}}.",
            ),
        ]
        if skills:
            blocks.append(
                input_block("skills", "Skills", _skills_select(skills, []), optional=True)
            )
    blocks += _model_inputs(agent, default_model, models)
    stored_groups = [a for a in (agent.approvers if agent else []) if a.startswith("S")]
    approvers: dict[str, Any] = {
        "type": "multi_users_select",
        "placeholder": plain("Anyone may approve"),
    }
    users = [a for a in (agent.approvers if agent else []) if not a.startswith("S")]
    if users:
        approvers["initial_users"] = users
    hint = "Who may approve its outputs. Empty (and no group): anyone."
    if groups is None and stored_groups:
        hint += (
            f" User groups ({', '.join(stored_groups)}) stay approvers: Slack did not let me "
            "list user groups (the app needs the usergroups:read scope)."
        )
    blocks.append(
        input_block("approvers", "Approvers: people", approvers, optional=True, hint=hint)
    )
    if groups is not None and (groups or stored_groups):
        blocks.append(_groups_input(groups, stored_groups))
    channel: dict[str, Any] = {
        "type": "conversations_select",
        "placeholder": plain("Only in the thread"),
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    if agent and agent.approval_channel:
        channel["initial_conversation"] = agent.approval_channel
    blocks += [
        input_block(
            "approval_channel",
            "Approval channel",
            channel,
            optional=True,
            hint="Approval requests are also posted here.",
        ),
        *_approval_inputs(agent),
        input_block(
            "daily_output_limit",
            "Outputs per day",
            _number_input(agent.limits.daily_output_limit if agent else None),
            optional=True,
            hint="Empty: unlimited.",
        ),
        input_block(
            "daily_token_budget",
            "Tokens per day",
            _number_input(agent.limits.daily_token_budget if agent else None),
            optional=True,
            hint="Empty: unlimited.",
        ),
    ]
    if knowledge_bases or (agent and agent.knowledge_bases):
        blocks.append(_knowledge_input(knowledge_bases, agent.knowledge_bases if agent else []))
    blocks += _webhook_inputs(agent)
    names = ["memory_enabled", "allow_self_approval"] + ([] if creating else ["is_active"])
    options = [option(n, _OPTIONS[n]) for n in names]
    on = {
        "memory_enabled": agent.memory_enabled if agent else True,
        "allow_self_approval": agent.allow_self_approval if agent else False,
        "is_active": agent.is_active if agent else True,
    }
    checkboxes: dict[str, Any] = {"type": "checkboxes", "options": options}
    initial = [o for o in options if on[o["value"]]]
    if initial:
        checkboxes["initial_options"] = initial
    blocks.append(input_block("options", "Options", checkboxes, optional=True))
    if agent is None:
        return modal(CREATE_MODAL, "New agent", blocks, metadata, submit="Create")
    return modal(EDIT_MODAL, f"Edit {agent.name}", blocks, metadata)


def _model_inputs(agent: AgentView | None, default_model: str, models: Sequence[str]) -> Blocks:
    """A select of the models the pricing table knows, the default, and "other" (typed)."""
    current = agent.model if agent else None
    options = [option(DEFAULT_MODEL, truncate(f"Default ({default_model})", 75))]
    options += [option(m, m) for m in models if m][: MAX_OPTIONS - 2]
    options.append(option(OTHER_MODEL, "Other (type it below)"))
    known = {o["value"] for o in options}
    chosen = DEFAULT_MODEL if current is None else current if current in known else OTHER_MODEL
    select: dict[str, Any] = {
        "type": "static_select",
        "options": options,
        "initial_option": next(o for o in options if o["value"] == chosen),
    }
    other = current if chosen == OTHER_MODEL else None
    return [
        input_block("model", "Claude model", select, optional=True),
        input_block(
            "model_other",
            "Other model",
            text_input(other, placeholder="claude-…", max_length=128),
            optional=True,
            hint="Only with Other. A name the pricing table does not know is saved with a "
            "warning: its turns count as $0 in usage and budgets.",
        ),
    ]


def _multi_input(
    block_id: str,
    label: str,
    options: list[dict[str, Any]],
    chosen: Sequence[str],
    *,
    placeholder: str,
    hint: str,
) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "multi_static_select",
        "placeholder": plain(placeholder),
        "options": options[:MAX_OPTIONS],
    }
    initial = [o for o in element["options"] if o["value"] in set(chosen)]
    if initial:
        element["initial_options"] = initial
    return input_block(block_id, label, element, optional=True, hint=hint)


def _groups_input(groups: Sequence[tuple[str, str]], stored: Sequence[str]) -> dict[str, Any]:
    labels = dict(groups)
    ids = [g for g, _ in groups] + [g for g in stored if g not in labels]  # gone from Slack
    return _multi_input(
        "approver_groups",
        "Approvers: user groups",
        [option(g, truncate(labels.get(g, g), 75)) for g in ids],
        stored,
        placeholder="No user group",
        hint="Members of these groups may approve too (looked up when a decision is made).",
    )


def _knowledge_input(names: Sequence[str], attached: Sequence[str]) -> dict[str, Any]:
    listed = list(dict.fromkeys([*attached, *sorted(names)]))
    return _multi_input(
        "knowledge_bases",
        "Knowledge bases",
        [option(n, n) for n in listed],
        attached,
        placeholder="None",
        hint="It searches these when a question needs them.",
    )


def _webhook_inputs(agent: AgentView | None) -> Blocks:
    webhook = agent.webhook if agent else None
    variable_hint = "The environment variable on this server that holds its whsec_ secret."
    if webhook is not None and webhook.secret_set and not webhook.secret_env:
        variable_hint += " Empty: keep the secret it has."
    return [
        input_block(
            "webhook_url",
            "Webhook URL",
            text_input(
                webhook.url if webhook else None, placeholder="https://", max_length=MAX_URL_LENGTH
            ),
            optional=True,
            hint="Output events are POSTed here, signed (Standard Webhooks). Empty: none.",
        ),
        input_block(
            "webhook_secret_env",
            "Webhook secret variable",
            text_input(webhook.secret_env if webhook else None, placeholder="SALES_WEBHOOK_SECRET"),
            optional=True,
            hint=variable_hint,
        ),
        {
            "type": "actions",
            "block_id": WEBHOOK_TEST,
            "elements": [
                {
                    "type": "button",
                    "action_id": WEBHOOK_TEST,
                    "text": plain("Send test event"),
                    "value": "test",
                }
            ],
        },
        {
            "type": "context",
            "block_id": WEBHOOK_TEST_RESULT,
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "Sends one signed `webhook.test` event to the URL above (not saved "
                    "yet) and shows what the receiver answered.",
                }
            ],
        },
    ]


def skills_form(*, agent: AgentView, skills: Sequence[SkillView], metadata: str) -> View:
    hint = "Read skills run during the chat; action skills become outputs someone approves."
    if len(skills) > MAX_OPTIONS:
        hint += f" Slack shows the first {MAX_OPTIONS}; use the REST API for the rest."
    blocks: Blocks = [
        input_block(
            "skills",
            f"Skills of {agent.name}",
            _skills_select(skills, agent.skills),
            optional=True,
            hint=hint,
        )
    ]
    return modal(SKILLS_MODAL, f"Skills: {agent.name}", blocks, metadata)


def persona_form(
    *,
    agent: AgentView,
    persona: PersonaView,
    used_by: Sequence[str],
    metadata: str,
    preview: str | None = None,
) -> View:
    """Edit the persona `agent` speaks as; other agents sharing it change too (said so).

    Variables are rows of name / default / description (the persona's own, then
    `SPARE_VARIABLE_ROWS` empty ones); `preview` is the persona as Claude reads it,
    refreshed from what is typed with the "Update preview" button."""
    blocks: Blocks = [context(f"Persona `{escape(persona.name)}` of *{escape(agent.name)}*.")]
    others = [n for n in used_by if n != agent.name]
    if others:
        blocks.append(context(f"⚠️ Also used by {code_list(others)}: changes apply to them too."))
    blocks += [
        input_block("role", "Role", text_input(persona.role, max_length=500)),
        input_block("tone", "Tone", text_input(persona.tone, max_length=500), optional=True),
    ]
    variables = ["user_name", "channel", "date", "agent_name", *persona.variables]
    placeholders = ", ".join("{{" + v + "}}" for v in variables)
    if len(persona.instructions) <= TEXT_INPUT_MAX:
        blocks.append(
            input_block(
                "instructions",
                "Instructions",
                text_input(persona.instructions, multiline=True, max_length=TEXT_INPUT_MAX),
                optional=True,
                hint=f"Placeholders: {placeholders}. Declare your own below.",
            )
        )
    else:
        blocks.append(
            context(
                f"The instructions are {len(persona.instructions):,} characters, more than a "
                f"Slack field holds ({TEXT_INPUT_MAX:,}); they stay as they are. Edit them "
                "in a config file applied with `cosmo apply`, or through the REST API."
            )
        )
    blocks += variable_inputs(persona)
    blocks += preview_blocks(preview)
    return modal(PERSONA_MODAL, f"Persona: {agent.name}", blocks, metadata)


def variable_inputs(persona: PersonaView) -> Blocks:
    declared = sorted(persona.variables.items())
    rows = len(declared) + SPARE_VARIABLE_ROWS
    blocks: Blocks = [
        section(
            "*Variables* — your own `{{placeholders}}`, each with the value it is filled "
            "with. Clear a name to remove one."
        )
    ]
    for i in range(1, rows + 1):
        name, variable = declared[i - 1] if i <= len(declared) else (None, None)
        blocks += [
            input_block(
                f"var{i}_name",
                f"Variable {i}: name",
                text_input(name, placeholder="region", max_length=64),
                optional=True,
            ),
            input_block(
                f"var{i}_default",
                f"Variable {i}: value",
                text_input(variable.default if variable else None, max_length=2_000),
                optional=True,
            ),
            input_block(
                f"var{i}_description",
                f"Variable {i}: what it is",
                text_input(variable.description if variable else None, max_length=500),
                optional=True,
            ),
        ]
    return blocks


def preview_blocks(preview: str | None) -> Blocks:
    return [
        {
            "type": "actions",
            "block_id": PERSONA_PREVIEW,
            "elements": [
                {
                    "type": "button",
                    "action_id": PERSONA_PREVIEW,
                    "text": plain("Update preview"),
                    "value": "preview",
                }
            ],
        },
        preview_block(preview or "Press Update preview to see the persona as Claude reads it."),
    ]


def preview_block(text: str) -> dict[str, Any]:
    return {
        "type": "section",
        "block_id": PERSONA_PREVIEW_TEXT,
        "text": {"type": "mrkdwn", "text": truncate(text, 2_900)},
    }


# What `views.update` takes of a view Slack sent back (the rest is Slack's own).
_VIEW_KEYS = ("type", "callback_id", "private_metadata", "title", "submit", "close", "blocks")


def with_block(view: Mapping[str, Any], replacement: dict[str, Any]) -> View:
    """The open modal `view` for `views.update`, with the block of `replacement`'s
    block_id swapped in. Every other block is sent back as it was, so Slack keeps what was
    typed in the inputs (it does when block and action ids are unchanged)."""
    updated: View = {k: view[k] for k in _VIEW_KEYS if k in view}
    updated["blocks"] = [
        replacement if b.get("block_id") == replacement["block_id"] else b
        for b in view.get("blocks") or []
    ]
    return updated


def done_view(title: str, text: str) -> View:
    """What a form turns into after a successful submit."""
    return {
        "type": "modal",
        "title": plain(title, MODAL_TITLE_MAX),
        "close": plain("Done"),
        "blocks": [section(text)],
    }


# -- reading forms back -------------------------------------------------------------------

State = Mapping[str, Mapping[str, Any]]


def element_state(values: State, block: str) -> Mapping[str, Any]:
    return (values.get(block) or {}).get(block) or {}


def text_value(values: State, block: str) -> str | None:
    value = element_state(values, block).get("value")
    return value if isinstance(value, str) and value.strip() else None


def selected(values: State, block: str) -> str | None:
    chosen = element_state(values, block).get("selected_option") or {}
    return chosen.get("value")


def multi_values(values: State, block: str) -> list[str]:
    return [str(o.get("value")) for o in element_state(values, block).get("selected_options") or []]


@dataclass(frozen=True)
class AgentForm:
    """A submitted agent form, as plain fields for `AgentSpec` / `AgentPatch`."""

    agent: dict[str, Any]
    new_persona: dict[str, Any] | None = None
    problems: dict[str, str] = field(default_factory=dict)
    """Errors found reading the form (before the schemas judge it), by block."""


def _approval_inputs(agent: AgentView | None) -> Blocks:
    """The agent's `approval:` defaults (its skills may override them in config)."""
    policy = agent.approval if agent is not None else None

    def text(block: str, label: str, value: str | None, hint: str) -> dict[str, Any]:
        field = text_input(value, placeholder="24h", max_length=16)
        return input_block(block, label, field, optional=True, hint=hint)

    on_expiry: dict[str, Any] = {
        "type": "static_select",
        "placeholder": plain("Reject (default)"),
        "options": [
            option("reject", "Reject: the output expires"),
            option("escalate", "Escalate once, then reject"),
        ],
    }
    if policy is not None and policy.on_expiry is not None:
        on_expiry["initial_option"] = next(
            o for o in on_expiry["options"] if o["value"] == policy.on_expiry
        )
    users = [p for p in (policy.escalate_to or []) if not p.startswith("S")] if policy else []
    escalate: dict[str, Any] = {"type": "multi_users_select", "placeholder": plain("Nobody")}
    if users:
        escalate["initial_users"] = users
    return [
        input_block(
            "approval_required",
            "Approvals needed",
            _number_input(policy.required_approvals if policy else None),
            optional=True,
            hint="Distinct approvers who must approve (any reject ends it). Empty: 1.",
        ),
        text(
            "approval_expires_after",
            "Decide within",
            policy.expires_after if policy else None,
            "Then the output expires or escalates: 30m, 24h, 2d. Empty: the default.",
        ),
        input_block("approval_on_expiry", "When time runs out", on_expiry, optional=True),
        input_block(
            "approval_escalate_to",
            "Escalate to",
            escalate,
            optional=True,
            hint="Added as approvers and told by DM when an output escalates.",
        ),
        text(
            "approval_remind_after",
            "Remind approvers after",
            policy.remind_after if policy else None,
            "A DM to approvers who have not approved yet. Empty: no reminders.",
        ),
        text(
            "approval_remind_every",
            "Then remind every",
            policy.remind_every if policy else None,
            "Empty: remind once.",
        ),
    ]


def _read_approval(values: State) -> dict[str, Any] | None:
    policy: dict[str, Any] = {
        "required_approvals": text_value(values, "approval_required"),
        "expires_after": text_value(values, "approval_expires_after"),
        "on_expiry": selected(values, "approval_on_expiry"),
        "escalate_to": list(
            element_state(values, "approval_escalate_to").get("selected_users") or []
        )
        or None,
        "remind_after": text_value(values, "approval_remind_after"),
        "remind_every": text_value(values, "approval_remind_every"),
    }
    chosen = {k: v.strip() if isinstance(v, str) else v for k, v in policy.items()}
    chosen = {k: v for k, v in chosen.items() if v not in (None, "")}
    return chosen or None


def read_agent_form(values: State, *, creating: bool) -> AgentForm:
    options = set(multi_values(values, "options"))
    problems: dict[str, str] = {}
    model = selected(values, "model")
    if model == OTHER_MODEL:
        model = (text_value(values, "model_other") or "").strip() or None
        if model is None:
            problems["model_other"] = "Type the model's name, or choose one above."
    elif model in (None, DEFAULT_MODEL):
        model = None
    approvers = list(element_state(values, "approvers").get("selected_users") or [])
    approvers += multi_values(values, "approver_groups")
    fields: dict[str, Any] = {
        "name": (text_value(values, "name") or "").strip(),
        "description": (text_value(values, "description") or "").strip(),
        "persona": selected(values, "persona") or "",
        "model": model,
        "approvers": approvers,
        "approval_channel": element_state(values, "approval_channel").get("selected_conversation"),
        "limits": {
            "daily_output_limit": text_value(values, "daily_output_limit"),
            "daily_token_budget": text_value(values, "daily_token_budget"),
        },
        "memory_enabled": "memory_enabled" in options,
        "allow_self_approval": "allow_self_approval" in options,
        "approval": _read_approval(values),
    }
    if not creating:
        fields["is_active"] = "is_active" in options
    if "skills" in values:
        fields["skills"] = multi_values(values, "skills")
    if "knowledge_bases" in values:
        fields["knowledge_bases"] = multi_values(values, "knowledge_bases")
    if "webhook_url" in values:
        url = (text_value(values, "webhook_url") or "").strip()
        secret_env = (text_value(values, "webhook_secret_env") or "").strip()
        fields["webhook"] = (
            {"url": url} | ({"secret_env": secret_env} if secret_env else {})
        ) or None
        if not url:
            fields["webhook"] = None
            if secret_env:
                problems["webhook_url"] = "Give the URL the secret is for, or clear both."
    new_persona = None
    if creating and fields["persona"] == NEW_PERSONA:
        new_persona = {
            "name": fields["name"],
            "role": (text_value(values, "persona_role") or "").strip(),
            "tone": (text_value(values, "persona_tone") or "").strip(),
            "instructions": text_value(values, "persona_instructions") or "",
        }
        fields["persona"] = fields["name"]
    return AgentForm(fields, new_persona, problems)


def read_skills_form(values: State) -> list[str]:
    return multi_values(values, "skills")


def read_persona_form(values: State) -> dict[str, Any]:
    """Role and tone always; instructions and variables only when the form had them.
    Raises `ValueError` with `{block: message}` as its argument for unreadable rows."""
    patch: dict[str, Any] = {
        "role": (text_value(values, "role") or "").strip(),
        "tone": (text_value(values, "tone") or "").strip(),
    }
    if "instructions" in values:
        patch["instructions"] = text_value(values, "instructions") or ""
    if "var1_name" in values:
        patch["variables"] = _read_variables(values)
    return patch


class RowsInvalid(ValueError):
    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__(", ".join(errors))
        self.errors = dict(errors)


def _read_variables(values: State) -> dict[str, Any]:
    found: dict[str, Any] = {}
    errors: dict[str, str] = {}
    i = 1
    while f"var{i}_name" in values:
        name = (text_value(values, f"var{i}_name") or "").strip()
        default = text_value(values, f"var{i}_default") or ""
        description = (text_value(values, f"var{i}_description") or "").strip() or None
        if not name:
            if default.strip() or description:
                errors[f"var{i}_name"] = "Name this variable, or clear its row."
        elif name in found:
            errors[f"var{i}_name"] = f"{{{{{name}}}}} is already declared above."
        else:
            found[name] = {"default": default, "description": description}
        i += 1
    if errors:
        raise RowsInvalid(errors)
    return found


def variable_errors(values: State, errors: Iterable[FieldError]) -> dict[str, str]:
    """Errors under `variables.NAME...` on that variable's row; others as `form_errors`."""
    rows: dict[str, int] = {}
    i = 1
    while f"var{i}_name" in values:
        rows.setdefault((text_value(values, f"var{i}_name") or "").strip(), i)
        i += 1
    out: dict[str, str] = {}
    rest = []
    for error in errors:
        loc = [p for p in error.loc if p != "body"]
        if loc[:1] == ["variables"] and len(loc) > 1 and str(loc[1]) in rows:
            row = rows[str(loc[1])]
            part = {"default": "default", "description": "description"}.get(
                str(loc[2]) if len(loc) > 2 else "", "name"
            )
            out.setdefault(f"var{row}_{part}", truncate(friendly(error.msg), 300))
        else:
            rest.append(error)
    return form_errors(rest, PERSONA_FIELDS, fallback="role") | out


def form_errors(
    errors: Iterable[FieldError], fields: Mapping[str, str], *, fallback: str
) -> dict[str, str]:
    """`{block_id: message}` for `ack(response_action="errors")`: each error on the block
    that edits its field (the first error per block), anything unplaced on `fallback`."""
    out: dict[str, str] = {}
    for error in errors:
        loc = [p for p in error.loc if p != "body"]
        key = str(loc[1] if len(loc) > 1 and loc[0] == "limits" else loc[0]) if loc else ""
        if key in ("approval", "webhook") and len(loc) > 1 and f"{key}.{loc[1]}" in fields:
            key = f"{key}.{loc[1]}"
        block = fields.get(key, fallback)
        out.setdefault(block, truncate(friendly(error.msg), 300))
    return out


def friendly(message: str) -> str:
    if SLUG_PATTERN in message:
        return (
            "Use lower-case letters, digits, - and _, starting with a letter "
            f"(at most {SLUG_MAX_LENGTH})."
        )
    if message.startswith("Input should be a valid integer"):
        return "Enter a whole number."
    return message[:1].upper() + message[1:]


# -- metadata -----------------------------------------------------------------------------


def metadata(values: Mapping[str, Any]) -> str:
    """`private_metadata` (Slack keeps at most 3,000 characters); keys are the `META_*`
    names of `bot.slack.form_submission`."""
    text = json.dumps(dict(values), separators=(",", ":"))
    if len(text) > 3_000:
        raise ValueError("private_metadata over 3,000 characters")
    return text
