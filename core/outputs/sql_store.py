"""The embedded output store: metadata in the database, content in a blob directory."""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from core.db import Database
from core.db.models import OutputRow
from core.db.pagination import Page
from core.db.repository import paginate
from core.errors import NotFound, OutputAlreadyDecided
from core.outputs.blobs import BlobDirectory
from core.outputs.port import (
    NewEvent,
    NewOutput,
    NotificationStatus,
    Output,
    OutputFilter,
    OutputStatus,
    Transition,
    preview_of,
)
from core.webhooks.outbox import Outbox

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def content_key(tenant_id: str, output_id: str) -> str:
    """A fresh key per write: a create that collides with an existing id can never
    overwrite (and then, cleaning up, delete) the first output's content."""
    return f"{_SAFE.sub('_', tenant_id)}/{output_id}/{secrets.token_hex(8)}"


class SqlOutputStore:
    """Default store. Content goes to disk first, then one metadata row."""

    name = "sql"

    def __init__(self, db: Database, blobs: BlobDirectory, outbox: Outbox) -> None:
        self.db = db
        self.blobs = blobs
        self.outbox = outbox

    def create(self, new: NewOutput, events: Sequence[NewEvent] = ()) -> Output:
        output_id = new.id
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
                self.outbox.add_in(s, events, tenant_id=new.tenant_id, output_id=output_id)
                s.flush()
                return Output.model_validate(row, from_attributes=True)
        except BaseException:
            self.blobs.delete(key)  # no orphan content when the metadata write fails
            raise

    def transition(
        self, tenant_id: str, output_id: str, change: Transition, events: Sequence[NewEvent] = ()
    ) -> Output:
        """`UPDATE … WHERE status = expected`; the rowcount says who won."""
        values: dict[str, Any] = {"status": change.to.value, "updated_at": change.at}
        if change.decided_by is not None:
            values.update(decided_by=change.decided_by, decided_at=change.at)
        for name in ("decision", "via", "execution_result", "execution_error"):
            if getattr(change, name) is not None:
                values[name if name != "via" else "decision_via"] = getattr(change, name)
        if change.reason is not None:
            values["decision_reason"] = change.reason
        if change.executed:
            values["executed_at"] = change.at
        with self.db.session() as s:
            result = s.execute(
                update(OutputRow)
                .where(
                    OutputRow.id == output_id,
                    OutputRow.tenant_id == tenant_id,
                    OutputRow.status == change.expected.value,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                current = s.get(OutputRow, output_id)
                if current is None or current.tenant_id != tenant_id:
                    raise NotFound("output", output_id)
                raise OutputAlreadyDecided(
                    output_id, current.status, current.decided_by, current.decided_at
                )
            self.outbox.add_in(s, events, tenant_id=tenant_id, output_id=output_id)
            row = s.get(OutputRow, output_id, populate_existing=True)
            assert row is not None
            return Output.model_validate(row, from_attributes=True)

    def set_notification_status(
        self, tenant_id: str, output_id: str, status: NotificationStatus
    ) -> None:
        with self.db.session() as s:
            s.execute(
                update(OutputRow)
                .where(OutputRow.id == output_id, OutputRow.tenant_id == tenant_id)
                .values(notification_status=status.value)
            )

    def attach_slack_message(self, tenant_id: str, output_id: str, channel: str, ts: str) -> None:
        with self.db.session() as s:
            s.execute(
                update(OutputRow)
                .where(OutputRow.id == output_id, OutputRow.tenant_id == tenant_id)
                .values(slack_channel=channel, slack_ts=ts)
            )

    def due_for_expiry(self, now: datetime, limit: int = 100) -> builtins.list[Output]:
        with self.db.session() as s:
            rows = s.scalars(
                select(OutputRow)
                .where(
                    OutputRow.status == OutputStatus.PENDING.value,
                    OutputRow.expires_at.is_not(None),
                    OutputRow.expires_at <= now,
                )
                .order_by(OutputRow.expires_at)
                .limit(limit)
            )
            return [Output.model_validate(r, from_attributes=True) for r in rows]

    def content_url(self, tenant_id: str, output_id: str, ttl_seconds: int) -> str | None:
        self.get(tenant_id, output_id)  # same 404 as the aws store for unknown outputs
        return None  # the REST API streams sql-store content itself

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
        with self.db.session() as s:
            row = s.get(OutputRow, output_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound("output", output_id)
            key = row.content_key
        return self.blobs.get(key)
