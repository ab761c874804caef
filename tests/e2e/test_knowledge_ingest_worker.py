"""A knowledge ingestion outlives the worker running it: SIGTERM to a real `cosmo worker`
mid-ingestion hands the job back, and another `cosmo worker` process finishes it with every
chunk written exactly once. The embedder is the real Voyage client against the local fake
Voyage API answering slowly (tests/fakes/voyage_api.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import select

from core.db import upgrade
from core.db.models import KnowledgeChunkRow
from core.knowledge.jobs import submit_document
from core.knowledge.schemas import KnowledgeBaseSpec
from core.wiring import build_container
from tests.conftest import make_settings
from tests.cosmo_process import COSMO, ROOT
from tests.fakes.voyage_api import API_KEY, FakeVoyageAPI

TENANT = "T-sigterm"
# Some 3,500 chunks (chunk_size 100): over 50 batches of 64 at half a second each at the
# fake, so the first worker's 20-second shutdown grace ends mid-ingestion.
PARAGRAPHS = 4000
GUIDE = "\n\n".join(
    f"Step {i}: rotate vault key {i}, ticket SEC-{10_000 + i}." for i in range(PARAGRAPHS)
)


@pytest.fixture
def voyage() -> Iterator[FakeVoyageAPI]:
    with FakeVoyageAPI(delay=0.5) as fake:
        yield fake


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], within: float) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r}"
        time.sleep(0.2)


def start_worker(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*COSMO, "worker"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )


def test_sigterm_mid_ingestion_releases_the_job_and_another_worker_finishes_it_exactly_once(
    tmp_path: Path, voyage: FakeVoyageAPI
) -> None:
    data_dir = tmp_path / "data"
    values = {
        "COSMO_DATA_DIR": str(data_dir),
        "COSMO_API_TOKEN": "t",
        "COSMO_EMBEDDER": "voyage",
        "VOYAGE_API_KEY": API_KEY,
        "VOYAGE_API_URL": voyage.base_url,
    }
    settings = make_settings(data_dir, **values)
    upgrade(settings.resolved_database_url)
    container = build_container(settings)
    kb = container.knowledge.create(
        TENANT, KnowledgeBaseSpec(name="guide", chunk_size=100, chunk_overlap=0)
    )
    submitted = submit_document(
        container.knowledge, container.jobs, TENANT, kb.id, "guide.txt", GUIDE.encode()
    )
    assert submitted.job_id is not None
    job_id = submitted.job_id

    def job():
        return container.jobs.get(TENANT, job_id)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMO_", "DATABASE_"))}
    env.update(values)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with first_log.open("wb") as a, second_log.open("wb") as b:
        first = start_worker(env, a)
        second = None
        try:
            wait_for(job, lambda j: j.progress.get("done", 0) >= 128, within=90)
            second = start_worker(env, b)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=60) == 0

            finished = wait_for(job, lambda j: j.state != "running" and j.attempt > 1, 120)
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(timeout=60)

    first_output, second_output = first_log.read_text(), second_log.read_text()
    assert "released at shutdown" in first_output, first_output
    assert (finished.state, finished.attempt) == ("succeeded", 2), second_output
    total = finished.progress["total"]
    assert finished.progress["done"] == total and total > 50 * 64
    resumed = re.search(r"attempt 2, resuming after (\d+) chunks written", second_output)
    assert resumed is not None, second_output
    assert 128 <= int(resumed.group(1)) < total  # the second worker did not start over
    document = container.knowledge.document(TENANT, kb.id, submitted.document.id)
    assert (document.status, document.chunk_count) == ("ready", total)
    with container.db.session() as s:
        ordinals = sorted(
            s.scalars(
                select(KnowledgeChunkRow.ordinal).where(
                    KnowledgeChunkRow.document_id == document.id
                )
            )
        )
    assert ordinals == list(range(total))  # every chunk, each exactly once
    container.close()
