"""Configuration as code: a YAML/JSON document of personas, skills and agents.

`apply` makes the database match the document (create or update, never delete) in one
transaction, and reports what changed; applying the same document twice changes nothing.
`export_agent` produces a document that re-applies to the same configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.agent.service import AgentService, agent_spec, load_agent
from core.db import Database
from core.db.ids import new_id
from core.db.models import AgentRow, PersonaRow, SkillRow
from core.errors import Conflict, FieldError, ValidationFailed
from core.personas.service import persona_spec, write_persona
from core.schemas.agent import AgentSpec
from core.schemas.common import StrictModel
from core.schemas.persona import PersonaSpec
from core.schemas.skill import SkillSpec, schema_keyword_errors
from core.schemas.validation import field_errors
from core.skills.policy import SkillPolicy
from core.skills.service import skill_document, skill_spec, write_skill
from core.yaml_lines import LineLoader, line_of, strip_lines


class ConfigDocument(StrictModel):
    api_version: Literal["cosmo/v1"] = Field(default="cosmo/v1", alias="apiVersion")
    personas: list[PersonaSpec] = Field(default_factory=list)
    skills: list[SkillSpec] = Field(default_factory=list)
    agents: list[AgentSpec] = Field(default_factory=list)


@dataclass(frozen=True)
class Change:
    kind: Literal["persona", "skill", "agent"]
    name: str
    action: Literal["created", "updated", "unchanged"]
    fields: tuple[str, ...] = ()


@dataclass
class ApplyReport:
    changes: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)


# -- parsing -------------------------------------------------------------------


class DocumentInvalid(ValidationFailed):
    """A config document that does not validate; each error carries its line when known."""

    def __init__(self, errors: list[FieldError], lines: list[int | None]) -> None:
        super().__init__(errors)
        self.lines = lines

    def describe(self, source: str) -> list[str]:
        out = []
        for err, line in zip(self.errors, self.lines, strict=True):
            where = f"{source}:{line}" if line else source
            out.append(f"{where}: {err.path}: {err.msg}")
        return out


_TOO_DEEP = FieldError((), "the document is nested too deeply")


def parse_document(text: str, *, policy: SkillPolicy | None = None) -> ConfigDocument:
    """Parse YAML (or JSON, which is YAML) into a validated document.

    With the operator's `policy`, skills that cannot run here (an unknown built-in or MCP
    server, a secret they may not read) and webhook secrets from reserved variables are
    refused too, each error at its line.
    """
    try:
        raw = yaml.load(text, Loader=LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        # JSON is YAML except for tabs as whitespace, which JSON allows and YAML refuses.
        raw = _json_or_none(text)
        if raw is None:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise DocumentInvalid([FieldError((), f"not valid YAML: {problem}")], [line]) from None
    except RecursionError:
        raise DocumentInvalid([_TOO_DEEP], [None]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DocumentInvalid([FieldError((), "the document must be a mapping")], [1])
    try:
        doc = ConfigDocument.model_validate(strip_lines(raw))
    except ValidationError as exc:
        errors = field_errors(exc)
        raise DocumentInvalid(errors, [line_of(raw, e.loc) for e in errors]) from None
    except RecursionError:
        raise DocumentInvalid([_TOO_DEEP], [None]) from None
    errors = [
        FieldError(("skills", index, *e.loc), e.msg)
        for index, skill in enumerate(doc.skills)
        for e in schema_keyword_errors(skill)
    ]
    if policy is not None:
        errors += document_problems(doc, policy)
    if errors:
        raise DocumentInvalid(errors, [line_of(raw, e.loc) for e in errors])
    return doc


def document_problems(doc: ConfigDocument, policy: SkillPolicy) -> list[FieldError]:
    """What the operator's rules refuse in a well-formed document, at document paths."""
    errors = [
        FieldError(("skills", index, *p.loc), p.msg)
        for index, skill in enumerate(doc.skills)
        for p in policy.problems(skill)
    ]
    for index, agent in enumerate(doc.agents):
        name = agent.webhook.secret_env if agent.webhook else None
        reason = policy.secrets.refusal(name) if name else None
        if reason is not None:
            errors.append(FieldError(("agents", index, "webhook", "secret_env"), reason))
    return errors


def _json_or_none(text: str) -> Any:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def dump_document(doc: ConfigDocument, fmt: Literal["yaml", "json"] = "yaml") -> str:
    data = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


# -- apply / export --------------------------------------------------------------


class _DryRun(Exception):
    """Raised to roll back a dry run's transaction."""


class ConfigApplier:
    """Applies documents for one tenant; all or nothing."""

    def __init__(
        self, db: Database, agents: AgentService, policy: SkillPolicy | None = None
    ) -> None:
        self.db = db
        self.agents = agents
        self.policy = policy

    def apply(
        self, tenant_id: str, doc: ConfigDocument, *, actor: str, dry_run: bool = False
    ) -> ApplyReport:
        report = ApplyReport()
        if self.policy is not None:
            problems = document_problems(doc, self.policy)
            if problems:
                raise ValidationFailed(problems)
        try:
            with self.db.session() as s:
                self._apply_all(s, tenant_id, doc, actor, report)
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
        return report

    def _apply_all(
        self, s: Session, tenant_id: str, doc: ConfigDocument, actor: str, report: ApplyReport
    ) -> None:
        for persona in doc.personas:
            report.changes.append(_apply_persona(s, tenant_id, persona))
        for skill in doc.skills:
            report.changes.append(_apply_skill(s, tenant_id, skill))
        s.flush()
        for index, agent in enumerate(doc.agents):
            try:
                report.changes.append(self._apply_agent(s, tenant_id, agent, actor))
            except ValidationFailed as exc:
                # Errors from the agent service name body fields; point at the document.
                raise ValidationFailed(
                    [FieldError(("agents", index, *e.loc[1:]), e.msg) for e in exc.errors]
                ) from None

    def _apply_agent(self, s: Session, tenant_id: str, spec: AgentSpec, actor: str) -> Change:
        row = s.scalar(
            select(AgentRow).where(AgentRow.tenant_id == tenant_id, AgentRow.name == spec.name)
        )
        webhook = spec.webhook
        if (
            webhook is not None
            and webhook.secret is None
            and webhook.secret_env is None
            and (row is None or not (row.webhook_secret or row.webhook_secret_env))
        ):
            # Through the API a generated secret is shown once; a config file has no such
            # moment, so it must say where the secret comes from.
            raise ValidationFailed(
                [
                    FieldError(
                        ("body", "webhook", "secret_env"),
                        "a webhook in a config file needs `secret_env` (the name of an "
                        "environment variable holding a whsec_ secret) or `secret`",
                    )
                ]
            )
        if row is None:
            self.agents.create_in(s, tenant_id, spec, actor=actor)
            return Change("agent", spec.name, "created")
        before = agent_spec(row).model_dump(mode="json")
        version = row.version
        self.agents.replace_in(s, row, spec, actor=actor, change="applied from config")
        if row.version == version:
            return Change("agent", spec.name, "unchanged")
        after = agent_spec(row).model_dump(mode="json")
        fields = _diff(before, after) or ("webhook.secret",)
        return Change("agent", spec.name, "updated", fields)

    def export_agent(self, tenant_id: str, agent_id: str) -> ConfigDocument:
        """The agent with the persona and skills it uses, ready to apply elsewhere."""
        with self.db.session() as s:
            row = load_agent(s, tenant_id, agent_id)
            skills = []
            for link in row.skill_links:
                try:
                    skills.append(skill_spec(link.skill))
                except ValidationError as exc:
                    # An export must re-apply; one that silently dropped a skill would not.
                    reason = "; ".join(f"{e.path}: {e.msg}" for e in field_errors(exc))
                    raise Conflict(
                        f"skill {link.skill.name!r} cannot be exported until it is fixed ({reason})"
                    ) from None
            return ConfigDocument(
                personas=[persona_spec(row.persona)], skills=skills, agents=[agent_spec(row)]
            )


def _diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, ...]:
    return tuple(k for k in after if after[k] != before.get(k))


def _apply_persona(s: Session, tenant_id: str, spec: PersonaSpec) -> Change:
    row = s.scalar(
        select(PersonaRow).where(PersonaRow.tenant_id == tenant_id, PersonaRow.name == spec.name)
    )
    wanted = spec.model_dump(mode="json")
    if row is None:
        row = PersonaRow(id=new_id("per"), tenant_id=tenant_id)
        s.add(row)
        write_persona(row, spec)
        return Change("persona", spec.name, "created")
    fields = _diff(persona_spec(row).model_dump(mode="json"), wanted)
    if not fields:
        return Change("persona", spec.name, "unchanged")
    write_persona(row, spec)
    return Change("persona", spec.name, "updated", fields)


def _apply_skill(s: Session, tenant_id: str, spec: SkillSpec) -> Change:
    row = s.scalar(
        select(SkillRow).where(SkillRow.tenant_id == tenant_id, SkillRow.name == spec.name)
    )
    if row is None:
        row = SkillRow(id=new_id("skl"), tenant_id=tenant_id)
        s.add(row)
        write_skill(row, spec)
        return Change("skill", spec.name, "created")
    fields = _diff(skill_document(row), spec.model_dump(mode="json"))
    if not fields:
        return Change("skill", spec.name, "unchanged")
    write_skill(row, spec)
    return Change("skill", spec.name, "updated", fields)
