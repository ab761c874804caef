"""Executions of approved outputs as jobs of the job layer.

An approval of an automatable output enqueues `output.execute` (key `execute:{output id}`,
a retry `execute:{output id}:retry@{when}`) in the decision's own transaction; stores
whose writes are not in our database enqueue it right after the write, and the
`schedule.execute_stranded` sweep enqueues what a crash in between left behind (the key
dedupes, so it never runs an approval twice).

Before calling the target, an attempt records in the job's progress that it is calling.
An attempt that finds that mark left by an earlier one knows that attempt died mid-call
(its worker was killed, or shut down past its grace): for an `idempotent` skill it calls
again (http skills send the output id as `Idempotency-Key`, so the target dedupes);
otherwise the output ends `execution_failed` with "outcome unknown — check the target,
then retry", audited as `outcome_unknown`, announced by `output.execution_failed`, and
`/retry` runs it again once someone has looked.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy.orm import Session

from core import tracing
from core.approvals.policy import Actor, Via
from core.concurrency import run_sync
from core.errors import NotFound, OutputAlreadyDecided
from core.jobs import JobContext, JobFailed, JobKind, JobQueue, RetryPolicy
from core.outputs.port import Output, OutputStatus, OutputStore

if TYPE_CHECKING:
    from core.approvals.service import ApprovalService
    from core.wiring import Container

log = logging.getLogger("cosmo.execution")

EXECUTE = "output.execute"
SWEEP = "schedule.execute_stranded"
SWEEP_EVERY = timedelta(seconds=30)
#: An approval younger than this is still being enqueued by its decider.
SWEEP_AFTER = timedelta(seconds=10)
#: Failures that are not the target's answer (the database away, say) are retried; the
#: target's own failures end the output `execution_failed` and are not.
RETRY = RetryPolicy(max_attempts=5, backoff=timedelta(seconds=2), cap=timedelta(seconds=60))


def execution_key(output_id: str, retry_at: datetime | None = None) -> str:
    """The job key of an approval's execution: one job per approval, however often it
    is enqueued."""
    if retry_at is None:
        return f"execute:{output_id}"
    return f"execute:{output_id}:retry@{retry_at.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}"


def _actor_data(actor: Actor) -> dict[str, Any]:
    return {"id": actor.id, "via": actor.via, "verified": actor.verified, "key_id": actor.key_id}


def _decider(payload: dict[str, Any], output: Output) -> Actor:
    """Who the execution's receipt is owed to: the decider named in the job, else (a job
    the sweep enqueued) the one the output records."""
    data = payload.get("decider")
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return Actor(
            data["id"],
            cast(Via, data.get("via") or "system"),
            verified=bool(data.get("verified")),
            key_id=data.get("key_id"),
        )
    return Actor(
        output.decided_by or "system",
        cast(Via, output.decision_via or "system"),
        verified=output.decision_identity == "verified",
    )


class ExecutionJobs:
    """Enqueues the job that executes an approval."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def enqueue(self, session: Session | None, output: Output, key: str, decider: Actor) -> None:
        """In `session`'s transaction (the decision's); None: in a transaction of its own."""
        job: dict[str, Any] = {
            "tenant_id": output.tenant_id,
            "kind": EXECUTE,
            "key": key,
            "payload": {"output_id": output.id, "decider": _actor_data(decider)},
            "concurrency_key": f"agent:{output.agent_id}",
            "max_attempts": RETRY.max_attempts,
        }
        if session is None:
            self.queue.submit(**job)
        else:
            self.queue.enqueue(session, **job)


def _idempotent(output: Output) -> bool:
    return bool((output.skill_snapshot or {}).get("idempotent"))


class ExecutionRunner:
    """The `output.execute` handler."""

    def __init__(self, approvals: ApprovalService, outputs: OutputStore, queue: JobQueue) -> None:
        self.approvals = approvals
        self.outputs = outputs
        self.queue = queue

    async def __call__(self, job: JobContext) -> dict[str, Any]:
        output_id = job.payload.get("output_id")
        if not isinstance(output_id, str) or not output_id:
            raise JobFailed("the job names no output (payload without output_id)")
        with tracing.span(
            "output.execute",
            attributes={"cosmo.tenant": job.tenant_id, "cosmo.output.id": output_id},
        ) as span:
            result = await self._execute(job, output_id, span)
            span.set(
                {
                    "cosmo.output.status": result.get("status"),
                    "cosmo.execution.outcome": result.get("outcome"),
                }
            )
            if result.get("status") == OutputStatus.EXECUTION_FAILED.value:
                span.fail(OutputStatus.EXECUTION_FAILED.value)
            return result

    async def _execute(self, job: JobContext, output_id: str, span: tracing.Span) -> dict[str, Any]:
        try:
            output = await run_sync(self.outputs.get, job.tenant_id, output_id)
        except NotFound:
            raise JobFailed(f"output {output_id} no longer exists") from None
        span.set({"cosmo.skill.name": output.skill})
        if output.status != OutputStatus.APPROVED:
            # Ended already: by an earlier attempt that died before recording its end.
            return {"status": output.status.value}
        try:
            agent = await self.approvals.agent_of(output)
        except NotFound:
            raise JobFailed(
                f"agent {output.agent_id} of output {output_id} no longer exists"
            ) from None
        decider = _decider(job.payload, output)
        executor = self.approvals.executor
        try:
            if job.previous.get("calling") and not _idempotent(output):
                log.warning(
                    "output %s: attempt %d of its execution died while calling %s; outcome unknown",
                    output.id,
                    job.claim.attempt - 1,
                    output.skill,
                )
                await self._check_claim(job)
                record = self.approvals.execution_recorder(decider, unknown=True, fence=job.fence)
                final = await executor.close_unknown(output, agent, record)
                await self.approvals.notify(final)
                return {"status": final.status.value, "outcome": "outcome_unknown"}

            async def calling() -> None:
                await job.progress(calling=True, attempt=job.claim.attempt)

            async def closing() -> None:
                await self._check_claim(job)

            record = self.approvals.execution_recorder(decider, fence=job.fence)
            run = await executor.execute(output, agent, record, calling=calling, closing=closing)
        except OutputAlreadyDecided as exc:
            return {"status": exc.status}  # another attempt recorded the end first
        await self.approvals.notify(run.output)
        if not run.called and run.output.status == OutputStatus.EXECUTION_FAILED:
            # Nothing was sent; the skill itself cannot run. The output says why; the job
            # goes to the dead letter with the same reason instead of being retried.
            raise JobFailed(run.output.execution_error or "the skill cannot run")
        return {"status": run.output.status.value}

    async def _check_claim(self, job: JobContext) -> None:
        """Refuse an outcome from an attempt that was taken over (stores whose write is
        not in our database cannot fence inside it; the sql store fences again there)."""

        def check() -> None:
            with self.queue.db.session() as s:
                job.fence(s)

        await run_sync(check)


def job_kinds(c: Container) -> list[JobKind]:
    """`output.execute`, and the sweep for approvals whose enqueue a crash prevented."""
    runner = ExecutionRunner(c.approvals, c.outputs, c.jobs)

    async def execute_stranded(_job: JobContext) -> dict[str, Any]:
        before = datetime.now(UTC) - SWEEP_AFTER
        stranded = await run_sync(c.outputs.awaiting_execution, before)
        enqueued = 0
        for item in stranded:
            _, created = await run_sync(
                c.jobs.submit,
                tenant_id=item.tenant_id,
                kind=EXECUTE,
                key=item.job_key,
                payload={"output_id": item.output_id},
                concurrency_key=f"agent:{item.agent_id}",
                max_attempts=RETRY.max_attempts,
            )
            if created:
                log.warning(
                    "output %s was approved but its execution was never enqueued; enqueued",
                    item.output_id,
                )
                enqueued += 1
        return {"enqueued": enqueued}

    return [
        JobKind(EXECUTE, runner, retry=RETRY),
        JobKind(SWEEP, execute_stranded, every=SWEEP_EVERY),
    ]
