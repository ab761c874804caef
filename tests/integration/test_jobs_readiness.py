"""Dead-lettered jobs and a backlog no worker drains show in `/readyz` (degraded, still
ready: the replica serves; an operator must look)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bot.server import create_app
from core.db import Database
from core.jobs import JobQueue
from core.wiring import build_container
from tests.conftest import make_settings


@pytest.fixture
def committed(
    tmp_path: Path, migrated_database_url_factory: Callable[[str], str]
) -> Iterator[tuple[TestClient, JobQueue]]:
    url = migrated_database_url_factory("sqlite")
    db = Database.from_url(url)
    container = build_container(make_settings(tmp_path / "data"), db=db)
    with TestClient(create_app(container=container, background=False)) as client:
        yield client, container.jobs
    db.dispose()


def test_ready_reports_the_job_queue_and_degrades_on_a_dead_letter(committed) -> None:
    client, jobs = committed
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok"
    assert ready["jobs"] == {"queued": 0, "running": 0, "dead": 0, "oldest_due_seconds": 0.0}
    jobs.submit(tenant_id="T1", kind="output.execute", max_attempts=1)
    [claim] = jobs.claim("w", kinds=["output.execute"], limit=1)
    jobs.fail(claim, "skill snapshot unreadable", retry_in=timedelta(seconds=1))
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["jobs"]["dead"] == 1


def test_ready_degrades_when_due_work_waits_for_a_worker_too_long(committed) -> None:
    client, jobs = committed
    jobs.submit(
        tenant_id="T1", kind="slack.turn", run_after=datetime.now(UTC) - timedelta(minutes=5)
    )
    body = client.get("/readyz").json()
    assert body["status"] == "degraded"
    assert body["jobs"]["queued"] == 1 and body["jobs"]["oldest_due_seconds"] >= 299
