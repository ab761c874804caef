"""Running jobs by hand in tests whose database is one rolled-back connection (`db`).

A `JobWorker` renews leases from another thread while handlers run, which a single shared
connection cannot take; here due jobs run one at a time, through the worker's own code for
settling them (succeeded, retried, dead), so what a test sees is what a worker records.
"""

from __future__ import annotations

import asyncio

from bot.worker import job_kinds
from core.jobs import JobWorker
from core.wiring import Container


def run_due_jobs(container: Container, *kinds: str) -> int:
    """Run the due jobs of these kinds (all registered kinds by default), and the jobs they
    enqueue, until none is due; returns how many ran."""
    worker = JobWorker(container.jobs, job_kinds(container, None))
    wanted = list(kinds) or list(worker.kinds)

    async def drain() -> int:
        ran = 0
        while claims := container.jobs.claim(worker.name, kinds=wanted, limit=1):
            await worker._run(claims[0])
            ran += 1
        return ran

    return asyncio.run(drain())
