"""Session lifecycle, durable turns, history and usage totals."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import Database
from core.db.ids import new_id
from core.db.models import AgentRow, SessionMessageRow, SessionRow, TurnRow
from core.db.pagination import Page
from core.db.repository import paginate
from core.errors import Conflict, NotFound
from core.limits.quotas import utc_day
from core.sessions.models import (
    MessageView,
    SessionNames,
    SessionView,
    TurnRecord,
    TurnView,
    Usage,
    UsageTotals,
)

Clock = Callable[[], datetime]
Fence = Callable[[Session], None]
"""Raises inside a write's transaction when the writer no longer holds its job."""
FINISHED_TURN = frozenset({"completed", "failed", "cancelled"})


def _usage(row: SessionRow | TurnRow) -> Usage:
    return Usage(
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cache_read_tokens=row.cache_read_tokens,
        cache_write_tokens=row.cache_write_tokens,
        cost_usd=row.cost_micros / 1_000_000,
    )


def session_view(row: SessionRow) -> SessionView:
    return SessionView.model_validate(
        {
            **{c: getattr(row, c) for c in SessionView.model_fields if c != "usage"},
            "usage": _usage(row),
        }
    )


def turn_view(row: TurnRow) -> TurnView:
    return TurnView.model_validate(
        {
            **{c: getattr(row, c) for c in TurnView.model_fields if c != "usage"},
            "usage": _usage(row),
            "citations": row.citations or [],  # NULL: a turn from before citations
        }
    )


class SessionService:
    """Conversations with an agent. A Slack thread maps to one session by `external_key`."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- lifecycle -----------------------------------------------------------

    def start(
        self,
        tenant_id: str,
        agent_id: str,
        *,
        user_id: str,
        user_name: str | None = None,
        channel_id: str | None = None,
        channel_name: str | None = None,
        thread_ts: str | None = None,
        source: str = "api",
        external_key: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> SessionView:
        with self.db.session() as s:
            # Three columns, not the agent entity: this runs under SQLite's write lock, on
            # the path of every new Slack thread.
            agent = s.execute(
                select(AgentRow.tenant_id, AgentRow.name, AgentRow.is_active).where(
                    AgentRow.id == agent_id
                )
            ).first()
            if agent is None or agent.tenant_id != tenant_id:
                raise NotFound("agent", agent_id)
            if not agent.is_active:
                raise Conflict(f"agent {agent.name!r} is inactive; activate it to chat")
            row = SessionRow(
                id=new_id("ses"),
                tenant_id=tenant_id,
                agent_id=agent_id,
                user_id=user_id,
                user_name=user_name,
                channel_id=channel_id,
                channel_name=channel_name,
                thread_ts=thread_ts,
                source=source,
                external_key=external_key,
                status="active",
                context=context or {},
            )
            s.add(row)
            s.flush()
            return session_view(row)

    def find_by_key(self, tenant_id: str, external_key: str) -> SessionView | None:
        with self.db.read_session() as s:
            row = s.scalar(
                select(SessionRow).where(
                    SessionRow.tenant_id == tenant_id, SessionRow.external_key == external_key
                )
            )
            return session_view(row) if row else None

    def get(self, tenant_id: str, session_id: str) -> SessionView:
        with self.db.read_session() as s:
            return session_view(_load(s, tenant_id, session_id))

    def list(
        self,
        tenant_id: str,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[SessionView]:
        with self.db.session() as s:
            stmt = select(SessionRow).where(SessionRow.tenant_id == tenant_id)
            if agent_id:
                stmt = stmt.where(SessionRow.agent_id == agent_id)
            if user_id:
                stmt = stmt.where(SessionRow.user_id == user_id)
            if status:
                stmt = stmt.where(SessionRow.status == status)
            if since:
                stmt = stmt.where(SessionRow.created_at >= since)
            if until:
                stmt = stmt.where(SessionRow.created_at < until)
            page = paginate(s, stmt, SessionRow.id, cursor=cursor, limit=limit)
            return Page([session_view(r) for r in page.items], page.next_cursor)

    def end(self, tenant_id: str, session_id: str) -> SessionView:
        """End a session; ending an ended session is a no-op (idempotent)."""
        with self.db.session() as s:
            row = _load(s, tenant_id, session_id)
            if row.status != "ended":
                row.status = "ended"
                row.ended_at = self.clock()
            s.flush()
            return session_view(row)

    # -- history -------------------------------------------------------------

    def messages(self, tenant_id: str, session_id: str) -> builtins.list[MessageView]:
        with self.db.read_session() as s:
            _load(s, tenant_id, session_id)
            rows = s.scalars(
                select(SessionMessageRow)
                .where(SessionMessageRow.session_id == session_id)
                .order_by(SessionMessageRow.seq)
            )
            return [
                MessageView(
                    seq=r.seq,
                    role=r.role,
                    content=r.content,
                    turn_id=r.turn_id,
                    created_at=r.created_at,
                )
                for r in rows
            ]

    def append_note(self, tenant_id: str, session_id: str, text: str) -> None:
        """Add a user-role note to the history (e.g. a reviewer's rejection reason)."""
        with self.db.session() as s:
            _load(s, tenant_id, session_id, lock=True)
            _append(
                s,
                tenant_id,
                session_id,
                None,
                [{"role": "user", "content": [{"type": "text", "text": text}]}],
            )

    # -- turns ---------------------------------------------------------------

    def begin_turn(
        self,
        tenant_id: str,
        session_id: str,
        *,
        user_id: str,
        user_message: str,
        dedupe_key: str | None = None,
        payload: dict[str, Any] | None = None,
        on_recorded: Callable[[Session, TurnView], None] | None = None,
    ) -> tuple[TurnView, bool]:
        """Record a turn durably; returns (turn, created). A repeated dedupe key returns
        the first turn with created=False, so a redelivered event never runs twice.

        `on_recorded` runs in the same transaction (it enqueues the job that answers the
        turn), so a turn is never recorded without its job, nor a job without its turn."""
        now = self.clock()
        try:
            with self.db.session() as s:
                session = _load(s, tenant_id, session_id)
                if session.status == "ended":
                    raise Conflict("this session has ended; start a new one")
                row = TurnRow(
                    id=new_id("trn"),
                    tenant_id=tenant_id,
                    session_id=session_id,
                    agent_id=session.agent_id,
                    dedupe_key=dedupe_key,
                    status="pending",
                    user_id=user_id,
                    user_message=user_message,
                    payload=payload or {},
                    day=utc_day(now),
                    created_at=now,
                )
                s.add(row)
                s.flush()
                view = turn_view(row)
                if on_recorded is not None:
                    on_recorded(s, view)
                return view, True
        except IntegrityError:
            if dedupe_key is None:
                raise
        existing = self.find_turn(tenant_id, dedupe_key)
        assert existing is not None
        return existing, False

    def find_turn(self, tenant_id: str, dedupe_key: str) -> TurnView | None:
        """The turn recorded under this dedupe key (an Idempotency-Key, a Slack event)."""
        with self.db.session() as s:
            row = s.scalar(
                select(TurnRow).where(
                    TurnRow.tenant_id == tenant_id, TurnRow.dedupe_key == dedupe_key
                )
            )
            return turn_view(row) if row else None

    def start_turn(
        self,
        tenant_id: str,
        turn_id: str,
        *,
        names: SessionNames | None = None,
    ) -> bool:
        """Mark a pending turn `running` (its job's worker has started it); a turn already
        running (a takeover) or ended is left as it is. The job's claim, not this status,
        decides who may finish the turn.

        `names`: display names of the turn's session found since it was opened (Slack's
        lookups are slow, so they come after the session), written in the same
        transaction: on PostgreSQL every commit waits for its own WAL flush. This one
        does not: a database crash that loses it leaves the turn `pending`, which the job
        that runs it reads as well as `running`, and names that are looked up again."""
        now = self.clock()
        with self.db.session(durable=False) as s:
            result = s.execute(
                update(TurnRow)
                .where(
                    TurnRow.id == turn_id,
                    TurnRow.tenant_id == tenant_id,
                    TurnRow.status == "pending",
                )
                .values(status="running", started_at=now)
            )
            if names is not None:
                s.execute(
                    update(SessionRow)
                    .where(SessionRow.id == names.session_id, SessionRow.tenant_id == tenant_id)
                    .values(user_name=names.user_name, channel_name=names.channel_name)
                )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def get_turn(self, tenant_id: str, turn_id: str) -> TurnView:
        with self.db.read_session() as s:
            row = s.get(TurnRow, turn_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound("turn", turn_id)
            return turn_view(row)

    def history(self, tenant_id: str, session_id: str) -> builtins.list[dict[str, Any]]:
        """Messages for the model, oldest first, in Messages API form."""
        return [
            {"role": m.role, "content": m.content} for m in self.messages(tenant_id, session_id)
        ]

    def finish_turn(
        self,
        tenant_id: str,
        turn_id: str,
        record: TurnRecord,
        *,
        fence: Fence | None = None,
    ) -> TurnView:
        """Store the outcome, append the turn's messages and add usage to the session.

        `fence` (the job's claim check) runs first in the same transaction: a worker that
        lost its claim to another cannot finish the turn, so no turn is answered twice."""
        with self.db.session() as s:
            if fence is not None:
                fence(s)
            row = s.get(TurnRow, turn_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound("turn", turn_id)
            if row.status in FINISHED_TURN:
                raise Conflict(f"turn {turn_id} already ended ({row.status})")
            session = _load(s, tenant_id, row.session_id, lock=True)
            row.status = record.status
            row.reply = record.reply
            row.steps = record.steps
            row.model = record.model
            row.error = record.error
            row.input_tokens = record.input_tokens
            row.output_tokens = record.output_tokens
            row.cache_read_tokens = record.cache_read_tokens
            row.cache_write_tokens = record.cache_write_tokens
            row.cost_micros = record.cost_micros
            row.citations = [c.model_dump() for c in record.citations]
            row.finished_at = self.clock()
            session.input_tokens += record.input_tokens
            session.output_tokens += record.output_tokens
            session.cache_read_tokens += record.cache_read_tokens
            session.cache_write_tokens += record.cache_write_tokens
            session.cost_micros += record.cost_micros
            session.updated_at = self.clock()
            if record.messages:
                _append(s, tenant_id, row.session_id, turn_id, record.messages)
            s.flush()
            return turn_view(row)

    def cancel_turn(
        self, tenant_id: str, turn_id: str, reason: str, *, fence: Fence | None = None
    ) -> TurnView:
        """End an unfinished turn as `cancelled` (its partial work is not kept in the
        history); a turn that already ended is returned as it is."""
        with self.db.session() as s:
            if fence is not None:
                fence(s)
            row = s.get(TurnRow, turn_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound("turn", turn_id)
            if row.status not in FINISHED_TURN:
                row.status = "cancelled"
                row.error = reason
                row.finished_at = self.clock()
            s.flush()
            return turn_view(row)

    def turns(self, tenant_id: str, session_id: str) -> builtins.list[TurnView]:
        with self.db.session() as s:
            _load(s, tenant_id, session_id)
            rows = s.scalars(
                select(TurnRow).where(TurnRow.session_id == session_id).order_by(TurnRow.id)
            )
            return [turn_view(r) for r in rows]

    # -- usage ---------------------------------------------------------------

    def usage(
        self,
        tenant_id: str,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        day: str | None = None,
    ) -> UsageTotals:
        with self.db.session() as s:
            stmt = select(
                func.count(TurnRow.id),
                func.coalesce(func.sum(TurnRow.input_tokens), 0),
                func.coalesce(func.sum(TurnRow.output_tokens), 0),
                func.coalesce(func.sum(TurnRow.cache_read_tokens), 0),
                func.coalesce(func.sum(TurnRow.cache_write_tokens), 0),
                func.coalesce(func.sum(TurnRow.cost_micros), 0),
            ).where(TurnRow.tenant_id == tenant_id, TurnRow.status.in_(("completed", "failed")))
            if agent_id:
                stmt = stmt.where(TurnRow.agent_id == agent_id)
            if session_id:
                stmt = stmt.where(TurnRow.session_id == session_id)
            if day:
                stmt = stmt.where(TurnRow.day == day)
            turns, inp, out, cr, cw, cost = s.execute(stmt).one()
            return UsageTotals(
                turns=int(turns),
                input_tokens=int(inp),
                output_tokens=int(out),
                cache_read_tokens=int(cr),
                cache_write_tokens=int(cw),
                cost_usd=int(cost) / 1_000_000,
            )


def _load(s: Session, tenant_id: str, session_id: str, *, lock: bool = False) -> SessionRow:
    stmt = select(SessionRow).where(SessionRow.id == session_id, SessionRow.tenant_id == tenant_id)
    if lock:
        stmt = stmt.with_for_update()
    row = s.scalar(stmt)
    if row is None:
        raise NotFound("session", session_id)
    return row


def _append(
    s: Session,
    tenant_id: str,
    session_id: str,
    turn_id: str | None,
    messages: builtins.list[dict[str, Any]],
) -> None:
    last = s.scalar(
        select(func.max(SessionMessageRow.seq)).where(SessionMessageRow.session_id == session_id)
    )
    seq = (last or 0) + 1
    for message in messages:
        s.add(
            SessionMessageRow(
                id=new_id("smg"),
                tenant_id=tenant_id,
                session_id=session_id,
                turn_id=turn_id,
                seq=seq,
                role=message["role"],
                content=message["content"],
            )
        )
        seq += 1
