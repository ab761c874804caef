"""A job worker running beside a TestClient, for tests whose requests wait on jobs (a REST
turn is answered by a worker now). It runs on the app's own event loop, as
`create_app(background=True)` would, but only with the kinds a test asks for: the app's
schedules (deliveries, expiries) stay in the test's hands."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from fastapi.testclient import TestClient

from core.jobs import JobKind, JobWorker
from core.wiring import Container


@contextmanager
def running_worker(
    client: TestClient, container: Container, kinds: Sequence[JobKind] | None = None
) -> Iterator[JobWorker]:
    """Run `kinds` (default: REST turns) until the block ends; running jobs are then
    handed back, as at a worker's shutdown. `client` must be open (`with TestClient`)."""
    from core.agent.turn_job import job_kinds

    worker = JobWorker(
        container.jobs,
        job_kinds(container) if kinds is None else kinds,
        poll=0.05,
        grace=5.0,
        per_key_limit=container.settings.agent_concurrency,
    )
    portal = client.portal
    assert portal is not None, "open the TestClient (`with TestClient(app) as client`) first"
    portal.call(worker.start)
    try:
        yield worker
    finally:
        portal.call(worker.stop)
