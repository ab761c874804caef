"""An output's timers: expiry (reject, or escalate once) and reminders, as jobs.

When an output is created, `LifecycleTimers.schedule` enqueues `output.expire` at its
`expires_at` and `output.remind` at `remind_after`, in the creation's own transaction
(stores whose writes are not in our database enqueue right after; the expiry sweep in
`core.jobs.schedules` catches what a crash in between left behind). Job keys name the
output and the moment, so however often a timer is enqueued it runs once across every
worker and replica.

Each run reads the output first and does nothing once it is decided: a reminder for an
output decided a moment ago sends nothing. An escalation is one conditional write (still
pending, never escalated) that moves `expires_at` and enqueues the next expiry in the same
transaction; the next expiry rejects. A reminder enqueues the next one (`remind_every`)
with its own audit entry; reminders are keyed by round, and a round whose successor exists
already ran (an attempt that died after its commit does not remind again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from core.approvals.policy import Actor, approvers_of
from core.concurrency import run_sync
from core.errors import NotFound, OutputAlreadyDecided
from core.jobs import JobContext, JobKind, JobQueue
from core.outputs.port import ApprovalsMoved, Output, OutputStatus, Recorder, Transition
from core.schemas.approval import Lifecycle
from core.webhooks.outbox import Outbox

if TYPE_CHECKING:
    from core.approvals.service import ApprovalService
    from core.wiring import Container

log = logging.getLogger("cosmo.approvals.lifecycle")

EXPIRE = "output.expire"
REMIND = "output.remind"
SYSTEM = Actor("system", "system")

#: `(output, principals)`: DM these approvers (user or group ids) about the output.
Notice = Callable[[Output, list[str]], Awaitable[None]]


def _at(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def remind_key(output: Output, round_: int) -> str:
    """Reminders are keyed by round: a retried run cannot start a second chain."""
    return f"{REMIND}:{output.id}:r{round_}"


class LifecycleTimers:
    """Enqueues an output's timers, and holds who is told when they fire."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.reminders: list[Notice] = []
        self.escalations: list[Notice] = []

    def on_remind(self, notice: Notice) -> None:
        self.reminders.append(notice)

    def on_escalate(self, notice: Notice) -> None:
        self.escalations.append(notice)

    def schedule(self, session: Session | None, output: Output) -> None:
        """The timers of a new output, in `session`'s transaction (None: its own)."""
        lifecycle = Lifecycle.from_json(output.approval_policy)
        if output.expires_at is not None:
            self._enqueue(session, output, EXPIRE, output.expires_at, {})
        if lifecycle.remind_after is not None:
            first = output.created_at + lifecycle.remind_after
            self._enqueue(session, output, REMIND, first, {"round": 1}, key=remind_key(output, 1))

    def _enqueue(
        self,
        session: Session | None,
        output: Output,
        kind: str,
        run_after: datetime,
        payload: dict[str, Any],
        *,
        key: str | None = None,
    ) -> None:
        job: dict[str, Any] = {
            "tenant_id": output.tenant_id,
            "kind": kind,
            "key": key or f"{kind}:{output.id}:{_at(run_after)}",
            "payload": {"output_id": output.id, **payload},
            "run_after": run_after,
        }
        if session is None:
            self.queue.submit(**job)
        else:
            self.queue.enqueue(session, **job)


class LifecycleRunner:
    """The `output.expire` and `output.remind` handlers."""

    def __init__(self, approvals: ApprovalService, timers: LifecycleTimers, outbox: Outbox) -> None:
        self.approvals = approvals
        self.timers = timers
        self.outbox = outbox

    async def _pending(self, job: JobContext) -> Output | None:
        output_id = job.payload.get("output_id")
        if not isinstance(output_id, str):
            return None
        try:
            output = await run_sync(self.approvals.outputs.get, job.tenant_id, output_id)
        except NotFound:
            return None
        return output if output.status == OutputStatus.PENDING else None

    async def expire(self, job: JobContext) -> dict[str, Any]:
        output = await self._pending(job)
        if output is None:
            return {"outcome": "already decided"}
        now = self.approvals.clock()
        if output.expires_at is None or output.expires_at > now:
            return {"outcome": "not due"}  # escalated meanwhile: a later job expires it
        return {"outcome": await self.expire_or_escalate(output)}

    async def expire_or_escalate(self, output: Output) -> str:
        """At `expires_at`: escalate once when the policy says so, else expire."""
        lifecycle = Lifecycle.from_json(output.approval_policy)
        if lifecycle.escalates and output.escalated_at is None:
            escalated = await self.escalate(output, lifecycle)
            if escalated is not None:
                return "escalated"
            output = await run_sync(self.approvals.outputs.get, output.tenant_id, output.id)
            if output.status != OutputStatus.PENDING:
                return "already decided"
            if output.expires_at is not None and output.expires_at > self.approvals.clock():
                return "escalated by another run"  # its restarted clock has not run out
        expired = await self.approvals.expire(output)
        return "expired" if expired is not None else "already decided"

    async def escalate(self, output: Output, lifecycle: Lifecycle) -> Output | None:
        a = self.approvals
        agent = await a.agent_of(output)
        now = a.clock()
        assert lifecycle.expires_after is not None or output.expires_at is not None
        restart = lifecycle.expires_after or ((output.expires_at or now) - output.created_at)
        change = Transition(
            expected=OutputStatus.PENDING,
            to=OutputStatus.PENDING,
            at=now,
            escalate_until=now + restart,
        )
        targets = list(lifecycle.escalate_to)
        webhook = agent.webhook.url if agent.webhook else None
        events = a.events.escalated(
            webhook,
            output,
            escalatedTo=targets,
            escalatedAt=now.isoformat(),
            expiresAt=(now + restart).isoformat(),
        )
        audit = a._recorder(SYSTEM, "escalate", "applied", f"to {', '.join(targets)}")

        def record(session: Any | None, output: Output) -> None:
            audit(session, output)
            if output.expires_at is not None:
                self.timers._enqueue(session, output, EXPIRE, output.expires_at, {})

        try:
            escalated = await run_sync(
                a.outputs.transition, output.tenant_id, output.id, change, events, record
            )
        except (OutputAlreadyDecided, ApprovalsMoved):
            return None  # decided, or another run escalated it first
        await _tell(self.timers.escalations, escalated, targets)
        await a.notify(escalated)
        return escalated

    async def remind(self, job: JobContext) -> dict[str, Any]:
        output = await self._pending(job)
        if output is None:
            return {"outcome": "already decided"}
        a = self.approvals
        agent = await a.agent_of(output)
        lifecycle = Lifecycle.from_json(output.approval_policy)
        approved = {x.by for x in output.current_approvals()}
        waiting = [p for p in approvers_of(agent, output) if p not in approved]
        round_ = int(job.payload.get("round") or 1)
        webhook = agent.webhook.url if agent.webhook else None
        events = a.events.reminded(webhook, output, remindedApprovers=waiting, round=round_)
        audit: Recorder = a._recorder(SYSTEM, "remind", "applied", f"round {round_}")
        following = (
            a.clock() + lifecycle.remind_every if lifecycle.remind_every is not None else None
        )
        successor = remind_key(output, round_ + 1)
        if following is not None and await run_sync(self.timers.queue.find, successor) is not None:
            # An earlier attempt of this round committed (and sent) before it died.
            return {"outcome": "already reminded"}

        def write() -> None:
            with a.audit.transaction(None) as s:
                if events:
                    self.outbox.add_in(s, events, tenant_id=output.tenant_id, output_id=output.id)
                audit(s, output)
                if following is not None:
                    self.timers._enqueue(
                        s,
                        output,
                        REMIND,
                        following,
                        {"round": round_ + 1},
                        key=remind_key(output, round_ + 1),
                    )

        await run_sync(write)
        await _tell(self.timers.reminders, output, waiting)
        return {"outcome": "reminded", "approvers": waiting}


async def _tell(notices: list[Notice], output: Output, principals: list[str]) -> None:
    for notice in notices:
        try:
            await notice(output, principals)
        except Exception:
            log.exception("output %s: a lifecycle notice failed", output.id)


def runner_of(c: Container) -> LifecycleRunner:
    return LifecycleRunner(c.approvals, c.lifecycle, Outbox(c.db))


def job_kinds(c: Container) -> list[JobKind]:
    runner = runner_of(c)
    return [JobKind(EXPIRE, runner.expire), JobKind(REMIND, runner.remind)]
