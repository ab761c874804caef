"""Agent configuration: CRUD, skill lists, immutable versions and rollback."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import Database
from core.db.ids import AGENT_ID_PREFIX, is_id_of, new_id
from core.db.models import (
    AgentRow,
    AgentSkillRow,
    AgentVersionRow,
    KnowledgeBaseRow,
    PersonaRow,
    SkillRow,
    TurnRow,
)
from core.db.pagination import Page, check_limit, decode_cursor, encode_cursor
from core.db.repository import exists_named, flush_unique, name_filters, paginate, storable
from core.errors import (
    AgentBusy,
    FieldError,
    NameTaken,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from core.personas.service import persona_spec
from core.schemas.agent import AgentPatch, AgentSpec, WebhookSpec
from core.schemas.validation import raise_validation_failed
from core.schemas.views import AgentVersionView, AgentView, UnusableSkillView, WebhookView
from core.secret_names import SecretNameRule
from core.sessions.pricing import unpriced_warning
from core.skills.policy import SkillPolicy, UnusableSkill
from core.skills.service import skill_document, stored_fields

WebhookUrlCheck = Callable[[str], None]
SecretGenerator = Callable[[], str]
# `agent_versions.version` is a 32-bit column; a larger number cannot name a version, and
# binding one makes SQLite's driver raise OverflowError instead of finding nothing.
MAX_VERSION = 2**31 - 1


def agent_spec(row: AgentRow) -> AgentSpec:
    """The stored agent in the form admins write (names, not ids; no secret)."""
    webhook = None
    if row.webhook_url:
        webhook = WebhookSpec(url=row.webhook_url, secret_env=row.webhook_secret_env)
    return AgentSpec(
        name=row.name,
        description=row.description,
        persona=row.persona.name,
        model=row.model,
        skills=[link.skill.name for link in row.skill_links],
        knowledge_bases=list(row.knowledge_bases),
        memory_enabled=row.memory_enabled,
        limits={
            "daily_output_limit": row.daily_output_limit,
            "daily_token_budget": row.daily_token_budget,
        },
        approvers=list(row.approvers),
        allow_self_approval=row.allow_self_approval,
        require_distinct_editor_approver=row.require_distinct_editor_approver,
        accept_asserted_decisions=row.accept_asserted_decisions,
        approval_channel=row.approval_channel,
        approval=row.approval,
        webhook=webhook,
        is_active=row.is_active,
    )


def agent_view(
    row: AgentRow, *, shown_secret: str | None = None, policy: SkillPolicy | None = None
) -> AgentView:
    """The agent as adapters show it; with the operator's `policy`, it lists the skills
    that cannot run here and why."""
    spec = agent_spec(row)
    unusable = []
    if policy is not None:
        for link in row.skill_links:
            stored = policy.stored(link.skill.name, stored_fields(link.skill))
            if isinstance(stored, UnusableSkill):
                unusable.append(UnusableSkillView(name=stored.name, reason=stored.reason))
    webhook = None
    if row.webhook_url:
        webhook = WebhookView(
            url=row.webhook_url,
            secret_set=bool(row.webhook_secret or row.webhook_secret_env),
            secret_env=row.webhook_secret_env,
            secret=shown_secret,
        )
    warnings = []
    if row.model and (unpriced := unpriced_warning(row.model)):
        warnings.append(unpriced)
    return AgentView(
        id=row.id,
        tenant_id=row.tenant_id,
        persona_id=row.persona_id,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        webhook=webhook,
        unusable_skills=unusable,
        warnings=warnings,
        **spec.model_dump(exclude={"webhook"}),
    )


def snapshot(row: AgentRow) -> dict[str, Any]:
    """Full configuration at this version: the agent plus the persona and skills it used."""
    return {
        "agent": agent_spec(row).model_dump(mode="json", exclude_none=True),
        "persona": persona_spec(row.persona).model_dump(mode="json"),
        "skills": [skill_document(link.skill) for link in row.skill_links],
    }


class AgentService:
    """Agents of a tenant. Every change bumps `version` and stores a snapshot."""

    def __init__(
        self,
        db: Database,
        *,
        check_webhook_url: WebhookUrlCheck,
        generate_webhook_secret: SecretGenerator,
        skill_policy: SkillPolicy | None = None,
    ) -> None:
        self.db = db
        self.policy = skill_policy
        self._secret_rule = skill_policy.secrets if skill_policy else SecretNameRule()
        self._check_webhook_url = check_webhook_url
        self._generate_secret = generate_webhook_secret

    # -- reads ---------------------------------------------------------------

    def list(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        q: str | None = None,
        active: bool | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[AgentView]:
        with self.db.session() as s:
            stmt = select(AgentRow).where(AgentRow.tenant_id == tenant_id)
            stmt = stmt.where(*name_filters(AgentRow.name, name=name, q=q))
            if active is not None:
                stmt = stmt.where(AgentRow.is_active == active)
            page = paginate(s, stmt, AgentRow.id, cursor=cursor, limit=limit)
            return Page([agent_view(r, policy=self.policy) for r in page.items], page.next_cursor)

    def get(self, tenant_id: str, agent_id: str) -> AgentView:
        with self.db.session() as s:
            return agent_view(load_agent(s, tenant_id, agent_id), policy=self.policy)

    def get_by_name(self, tenant_id: str, name: str) -> AgentView:
        with self.db.session() as s:
            return agent_view(load_agent_by_name(s, tenant_id, name), policy=self.policy)

    def resolve(self, tenant_id: str, ref: str) -> str:
        """The id of the agent `ref` names: an id-shaped `ref` is an id, anything else a
        name (core.db.ids.is_id_of). NotFound when no such agent exists."""
        if is_id_of(ref, AGENT_ID_PREFIX):
            return ref
        with self.db.session() as s:
            return load_agent_by_name(s, tenant_id, ref).id

    def spec(self, tenant_id: str, agent_id: str) -> AgentSpec:
        with self.db.session() as s:
            return agent_spec(load_agent(s, tenant_id, agent_id))

    def versions(
        self, tenant_id: str, agent_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page[AgentVersionView]:
        """Newest first. The cursor names the last version row seen; the next page holds
        the lower version numbers (numbers, not ids, order versions)."""
        check_limit(limit)
        after = decode_cursor(cursor)
        with self.db.session() as s:
            load_agent(s, tenant_id, agent_id)
            stmt = select(AgentVersionRow).where(AgentVersionRow.agent_id == agent_id)
            if after is not None:
                seen = (
                    select(AgentVersionRow.version)
                    .where(AgentVersionRow.id == after, AgentVersionRow.agent_id == agent_id)
                    .scalar_subquery()
                )
                stmt = stmt.where(AgentVersionRow.version < seen)
            rows = list(s.scalars(stmt.order_by(AgentVersionRow.version.desc()).limit(limit + 1)))
            more = len(rows) > limit
            rows = rows[:limit]
            return Page(
                [AgentVersionView.model_validate(r) for r in rows],
                encode_cursor(rows[-1].id) if more and rows else None,
            )

    # -- writes --------------------------------------------------------------

    def create(self, tenant_id: str, spec: AgentSpec, *, actor: str) -> AgentView:
        with self.db.session() as s:
            row, shown = self.create_in(s, tenant_id, spec, actor=actor)
            return agent_view(row, shown_secret=shown, policy=self.policy)

    def create_in(
        self, s: Session, tenant_id: str, spec: AgentSpec, *, actor: str
    ) -> tuple[AgentRow, str | None]:
        """Create inside the caller's transaction (config files apply all-or-nothing)."""
        if exists_named(s, AgentRow, tenant_id, spec.name):
            raise NameTaken("agent", spec.name)
        row = AgentRow(id=new_id(AGENT_ID_PREFIX), tenant_id=tenant_id, version=1)
        shown = self._write(s, row, spec, creating=True)
        s.add(row)
        flush_unique(s, "agent", spec.name)
        record_version(s, row, change="created", actor=actor)
        return row, shown

    def update(
        self,
        tenant_id: str,
        agent_id: str,
        patch: AgentPatch,
        *,
        actor: str,
        expected_version: int | None = None,
    ) -> AgentView:
        with self.db.session() as s:
            row = load_agent(s, tenant_id, agent_id, for_update=True)
            _check_version(row, expected_version)
            changes = patch.model_dump(exclude_unset=True)
            merged = agent_spec(row).model_dump() | changes
            if "webhook" in changes and changes["webhook"] is not None:
                merged["webhook"] = patch.webhook
            try:
                spec = AgentSpec.model_validate(merged)
            except ValidationError as exc:
                raise_validation_failed(exc, prefix=("body",))
            row2, shown = self.replace_in(s, row, spec, actor=actor, change="updated")
            return agent_view(row2, shown_secret=shown, policy=self.policy)

    def replace_in(
        self, s: Session, row: AgentRow, spec: AgentSpec, *, actor: str, change: str
    ) -> tuple[AgentRow, str | None]:
        """Make `row` match `spec`; a no-op when nothing differs (no new version)."""
        if spec.name != row.name and exists_named(s, AgentRow, row.tenant_id, spec.name):
            raise NameTaken("agent", spec.name)
        before = snapshot(row)
        secret_before = row.webhook_secret
        shown = self._write(s, row, spec, creating=False)
        s.flush()
        s.refresh(row)
        if snapshot(row) == before and row.webhook_secret == secret_before:
            return row, shown
        row.version += 1
        flush_unique(s, "agent", spec.name)
        record_version(s, row, change=change, actor=actor)
        return row, shown

    def set_skills(
        self,
        tenant_id: str,
        agent_id: str,
        skills: builtins.list[str],
        *,
        actor: str,
        expected_version: int | None = None,
    ) -> AgentView:
        with self.db.session() as s:
            row = load_agent(s, tenant_id, agent_id, for_update=True)
            _check_version(row, expected_version)
            spec = agent_spec(row).model_copy(update={"skills": list(dict.fromkeys(skills))})
            row2, _ = self.replace_in(s, row, spec, actor=actor, change="skills updated")
            return agent_view(row2, policy=self.policy)

    def delete(self, tenant_id: str, agent_id: str, *, force: bool = False) -> None:
        """Refused while any of the agent's turns is pending or running (someone is talking
        to it right now), unless `force`: those turns then fail as "a deleted agent"."""
        with self.db.session() as s:
            row = load_agent(s, tenant_id, agent_id, for_update=True)
            if not force:
                running = s.scalar(
                    select(func.count())
                    .select_from(TurnRow)
                    .where(
                        TurnRow.tenant_id == tenant_id,
                        TurnRow.agent_id == agent_id,
                        TurnRow.status.in_(("pending", "running")),
                    )
                )
                if running:
                    raise AgentBusy(row.name, running)
            s.delete(row)

    def rollback(self, tenant_id: str, agent_id: str, to_version: int, *, actor: str) -> AgentView:
        """Restore an earlier version's agent settings as a new version."""
        with self.db.session() as s:
            row = load_agent(s, tenant_id, agent_id, for_update=True)
            target = None
            if 1 <= to_version <= MAX_VERSION:
                target = s.scalar(
                    select(AgentVersionRow).where(
                        AgentVersionRow.agent_id == agent_id, AgentVersionRow.version == to_version
                    )
                )
            if target is None:
                raise NotFound("version", f"{agent_id}@{to_version}")
            spec = AgentSpec.model_validate(target.snapshot["agent"])
            row2, shown = self.replace_in(
                s, row, spec, actor=actor, change=f"rolled back to version {to_version}"
            )
            # Restoring a webhook the agent no longer has generates a secret: show it once.
            return agent_view(row2, shown_secret=shown, policy=self.policy)

    # -- internals -----------------------------------------------------------

    def _write(self, s: Session, row: AgentRow, spec: AgentSpec, *, creating: bool) -> str | None:
        persona = s.scalar(
            select(PersonaRow).where(
                PersonaRow.tenant_id == row.tenant_id, PersonaRow.name == spec.persona
            )
        )
        if persona is None:
            raise ValidationFailed(
                [FieldError(("body", "persona"), f"no persona {spec.persona!r}")]
            )
        skill_rows = _skills_by_name(s, row.tenant_id, spec.skills)
        _check_knowledge_bases(s, row.tenant_id, spec.knowledge_bases)
        shown_secret = None
        if spec.webhook is not None:
            try:
                self._check_webhook_url(spec.webhook.url)
            except Exception as exc:
                detail = getattr(exc, "detail", str(exc))
                raise ValidationFailed([FieldError(("body", "webhook", "url"), detail)]) from exc
            if spec.webhook.secret is not None:
                row.webhook_secret = spec.webhook.secret.get_secret_value()
                row.webhook_secret_env = None
            elif spec.webhook.secret_env is not None:
                refused = self._secret_rule.refusal(spec.webhook.secret_env)
                if refused is not None:
                    raise ValidationFailed([FieldError(("body", "webhook", "secret_env"), refused)])
                row.webhook_secret = None
                row.webhook_secret_env = spec.webhook.secret_env
            elif not row.webhook_secret and not row.webhook_secret_env:
                shown_secret = self._generate_secret()
                row.webhook_secret = shown_secret
            row.webhook_url = spec.webhook.url
        else:
            row.webhook_url = row.webhook_secret = row.webhook_secret_env = None

        row.name = spec.name
        row.description = spec.description
        row.persona_id = persona.id
        row.persona = persona
        row.model = spec.model
        row.knowledge_bases = list(spec.knowledge_bases)
        row.memory_enabled = spec.memory_enabled
        row.daily_output_limit = spec.limits.daily_output_limit
        row.daily_token_budget = spec.limits.daily_token_budget
        row.approvers = list(spec.approvers)
        row.allow_self_approval = spec.allow_self_approval
        row.require_distinct_editor_approver = spec.require_distinct_editor_approver
        row.accept_asserted_decisions = spec.accept_asserted_decisions
        row.approval_channel = spec.approval_channel
        row.approval = (
            spec.approval.model_dump(mode="json", exclude_none=True) if spec.approval else None
        )
        row.is_active = spec.is_active
        current = [link.skill_id for link in row.skill_links] if not creating else []
        wanted = [r.id for r in skill_rows]
        if current != wanted:
            row.skill_links.clear()
            s.flush()
            for i, skill in enumerate(skill_rows):
                row.skill_links.append(AgentSkillRow(skill_id=skill.id, position=i, skill=skill))
        return shown_secret


def record_version(s: Session, row: AgentRow, *, change: str, actor: str) -> None:
    """Store the agent's configuration as it is now under its (already bumped) version."""
    s.flush()
    s.add(
        AgentVersionRow(
            id=new_id("ver"),
            tenant_id=row.tenant_id,
            agent_id=row.id,
            version=row.version,
            snapshot=snapshot(row),
            change=change,
            created_by=actor,
        )
    )
    try:
        with s.begin_nested():
            s.flush()
    except Exception as exc:  # a concurrent writer took this version number
        raise PreconditionFailed(row.version - 1, row.version) from exc


def agents_using_knowledge_base(
    s: Session, tenant_id: str, name: str, *, for_update: bool = False
) -> list[AgentRow]:
    """The tenant's agents that list knowledge base `name`, by name."""
    stmt = select(AgentRow).where(AgentRow.tenant_id == tenant_id).order_by(AgentRow.name)
    if for_update:
        stmt = stmt.with_for_update(of=AgentRow)
    # A JSON list column: filtered here, portably (a tenant has tens of agents, not millions).
    return [row for row in s.scalars(stmt) if name in (row.knowledge_bases or [])]


def detach_knowledge_base(s: Session, tenant_id: str, name: str, *, actor: str) -> list[str]:
    """Remove knowledge base `name` from every agent that lists it, each as a new version
    (inside the caller's transaction: the knowledge base's deletion); returns their names."""
    detached = []
    for row in agents_using_knowledge_base(s, tenant_id, name, for_update=True):
        row.knowledge_bases = [kb for kb in row.knowledge_bases if kb != name]
        row.version += 1
        record_version(s, row, change=f"knowledge base {name} deleted", actor=actor)
        detached.append(row.name)
    return detached


def _check_knowledge_bases(s: Session, tenant_id: str, names: list[str]) -> None:
    if not names:
        return
    # FOR SHARE: a knowledge base being deleted right now waits for this save (and then
    # sees the agent), or this save waits for the deletion (and then finds nothing).
    found = set(
        s.scalars(
            select(KnowledgeBaseRow.name)
            .where(KnowledgeBaseRow.tenant_id == tenant_id, KnowledgeBaseRow.name.in_(names))
            .with_for_update(read=True)
        )
    )
    errors = [
        FieldError(
            ("body", "knowledge_bases", i),
            f"no knowledge base {name!r}; create it with `cosmo kb create {name}` "
            "(or POST /api/v1/knowledge-bases)",
        )
        for i, name in enumerate(names)
        if name not in found
    ]
    if errors:
        raise ValidationFailed(errors)


def unpriced_models(db: Database) -> builtins.list[tuple[str, str, str]]:
    """(tenant, agent, model) for every agent, in every tenant, whose model has no price."""
    with db.session() as s:
        rows = s.execute(
            select(AgentRow.tenant_id, AgentRow.name, AgentRow.model)
            .where(AgentRow.model.is_not(None))
            .order_by(AgentRow.tenant_id, AgentRow.name)
        )
        return [(t, n, m) for t, n, m in rows if m and unpriced_warning(m)]


def agent_webhooks(db: Database) -> builtins.list[tuple[str, str, str, str | None]]:
    """(tenant, agent, webhook URL, secret variable or None) for every agent with a webhook."""
    with db.session() as s:
        rows = s.execute(
            select(
                AgentRow.tenant_id, AgentRow.name, AgentRow.webhook_url, AgentRow.webhook_secret_env
            )
            .where(AgentRow.webhook_url.is_not(None))
            .order_by(AgentRow.tenant_id, AgentRow.name)
        )
        return [(t, n, u, e) for t, n, u, e in rows if u]


def agent_models(db: Database) -> builtins.list[tuple[str, str, str]]:
    """(tenant, agent, model) for every agent naming a model (the others use COSMO_MODEL)."""
    with db.session() as s:
        rows = s.execute(
            select(AgentRow.tenant_id, AgentRow.name, AgentRow.model)
            .where(AgentRow.model.is_not(None))
            .order_by(AgentRow.tenant_id, AgentRow.name)
        )
        return [(t, n, m) for t, n, m in rows if m]


def _check_version(row: AgentRow, expected: int | None) -> None:
    if expected is not None and expected != row.version:
        raise PreconditionFailed(expected, row.version)


def _skills_by_name(s: Session, tenant_id: str, names: list[str]) -> list[SkillRow]:
    if not names:
        return []
    found = {
        r.name: r
        for r in s.scalars(
            select(SkillRow).where(SkillRow.tenant_id == tenant_id, SkillRow.name.in_(names))
        )
    }
    missing = [n for n in names if n not in found]
    if missing:
        raise ValidationFailed(
            [FieldError(("body", "skills"), f"unknown skill(s): {', '.join(missing)}")]
        )
    return [found[n] for n in names]


def load_agent(s: Session, tenant_id: str, agent_id: str, *, for_update: bool = False) -> AgentRow:
    stmt = select(AgentRow).where(AgentRow.id == agent_id, AgentRow.tenant_id == tenant_id)
    if for_update:
        stmt = stmt.with_for_update(of=AgentRow)
    row = s.scalar(stmt) if storable(agent_id) else None
    if row is None:
        raise NotFound("agent", agent_id)
    return row


def load_agent_by_name(s: Session, tenant_id: str, name: str) -> AgentRow:
    stmt = select(AgentRow).where(AgentRow.tenant_id == tenant_id, AgentRow.name == name)
    row = s.scalar(stmt) if storable(name) else None
    if row is None:
        raise NotFound("agent", name)
    return row
