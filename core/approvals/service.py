"""`ApprovalService.decide`: the only way an output gets decided.

Slack buttons, the REST routes and the webhook callback all come here. The decision is
ONE conditional write in the output store (`status = pending`); whoever loses is told who
won and when. The winner of an approval runs the executor; a rejection's reason is handed
back to the session so the agent can revise on the next turn.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from anyio import to_thread

from core.agent.service import AgentService
from core.approvals.audit import AuditLog
from core.approvals.events import OutputEvents
from core.approvals.policy import Actor, GroupDirectory, check_may_decide
from core.approvals.receipts import ReceiptDecision, Receipts
from core.errors import (
    FieldError,
    NotAllowedToDecide,
    NotFound,
    OutputAlreadyDecided,
    ValidationFailed,
)
from core.execution.executor import OutputExecutor
from core.outputs.port import Output, OutputStatus, OutputStore, Transition
from core.schemas.views import AgentView
from core.sessions.service import SessionService

log = logging.getLogger("cosmo.approvals")

Decision = Literal["approve", "reject"]
Listener = Callable[[Output], Awaitable[None]]

# What a stored status means for someone repeating a decision.
_APPROVED_FAMILY = {
    OutputStatus.APPROVED,
    OutputStatus.EXECUTED,
    OutputStatus.MANUAL,
    OutputStatus.EXECUTION_FAILED,
}
MAX_REASON = 2_000


@dataclass(frozen=True)
class DecisionResult:
    output: Output
    applied: bool
    """False when the same decision had already been made (repeat is harmless)."""


class ApprovalService:
    def __init__(
        self,
        *,
        outputs: OutputStore,
        agents: AgentService,
        sessions: SessionService,
        executor: OutputExecutor,
        events: OutputEvents,
        audit: AuditLog,
        directory: GroupDirectory | None = None,
        clock: Callable[[], datetime] | None = None,
        receipts: Receipts | None = None,
    ) -> None:
        self.outputs = outputs
        self.agents = agents
        self.sessions = sessions
        self.executor = executor
        self.events = events
        self.audit = audit
        self.receipts = receipts
        self.directory = directory
        self.clock = clock or (lambda: datetime.now(UTC))
        self.listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        """Called after every applied decision and execution (e.g. to update Slack)."""
        self.listeners.append(listener)

    async def decide(
        self,
        tenant_id: str,
        output_id: str,
        decision: Decision,
        actor: Actor,
        reason: str | None = None,
    ) -> DecisionResult:
        reason = (reason or "").strip() or None
        if decision == "reject" and reason is None:
            raise ValidationFailed([FieldError(("reason",), "a rejection needs a reason")])
        if reason is not None and len(reason) > MAX_REASON:
            raise ValidationFailed([FieldError(("reason",), f"at most {MAX_REASON} characters")])
        output = await to_thread.run_sync(self.outputs.get, tenant_id, output_id)
        agent = await self._agent(output)
        action = "approve" if decision == "approve" else "reject"
        if output.status != OutputStatus.PENDING:
            return await self._already(output, decision, actor, action)
        try:
            await check_may_decide(agent, output, actor, decision, self.directory)
        except NotAllowedToDecide as exc:
            await self._audit(output, actor, action, "refused", exc.detail)
            raise
        now = self.clock()
        if output.expires_at is not None and now >= output.expires_at:
            await self.expire(output, agent)
            current = await to_thread.run_sync(self.outputs.get, tenant_id, output_id)
            raise OutputAlreadyDecided(
                output_id, current.status.value, current.decided_by, current.decided_at
            )
        status = OutputStatus.APPROVED if decision == "approve" else OutputStatus.REJECTED
        change = Transition(
            expected=OutputStatus.PENDING,
            to=status,
            at=now,
            decided_by=actor.id,
            decision="approved" if decision == "approve" else "rejected",
            reason=reason,
            via=actor.via,
        )
        events = self.events.decided(
            _webhook(agent),
            output,
            status=status.value,
            decidedBy=actor.id,
            decidedAt=now.isoformat(),
            reason=reason,
        )
        try:
            decided = await to_thread.run_sync(
                lambda: self.outputs.transition(tenant_id, output_id, change, events)
            )
        except OutputAlreadyDecided as lost:
            current = await to_thread.run_sync(self.outputs.get, tenant_id, output_id)
            return await self._already(current, decision, actor, action, lost=lost)
        await self._audit(decided, actor, action, "applied", reason, receipt=actor)
        if status == OutputStatus.REJECTED:
            await self._hand_back(decided, actor, reason or "")
            final = decided
        else:
            final = await self.executor.run(decided, agent)
            await self._audit_execution(final, actor)
        await self._notify(final)
        return DecisionResult(final, applied=True)

    async def precheck(
        self, tenant_id: str, output_id: str, decision: Decision, actor: Actor
    ) -> Output:
        """Raise now what `decide` would refuse (already decided, not allowed), so a UI can
        say so before asking for a reason. `decide` checks again: this is advisory."""
        output = await to_thread.run_sync(self.outputs.get, tenant_id, output_id)
        if output.status != OutputStatus.PENDING:
            raise OutputAlreadyDecided(
                output.id, output.status.value, output.decided_by, output.decided_at
            )
        await check_may_decide(await self._agent(output), output, actor, decision, self.directory)
        return output

    async def retry_execution(self, tenant_id: str, output_id: str, actor: Actor) -> Output:
        """Run a failed execution again: `execution_failed -> approved -> …`, once."""
        output = await to_thread.run_sync(self.outputs.get, tenant_id, output_id)
        agent = await self._agent(output)
        try:
            await check_may_decide(agent, output, actor, "approve", self.directory)
        except NotAllowedToDecide as exc:
            await self._audit(output, actor, "retry", "refused", exc.detail)
            raise
        change = Transition(
            expected=OutputStatus.EXECUTION_FAILED, to=OutputStatus.APPROVED, at=self.clock()
        )
        approved = await to_thread.run_sync(
            lambda: self.outputs.transition(tenant_id, output_id, change)
        )
        await self._audit(approved, actor, "retry", "applied")
        final = await self.executor.run(approved, agent)
        await self._audit_execution(final, actor)
        await self._notify(final)
        return final

    async def expire(self, output: Output, agent: AgentView | None = None) -> Output | None:
        """Expire a pending output whose time is up; None if someone decided first."""
        agent = agent or await self._agent(output)
        now = self.clock()
        change = Transition(
            expected=OutputStatus.PENDING,
            to=OutputStatus.EXPIRED,
            at=now,
            decided_by="system",
            decision="expired",
            via="system",
        )
        events = self.events.decided(
            _webhook(agent),
            output,
            status="expired",
            decidedBy="system",
            decidedAt=now.isoformat(),
        )
        try:
            expired = await to_thread.run_sync(
                lambda: self.outputs.transition(output.tenant_id, output.id, change, events)
            )
        except OutputAlreadyDecided:
            return None
        system = Actor("system", "system")
        await self._audit(expired, system, "expire", "applied", receipt=system)
        await self._notify(expired)
        return expired

    async def expire_due(self, limit: int = 100) -> int:
        due = await to_thread.run_sync(self.outputs.due_for_expiry, self.clock(), limit)
        done = 0
        for output in due:
            if await self.expire(output) is not None:
                done += 1
        return done

    # -- internals ---------------------------------------------------------------

    async def _agent(self, output: Output) -> AgentView:
        try:
            return await to_thread.run_sync(self.agents.get, output.tenant_id, output.agent_id)
        except NotFound:
            raise NotFound("agent", output.agent_id) from None

    async def _already(
        self,
        current: Output,
        decision: Decision,
        actor: Actor,
        action: str,
        lost: OutputAlreadyDecided | None = None,
    ) -> DecisionResult:
        same = (
            current.status in _APPROVED_FAMILY
            if decision == "approve"
            else current.status == OutputStatus.REJECTED
        )
        if same:
            # The outcome the caller asked for already holds: not a conflict, not applied.
            outcome = "repeated" if current.decided_by == actor.id else "lost"
            await self._audit(current, actor, action, outcome, f"already {current.status.value}")
            return DecisionResult(current, applied=False)
        await self._audit(
            current,
            actor,
            action,
            "lost",
            f"already {current.status.value} by {current.decided_by}",
        )
        raise lost or OutputAlreadyDecided(
            current.id, current.status.value, current.decided_by, current.decided_at
        )

    async def _hand_back(self, output: Output, actor: Actor, reason: str) -> None:
        note = (
            f"[Reviewer feedback] Your proposed {output.skill} (output {output.id}) was "
            f"rejected by {actor.id}. Reason: {reason}\n"
            "Take this into account; if it makes sense, propose a revised version."
        )
        try:
            await to_thread.run_sync(
                self.sessions.append_note, output.tenant_id, output.session_id, note
            )
        except NotFound:
            log.info("output %s: its session is gone; rejection reason not handed back", output.id)

    async def _audit(
        self,
        output: Output,
        actor: Actor,
        action: str,
        outcome: str,
        detail: str | None = None,
        *,
        receipt: Actor | None = None,
    ) -> None:
        """Append an audit entry; with `receipt` (who the effect is owed to), also sign a
        receipt for the output's current status, linked to the entry, in one transaction."""

        def write() -> None:
            with self.audit.db.session() as s:
                entry = self.audit.record_in(
                    s,
                    output.tenant_id,
                    output.id,
                    actor=actor,
                    action=action,
                    outcome=outcome,  # type: ignore[arg-type]
                    detail=detail,
                    revision=output.revision,
                    content_sha256=output.content_sha256,
                )
                if receipt is not None and self.receipts is not None:
                    decision: ReceiptDecision = output.status.value  # type: ignore[assignment]
                    at = output.executed_at or output.decided_at or output.updated_at
                    self.receipts.issue_in(s, entry, output, decision, receipt, at)

        await to_thread.run_sync(write)

    async def _audit_execution(self, final: Output, decider: Actor) -> None:
        # `approved` means the execution never finished: nothing to sign for yet.
        done = final.status != OutputStatus.APPROVED
        await self._audit(
            final,
            Actor("system", "system"),
            "execute",
            "applied",
            final.execution_error or final.status.value,
            receipt=decider if done else None,
        )

    async def _notify(self, output: Output) -> None:
        for listener in self.listeners:
            try:
                await listener(output)
            except Exception:
                log.exception("output %s: a decision listener failed", output.id)


def _webhook(agent: AgentView) -> str | None:
    return agent.webhook.url if agent.webhook else None
