"""The job worker on every database: handlers run once, failures retry then dead-letter,
cancellation reaches a running handler, shutdown hands unfinished jobs to another worker,
a worker whose lease was taken over stops, and schedules run again after each run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from core.db import Database
from core.jobs import JobContext, JobFailed, JobKind, JobQueue, JobWorker, RetryPolicy, Wakeup
from core.jobs.wakeup import PostgresListener

TENANT = "T-worker"
FAST_RETRY = RetryPolicy(max_attempts=3, backoff=timedelta(0))


@pytest.fixture
def database(module_db: Database) -> Database:
    return module_db


@pytest.fixture
def queue(database: Database) -> JobQueue:
    return JobQueue(database)


@pytest.fixture
def kind() -> str:
    return f"test.{uuid.uuid4().hex[:8]}"


async def until(predicate: Any, limit: float = 20.0) -> None:
    """Wait for a condition the code under test brings about (a bound, not a timing claim)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - the condition lives in the database
            await asyncio.sleep(0.02)


async def test_each_job_runs_once_and_what_it_enqueues_runs_too(queue: JobQueue, kind: str) -> None:
    seen: list[int] = []

    async def handler(job: JobContext) -> dict[str, Any]:
        n = int(job.payload["n"])
        seen.append(n)
        if n < 3:
            queue.submit(tenant_id=TENANT, kind=kind, payload={"n": n + 10})
        return {"double": n * 2}

    ids = [queue.submit(tenant_id=TENANT, kind=kind, payload={"n": n})[0] for n in range(5)]
    worker = JobWorker(queue, [JobKind(kind, handler)], concurrency=3)
    assert await worker.run_until_idle() == 8
    assert sorted(seen) == [0, 1, 2, 3, 4, 10, 11, 12]
    done = queue.get(TENANT, ids[4])
    assert (done.state, done.result, done.attempt) == ("succeeded", {"double": 8}, 1)


async def test_failures_retry_then_succeed_or_reach_the_dead_letter(
    queue: JobQueue, kind: str
) -> None:
    calls: dict[str, int] = {}

    async def handler(job: JobContext) -> None:
        calls[job.id] = calls.get(job.id, 0) + 1
        if job.payload["mode"] == "flaky" and calls[job.id] < 2:
            raise RuntimeError("target answered 503")
        if job.payload["mode"] == "broken":
            raise RuntimeError("always broken")
        if job.payload["mode"] == "bad":
            raise JobFailed("agent 'agt_gone' does not exist")

    flaky, _ = queue.submit(tenant_id=TENANT, kind=kind, payload={"mode": "flaky"}, max_attempts=3)
    broken, _ = queue.submit(
        tenant_id=TENANT, kind=kind, payload={"mode": "broken"}, max_attempts=3
    )
    bad, _ = queue.submit(tenant_id=TENANT, kind=kind, payload={"mode": "bad"}, max_attempts=3)
    worker = JobWorker(queue, [JobKind(kind, handler, retry=FAST_RETRY)])
    await worker.run_until_idle()
    assert (queue.get(TENANT, flaky).state, calls[flaky]) == ("succeeded", 2)
    dead = queue.get(TENANT, broken)
    assert (dead.state, calls[broken], dead.error) == (
        "dead",
        3,
        "RuntimeError: always broken",
    )
    permanent = queue.get(TENANT, bad)
    assert (permanent.state, calls[bad]) == ("dead", 1)  # never retried
    assert permanent.error == "agent 'agt_gone' does not exist"


async def test_cancelling_a_running_job_stops_its_handler(queue: JobQueue, kind: str) -> None:
    started = asyncio.Event()
    cleaned_up: list[str] = []

    async def handler(job: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cleaned_up.append(job.id)
            raise

    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    worker = JobWorker(queue, [JobKind(kind, handler)])
    await worker.start()
    try:
        await asyncio.wait_for(started.wait(), 20)
        queue.cancel(TENANT, job_id)
        await until(lambda: queue.get(TENANT, job_id).state == "cancelled")
    finally:
        await worker.stop()
    assert cleaned_up == [job_id]


async def test_shutdown_hands_unfinished_jobs_to_another_worker(queue: JobQueue, kind: str) -> None:
    started = asyncio.Event()
    runs: list[tuple[str, int, dict[str, Any]]] = []

    async def handler(job: JobContext) -> dict[str, Any]:
        runs.append((job.id, job.claim.attempt, dict(job.previous)))
        if job.claim.attempt == 1:
            await job.progress(step="half way")
            started.set()
            await asyncio.sleep(3600)
        return {"finished_by": job.claim.owner}

    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    first = JobWorker(queue, [JobKind(kind, handler)], name="first", grace=0.1)
    await first.start()
    await asyncio.wait_for(started.wait(), 20)
    await first.stop()
    released = queue.get(TENANT, job_id)
    assert (released.state, released.failures) == ("queued", 0)  # handed back, not failed
    second = JobWorker(queue, [JobKind(kind, handler)], name="second")
    await second.run_until_idle()
    assert runs[1] == (job_id, 2, {"step": "half way"})
    assert queue.get(TENANT, job_id).result == {"finished_by": "second"}


async def test_a_worker_that_lost_its_lease_stops_and_cannot_write(
    database: Database, kind: str
) -> None:
    # The first worker's clock runs an hour late, so every lease it takes or renews has
    # already lapsed for everyone else: a stand-in for a worker too stalled to renew.
    late = JobQueue(
        database,
        clock=lambda: datetime.now(UTC) - timedelta(hours=1),
        # Long enough that the stalled worker's own claim loop cannot take its job back (by
        # its clock the lease lapses only after 12 s) before the taker does.
        lease=timedelta(seconds=12),
    )
    started = asyncio.Event()
    outcomes: list[str] = []

    async def handler(job: JobContext) -> None:
        if job.claim.attempt == 1:
            started.set()
            await asyncio.sleep(3600)
        outcomes.append(f"attempt {job.claim.attempt} finished")

    job_id, _ = late.submit(tenant_id=TENANT, kind=kind)
    stalled = JobWorker(late, [JobKind(kind, handler)], name="stalled")
    await stalled.start()
    await asyncio.wait_for(started.wait(), 20)
    [held] = [r.claim for r in stalled.running.values()]
    taker = JobWorker(JobQueue(database), [JobKind(kind, handler)], name="taker")
    await taker.run_until_idle()
    assert outcomes == ["attempt 2 finished"]
    assert not late.progress(held, {"late": True})
    await until(lambda: not stalled.running)  # its next renewal saw the loss and stopped it
    await stalled.stop()
    job = late.get(TENANT, job_id)
    assert (job.state, job.attempt) == ("succeeded", 2)
    assert outcomes == ["attempt 2 finished"]  # the stalled attempt never finished


async def test_a_schedule_is_one_job_that_runs_again_after_each_run(
    queue: JobQueue, kind: str
) -> None:
    runs: list[int] = []

    async def tick(job: JobContext) -> None:
        runs.append(job.claim.attempt)
        if len(runs) == 2:
            raise RuntimeError("one bad run")

    every = timedelta(milliseconds=50)
    workers = [
        JobWorker(queue, [JobKind(kind, tick, every=every)], name=f"w{i}", poll=0.02)
        for i in range(2)
    ]
    for w in workers:
        await w.start()
    try:
        await until(lambda: len(runs) >= 5)
    finally:
        for w in workers:
            await w.stop()
    job = queue.find(f"schedule:{kind}")
    assert job is not None and job.state == "queued"  # a bad run did not kill it
    assert runs == sorted(runs) and len(set(runs)) == len(runs)  # one run at a time


async def test_a_worker_carries_on_after_its_database_connections_are_dropped(
    database: Database, kind: str
) -> None:
    if database.backend != "postgresql":
        pytest.skip("terminating server connections is a PostgreSQL operation")
    queue = JobQueue(database)
    done: list[str] = []

    async def handler(job: JobContext) -> None:
        done.append(job.id)

    worker = JobWorker(
        queue,
        [JobKind(kind, handler)],
        poll=0.1,
        listen_url=database.engine.url.render_as_string(hide_password=False),
    )
    await worker.start()
    try:
        first, _ = queue.submit(tenant_id=TENANT, kind=kind)
        await until(lambda: first in done)
        name = database.engine.url.database
        with database.engine.connect() as conn:
            dropped = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            ).scalar()
        assert dropped and dropped >= 1  # at least the worker's LISTEN connection
        second, _ = queue.submit(tenant_id=TENANT, kind=kind)
        await until(lambda: second in done)
    finally:
        await worker.stop()
    assert queue.get(TENANT, second).state == "succeeded"


async def test_a_committed_job_wakes_workers_listening_from_other_processes(
    database: Database, kind: str
) -> None:
    """Across processes only NOTIFY wakes an idle PostgreSQL worker (its poll is seconds).
    The listener here shares nothing with the enqueuing queue but the database."""
    if database.backend != "postgresql":
        pytest.skip("SQLite workers in other processes poll; there is nothing to listen to")
    woken = asyncio.Event()
    listener = PostgresListener(database.engine.url.render_as_string(hide_password=False), woken)
    listener.start()
    try:
        await until(woken.is_set)  # set once on (re)connect: now it listens
        woken.clear()
        stranger = JobQueue(database, wakeup=Wakeup())  # no in-process ring reaches `woken`
        job_id, created = stranger.submit(tenant_id=TENANT, kind=kind, key=f"{kind}:once")
        assert created
        await until(woken.is_set)
        woken.clear()
        # The same key again adds no job, so it wakes nobody; a new job does.
        assert stranger.submit(tenant_id=TENANT, kind=kind, key=f"{kind}:once") == (job_id, False)
        stranger.submit(tenant_id=TENANT, kind=kind, key=f"{kind}:twice")
        await until(woken.is_set)
    finally:
        await listener.stop()


async def test_leases_are_renewed_by_the_clock_not_by_rounds_of_the_keeper(
    database: Database, kind: str
) -> None:
    """On a starved event loop each round of the lease keeper takes far longer than its
    half-second sleep. Counting rounds (ten for a 15 s lease) could let the lease lapse
    under a running job, for another worker to take over and run it a second time. Here
    six seconds pass between the keeper's rounds: the lease is renewed at the first."""
    claimed_at = datetime.now(UTC)
    renewed_at = claimed_at + timedelta(seconds=6)
    handler_started = asyncio.Event()
    queue = JobQueue(
        database,
        clock=lambda: renewed_at if handler_started.is_set() else claimed_at,
        lease=timedelta(seconds=15),
    )
    looks: list[float] = []

    def starved() -> float:
        looks.append(len(looks) * 6.0)
        return looks[-1]

    release = asyncio.Event()

    async def handler(job: JobContext) -> None:
        # Runs before the keeper's first round with this job (it was scheduled first).
        handler_started.set()
        await release.wait()

    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    worker = JobWorker(queue, [JobKind(kind, handler)], monotonic=starved)
    run = asyncio.create_task(worker.run_until_idle())
    await until(lambda: len(looks) >= 3)  # the keeper's second round: the first renewed

    claimed_until = claimed_at + timedelta(seconds=15)

    assert lease_until(database, job_id) == claimed_until + timedelta(seconds=6)
    release.set()
    assert await run == 1


def lease_until(database: Database, job_id: str) -> datetime:
    with database.read_session() as s:
        value = s.scalar(text("SELECT lease_until FROM jobs WHERE id = :id"), {"id": job_id})
    if isinstance(value, str):  # SQLite hands back text
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
