"""Group commit for submissions that arrive together.

Slack's ack path makes one durable insert per event, and under a burst most of an insert's
time is its commit (an fsync, or SQLite's single write lock). `JobIntake.submit` does not
commit alone when it need not: while one transaction is being written, the submissions that
arrive meanwhile wait, then go together in the next one. A lone submission is written at
once, by its caller's own task: nothing ever waits on a timer or hands over to another task,
so quiet traffic keeps its latency and bursts gain throughput. Each caller still returns
only after its own job is committed.

The insert runs on the event loop itself wherever that never blocks it
(`JobQueue.submit_now`): on PostgreSQL awaited on a connection of the loop's own
(`Database.prompt_async`); on SQLite in one attempt that never waits for the write lock, a
tenth of a millisecond of local work where the hop to a thread and back cost three. A lock a
SQLite worker holds, or keys already taken (their jobs' ids are read), go to a thread
(`run_sync`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from core import tracing
from core.concurrency import run_sync
from core.db.database import DATABASE_UNAVAILABLE
from core.jobs.queue import JobQueue

log = logging.getLogger("cosmo.jobs.intake")

#: One transaction carries at most this many submissions.
MAX_BATCH = 64

_Pending = tuple[dict[str, Any], "asyncio.Future[tuple[str, bool]]"]


class JobIntake:
    """Submits jobs for many concurrent callers with as few commits as it can."""

    def __init__(self, queue: JobQueue, *, max_batch: int = MAX_BATCH) -> None:
        self.queue = queue
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._writing_alone = False
        self.transactions = 0
        """Transactions written so far (for benches and tests)."""

    async def submit(self, **job: Any) -> tuple[str, bool]:
        """Enqueue one job (the arguments of `JobQueue.enqueue`); returns once it is
        committed, with (job id, created)."""
        # The batch is written from the first caller's task: each job takes its own
        # caller's trace context now, not that one's.
        job = {**job, "payload": tracing.with_trace(job.get("payload") or {})}
        if self._writer is None and not self._writing_alone:
            return await self._submit_alone(job)
        future: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        # A queued caller may give up (its client went away); its job is written all the same.
        return await asyncio.shield(future)

    async def _submit_alone(self, job: dict[str, Any]) -> tuple[str, bool]:
        """Nothing is being written: this caller writes its own job, in its own task. A
        task, a future and two turns of the loop less than a queued submission: the ack's
        path when events do not arrive together. Those that arrive meanwhile are written
        together once this commit is done."""
        self._writing_alone = True
        try:
            return (await self._insert([job]))[0]
        finally:
            self._writing_alone = False
            if self._pending:
                self._writer = asyncio.get_running_loop().create_task(
                    self._write(), name="job-intake"
                )

    async def _write(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._commit(batch)
        finally:
            self._writer = None

    async def _insert(self, jobs: list[dict[str, Any]]) -> list[tuple[str, bool]]:
        """One transaction for `jobs`: (id, created) for each, in order."""
        self.transactions += 1
        rows = self.queue.rows(jobs)
        # Written from the loop where that never blocks it (PostgreSQL's round trip
        # awaited, a free SQLite write lock), without the two thread hops; a lock held
        # by a SQLite worker, or keys already taken, go to a thread.
        added = await self.queue.submit_now(rows)
        if added is not None and len(added) == len(rows):
            return [(row["id"], True) for row in rows]
        return await run_sync(self.queue.submit_rows, rows, added)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = await self._insert([job for job, _ in batch])
        except DATABASE_UNAVAILABLE as exc:
            for _, future in batch:
                _settle(future, exc=exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            # One bad submission must not fail the others: write them one by one.
            log.warning("a batch of %d jobs failed (%s); writing them one by one", len(batch), exc)
            for item in batch:
                await self._commit([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[tuple[str, bool]],
    *,
    result: tuple[str, bool] | None = None,
    exc: BaseException | None = None,
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)
