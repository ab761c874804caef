"""The embedded output store: metadata in the database, content in a blob directory."""

from __future__ import annotations

import builtins
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.db import Database
from core.db.models import OutputRow
from core.db.pagination import Page
from core.db.repository import paginate
from core.errors import NotFound, OutputAlreadyDecided, StaleRevision
from core.outputs.blobs import BlobDirectory
from core.outputs.port import (
    ApprovalsMoved,
    AwaitingExecution,
    HeldEvent,
    NewEvent,
    NewOutput,
    NotificationStatus,
    Output,
    OutputFilter,
    OutputStatus,
    Recorder,
    Revise,
    SlackStatus,
    Transition,
    preview_of,
    recorded_count,
)
from core.outputs.snapshot import content_fingerprint
from core.webhooks.deliveries import DeliveryStatus
from core.webhooks.outbox import Outbox

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def content_key(tenant_id: str, output_id: str) -> str:
    """A fresh key per write: a create that collides with an existing id can never
    overwrite (and then, cleaning up, delete) the first output's content."""
    return f"{_SAFE.sub('_', tenant_id)}/{output_id}/{secrets.token_hex(8)}"


class SqlOutputStore:
    """Default store. Content goes to disk first, then one metadata row."""

    name = "sql"
    holds_events = False  # events commit in the transaction of the change they announce

    def __init__(self, db: Database, blobs: BlobDirectory, outbox: Outbox) -> None:
        self.db = db
        self.blobs = blobs
        self.outbox = outbox

    def create(
        self,
        new: NewOutput,
        events: Sequence[NewEvent] = (),
        record: Recorder | None = None,
    ) -> Output:
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
                    content_sha256=content_fingerprint(
                        new.skill_snapshot or {}, new.arguments, new.content
                    ),
                    content_size=len(data),
                    preview=preview_of(new.content),
                    status="pending",
                    skill_snapshot=new.skill_snapshot,
                    revision=1,
                    notification_status="pending",
                    slack_status="pending",
                    requested_by=new.requested_by,
                    expires_at=new.expires_at,
                    approval_policy=new.approval_policy,
                    approval_count=0,
                    traceparent=new.traceparent,
                )
                s.add(row)
                self.outbox.add_in(s, events, tenant_id=new.tenant_id, output_id=output_id)
                s.flush()
                created = Output.model_validate(row, from_attributes=True)
                if record is not None:
                    record(s, created)
                return created
        except BaseException:
            self.blobs.delete(key)  # no orphan content when the metadata write fails
            raise

    def transition(
        self,
        tenant_id: str,
        output_id: str,
        change: Transition,
        events: Sequence[NewEvent] = (),
        record: Recorder | None = None,
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
        if change.identity is not None:
            values["decision_identity"] = change.identity
        if change.clear_execution:
            values.update(execution_result=None, execution_error=None, executed_at=None)
        conditions = [
            OutputRow.id == output_id,
            OutputRow.tenant_id == tenant_id,
            OutputRow.status == change.expected.value,
        ]
        if change.expected_revision is not None:
            conditions.append(OutputRow.revision == change.expected_revision)
            if change.to is not OutputStatus.PENDING:
                values["decision_revision"] = change.expected_revision
        if change.expected_approvals is not None:
            conditions.append(OutputRow.approval_count == change.expected_approvals)
        if change.approvals is not None:
            values.update(approvals=change.approvals, approval_count=recorded_count(change))
        if change.escalate_until is not None:
            conditions.append(OutputRow.escalated_at.is_(None))
            values.update(escalated_at=change.at, expires_at=change.escalate_until)
        with self.db.session() as s:
            result = s.execute(
                update(OutputRow)
                .where(*conditions)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                self._lost(s, tenant_id, output_id, change.expected, change.expected_revision)
            self.outbox.add_in(s, events, tenant_id=tenant_id, output_id=output_id)
            row = s.get(OutputRow, output_id, populate_existing=True)
            assert row is not None
            changed = Output.model_validate(row, from_attributes=True)
            if record is not None:
                record(s, changed)
            return changed

    def revise(
        self,
        tenant_id: str,
        output_id: str,
        change: Revise,
        events: Sequence[NewEvent] = (),
        record: Recorder | None = None,
    ) -> Output:
        data = change.content.encode("utf-8")
        key = content_key(tenant_id, output_id)
        self.blobs.put(key, data)
        try:
            with self.db.session() as s:
                current = s.get(OutputRow, output_id)
                history = list(current.edits or []) if current is not None else []
                history.append(change.edit.model_dump(mode="json"))
                result = s.execute(
                    update(OutputRow)
                    .where(
                        OutputRow.id == output_id,
                        OutputRow.tenant_id == tenant_id,
                        OutputRow.status == OutputStatus.PENDING.value,
                        OutputRow.revision == change.expected_revision,
                    )
                    .values(
                        arguments=change.arguments,
                        content_type=change.content_type,
                        content_key=key,
                        content_sha256=change.content_sha256,
                        content_size=len(data),
                        preview=preview_of(change.content),
                        revision=change.edit.revision,
                        edits=history,
                        approval_count=0,  # approvals are of the revision they saw
                        updated_at=change.edit.edited_at,
                    )
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    self._lost(
                        s, tenant_id, output_id, OutputStatus.PENDING, change.expected_revision
                    )
                self.outbox.add_in(s, events, tenant_id=tenant_id, output_id=output_id)
                row = s.get(OutputRow, output_id, populate_existing=True)
                assert row is not None
                old_key = current.content_key if current is not None else None
                output = Output.model_validate(row, from_attributes=True)
                if record is not None:
                    record(s, output)
        except BaseException:
            self.blobs.delete(key)
            raise
        if old_key and old_key != key:
            # What the earlier revision said survives as its arguments (in `edits`) and its
            # fingerprint (in the audit chain); its rendered blob is garbage now.
            self.blobs.delete(old_key)
        return output

    @staticmethod
    def _lost(
        s: Session,
        tenant_id: str,
        output_id: str,
        expected: OutputStatus,
        expected_revision: int | None,
    ) -> NoReturn:
        """Raise why a conditional write matched no row."""
        current = s.get(OutputRow, output_id, populate_existing=True)
        if current is None or current.tenant_id != tenant_id:
            raise NotFound("output", output_id)
        if current.status != expected.value:
            raise OutputAlreadyDecided(
                output_id, current.status, current.decided_by, current.decided_at
            )
        if expected_revision is not None and current.revision != expected_revision:
            raise StaleRevision(output_id, expected_revision, current.revision)
        raise ApprovalsMoved(output_id)

    def set_notification_status(
        self, tenant_id: str, output_id: str, status: NotificationStatus
    ) -> None:
        with self.db.session() as s:
            s.execute(
                update(OutputRow)
                .where(OutputRow.id == output_id, OutputRow.tenant_id == tenant_id)
                .values(notification_status=status.value)
            )

    def set_slack_status(self, tenant_id: str, output_id: str, status: SlackStatus) -> None:
        with self.db.session() as s:
            s.execute(
                update(OutputRow)
                .where(OutputRow.id == output_id, OutputRow.tenant_id == tenant_id)
                .values(slack_status=status.value)
            )

    def count_unrouted(self, limit: int = 1_000) -> int:
        with self.db.session() as s:
            found = (
                select(OutputRow.id)
                .where(
                    OutputRow.slack_status == SlackStatus.UNROUTED.value,
                    OutputRow.status == OutputStatus.PENDING.value,
                )
                .limit(limit)
                .subquery()
            )
            return int(s.scalar(select(func.count()).select_from(found)) or 0)

    def count_by_status(self) -> dict[str, int] | None:
        with self.db.read_connection() as conn:
            rows = conn.execute(
                select(OutputRow.status, func.count()).group_by(OutputRow.status)
            ).all()
        return {str(status): int(count) for status, count in rows}

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

    def awaiting_execution(
        self, before: datetime, limit: int = 100
    ) -> builtins.list[AwaitingExecution]:
        return []  # the execution job commits with the approval (the store's Recorder)

    def content_url(self, tenant_id: str, output_id: str, ttl_seconds: int) -> str | None:
        self.get(tenant_id, output_id)  # same 404 as the aws store for unknown outputs
        return None  # the REST API streams sql-store content itself

    def held_check(self, row: HeldEvent, *, now: datetime | None = None) -> bool | None:
        # An event of ours committed with its change, so one that is there (and not held)
        # announces a change that happened. This store holds nothing: a `held` row was
        # written for another store's write, which it cannot see.
        return None if row.status == DeliveryStatus.HELD else True

    def get(self, tenant_id: str, output_id: str) -> Output:
        with self.db.read_session() as s:
            row = s.get(OutputRow, output_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound("output", output_id)
            return Output.model_validate(row, from_attributes=True)

    def list(
        self, tenant_id: str, filters: OutputFilter, *, cursor: str | None, limit: int
    ) -> Page[Output]:
        with self.db.read_session() as s:
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
            if filters.slack_status:
                stmt = stmt.where(OutputRow.slack_status == filters.slack_status.value)
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
