"""`ApprovalService.decide`: the only way an output gets decided.

Slack buttons, the REST routes and the webhook callback all come here. The decision is
ONE conditional write in the output store (`status = pending`); whoever loses is told who
won and when. An approval of an automatable output enqueues its execution job with that
write (`core.execution.jobs`: a worker runs it, and a crash mid-call is never silent);
a manual one is marked `manual` at once. A rejection's reason is handed back to the
session so the agent can revise on the next turn.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, Literal, ParamSpec

from core import metrics, tracing
from core.agent.service import AgentService
from core.approvals.audit import AuditLog
from core.approvals.events import OutputEvents
from core.approvals.policy import Actor, GroupDirectory, check_may_decide, editors_of
from core.approvals.receipts import ReceiptDecision, Receipts
from core.concurrency import run_sync
from core.errors import (
    AlreadyApproved,
    Conflict,
    FieldError,
    NotAllowedToDecide,
    NotFound,
    OutputAlreadyDecided,
    StaleRevision,
    ValidationFailed,
)
from core.execution.executor import OutputExecutor
from core.execution.jobs import ExecutionJobs, execution_key
from core.outputs.port import (
    Approval,
    ApprovalsMoved,
    NewEvent,
    Output,
    OutputEdit,
    OutputStatus,
    OutputStore,
    Recorder,
    Revise,
    SlackStatus,
    Transition,
)
from core.outputs.snapshot import (
    argument_changes,
    check_arguments,
    content_fingerprint,
    describe_changes,
    spec_of,
)
from core.schemas.views import AgentView
from core.sessions.models import SessionView
from core.sessions.service import SessionService

log = logging.getLogger("cosmo.approvals")

Decision = Literal["approve", "reject"]
P = ParamSpec("P")
Listener = Callable[[Output], Awaitable[None]]
ProposedListener = Callable[[Output, SessionView], Awaitable[None]]

# What a stored status means for someone repeating a decision.
_APPROVED_FAMILY = {
    OutputStatus.APPROVED,
    OutputStatus.EXECUTED,
    OutputStatus.MANUAL,
    OutputStatus.EXECUTION_FAILED,
}
MAX_REASON = 2_000
SYSTEM = Actor("system", "system")
#: How long `settled` waits, by default, for an execution to end (REST and callbacks).
SETTLE_WITHIN = 30.0
#: Times a decision counts approvals again after losing to another approval's write.
MAX_RECOUNTS = 20


_Decide = Callable[
    Concatenate["ApprovalService", str, str, Decision, Actor, P], Awaitable["DecisionResult"]
]


def _traced_decision(decide: _Decide[P]) -> _Decide[P]:
    """Runs a decision in its `output.decide` span, when tracing is on: the span continues
    the trace of the turn that proposed the output, linked to the request that made the
    decision, so what it causes (the execution job, the webhook events) carries that trace
    on. A recount (`attempt`) stays in the span of the decision it counts for."""

    @functools.wraps(decide)
    async def traced(
        self: ApprovalService,
        tenant_id: str,
        output_id: str,
        decision: Decision,
        actor: Actor,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> DecisionResult:
        if kwargs.get("attempt") or not tracing.enabled():
            return await decide(self, tenant_id, output_id, decision, actor, *args, **kwargs)
        output = await run_sync(self.outputs.get, tenant_id, output_id)
        with tracing.span(
            "output.decide",
            parent=output.traceparent,
            link_current=True,
            attributes={
                "cosmo.tenant": tenant_id,
                "cosmo.output.id": output_id,
                "cosmo.skill.name": output.skill,
                "cosmo.decision": decision,
                "cosmo.decision.via": actor.via,
                "cosmo.decision.identity": actor.identity,
            },
        ) as span:
            kwargs["read"] = output  # read once: the decision starts from it
            result = await decide(self, tenant_id, output_id, decision, actor, *args, **kwargs)
            span.set(
                {
                    "cosmo.output.status": result.output.status.value,
                    "cosmo.decision.applied": result.applied,
                }
            )
            return result

    return traced


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
        executions: ExecutionJobs,
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
        self.executions = executions
        self.events = events
        self.audit = audit
        self.receipts = receipts
        self.directory = directory
        self.clock = clock or (lambda: datetime.now(UTC))
        self.listeners: list[Listener] = []
        self.proposed_listeners: list[ProposedListener] = []

    def on_change(self, listener: Listener) -> None:
        """Called after every applied decision and execution (e.g. to update Slack)."""
        self.listeners.append(listener)

    def on_proposed(self, listener: ProposedListener) -> None:
        """Called for each output a turn outside Slack proposed (a REST session), to route
        its approval message (the Slack integration registers one)."""
        self.proposed_listeners.append(listener)

    async def proposed(self, outputs: Sequence[Output], session: SessionView) -> None:
        """Route newly proposed outputs to their reviewers. With nothing registered to route
        them (Slack is not configured), they are flagged `unrouted`: decide them over REST
        or the callback."""
        for output in outputs:
            if not self.proposed_listeners:
                await run_sync(
                    self.outputs.set_slack_status,
                    output.tenant_id,
                    output.id,
                    SlackStatus.UNROUTED,
                )
            for listener in self.proposed_listeners:
                try:
                    await listener(output, session)
                except Exception:
                    log.exception("output %s: routing its approval failed", output.id)
                    await run_sync(
                        self.outputs.set_slack_status,
                        output.tenant_id,
                        output.id,
                        SlackStatus.FAILED,
                    )

    @_traced_decision
    async def decide(
        self,
        tenant_id: str,
        output_id: str,
        decision: Decision,
        actor: Actor,
        reason: str | None = None,
        revision: int | None = None,
        grant_id: str | None = None,
        *,
        attempt: int = 0,
        read: Output | None = None,
    ) -> DecisionResult:
        """Decide the output as it stands at `revision` (the one the decider saw);
        `grant_id` names the grant approving it. `attempt` counts recounts and `read` is
        the output as `_traced_decision` already read it (both internal).

        Without `revision` the decision applies to the revision read here; either way the
        write is conditional on that revision, so an edit landing in between makes the
        decision fail as stale instead of approving something nobody looked at.

        An output that needs N approvals (`required_approvals`) records each distinct
        approver's approval of the current revision; the N-th one decides. Every such write
        is conditional on the approval count it read too, so of N+1 racing approvals
        exactly one decides (the others count again, and find it decided).
        """
        reason = (reason or "").strip() or None
        if decision == "reject" and reason is None:
            raise ValidationFailed([FieldError(("reason",), "a rejection needs a reason")])
        if reason is not None and len(reason) > MAX_REASON:
            raise ValidationFailed([FieldError(("reason",), f"at most {MAX_REASON} characters")])
        output = (
            read if read is not None else await run_sync(self.outputs.get, tenant_id, output_id)
        )
        agent = await self.agent_of(output)
        if output.status != OutputStatus.PENDING:
            return await self._already(output, decision, actor)
        if revision is not None and revision != output.revision:
            stale = StaleRevision(output.id, revision, output.revision)
            await self._audit(output, actor, decision, "refused", stale.detail)
            raise stale
        try:
            await check_may_decide(agent, output, actor, decision, self.directory)
        except NotAllowedToDecide as exc:
            await self._audit(output, actor, decision, "refused", exc.detail)
            raise
        now = self.clock()
        if output.expires_at is not None and now >= output.expires_at:
            await self.expire(output, agent)
            current = await run_sync(self.outputs.get, tenant_id, output_id)
            raise OutputAlreadyDecided(
                output_id, current.status.value, current.decided_by, current.decided_at
            )
        approval: dict[str, Any] | None = None
        if decision == "approve":
            if any(a.by == actor.id for a in output.current_approvals()):
                already = AlreadyApproved(output, actor.id)
                await self._audit(output, actor, decision, "repeated", already.detail)
                raise already
            approval = Approval(
                by=actor.id,
                identity=actor.identity,
                via=actor.via,
                revision=output.revision,
                at=now,
                grant_id=grant_id,
            ).model_dump(mode="json")
            if output.approval_count + 1 < output.required_approvals:
                return await self._record_approval(output, agent, actor, approval, attempt)
        status = OutputStatus.APPROVED if decision == "approve" else OutputStatus.REJECTED
        runs = status == OutputStatus.APPROVED and output.is_automatable
        job_key = execution_key(output.id) if runs else None
        change = Transition(
            expected=OutputStatus.PENDING,
            to=status,
            at=now,
            decided_by=actor.id,
            decision="approved" if decision == "approve" else "rejected",
            reason=reason,
            via=actor.via,
            expected_revision=output.revision,
            identity=actor.identity,
            execution_job=job_key,
            expected_approvals=output.approval_count,
            approvals=_with(output, approval),
        )
        events = self._recorded_events(agent, output, approval) + self.events.decided(
            _webhook(agent),
            output,
            status=status.value,
            decidedBy=actor.id,
            decidedAt=now.isoformat(),
            reason=reason,
            revision=output.revision,
            identity=actor.identity,
            **({"grantId": grant_id} if grant_id else {}),
        )
        own_edit = decision == "approve" and actor.id in editors_of(output)
        record = self._recorder(
            actor,
            decision,
            "applied",
            "; ".join(
                filter(
                    None,
                    [
                        reason,
                        "approved their own edit" if own_edit else None,
                        f"under grant {grant_id}" if grant_id else None,
                    ],
                )
            ),
            receipt=actor,
        )
        if job_key is not None:
            record = self._scheduling(record, job_key, actor)
        try:
            decided = await run_sync(
                self.outputs.transition, tenant_id, output_id, change, events, record
            )
        except OutputAlreadyDecided as lost:
            current = await run_sync(self.outputs.get, tenant_id, output_id)
            return await self._already(current, decision, actor, lost=lost)
        except StaleRevision as stale:
            await self._audit(output, actor, decision, "refused", stale.detail)
            raise
        except ApprovalsMoved:
            # Someone else's approval (or an escalation) landed since the read: count again.
            return await self._again(
                tenant_id, output_id, decision, actor, reason, revision, grant_id, attempt
            )
        metrics.decided(
            actor.via,
            change.decision or decision,
            (now - output.created_at).total_seconds(),
        )
        if status == OutputStatus.REJECTED:
            await self._hand_back(decided, actor, reason or "")
        elif decided.edits:
            await self._tell_session(decided, _approved_with_edits(decided, actor))
        if job_key is not None:
            # The worker that runs the job tells the listeners how it ended.
            return DecisionResult(decided, applied=True)
        final = decided
        if status == OutputStatus.APPROVED:
            final = await self.executor.run(decided, agent, self.execution_recorder(actor))
        await self.notify(final)
        return DecisionResult(final, applied=True)

    async def _again(
        self,
        tenant_id: str,
        output_id: str,
        decision: Decision,
        actor: Actor,
        reason: str | None,
        revision: int | None,
        grant_id: str | None,
        attempt: int,
    ) -> DecisionResult:
        if attempt >= MAX_RECOUNTS:
            raise Conflict(f"output {output_id} keeps changing under this decision; try again")
        return await self.decide(
            tenant_id,
            output_id,
            decision,
            actor,
            reason,
            revision,
            grant_id=grant_id,
            attempt=attempt + 1,
        )

    async def _record_approval(
        self,
        output: Output,
        agent: AgentView,
        actor: Actor,
        approval: dict[str, Any],
        attempt: int,
    ) -> DecisionResult:
        """An approval short of the N needed: recorded (conditional on the count read, so
        two approvers racing for the last slot cannot both stop short), not deciding."""
        change = Transition(
            expected=OutputStatus.PENDING,
            to=OutputStatus.PENDING,
            at=datetime.fromisoformat(approval["at"]),
            expected_revision=output.revision,
            expected_approvals=output.approval_count,
            approvals=_with(output, approval),
        )
        events = self._recorded_events(agent, output, approval)
        have = output.approval_count + 1
        record = self._recorder(
            actor, "approve", "recorded", f"approval {have} of {output.required_approvals}"
        )
        try:
            recorded = await run_sync(
                self.outputs.transition, output.tenant_id, output.id, change, events, record
            )
        except OutputAlreadyDecided as lost:
            current = await run_sync(self.outputs.get, output.tenant_id, output.id)
            return await self._already(current, "approve", actor, lost=lost)
        except StaleRevision as stale:
            await self._audit(output, actor, "approve", "refused", stale.detail)
            raise
        except ApprovalsMoved:
            return await self._again(
                output.tenant_id,
                output.id,
                "approve",
                actor,
                None,
                output.revision,
                approval.get("grant_id"),
                attempt,
            )
        await self.notify(recorded)
        return DecisionResult(recorded, applied=True)

    def _recorded_events(
        self, agent: AgentView, output: Output, approval: dict[str, Any] | None
    ) -> list[NewEvent]:
        # A single approval is the decision: `output.decided` says all there is to say.
        if approval is None or (output.required_approvals == 1 and not approval.get("grant_id")):
            return []
        return self.events.approval_recorded(_webhook(agent), output, approval)

    async def settled(
        self, tenant_id: str, output_id: str, within: float = SETTLE_WITHIN
    ) -> Output:
        """The output once its execution has ended, or as it stands after `within`
        seconds (still `approved`): for callers that answer with the outcome."""
        deadline = time.monotonic() + within
        pause = 0.05
        while True:
            output = await run_sync(self.outputs.get, tenant_id, output_id)
            left = deadline - time.monotonic()
            if output.status != OutputStatus.APPROVED or left <= 0:
                return output
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.5)

    async def precheck(
        self,
        tenant_id: str,
        output_id: str,
        decision: Decision | Literal["edit"],
        actor: Actor,
        revision: int | None = None,
    ) -> Output:
        """Raise now what `decide` (or `edit`) would refuse (already decided, stale, not
        allowed), so a UI can say so before opening a form. They check again: advisory."""
        output = await run_sync(self.outputs.get, tenant_id, output_id)
        if output.status != OutputStatus.PENDING:
            raise OutputAlreadyDecided(
                output.id, output.status.value, output.decided_by, output.decided_at
            )
        if revision is not None and revision != output.revision:
            raise StaleRevision(output.id, revision, output.revision)
        await check_may_decide(await self.agent_of(output), output, actor, decision, self.directory)
        return output

    async def edit(
        self,
        tenant_id: str,
        output_id: str,
        arguments: object,
        actor: Actor,
        revision: int | None = None,
    ) -> Output:
        """A reviewer's correction of a pending output: revision + 1 with new arguments.

        The arguments are checked against the schema in the output's own snapshot (what
        will run), the content is rendered again from them, and the fingerprint covers
        the new pair. The write is conditional on the revision the editor saw (`revision`,
        else the one read here), so of two racing edits one wins and the other is stale.
        """
        output = await run_sync(self.outputs.get, tenant_id, output_id)
        agent = await self.agent_of(output)
        if output.status != OutputStatus.PENDING:
            raise OutputAlreadyDecided(
                output.id, output.status.value, output.decided_by, output.decided_at
            )
        if revision is not None and revision != output.revision:
            stale = StaleRevision(output.id, revision, output.revision)
            await self._audit(output, actor, "edit", "refused", stale.detail)
            raise stale
        try:
            await check_may_decide(agent, output, actor, "edit", self.directory)
        except NotAllowedToDecide as exc:
            await self._audit(output, actor, "edit", "refused", exc.detail)
            raise
        now = self.clock()
        if output.expires_at is not None and now >= output.expires_at:
            await self.expire(output, agent)
            current = await run_sync(self.outputs.get, tenant_id, output_id)
            raise OutputAlreadyDecided(
                output_id, current.status.value, current.decided_by, current.decided_at
            )
        if output.skill_snapshot is None:
            raise Conflict(
                f"output {output.id} was proposed before outputs kept a snapshot of their "
                "skill, so it cannot be edited; reject it and ask the agent again"
            )
        skill = self.executor.skills.build(spec_of(output.skill_snapshot))
        checked = check_arguments(skill, arguments)
        changes = argument_changes(output.arguments, checked)
        if not changes:
            raise ValidationFailed([FieldError(("arguments",), "the edit changes nothing")])
        content, content_type = skill.render_proposal(checked)
        edit = OutputEdit(
            revision=output.revision + 1,
            edited_by=actor.id,
            identity=actor.identity,
            via=actor.via,
            edited_at=now,
            changes=changes,
        )
        change = Revise(
            expected_revision=output.revision,
            arguments=checked,
            content=content,
            content_type=content_type,
            content_sha256=content_fingerprint(output.skill_snapshot, checked, content),
            edit=edit,
        )
        events = self.events.edited(_webhook(agent), output, edit, change.content_sha256)
        record = self._recorder(actor, "edit", "applied", describe_changes(changes))
        try:
            edited = await run_sync(
                self.outputs.revise, tenant_id, output_id, change, events, record
            )
        except StaleRevision as stale:
            await self._audit(output, actor, "edit", "refused", stale.detail)
            raise
        await self.notify(edited)
        return edited

    async def retry_execution(self, tenant_id: str, output_id: str, actor: Actor) -> Output:
        """Run a failed execution again: `execution_failed -> approved`, with a new
        execution job (returns the output as approved; the job ends it)."""
        output = await run_sync(self.outputs.get, tenant_id, output_id)
        agent = await self.agent_of(output)
        try:
            await check_may_decide(agent, output, actor, "approve", self.directory)
        except NotAllowedToDecide as exc:
            await self._audit(output, actor, "retry", "refused", exc.detail)
            raise
        at = self.clock()
        job_key = execution_key(output.id, retry_at=at)
        change = Transition(
            expected=OutputStatus.EXECUTION_FAILED,
            to=OutputStatus.APPROVED,
            at=at,
            execution_job=job_key,
            clear_execution=True,
        )
        record = self._scheduling(self._recorder(actor, "retry", "applied"), job_key, actor)
        return await run_sync(self.outputs.transition, tenant_id, output_id, change, (), record)

    async def expire(self, output: Output, agent: AgentView | None = None) -> Output | None:
        """Expire a pending output whose time is up; None if someone decided first."""
        agent = agent or await self.agent_of(output)
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
        record = self._recorder(SYSTEM, "expire", "applied", receipt=SYSTEM)
        try:
            expired = await run_sync(
                self.outputs.transition, output.tenant_id, output.id, change, events, record
            )
        except OutputAlreadyDecided:
            return None
        await self._tell_session(
            expired,
            f"[Approval expired] Your proposed {expired.skill} (output {expired.id}) was not "
            "decided in time and expired; nothing was done. Propose it again if it still "
            "matters.",
        )
        await self.notify(expired)
        return expired

    # -- internals ---------------------------------------------------------------

    async def agent_of(self, output: Output) -> AgentView:
        try:
            return await run_sync(self.agents.get, output.tenant_id, output.agent_id)
        except NotFound:
            raise NotFound("agent", output.agent_id) from None

    async def _already(
        self,
        current: Output,
        decision: Decision,
        actor: Actor,
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
            await self._audit(current, actor, decision, outcome, f"already {current.status.value}")
            return DecisionResult(current, applied=False)
        await self._audit(
            current,
            actor,
            decision,
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
        await self._tell_session(output, note)

    async def _tell_session(self, output: Output, note: str) -> None:
        try:
            await run_sync(self.sessions.append_note, output.tenant_id, output.session_id, note)
        except NotFound:
            log.info("output %s: its session is gone; rejection reason not handed back", output.id)

    async def _audit(
        self,
        output: Output,
        actor: Actor,
        action: str,
        outcome: str,
        detail: str | None = None,
    ) -> None:
        """Record an attempt that changed nothing (refused, lost, repeated)."""
        record = self._recorder(actor, action, outcome, detail)
        await run_sync(record, None, output)

    def _recorder(
        self,
        actor: Actor,
        action: str,
        outcome: str,
        detail: str | None = None,
        *,
        receipt: Actor | None = None,
        receipt_decision: ReceiptDecision | None = None,
    ) -> Recorder:
        """The audit entry for a change, for the store to write in the change's own
        transaction; with `receipt` (who the effect is owed to) also a signed receipt for
        the output's new status, linked to the entry."""

        def record(session: Any | None, output: Output) -> None:
            with self.audit.transaction(session) as s:
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
                    decision: ReceiptDecision = (
                        receipt_decision or output.status.value  # type: ignore[assignment]
                    )
                    at = output.executed_at or output.decided_at or output.updated_at
                    self.receipts.issue_in(s, entry, output, decision, receipt, at)

        return record

    def _scheduling(self, record: Recorder, job_key: str, decider: Actor) -> Recorder:
        """`record`, then the execution job: in the change's transaction where the store
        has one, else (session None) in a transaction of its own right after the write."""

        def both(session: Any | None, output: Output) -> None:
            record(session, output)
            self.executions.enqueue(session, output, job_key, decider)

        return both

    def execution_recorder(
        self,
        decider: Actor,
        *,
        unknown: bool = False,
        fence: Callable[[Any], None] | None = None,
    ) -> Recorder:
        """The audit entry and receipt of an execution's end (`unknown`: an attempt died
        mid-call). `fence` refuses the write of an attempt that no longer holds its job."""

        def record(session: Any | None, output: Output) -> None:
            if fence is not None and session is not None:
                fence(session)
            self._recorder(
                SYSTEM,
                "execute",
                "outcome_unknown" if unknown else "applied",
                output.execution_error or output.status.value,
                receipt=decider,
                receipt_decision="outcome_unknown" if unknown else None,
            )(session, output)

        return record

    async def notify(self, output: Output) -> None:
        for listener in self.listeners:
            try:
                await listener(output)
            except Exception:
                log.exception("output %s: a decision listener failed", output.id)


def _approved_with_edits(output: Output, actor: Actor) -> str:
    lines = [
        f"[Reviewer feedback] Your proposed {output.skill} (output {output.id}) was approved "
        f"by {actor.id} at revision {output.revision}, with edits:"
    ]
    for edit in output.edits or ():
        lines.append(f"- by {edit.edited_by}: {describe_changes(edit.changes)}")
    lines.append("What runs is the edited version; remember the corrections.")
    return "\n".join(lines)


def _with(output: Output, approval: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The output's approvals plus `approval` (JSON form); None when there is none to add."""
    if approval is None:
        return None
    return [a.model_dump(mode="json") for a in output.approvals or ()] + [approval]


def _webhook(agent: AgentView) -> str | None:
    return agent.webhook.url if agent.webhook else None
