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
from core.errors import FieldError, ValidationFailed
from core.personas.service import persona_spec, write_persona
from core.schemas.agent import AgentSpec
from core.schemas.common import StrictModel
from core.schemas.persona import PersonaSpec
from core.schemas.skill import SkillSpec
from core.schemas.validation import field_errors
from core.skills.service import skill_spec, write_skill

API_VERSION = "cosmo/v1"


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


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping, for error messages.

    Aliases are refused: a few lines of nested `*refs` expand to billions of nodes (the
    "billion laughs"), and a config document has no need for them.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not supported", mark
            )
        return super().compose_node(parent, index)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    keys = {}
    for key_node, _ in node.value:
        keys[loader.construct_object(key_node)] = key_node.start_mark.line + 1
    mapping["__keylines__"] = keys
    return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_lines(v) for k, v in value.items() if k not in ("__line__", "__keylines__")
        }
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def _line_of(raw: Any, loc: tuple[str | int, ...]) -> int | None:
    line = None
    node = raw
    for part in loc:
        if isinstance(node, dict):
            line = node.get("__keylines__", {}).get(part, node.get("__line__", line))
            if part not in node:
                break
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            if isinstance(node, dict):
                line = node.get("__line__", line)
        else:
            break
    return line


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


def parse_document(text: str) -> ConfigDocument:
    """Parse YAML (or JSON, which is YAML) into a validated document."""
    try:
        raw = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
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
        return ConfigDocument.model_validate(_strip_lines(raw))
    except ValidationError as exc:
        errors = field_errors(exc)
        raise DocumentInvalid(errors, [_line_of(raw, e.loc) for e in errors]) from None
    except RecursionError:
        raise DocumentInvalid([_TOO_DEEP], [None]) from None


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

    def __init__(self, db: Database, agents: AgentService) -> None:
        self.db = db
        self.agents = agents

    def apply(
        self, tenant_id: str, doc: ConfigDocument, *, actor: str, dry_run: bool = False
    ) -> ApplyReport:
        report = ApplyReport()
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
            return ConfigDocument(
                personas=[persona_spec(row.persona)],
                skills=[skill_spec(link.skill) for link in row.skill_links],
                agents=[agent_spec(row)],
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
    fields = _diff(skill_spec(row).model_dump(mode="json"), spec.model_dump(mode="json"))
    if not fields:
        return Change("skill", spec.name, "unchanged")
    write_skill(row, spec)
    return Change("skill", spec.name, "updated", fields)
