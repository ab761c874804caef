"""Runs jobs: claims what it has room for, renews leases while handlers run, stops a job
when it is cancelled or its claim is lost, retries or dead-letters failures, and on
shutdown gives unfinished jobs back so another worker resumes them at once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from core import tracing
from core.concurrency import run_sync
from core.db.database import DATABASE_UNAVAILABLE
from core.db.ids import new_id
from core.jobs.model import Claim, JobFailed, LostClaim, RetryPolicy
from core.jobs.queue import JobQueue
from core.jobs.wakeup import PostgresListener
from core.log_context import log_context

log = logging.getLogger("cosmo.jobs")

SYSTEM_TENANT = "-"
"""Tenant of the jobs no tenant owns (schedules)."""

DEFAULT_RETRY = RetryPolicy()
Handler = Callable[["JobContext"], Awaitable[dict[str, Any] | None]]
StopReason = Literal["cancel", "lost", "shutdown"]


@dataclass(frozen=True)
class JobKind:
    """A kind of work and how to run it. `every` makes it a schedule: one job per name
    across all workers, run again that long after each run ends."""

    name: str
    handler: Handler
    retry: RetryPolicy = DEFAULT_RETRY
    every: timedelta | None = None


class JobContext:
    """What a handler gets: its payload and the claim it must name in every write."""

    def __init__(self, queue: JobQueue, claim: Claim) -> None:
        self.queue = queue
        self.claim = claim

    @property
    def id(self) -> str:
        return self.claim.id

    @property
    def tenant_id(self) -> str:
        return self.claim.tenant_id

    @property
    def payload(self) -> dict[str, Any]:
        return self.claim.payload

    @property
    def previous(self) -> dict[str, Any]:
        """Progress an earlier attempt recorded (empty on the first)."""
        return self.claim.progress

    async def progress(self, *, durable: bool = True, **data: Any) -> None:
        """Record progress (chunks done, a placeholder's ts); raises `LostClaim` if this
        attempt no longer holds the job, which stops the handler where it stands.
        `durable=False`: see `JobQueue.progress`."""
        if not await run_sync(lambda: self.queue.progress(self.claim, data, durable=durable)):
            raise LostClaim(f"job {self.claim.id} attempt {self.claim.attempt} was taken over")

    async def ensure_held(self) -> None:
        """Raise `LostClaim` unless this attempt still holds the job, before something only
        the holder should do (show a turn's answer in Slack). A read: no commit to wait
        for, where recording progress just to learn this cost one."""
        if not await run_sync(self.queue.holds, self.claim):
            raise LostClaim(f"job {self.claim.id} attempt {self.claim.attempt} was taken over")

    async def cancel_requested(self) -> bool:
        """Whether someone asked to cancel this job. A handler asks after an
        `asyncio.CancelledError`: a cancel ends the work (and says so), while a shutdown or a
        lost lease cancels the same way and leaves the work for the next attempt."""
        return self.id in await run_sync(self.queue.cancel_requests, [self.id])

    def fence(self, session: Any) -> None:
        """Inside a write's transaction: refuse it unless this attempt still holds the job."""
        self.queue.fence(session, self.claim)


@dataclass
class _Running:
    claim: Claim
    task: asyncio.Task[None]
    stop: StopReason | None = None

    @property
    def kind(self) -> str:
        return self.claim.kind


def _stored_trace(payload: dict[str, Any]) -> str | None:
    value = payload.get(tracing.PAYLOAD_KEY)
    return value if isinstance(value, str) else None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-6:]}"


class JobWorker:
    def __init__(
        self,
        queue: JobQueue,
        kinds: Sequence[JobKind],
        *,
        name: str | None = None,
        concurrency: int = 16,
        per_key_limit: int | None = 4,
        poll: float = 0.5,
        grace: float = 20.0,
        listen_url: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.monotonic = monotonic
        self.kinds = {k.name: k for k in kinds}
        self.name = name or worker_name()
        self.concurrency = concurrency
        self.per_key_limit = per_key_limit
        self.poll = poll
        self.grace = grace
        self.listen_url = listen_url
        self.running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """The claim loop (which registers the schedules) and the lease keeper, in the
        background."""
        self._loop_task = asyncio.get_running_loop().create_task(self._main(), name="jobs")

    async def stop(self) -> None:
        """Stop claiming; let running jobs finish for up to `grace` seconds; give the rest
        back (released, not failed) so another worker resumes them without waiting."""
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task

    async def run(self) -> None:
        await self.start()
        assert self._loop_task is not None
        await self._loop_task

    async def run_until_idle(self, *, limit_seconds: float = 60.0) -> int:
        """Run due jobs, and the jobs they enqueue, until none is due and none runs; returns
        how many ran. For tests and one-shot commands: a service calls `run` instead."""
        ran = 0
        keeper = asyncio.get_running_loop().create_task(self._keep_leases(), name="jobs-leases")
        try:
            async with asyncio.timeout(limit_seconds):
                while True:
                    # Idle only if nothing ran while we claimed: a job that ended during the
                    # claim may have queued work (a retry) the claim could not see yet.
                    busy = bool(self.running)
                    started = await self._claim_and_start()
                    ran += started
                    if not started and not busy:
                        return ran
                    if not started and self.running:
                        tasks = {r.task for r in self.running.values()}
                        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _ensure_schedules(self) -> bool:
        """Make sure each schedule has its job; False (logged) if the database refused, so
        a worker started before `cosmo db upgrade` keeps trying instead of dying."""
        try:
            await self._submit_schedules()
        except Exception as exc:
            log.warning("cannot register schedules yet: %s", type(exc).__name__)
            return False
        return True

    async def _submit_schedules(self) -> None:
        for kind in self.kinds.values():
            if kind.every is not None:
                await run_sync(
                    self.queue.submit,
                    tenant_id=SYSTEM_TENANT,
                    kind=kind.name,
                    key=f"schedule:{kind.name}",
                    max_attempts=1_000_000,
                )

    async def _main(self) -> None:
        unregister = self.queue.wakeup.register(self._wake)
        listener = None
        if self.listen_url and self.listen_url.startswith("postgresql"):
            listener = PostgresListener(self.listen_url, self._wake)
            listener.start()
        keeper = asyncio.get_running_loop().create_task(self._keep_leases(), name="jobs-leases")
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if listener is not None:
                await listener.stop()
            unregister()

    # -- claiming ------------------------------------------------------------

    async def _claim_loop(self) -> None:
        scheduled = False
        while not self._stopping.is_set():
            self._wake.clear()
            scheduled = scheduled or await self._ensure_schedules()
            try:
                started = await self._claim_and_start()
            except Exception as exc:  # the database is down, or not migrated yet
                log.warning("cannot claim jobs: %s", type(exc).__name__)
                started = 0
            if started:
                continue  # there may be more (behind a per-agent limit's skips, or just due)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll)

    async def _claim_and_start(self) -> int:
        """Claim as many due jobs as there is room for and start them; how many started."""
        free = self.concurrency - len(self.running)
        if free <= 0:
            return 0
        claims = await run_sync(
            self.queue.claim,
            self.name,
            kinds=list(self.kinds),
            limit=free,
            per_key_limit=self.per_key_limit,
        )
        for claim in claims:
            self._start(claim)
        return len(claims)

    def _start(self, claim: Claim) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(claim), name=f"job:{claim.kind}:{claim.id}"
        )
        self.running[claim.id] = _Running(claim, task)
        task.add_done_callback(functools.partial(self._done, claim.id))

    def _done(self, job_id: str, _task: object) -> None:
        self.running.pop(job_id, None)
        self._wake.set()

    async def _drain(self) -> None:
        if not self.running:
            return
        tasks = [r.task for r in self.running.values()]
        _, pending = await asyncio.wait(tasks, timeout=self.grace)
        for entry in list(self.running.values()):
            if entry.task in pending:
                self._interrupt(entry, "shutdown")
        if pending:
            await asyncio.wait(pending)

    # -- running -------------------------------------------------------------

    async def _run(self, claim: Claim) -> None:
        with log_context(job_id=claim.id, tenant=claim.tenant_id):
            if self.kinds[claim.kind].every is not None:
                # A schedule's runs are not anyone's work: a span each second would bury the
                # traces that are (what a schedule does for a trace has spans of its own).
                await self._run_logged(claim)
                return
            with tracing.span(
                f"job {claim.kind}",
                kind="consumer",
                parent=_stored_trace(claim.payload),
                attributes={
                    "cosmo.job.id": claim.id,
                    "cosmo.job.kind": claim.kind,
                    "cosmo.job.attempt": claim.attempt,
                    "cosmo.tenant": claim.tenant_id,
                },
            ) as span:
                outcome = await self._run_logged(claim)
                span.set({"cosmo.job.outcome": outcome})
                if outcome in ("retry", "dead"):
                    span.fail(outcome)

    async def _run_logged(self, claim: Claim) -> str:
        """Run the handler and record how it ended; returns that end (for its span)."""
        kind = self.kinds[claim.kind]
        ctx = JobContext(self.queue, claim)
        try:
            result = await kind.handler(ctx)
        except asyncio.CancelledError:
            await self._stopped(claim)
            return "stopped"
        except LostClaim:
            log.info("job %s (%s): attempt %d was taken over", claim.id, claim.kind, claim.attempt)
            return "lost"
        except JobFailed as exc:
            log.warning("job %s (%s) failed for good: %s", claim.id, claim.kind, exc.detail)
            await self._settle(self.queue.fail, claim, exc.detail, retry_in=None)
            return "dead"
        except Exception as exc:
            return await self._failed(kind, claim, exc)
        again = self._next_run(kind)
        await self._settle(self.queue.finish, claim, result, again_at=again)
        return "succeeded"

    async def _stopped(self, claim: Claim) -> None:
        entry = self.running.get(claim.id)
        reason = entry.stop if entry else None
        if reason == "cancel":
            await self._settle(self.queue.cancelled, claim)
        elif reason == "shutdown":
            await self._settle(self.queue.release, claim)
            log.info("job %s (%s) released at shutdown", claim.id, claim.kind)

    async def _failed(self, kind: JobKind, claim: Claim, exc: Exception) -> str:
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, DATABASE_UNAVAILABLE):
            error = f"database unavailable ({type(exc).__name__})"
            log.warning("job %s (%s): %s; will retry", claim.id, claim.kind, error)
        else:
            log.exception("job %s (%s) attempt %d failed", claim.id, claim.kind, claim.attempt)
        again = self._next_run(kind)
        if again is not None:  # a schedule never dies of one bad run
            await self._settle(self.queue.finish, claim, {"error": error}, again_at=again)
            return "failed"
        state = await self._settle(
            self.queue.fail, claim, error, retry_in=kind.retry.delay(claim.failures + 1)
        )
        if state == "dead":
            log.error("job %s (%s) moved to the dead letter: %s", claim.id, claim.kind, error)
            return "dead"
        return "retry"

    @staticmethod
    def _next_run(kind: JobKind) -> datetime | None:
        return datetime.now(UTC) + kind.every if kind.every is not None else None

    async def _settle(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Record a job's end; a database outage here is retried, not lost: if it never
        comes back, the lease lapses and the job is taken over."""
        for delay in (0.5, 1, 2, 4, 8):
            try:
                return await run_sync(fn, *args, **kwargs)
            except DATABASE_UNAVAILABLE:
                await asyncio.sleep(delay)
        log.error("could not record the end of a job; its lease will lapse and it will rerun")
        return None

    # -- leases and cancellation ---------------------------------------------

    async def _keep_leases(self) -> None:
        """Renew leases every third of the lease; look for cancel requests twice a second.

        The third is measured on the clock, not in rounds of this loop: on a starved event
        loop (a loaded machine) a round takes far longer than its half-second sleep, and ten
        rounds could outlast the whole lease, handing a running job to another worker."""
        renew_every = self.queue.lease.total_seconds() / 3
        renewed = self.monotonic()
        while True:
            await asyncio.sleep(0.5)
            entries = list(self.running.values())
            if not entries:
                continue
            try:
                now = self.monotonic()
                if now - renewed >= renew_every:
                    renewed = now
                    renewal = await run_sync(self.queue.renew, [e.claim for e in entries])
                    lost, cancel = renewal.lost, renewal.cancel
                else:
                    lost = set()
                    cancel = await run_sync(
                        self.queue.cancel_requests, [e.claim.id for e in entries]
                    )
            except DATABASE_UNAVAILABLE as exc:
                log.warning(
                    "cannot renew job leases: database unavailable (%s)", type(exc).__name__
                )
                continue
            for entry in entries:
                if entry.task.done() or self.running.get(entry.claim.id) is not entry:
                    continue  # it ended while we asked: its lease went with it, not lost
                if entry.claim.id in lost:
                    log.warning(
                        "job %s (%s): lease lost; stopping it", entry.claim.id, entry.claim.kind
                    )
                    self._interrupt(entry, "lost")
                elif entry.claim.id in cancel:
                    self._interrupt(entry, "cancel")

    @staticmethod
    def _interrupt(entry: _Running, reason: StopReason) -> None:
        if entry.stop is None and not entry.task.done():
            entry.stop = reason
            entry.task.cancel()
