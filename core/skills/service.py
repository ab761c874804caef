"""Skill catalogue CRUD, keyed by name within a tenant."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import Database
from core.db.ids import new_id
from core.db.models import SkillRow
from core.db.pagination import Page
from core.db.repository import exists_named, flush_unique, name_contains, paginate, storable
from core.errors import Conflict, NotFound
from core.schemas.skill import SkillKind, SkillPatch, SkillSpec
from core.schemas.validation import raise_validation_failed
from core.schemas.views import SkillView


def skill_spec(row: SkillRow) -> SkillSpec:
    return SkillSpec.model_validate(
        {
            "name": row.name,
            "description": row.description,
            "input_schema": row.input_schema,
            "kind": row.kind,
            "is_automatable": row.is_automatable,
            "executor": row.executor,
        }
    )


def write_skill(row: SkillRow, spec: SkillSpec) -> None:
    """Store `spec`; a stored skill whose spec changes moves to its next version."""
    if row.version is not None and skill_spec(row) != spec:
        row.version += 1
    row.name = spec.name
    row.description = spec.description
    row.input_schema = spec.input_schema
    row.kind = spec.kind.value
    row.is_automatable = spec.is_automatable
    row.executor = spec.executor.model_dump(mode="json", exclude_none=True)


def load_skill(s: Session, tenant_id: str, name: str) -> SkillRow:
    stmt = select(SkillRow).where(SkillRow.tenant_id == tenant_id, SkillRow.name == name)
    row = s.scalar(stmt) if storable(name) else None
    if row is None:
        raise NotFound("skill", name)
    return row


class SkillService:
    """The tools agents may be given. Names are stable: agents and YAML refer to them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def list(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        kind: SkillKind | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[SkillView]:
        with self.db.session() as s:
            stmt = select(SkillRow).where(SkillRow.tenant_id == tenant_id)
            if name:
                stmt = stmt.where(name_contains(SkillRow.name, name))
            if kind:
                stmt = stmt.where(SkillRow.kind == kind.value)
            page = paginate(s, stmt, SkillRow.id, cursor=cursor, limit=limit)
            return Page([SkillView.model_validate(r) for r in page.items], page.next_cursor)

    def get(self, tenant_id: str, name: str) -> SkillView:
        with self.db.session() as s:
            return SkillView.model_validate(load_skill(s, tenant_id, name))

    def create(self, tenant_id: str, spec: SkillSpec) -> SkillView:
        with self.db.session() as s:
            if exists_named(s, SkillRow, tenant_id, spec.name):
                raise Conflict(f"a skill named {spec.name!r} already exists")
            row = SkillRow(id=new_id("skl"), tenant_id=tenant_id)
            write_skill(row, spec)
            s.add(row)
            flush_unique(s, "skill", spec.name)
            return SkillView.model_validate(row)

    def update(self, tenant_id: str, name: str, patch: SkillPatch) -> SkillView:
        with self.db.session() as s:
            row = load_skill(s, tenant_id, name)
            merged = skill_spec(row).model_dump(mode="json") | patch.model_dump(
                mode="json", exclude_unset=True
            )
            try:
                spec = SkillSpec.model_validate(merged)
            except ValidationError as exc:
                raise_validation_failed(exc, prefix=("body",))
            write_skill(row, spec)
            return SkillView.model_validate(row)
