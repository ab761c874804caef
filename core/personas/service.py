"""Persona CRUD, scoped to a tenant."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import Database
from core.db.ids import new_id
from core.db.models import AgentRow, PersonaRow
from core.db.pagination import Page
from core.db.repository import exists_named, flush_unique, name_filters, paginate, storable
from core.errors import Conflict, NameTaken, NotFound
from core.schemas.persona import PersonaPatch, PersonaSpec
from core.schemas.validation import raise_validation_failed
from core.schemas.views import PersonaView


def persona_spec(row: PersonaRow) -> PersonaSpec:
    return PersonaSpec.model_validate(
        {
            "name": row.name,
            "role": row.role,
            "tone": row.tone,
            "instructions": row.instructions,
            "variables": row.variables,
        }
    )


def write_persona(row: PersonaRow, spec: PersonaSpec) -> None:
    row.name = spec.name
    row.role = spec.role
    row.tone = spec.tone
    row.instructions = spec.instructions
    row.variables = {k: v.model_dump() for k, v in spec.variables.items()}


class PersonaService:
    """Who an agent speaks as. A persona in use by an agent cannot be deleted."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def list(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        q: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[PersonaView]:
        with self.db.session() as s:
            stmt = select(PersonaRow).where(PersonaRow.tenant_id == tenant_id)
            stmt = stmt.where(*name_filters(PersonaRow.name, name=name, q=q))
            page = paginate(s, stmt, PersonaRow.id, cursor=cursor, limit=limit)
            return Page([PersonaView.model_validate(r) for r in page.items], page.next_cursor)

    def get(self, tenant_id: str, persona_id: str) -> PersonaView:
        with self.db.session() as s:
            return PersonaView.model_validate(_load(s, tenant_id, persona_id))

    def create(self, tenant_id: str, spec: PersonaSpec) -> PersonaView:
        with self.db.session() as s:
            if exists_named(s, PersonaRow, tenant_id, spec.name):
                raise NameTaken("persona", spec.name)
            row = PersonaRow(id=new_id("per"), tenant_id=tenant_id)
            write_persona(row, spec)
            s.add(row)
            flush_unique(s, "persona", spec.name)
            return PersonaView.model_validate(row)

    def update(self, tenant_id: str, persona_id: str, patch: PersonaPatch) -> PersonaView:
        with self.db.session() as s:
            row = _load(s, tenant_id, persona_id)
            merged = persona_spec(row).model_dump() | patch.model_dump(exclude_unset=True)
            try:
                spec = PersonaSpec.model_validate(merged)
            except ValidationError as exc:
                raise_validation_failed(exc, prefix=("body",))
            if spec.name != row.name and exists_named(s, PersonaRow, tenant_id, spec.name):
                raise NameTaken("persona", spec.name)
            write_persona(row, spec)
            flush_unique(s, "persona", spec.name)
            return PersonaView.model_validate(row)

    def delete(self, tenant_id: str, persona_id: str) -> None:
        with self.db.session() as s:
            row = _load(s, tenant_id, persona_id)
            users = list(s.scalars(select(AgentRow.name).where(AgentRow.persona_id == row.id)))
            if users:
                raise Conflict(
                    f"persona {row.name!r} is used by agent(s) {', '.join(sorted(users))}; "
                    "move them to another persona first"
                )
            s.delete(row)


def _load(s: Session, tenant_id: str, persona_id: str) -> PersonaRow:
    row = s.get(PersonaRow, persona_id) if storable(persona_id) else None
    if row is None or row.tenant_id != tenant_id:
        raise NotFound("persona", persona_id)
    return row
