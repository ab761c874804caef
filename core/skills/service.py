"""Skill catalogue CRUD, keyed by name within a tenant."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import Database
from core.db.ids import new_id
from core.db.models import SkillRow
from core.db.pagination import Page
from core.db.repository import exists_named, flush_unique, name_filters, paginate, storable
from core.errors import FieldError, NameTaken, NotFound, ValidationFailed
from core.schemas.skill import (
    Executor,
    SkillKind,
    SkillPatch,
    SkillSpec,
    schema_keyword_errors,
)
from core.schemas.validation import raise_validation_failed
from core.schemas.views import SkillView
from core.skills.policy import SkillPolicy, UnusableSkill

_EXECUTOR: TypeAdapter[Any] = TypeAdapter(Executor)


def stored_fields(row: SkillRow) -> dict[str, Any]:
    """The stored skill as written, before today's rules judge it."""
    return {
        "name": row.name,
        "description": row.description,
        "input_schema": row.input_schema,
        "kind": row.kind,
        "is_automatable": row.is_automatable,
        "idempotent": row.idempotent,
        "executor": row.executor,
        "approval": row.approval,
        "grantable": bool(row.grantable),
    }


def skill_spec(row: SkillRow) -> SkillSpec:
    """The stored skill as a spec. Raises `ValidationError` for a row that predates a rule
    (a stdio `command`); `SkillPolicy.stored` says why instead of raising."""
    return SkillSpec.model_validate(stored_fields(row))


def skill_document(row: SkillRow) -> dict[str, Any]:
    """The stored skill as JSON for snapshots: the spec when it still validates, else as
    stored (an agent's history must not fail over one outdated skill)."""
    try:
        return skill_spec(row).model_dump(mode="json")
    except ValidationError:
        return stored_fields(row)


def write_skill(row: SkillRow, spec: SkillSpec) -> None:
    """Store `spec`; a stored skill whose spec changes moves to its next version."""
    if row.version is not None and skill_document(row) != spec.model_dump(mode="json"):
        row.version += 1
    row.name = spec.name
    row.description = spec.description
    row.input_schema = spec.input_schema
    row.kind = spec.kind.value
    row.is_automatable = spec.is_automatable
    row.idempotent = spec.idempotent
    row.executor = spec.executor.model_dump(mode="json", exclude_none=True)
    row.approval = (
        spec.approval.model_dump(mode="json", exclude_none=True) if spec.approval else None
    )
    row.grantable = spec.grantable


def load_skill(s: Session, tenant_id: str, name: str) -> SkillRow:
    stmt = select(SkillRow).where(SkillRow.tenant_id == tenant_id, SkillRow.name == name)
    row = s.scalar(stmt) if storable(name) else None
    if row is None:
        raise NotFound("skill", name)
    return row


class SkillService:
    """The tools agents may be given. Names are stable: agents and YAML refer to them."""

    def __init__(self, db: Database, policy: SkillPolicy | None = None) -> None:
        self.db = db
        self.policy = policy

    def view(self, row: SkillRow) -> SkillView:
        """The row as REST and Slack show it, with why it cannot run (when it cannot)."""
        problem = None
        if self.policy is not None:
            stored = self.policy.stored(row.name, stored_fields(row))
            problem = stored.reason if isinstance(stored, UnusableSkill) else None
        try:
            executor = _EXECUTOR.validate_python(row.executor)
        except ValidationError:
            executor = None
        return SkillView(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            description=row.description,
            input_schema=row.input_schema,
            kind=SkillKind(row.kind),
            is_automatable=row.is_automatable,
            idempotent=row.idempotent,
            executor=executor,
            approval=row.approval,
            grantable=bool(row.grantable),
            usable=problem is None,
            problem=problem,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def unusable(self, tenant_id: str | None = None) -> list[tuple[str, UnusableSkill]]:
        """(tenant, skill) for every stored skill that cannot run here, for doctor/readyz."""
        if self.policy is None:
            return []
        with self.db.session() as s:
            stmt = select(SkillRow).order_by(SkillRow.tenant_id, SkillRow.name)
            if tenant_id is not None:
                stmt = stmt.where(SkillRow.tenant_id == tenant_id)
            found = []
            for row in s.scalars(stmt):
                stored = self.policy.stored(row.name, stored_fields(row))
                if isinstance(stored, UnusableSkill):
                    found.append((row.tenant_id, stored))
            return found

    def missing_credentials(
        self, lookup: Callable[[str], str | None]
    ) -> list[tuple[str, str, str]]:
        """(tenant, skill, variable) for every environment variable a stored http skill
        sends as a secret header that `lookup` does not find: such a skill fails at its
        first call, so doctor says so before a user chats."""
        missing = []
        with self.db.session() as s:
            rows = s.scalars(select(SkillRow).order_by(SkillRow.tenant_id, SkillRow.name))
            for row in rows:
                executor = (row.executor or {}) if isinstance(row.executor, dict) else {}
                if executor.get("type") != "http":
                    continue
                for variable in sorted(set((executor.get("secret_headers") or {}).values())):
                    if not lookup(str(variable)):
                        missing.append((row.tenant_id, row.name, str(variable)))
        return missing

    def check(
        self, spec: SkillSpec, prefix: tuple[str | int, ...] = ("body",), *, keywords: bool = False
    ) -> None:
        """Refuse (422) a skill that cannot run here (see `SkillPolicy`) and, with
        `keywords`, one whose input schema has keys that are no JSON Schema keyword."""
        if keywords and (errors := schema_keyword_errors(spec)):
            raise ValidationFailed([FieldError(prefix + e.loc, e.msg) for e in errors])
        if self.policy is not None:
            self.policy.check(spec, prefix)

    def list(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        q: str | None = None,
        kind: SkillKind | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[SkillView]:
        with self.db.session() as s:
            stmt = select(SkillRow).where(SkillRow.tenant_id == tenant_id)
            stmt = stmt.where(*name_filters(SkillRow.name, name=name, q=q))
            if kind:
                stmt = stmt.where(SkillRow.kind == kind.value)
            page = paginate(s, stmt, SkillRow.id, cursor=cursor, limit=limit)
            return Page([self.view(r) for r in page.items], page.next_cursor)

    def get(self, tenant_id: str, name: str) -> SkillView:
        with self.db.session() as s:
            return self.view(load_skill(s, tenant_id, name))

    def runnable(self, tenant_id: str, name: str) -> tuple[SkillSpec | UnusableSkill, int]:
        """The stored skill as a turn would build it, with its version (for one-off runs
        such as `/agent skill test`)."""
        with self.db.session() as s:
            row = load_skill(s, tenant_id, name)
            fields, version = stored_fields(row), row.version or 1
        if self.policy is not None:
            return self.policy.stored(name, fields), version
        try:
            return SkillSpec.model_validate(fields), version
        except ValidationError as exc:
            return UnusableSkill(name, str(exc)), version

    def create(self, tenant_id: str, spec: SkillSpec) -> SkillView:
        with self.db.session() as s:
            if exists_named(s, SkillRow, tenant_id, spec.name):
                raise NameTaken("skill", spec.name)
            self.check(spec, keywords=True)
            row = SkillRow(id=new_id("skl"), tenant_id=tenant_id)
            write_skill(row, spec)
            s.add(row)
            flush_unique(s, "skill", spec.name)
            return self.view(row)

    def update(self, tenant_id: str, name: str, patch: SkillPatch) -> SkillView:
        with self.db.session() as s:
            row = load_skill(s, tenant_id, name)
            # From the stored fields, not a spec: a row that no longer validates (an old
            # stdio `command`) must stay fixable by a PATCH that replaces the bad part.
            merged = stored_fields(row) | patch.model_dump(mode="json", exclude_unset=True)
            try:
                spec = SkillSpec.model_validate(merged)
            except ValidationError as exc:
                raise_validation_failed(exc, prefix=("body",))
            # The stored schema is not re-judged unless replaced: a PATCH of the
            # description must not fail on a keyword saved before keywords were checked.
            self.check(spec, keywords="input_schema" in patch.model_fields_set)
            write_skill(row, spec)
            return self.view(row)
