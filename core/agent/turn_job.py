"""REST turns as jobs: `POST /sessions/{id}/chat` records the turn and its `api.turn` job in
one transaction; a worker runs the turn under the job's lease. A crash mid-turn is retried
by another worker, a cancel stops the model stream, and a turn that cannot run (its agent or
session is gone) ends `failed` with the reason instead of staying `pending`.

Every turn's job has the key `turn:{turn_id}` (Slack's turns too), which is how a cancel
finds it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy.orm import Session

from core.agent.runner import AgentRunner, ClaudeNotConfigured
from core.concurrency import run_sync
from core.errors import Conflict, NotFound
from core.jobs import FINISHED, JobContext, JobFailed, JobKind, JobQueue, JobView, LostClaim
from core.jobs.model import RetryPolicy
from core.outputs.port import Output
from core.sessions.models import SessionView, TurnRecord, TurnView
from core.sessions.service import FINISHED_TURN, Fence, SessionService

if TYPE_CHECKING:
    from core.wiring import Container

log = logging.getLogger("cosmo.agent")

Announce = Callable[[Sequence[Output], SessionView], Awaitable[None]]
KIND = "api.turn"
#: A turn is re-run from the start after a crash or a dropped database connection; three
#: tries tell bad luck from a turn that cannot succeed, whose user should hear so soon.
MAX_ATTEMPTS = 3
RETRY = RetryPolicy(
    max_attempts=MAX_ATTEMPTS, backoff=timedelta(seconds=1), cap=timedelta(seconds=10)
)
CANCELLED = "cancelled on request"


def job_key(turn_id: str) -> str:
    return f"turn:{turn_id}"


@dataclass(frozen=True)
class TurnState:
    """A turn and the job that answers it (None for a turn that never had one)."""

    turn: TurnView
    job: JobView | None

    @property
    def finished(self) -> bool:
        return self.turn.status in FINISHED_TURN

    @property
    def cancel_requested(self) -> bool:
        """Asked to cancel; its worker has not stopped it yet."""
        return not self.finished and self.job is not None and self.job.cancel_requested


class TurnJobs:
    """Records turns with their job, runs them (the job handler), reports and cancels them."""

    def __init__(
        self,
        sessions: SessionService,
        runner: AgentRunner,
        jobs: JobQueue,
        announce: Announce | None = None,
    ) -> None:
        self.sessions = sessions
        self.runner = runner
        self.jobs = jobs
        self.announce = announce
        """Routes the outputs a turn proposed to their reviewers (`ApprovalService.proposed`)."""

    # -- recording -----------------------------------------------------------

    def enqueue(self, s: Session, turn: TurnView) -> str:
        """The turn's job, in the transaction that records the turn."""
        job_id, _created = self.jobs.enqueue(
            s,
            tenant_id=turn.tenant_id,
            kind=KIND,
            payload={"turn_id": turn.id},
            key=job_key(turn.id),
            # One busy agent cannot take every worker slot (COSMO_AGENT_CONCURRENCY).
            concurrency_key=f"agent:{turn.agent_id}",
            max_attempts=MAX_ATTEMPTS,
        )
        return job_id

    def begin(
        self,
        tenant_id: str,
        session_id: str,
        *,
        user_id: str,
        message: str,
        dedupe_key: str | None = None,
    ) -> tuple[TurnView, bool]:
        """Record a turn and its job; a repeated dedupe key returns the first turn."""

        def with_job(s: Session, turn: TurnView) -> None:
            self.enqueue(s, turn)

        return self.sessions.begin_turn(
            tenant_id,
            session_id,
            user_id=user_id,
            user_message=message,
            dedupe_key=dedupe_key,
            on_recorded=with_job,
        )

    # -- reading -------------------------------------------------------------

    def state(self, tenant_id: str, turn_id: str) -> TurnState:
        turn = self.sessions.get_turn(tenant_id, turn_id)
        job = self.jobs.find(job_key(turn_id))
        if job is not None and job.tenant_id != tenant_id:  # pragma: no cover - ids are unique
            job = None
        return TurnState(turn, job)

    def resume(self, tenant_id: str, turn_id: str) -> TurnState:
        """For a repeated request: an unfinished turn nothing will answer (recorded before
        turns were jobs, or whose job ended without ending it) gets a job, or its end."""
        state = self.state(tenant_id, turn_id)
        if state.finished:
            return state
        if state.job is None:
            self.jobs.submit(
                tenant_id=tenant_id,
                kind=KIND,
                payload={"turn_id": turn_id},
                key=job_key(turn_id),
                concurrency_key=f"agent:{state.turn.agent_id}",
                max_attempts=MAX_ATTEMPTS,
            )
            return self.state(tenant_id, turn_id)
        if state.job.state in FINISHED:
            reason = state.job.error or f"its job ended ({state.job.state})"
            return TurnState(self.fail(tenant_id, turn_id, reason), state.job)
        return state

    # -- ending --------------------------------------------------------------

    def fail(
        self, tenant_id: str, turn_id: str, reason: str, *, fence: Fence | None = None
    ) -> TurnView:
        """End an unfinished turn as failed with `reason` (kept as it is if it ended)."""
        record = TurnRecord(
            status="failed",
            reply=f"Sorry, this message could not be answered: {reason}.",
            model=None,
            error=reason,
        )
        try:
            return self.sessions.finish_turn(tenant_id, turn_id, record, fence=fence)
        except Conflict:
            return self.sessions.get_turn(tenant_id, turn_id)

    def cancel(self, tenant_id: str, turn_id: str) -> TurnState:
        """Cancel a turn: one whose job has not started ends `cancelled` here and now; a
        running one is asked to stop, and its worker records the end within a second."""
        state = self.state(tenant_id, turn_id)
        if state.finished:
            raise Conflict(
                f"turn {turn_id} already ended ({state.turn.status}); there is nothing to cancel"
            )
        job = state.job
        if job is not None and job.state not in FINISHED:
            job = self.jobs.cancel(tenant_id, job.id)
        if job is None or job.state in FINISHED:
            # Nothing runs it any more: the end is recorded by us or by nobody.
            return TurnState(self.sessions.cancel_turn(tenant_id, turn_id, CANCELLED), job)
        return TurnState(state.turn, job)

    # -- running (the job handler) ---------------------------------------------

    async def run(self, job: JobContext) -> dict[str, Any]:
        turn_id = job.payload.get("turn_id")
        if not isinstance(turn_id, str):
            raise JobFailed("the job names no turn (its payload has no turn_id)")
        tenant = job.tenant_id
        try:
            turn = await run_sync(self.sessions.get_turn, tenant, turn_id)
        except NotFound:
            raise JobFailed(f"turn {turn_id} no longer exists") from None
        if turn.status in FINISHED_TURN:
            return {"turn": turn.status}  # a rerun after the turn was answered or cancelled
        try:
            session = await run_sync(self.sessions.get, tenant, turn.session_id)
            agent = await self.runner.agent(tenant, turn.agent_id)
        except NotFound as exc:
            await self._give_up(job, turn, f"{exc.kind} {exc.key} was deleted")
        except (Conflict, ClaudeNotConfigured) as exc:
            await self._give_up(job, turn, exc.detail)
        await run_sync(self.sessions.start_turn, tenant, turn_id)
        try:
            result = await agent.chat(session, turn.user_message, turn=turn, fence=job.fence)
        except asyncio.CancelledError:
            await self._stopped(job, tenant, turn_id)
            raise
        except (LostClaim, JobFailed):
            raise
        except Exception as exc:
            if job.claim.failures + 1 < MAX_ATTEMPTS:
                raise  # retried from the start with backoff
            reason = f"it failed {MAX_ATTEMPTS} times (last: {type(exc).__name__})"
            with contextlib.suppress(Exception):
                await run_sync(lambda: self.fail(tenant, turn_id, reason, fence=job.fence))
            raise JobFailed(reason) from exc
        if self.announce is not None and result.outputs:
            await self.announce(result.outputs, session)
        return {"turn": result.turn.status}

    async def _give_up(self, job: JobContext, turn: TurnView, reason: str) -> NoReturn:
        await run_sync(lambda: self.fail(turn.tenant_id, turn.id, reason, fence=job.fence))
        raise JobFailed(f"turn {turn.id}: {reason}")

    async def _stopped(self, job: JobContext, tenant_id: str, turn_id: str) -> None:
        """Shutdown and a lost lease stop the handler the same way a cancel does: only a
        cancel request ends the turn; otherwise it stays unfinished for the next attempt."""
        try:
            if not await job.cancel_requested():
                return
            await run_sync(
                lambda: self.sessions.cancel_turn(tenant_id, turn_id, CANCELLED, fence=job.fence)
            )
        except Exception:
            # The job ends cancelled all the same; a lapsed claim's successor sees the request.
            log.warning("turn %s: could not record its cancellation", turn_id, exc_info=True)


def turn_jobs(c: Container) -> TurnJobs:
    return TurnJobs(c.sessions, c.runner, c.jobs, c.approvals.proposed)


def job_kinds(c: Container) -> list[JobKind]:
    return [JobKind(KIND, turn_jobs(c).run, retry=RETRY)]
