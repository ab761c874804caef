"""Builds the job worker from the container: core's handlers and schedules, plus Slack's
when Slack is configured, and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

from bot.heap import freeze_startup_heap
from core.agent import turn_job
from core.approvals import lifecycle
from core.execution import jobs as execution_jobs
from core.jobs import JobKind, JobWorker
from core.jobs.schedules import schedules
from core.knowledge.jobs import IngestJob
from core.settings import Settings
from core.wiring import Container, build_container

if TYPE_CHECKING:
    from bot.slack.app import SlackIntegration

log = logging.getLogger("cosmo.worker")

#: Tells a supervised worker whose child it is: it stops if that parent goes away (even
#: killed with SIGKILL), so no orphaned worker keeps running against the database.
PARENT_ENV = "COSMO_SUPERVISOR_PID"


async def _watch_parent(stopping: asyncio.Event) -> None:
    """A worker `cosmo serve` started stops when that serve is gone."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    while os.getppid() == int(parent):  # noqa: ASYNC110 - nothing to await: poll the kernel
        await asyncio.sleep(1)
    log.warning("the supervising `cosmo serve` (pid %s) is gone; stopping", parent)
    stopping.set()


def job_kinds(container: Container, slack: SlackIntegration | None) -> list[JobKind]:
    kinds = schedules(container)
    observer = slack.ingest_observer() if slack is not None else None
    kinds.append(IngestJob(container.knowledge, observer=observer).kind())
    kinds += execution_jobs.job_kinds(container)
    kinds += lifecycle.job_kinds(container)
    kinds += turn_job.job_kinds(container)
    if slack is not None:
        kinds += slack.job_kinds()
    return kinds


def build_worker(
    container: Container, slack: SlackIntegration | None, *, grace: float | None = None
) -> JobWorker:
    settings = container.settings
    url = settings.resolved_database_url
    container.prepare_for_turns()
    return JobWorker(
        container.jobs,
        job_kinds(container, slack),
        concurrency=settings.worker_concurrency,
        per_key_limit=settings.agent_concurrency,
        # Across processes SQLite has no notifications: poll briefly. PostgreSQL's NOTIFY
        # wakes workers at once; the poll only finds retries whose time has come.
        poll=0.25 if container.db.backend == "sqlite" else 2.0,
        grace=container.settings.worker_grace_seconds if grace is None else grace,
        listen_url=url if container.db.backend == "postgresql" else None,
    )


async def run_worker(settings: Settings) -> None:
    """The `cosmo worker` process: run jobs until told to stop, then hand back the rest."""
    from bot.slack.app import build_slack

    if settings.worker_nice:
        os.nice(settings.worker_nice)
    container = build_container(settings)
    container.db.require_current_schema()
    slack = build_slack(container)
    worker = build_worker(container, slack)
    freeze_startup_heap()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    watch = loop.create_task(_watch_parent(stopping), name="parent-watch")
    metrics_server = None
    if settings.metrics and settings.metrics_port is not None and not os.environ.get(PARENT_ENV):
        # On its own (not supervised: those write to their `cosmo serve`'s directory).
        from bot.server.metrics import scrape_registry, start_port

        metrics_server = start_port(settings, scrape_registry(None))
    await worker.start()
    log.info(
        "worker %s running %d kinds of job (concurrency %d, %d per agent, nice %d)",
        worker.name,
        len(worker.kinds),
        worker.concurrency,
        worker.per_key_limit or 0,
        os.nice(0),
    )
    try:
        await stopping.wait()
        log.info(
            "worker %s stopping: finishing running jobs (up to %.0fs)", worker.name, worker.grace
        )
        await worker.stop()
    finally:
        watch.cancel()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        if slack is not None:
            await slack.aclose()
        await container.aclose()
        container.close()
