"""What the agent forms of `/agent create|edit|skills|persona` do when submitted.

Each is a `Form` (see `bot.slack.form_submission`): validate with the REST schemas
(`AgentSpec`, `AgentPatch`, `PersonaPatch`, `SkillList`), then write through the same
services, as `slack:<user>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp

from bot.slack import admin_forms as forms
from bot.slack.form_submission import (
    META_AGENT,
    META_ESCALATION_GROUPS,
    META_GROUPS,
    META_PERSONA,
    META_VERSION,
    META_WEBHOOK_SECRET,
    Form,
    FormErrors,
    Submission,
    View,
    form_handler,
)
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape
from core.config_document import ConfigDocument
from core.errors import NameTaken, NotFound, ValidationFailed
from core.schemas.agent import AgentPatch, AgentSpec, SkillList
from core.schemas.persona import PersonaPatch, PersonaSpec
from core.schemas.validation import field_errors
from core.schemas.views import AgentView


@dataclass(frozen=True)
class NewAgent:
    spec: AgentSpec
    persona: PersonaSpec | None


NAME_THE_VARIABLE = (
    "Name the environment variable that holds the webhook's whsec_ secret (a secret "
    "generated here could not be shown to you safely)."
)


def _warnings(agent: AgentView) -> str:
    return "".join(f"\n⚠️ {escape(w)}" for w in agent.warnings)


def _parse_create(sub: Submission) -> NewAgent:
    form = forms.read_agent_form(sub.values, creating=True)
    errors: dict[str, str] = dict(form.problems)
    persona: PersonaSpec | None = None
    if form.new_persona is not None:
        try:
            persona = PersonaSpec.model_validate(form.new_persona)
        except ValidationError as exc:
            errors |= forms.form_errors(
                field_errors(exc), forms.NEW_PERSONA_FIELDS, fallback="persona_role"
            )
        if not form.new_persona["role"]:
            errors.setdefault("persona_role", "Say what the new persona is, e.g. Sales assistant.")
    try:
        spec = AgentSpec.model_validate(form.agent)
    except ValidationError as exc:
        errors = forms.form_errors(field_errors(exc), forms.AGENT_FIELDS, fallback="name") | errors
    else:
        if spec.webhook is not None and spec.webhook.secret_env is None:
            errors.setdefault("webhook_secret_env", NAME_THE_VARIABLE)
    if errors:
        raise FormErrors(errors)
    return NewAgent(spec, persona)


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    c = rt.container

    def create(sub: Submission, new: NewAgent) -> View:
        spec, persona = new.spec, new.persona
        if persona is None:
            agent = c.agents.create(sub.tenant, spec, actor=sub.actor)
        else:
            # A new persona and its agent are written together or not at all.
            if c.personas.list(sub.tenant, name=persona.name, limit=1).items:
                raise NameTaken("persona", persona.name)
            try:
                c.agents.get_by_name(sub.tenant, spec.name)
            except NotFound:
                pass
            else:
                raise NameTaken("agent", spec.name)
            doc = ConfigDocument(personas=[persona], agents=[spec])
            c.config.apply(sub.tenant, doc, actor=sub.actor)
            agent = c.agents.get_by_name(sub.tenant, spec.name)
        return forms.done_view(
            "Agent created",
            f"✅ *{spec.name}* is ready.\nMake it answer in a channel with "
            f"`/agent use {spec.name}` there, or everywhere with "
            f"`/agent use {spec.name} --default`." + _warnings(agent),
        )

    def parse_edit(sub: Submission) -> AgentPatch:
        form = forms.read_agent_form(sub.values, creating=False)
        if form.problems:
            raise FormErrors(form.problems)
        fields = dict(form.agent)
        if "approver_groups" not in sub.values:  # no picker: Slack would not list groups
            fields["approvers"] = [*fields["approvers"], *(sub.meta.get(META_GROUPS) or [])]
        groups = sub.meta.get(META_ESCALATION_GROUPS) or []
        if groups and fields.get("approval"):  # user groups the form cannot show
            approval = fields["approval"]
            approval["escalate_to"] = [*(approval.get("escalate_to") or []), *groups]
        patch = AgentPatch.model_validate(fields)
        webhook = patch.webhook
        if webhook and webhook.secret_env is None and not sub.meta.get(META_WEBHOOK_SECRET):
            raise FormErrors({"webhook_secret_env": NAME_THE_VARIABLE})
        return patch

    def edit(sub: Submission, patch: AgentPatch) -> View:
        agent = c.agents.update(
            sub.tenant,
            sub.id(META_AGENT),
            patch,
            actor=sub.actor,
            expected_version=sub.meta.get(META_VERSION),
        )
        saved = f"✅ Saved *{agent.name}* (version {agent.version})."
        return forms.done_view("Agent saved", saved + _warnings(agent))

    def parse_skills(sub: Submission) -> SkillList:
        return SkillList.model_validate({"skills": forms.read_skills_form(sub.values)})

    def skills(sub: Submission, chosen: SkillList) -> View:
        agent = c.agents.set_skills(
            sub.tenant,
            sub.id(META_AGENT),
            chosen.skills,
            actor=sub.actor,
            expected_version=sub.meta.get(META_VERSION),
        )
        names = ", ".join(f"`{n}`" for n in agent.skills) or "none"
        return forms.done_view("Skills saved", f"✅ *{agent.name}* now has skills: {names}.")

    def parse_persona(sub: Submission) -> PersonaPatch:
        try:
            return PersonaPatch.model_validate(forms.read_persona_form(sub.values))
        except forms.RowsInvalid as exc:
            raise FormErrors(exc.errors) from None
        except ValidationError as exc:
            raise FormErrors(forms.variable_errors(sub.values, field_errors(exc))) from None

    def persona(sub: Submission, patch: PersonaPatch) -> View:
        try:
            saved = c.personas.update(sub.tenant, sub.id(META_PERSONA), patch)
        except ValidationFailed as exc:
            raise FormErrors(forms.variable_errors(sub.values, exc.errors)) from None
        return forms.done_view("Persona saved", f"✅ Saved persona `{saved.name}`.")

    name_blocks = {"persona": "persona", "agent": "name"}
    registered: list[tuple[str, Form[Any]]] = [
        (
            forms.CREATE_MODAL,
            Form(forms.AGENT_FIELDS, "name", _parse_create, create, name_blocks=name_blocks),
        ),
        (forms.EDIT_MODAL, Form(forms.AGENT_FIELDS, "name", parse_edit, edit)),
        (forms.SKILLS_MODAL, Form(forms.SKILLS_FIELDS, "skills", parse_skills, skills)),
        (
            forms.PERSONA_MODAL,
            Form(forms.PERSONA_FIELDS, "role", parse_persona, persona, what="persona"),
        ),
    ]
    for callback_id, form in registered:
        app.view(callback_id)(form_handler(rt, form))
