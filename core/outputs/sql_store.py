"""The embedded output store: metadata in the database, content in a blob directory."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import select

from core.db import Database
from core.db.ids import new_id
from core.db.models import OutputRow
from core.db.pagination import Page
from core.db.repository import paginate
from core.errors import NotFound
from core.outputs.blobs import BlobDirectory
from core.outputs.port import NewOutput, Output, OutputFilter, preview_of

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def content_key(tenant_id: str, output_id: str) -> str:
    return f"{_SAFE.sub('_', tenant_id)}/{output_id}"


class SqlOutputStore:
    """Default store. Content goes to disk first, then one metadata row."""

    name = "sql"

    def __init__(self, db: Database, blobs: BlobDirectory) -> None:
        self.db = db
        self.blobs = blobs

    def create(self, new: NewOutput) -> Output:
        output_id = new_id("out")
        data = new.content.encode("utf-8")
        key = content_key(new.tenant_id, output_id)
        self.blobs.put(key, data)
        try:
            with self.db.session() as s:
                row = OutputRow(
                    id=output_id,
                    tenant_id=new.tenant_id,
                    agent_id=new.agent_id,
                    session_id=new.session_id,
                    turn_id=new.turn_id,
                    skill=new.skill,
                    is_automatable=new.is_automatable,
                    arguments=new.arguments,
                    content_type=new.content_type,
                    content_key=key,
                    content_sha256=hashlib.sha256(data).hexdigest(),
                    content_size=len(data),
                    preview=preview_of(new.content),
                    status="pending",
                    notification_status="pending",
                    requested_by=new.requested_by,
                    expires_at=new.expires_at,
                )
                s.add(row)
                s.flush()
                return Output.model_validate(row, from_attributes=True)
        except BaseException:
            self.blobs.delete(key)  # no orphan content when the metadata write fails
            raise

    def get(self, tenant_id: str, output_id: str) -> Output:
        with self.db.session() as s:
            row = s.get(OutputRow, output_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound("output", output_id)
            return Output.model_validate(row, from_attributes=True)

    def list(
        self, tenant_id: str, filters: OutputFilter, *, cursor: str | None, limit: int
    ) -> Page[Output]:
        with self.db.session() as s:
            stmt = select(OutputRow).where(OutputRow.tenant_id == tenant_id)
            if filters.agent_id:
                stmt = stmt.where(OutputRow.agent_id == filters.agent_id)
            if filters.session_id:
                stmt = stmt.where(OutputRow.session_id == filters.session_id)
            if filters.status:
                stmt = stmt.where(OutputRow.status == filters.status.value)
            if filters.skill:
                stmt = stmt.where(OutputRow.skill == filters.skill)
            if filters.created_after:
                stmt = stmt.where(OutputRow.created_at >= filters.created_after)
            if filters.created_before:
                stmt = stmt.where(OutputRow.created_at < filters.created_before)
            page = paginate(s, stmt, OutputRow.id, cursor=cursor, limit=limit)
            return Page(
                [Output.model_validate(r, from_attributes=True) for r in page.items],
                page.next_cursor,
            )

    def read_content(self, tenant_id: str, output_id: str) -> bytes:
        self.get(tenant_id, output_id)  # tenant check and 404 before touching the disk
        return self.blobs.get(content_key(tenant_id, output_id))
