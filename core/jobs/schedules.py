"""Recurring upkeep as schedules of the job layer: one job per name across every worker,
run again a fixed time after each run ends (a run that fails is logged and tried again at
the next tick, never dead-lettered)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from core.approvals.lifecycle import runner_of
from core.concurrency import run_sync
from core.jobs.worker import JobContext, JobKind

if TYPE_CHECKING:
    from core.wiring import Container

#: Finished jobs are kept this long for `GET /api/v1/jobs/{id}`, then purged.
KEEP_FINISHED = timedelta(days=7)
#: Deliveries sent per round; a full round goes again at once.
DELIVERY_BATCH = 50


def schedules(c: Container) -> list[JobKind]:
    lifecycle = runner_of(c)

    async def expire_outputs(_job: JobContext) -> dict[str, Any]:
        # A backstop for the `output.expire` jobs (an aws-store output whose creator died
        # before enqueueing them, outputs from before them): the same expire-or-escalate.
        due = await run_sync(c.outputs.due_for_expiry, c.approvals.clock())
        done: dict[str, int] = {}
        for output in due:
            outcome = await lifecycle.expire_or_escalate(output)
            done[outcome] = done.get(outcome, 0) + 1
        return {"expired": done.get("expired", 0), "escalated": done.get("escalated", 0)}

    async def deliver_webhooks(_job: JobContext) -> dict[str, Any]:
        sent = total = 0
        while True:
            sent = await c.webhooks.run_once(limit=DELIVERY_BATCH)
            total += sent
            if sent < DELIVERY_BATCH:
                return {"sent": total}

    async def warm_knowledge(_job: JobContext) -> dict[str, Any]:
        # The first question to a large knowledge base would otherwise wait for its load
        # (seconds at 100k chunks); later runs pick up what others wrote, cheaply.
        return {"warmed": await run_sync(c.knowledge.warm)}

    async def purge_jobs(_job: JobContext) -> dict[str, Any]:
        return {"purged": await run_sync(c.jobs.purge, KEEP_FINISHED)}

    kinds = [
        JobKind("schedule.expire_outputs", expire_outputs, every=timedelta(seconds=30)),
        JobKind("schedule.deliver_webhooks", deliver_webhooks, every=timedelta(seconds=1)),
        JobKind("schedule.warm_knowledge", warm_knowledge, every=timedelta(minutes=5)),
        JobKind("schedule.purge_jobs", purge_jobs, every=timedelta(hours=1)),
    ]
    held_check = c.webhooks.held_check
    if held_check is not None:

        async def settle_held(_job: JobContext) -> dict[str, Any]:
            sweep = await c.webhooks.resolve_held(held_check, older_than=c.webhooks.held_after)
            return dataclasses.asdict(sweep)

        kinds.append(
            JobKind("schedule.settle_held_webhooks", settle_held, every=timedelta(minutes=1))
        )
    return kinds
